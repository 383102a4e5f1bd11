"""The limits a YAML file must keep before it is built: nesting depth and alias expansion.

Checked on the parse events before any node is built (one pass, no recursion), so that a hostile
or careless file costs an error message instead of the process:

- collections may nest at most ``MAX_DEPTH`` levels (deeper input overflowed Python's recursion
  limit in the YAML composer);
- aliases may expand the document to at most ``EXPANSION_FACTOR`` times the nodes written plus
  ``EXPANSION_SLACK``: a "billion laughs" file of a few hundred bytes expands to billions of
  nodes, while aliases used to share values stay far below the limit.

The same pass notes where the aliases are written and whether a ``%TAG`` directive is set: what
the reader needs to know which parts of the text mean the same data wherever they are written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

logger = logging.getLogger(__name__)

MAX_DEPTH = 100
EXPANSION_FACTOR = 10
EXPANSION_SLACK = 100_000

# libyaml's parser when PyYAML was built with it (its wheels are): 5-10x faster on large files.
_Parser = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class ShapeError(Exception):
    """The text breaks a limit; ``line`` counts from 1 in the text checked."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(line, message)


@dataclass(frozen=True, slots=True)
class Shape:
    aliases: list[int]  # where each alias is written (offsets in the text, in order)
    directives: bool  # a %TAG directive: the same text may mean other data in another file


def check_shape(text: str) -> Shape:
    """Refuse too deep nesting and alias bombs from the parse events; raises ``ShapeError``.

    Dispatched on the exact event type, scalars first: they are most of the events, and this
    pass is a sixth of the time a 10,000-job file takes to load."""
    depth = 0
    written = 0
    expanded = 0  # nodes of the document with every alias replaced by what it names
    starts: list[tuple[int, str | None]] = []  # per open collection: expanded before it, anchor
    sizes: dict[str, int] = {}  # anchor -> expanded nodes under it
    aliases: list[int] = []
    directives = False
    events: Iterator[Any] = yaml.parse(text, Loader=_Parser)  # typed Any: dispatched on type()
    for event in events:
        kind = type(event)
        if kind is ScalarEvent:
            written += 1
            expanded += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            depth += 1
            if depth > MAX_DEPTH:
                raise ShapeError(
                    _event_line(event),
                    f"nested deeper than {MAX_DEPTH} levels; flatten the structure",
                )
            starts.append((expanded, event.anchor))
            written += 1
            expanded += 1
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            depth -= 1
            before, anchor = starts.pop()
            if anchor is not None:
                sizes[anchor] = expanded - before
        elif kind is AliasEvent:
            aliases.append(event.start_mark.index)
            expanded += sizes.get(event.anchor or "", 1)  # undefined: the composer says so
            _check_expansion(event, expanded, written)
        elif kind is DocumentStartEvent:
            directives = directives or bool(event.tags)
    return Shape(aliases, directives)


def _check_expansion(alias: Any, expanded: int, written: int) -> None:
    if expanded > EXPANSION_FACTOR * written + EXPANSION_SLACK:
        raise ShapeError(
            _event_line(alias),
            f"the alias *{alias.anchor} makes the document expand to over {expanded:,} "
            f"values from {written:,} written: refused as an alias bomb; write the "
            "values out or use fewer nested aliases",
        )


def _event_line(event: Any) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 1
