"""Which entries of a document are new, and which ids to remember for the next tick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from feeds.cursor import hash_id
from feeds.parse import Entry


@dataclass(frozen=True, slots=True)
class Selection:
    new: tuple[Entry, ...]  # oldest first
    seen: tuple[bytes, ...]  # id hashes to remember, oldest first, at most max_seen
    considered: int  # entries of the document taken into account


def order_oldest_first(entries: Sequence[Entry]) -> list[Entry]:
    """Unique entries, oldest first.

    Feeds list their newest entries first by convention, so document order is reversed; when
    every entry has a date, the dates decide (a stable sort keeps document order for ties).
    The first occurrence of a duplicated id wins.
    """
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.id, entry)
    ordered = list(reversed(unique.values()))
    if all(entry.published is not None for entry in ordered):
        ordered.sort(key=_published)
    return ordered


def _published(entry: Entry) -> datetime:
    assert entry.published is not None  # only sorted when every entry has a date
    return entry.published


def select_new(ordered: Sequence[Entry], seen: Sequence[bytes], max_seen: int) -> Selection:
    """The entries not seen before, and the seen ids to store.

    Only the ``max_seen`` newest entries of the document are considered, and all of them are
    remembered: an entry older than that is never emitted, so it cannot be emitted twice after
    it falls out of the seen set. Ids no longer in the document are kept while room is left.
    """
    considered = list(ordered[-max_seen:]) if max_seen > 0 else []
    known = set(seen)
    hashes = [hash_id(entry.id) for entry in considered]
    new = tuple(
        entry for entry, digest in zip(considered, hashes, strict=True) if digest not in known
    )
    current = set(hashes)
    remembered = [digest for digest in seen if digest not in current] + hashes
    return Selection(new=new, seen=tuple(remembered[-max_seen:]), considered=len(considered))
