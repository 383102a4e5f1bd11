"""Parsing RSS (0.9x, 1.0, 2.0) and Atom feeds into entries: feedparser, after a strict check.

Two passes over a document:

1. expat checks that it is XML and what it is, without building anything: entity declarations
   (``<!ENTITY ...>`` in a DOCTYPE) are refused before anything is expanded ("billion laughs",
   external entities); a document that is not well-formed is a transient error (a feed caught
   mid-update); one whose root is not ``rss``, ``rdf:RDF`` or ``feed`` is not a feed. References
   to entities no DTD declares (``&nbsp;``, common in real RSS) are not errors: expat is told
   that a DTD it does not read may declare them.
2. feedparser reads the entries: it knows the HTML entities, the namespaces real feeds use and
   the date forms they write (``30 Nov 2026``, RFC 822 with odd zones, W3C-DTF). A long-lived
   plugin pays its import once.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from time import struct_time
from typing import Any, Literal
from xml.parsers import expat

import feedparser  # type: ignore[import-untyped]

from feeds.errors import PermanentFeedError, TransientFeedError

logger = logging.getLogger(__name__)

ATOM = "http://www.w3.org/2005/Atom"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS1_NAMESPACES = ("http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/")
FEED_ROOTS = ("rss", f"{RDF}}}RDF", f"{ATOM}}}feed")
# Longer ids, or ids with control characters, are replaced by a digest (they end up in headers).
MAX_ID_CHARS = 512
DIGEST_ID_PREFIX = "h:"
DIGEST_ID_BYTES = 16
MARKUP_TYPES = ("text/html", "application/xhtml+xml")
_TAG = re.compile(r"<[^>]*>")

FeedFormat = Literal["rss", "atom"]


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    title: str | None = None
    link: str | None = None
    published: datetime | None = None


@dataclass(frozen=True, slots=True)
class Feed:
    format: FeedFormat
    title: str | None
    entries: tuple[Entry, ...]  # in document order


def parse_feed(document: bytes) -> Feed:
    """Parse a feed. Raises ``TransientFeedError`` when the XML is not well-formed (the feed
    may be caught mid-update) and ``PermanentFeedError`` when it is XML but not a feed, or
    declares entities."""
    root, has_channel = _check_xml(document)
    if root not in FEED_ROOTS:
        raise PermanentFeedError(
            f"not an RSS or Atom feed: the root element is <{root.rpartition('}')[2]}>"
        )
    if root == "rss" and not has_channel:
        raise PermanentFeedError("an RSS document without a <channel> element")
    if root == FEED_ROOTS[1] and not has_channel:
        raise PermanentFeedError("an RDF document without an RSS 1.0 <channel> element")
    parsed = feedparser.parse(document, sanitize_html=False, resolve_relative_uris=False)
    entries = tuple(_entry_of(item) for item in parsed.entries)
    kind: FeedFormat = "atom" if root == FEED_ROOTS[2] else "rss"
    return Feed(kind, _text(parsed.feed, "title"), entries)


class _Structure:
    """What expat saw: the root element and whether an RSS channel came under it."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.has_channel = False
        self.depth = 0

    def start(self, name: str, _attributes: object) -> None:
        self.depth += 1
        if self.root is None:
            self.root = name
        elif self.depth == 2 and name.rpartition("}")[2] == "channel":
            self.has_channel = True

    def end(self, _name: str) -> None:
        self.depth -= 1


def _check_xml(document: bytes) -> tuple[str, bool]:
    """The root element (``{namespace}local`` as ``namespace}local``) and whether it holds a
    channel; raises when the document is not well-formed XML or declares entities."""
    structure = _Structure()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.UseForeignDTD(True)  # undeclared entities (&nbsp;) may come from a DTD: not errors
    parser.StartElementHandler = structure.start
    parser.EndElementHandler = structure.end
    parser.EntityDeclHandler = _refuse_entity
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise TransientFeedError(
            f"the feed is not well-formed XML ({expat.ErrorString(exc.code)} at line {exc.lineno},"
            f" column {exc.offset})"
        ) from None
    assert structure.root is not None  # expat refuses a document without an element
    return structure.root, structure.has_channel


def _refuse_entity(name: str, *_: object) -> None:
    raise PermanentFeedError(
        f"the feed declares an XML entity (<!ENTITY {name} ...>); entity declarations are refused"
        " to rule out entity-expansion attacks"
    )


def _entry_of(item: Any) -> Entry:
    date_text = item.get("published") or item.get("updated")
    moment = _utc(item.get("published_parsed") or item.get("updated_parsed"))
    # feedparser takes an RSS guid as the link when there is no <link> (a guid is a permalink
    # unless it says otherwise): keep that only when the guid is a URL.
    raw_id, link = _clean(item.get("id")), _clean(item.get("link"))
    if item.get("guidislink") and link == raw_id and link is not None and "://" not in link:
        link = None
    title = _text(item, "title")
    return Entry(
        id=entry_id(raw_id, link, title, date_text, _text(item, "summary")),
        title=title,
        link=link,
        published=moment if moment is not None else parse_date(date_text),
    )


def _text(item: Any, key: str) -> str | None:
    """A text construct as plain text: HTML and XHTML ones lose their markup."""
    value = item.get(key)
    detail = item.get(f"{key}_detail") or {}
    if isinstance(value, str) and detail.get("type") in MARKUP_TYPES:
        value = html.unescape(_TAG.sub("", value))
    return _clean(value)


def _utc(parsed: struct_time | None) -> datetime | None:
    """feedparser's dates are UTC ``struct_time``s."""
    if parsed is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _clean(text: object) -> str | None:
    """Text with whitespace runs collapsed; None if there is none."""
    if not isinstance(text, str):
        return None
    return " ".join(text.split()) or None


def entry_id(
    raw_id: str | None,
    link: str | None,
    title: str | None,
    date_text: str | None,
    summary: str | None = None,
) -> str:
    """guid / id, else link, else a digest of title, date and summary."""
    for candidate in (raw_id, link):
        if candidate:
            return candidate if _usable_id(candidate) else _digest_id(candidate)
    return _digest_id("\x1f".join(part or "" for part in (title, date_text, summary)))


def _usable_id(candidate: str) -> bool:
    return len(candidate) <= MAX_ID_CHARS and candidate.isprintable()


def _digest_id(text: str) -> str:
    digest = hashlib.blake2b(text.encode(), digest_size=DIGEST_ID_BYTES).hexdigest()
    return DIGEST_ID_PREFIX + digest


def parse_date(text: str | None) -> datetime | None:
    """RFC 822 (RSS) or RFC 3339 (Atom) dates, in UTC; None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None
