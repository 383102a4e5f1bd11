"""Parsing RSS (0.9x, 1.0, 2.0) and Atom 1.0 documents into entries, with the standard library.

The XML is read by expat directly so that entity declarations can be refused: a document whose
DOCTYPE declares entities (``<!ENTITY ...>``) is rejected before anything is expanded, which rules
out "billion laughs" and external-entity tricks without a third-party parser.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from feeds.errors import PermanentFeedError, TransientFeedError

logger = logging.getLogger(__name__)

ATOM = "{http://www.w3.org/2005/Atom}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"
RSS1_NAMESPACES = ("{http://purl.org/rss/1.0/}", "{http://my.netscape.com/rdf/simple/0.9/}")
# Longer ids, or ids with control characters, are replaced by a digest (they end up in headers).
MAX_ID_CHARS = 512
DIGEST_ID_PREFIX = "h:"
DIGEST_ID_BYTES = 16

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
    root = parse_xml(document)
    if root.tag == "rss":
        return _parse_rss(root)
    if root.tag == f"{RDF}RDF":
        return _parse_rdf(root)
    if root.tag == f"{ATOM}feed":
        return _parse_atom(root)
    raise PermanentFeedError(f"not an RSS or Atom feed: the root element is <{_local(root.tag)}>")


def parse_xml(document: bytes) -> Element:
    """An ElementTree built by expat, names as ``{namespace}local``; entity declarations refused."""
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartElementHandler = lambda name, attrs: builder.start(
        _qname(name), {_qname(key): value for key, value in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(_qname(name))
    parser.CharacterDataHandler = builder.data
    parser.EntityDeclHandler = _refuse_entity
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise TransientFeedError(
            f"the feed is not well-formed XML ({expat.ErrorString(exc.code)} at line {exc.lineno},"
            f" column {exc.offset})"
        ) from None
    return builder.close()


def _qname(name: str) -> str:
    return "{" + name if "}" in name else name


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _refuse_entity(name: str, *_: object) -> None:
    raise PermanentFeedError(
        f"the feed declares an XML entity (<!ENTITY {name} ...>); entity declarations are refused"
        " to rule out entity-expansion attacks"
    )


def _parse_rss(root: Element) -> Feed:
    channel = root.find("channel")
    if channel is None:
        raise PermanentFeedError("an RSS document without a <channel> element")
    entries = [
        _entry(
            raw_id=_text(item.find("guid")),
            title=_text(item.find("title")),
            link=_text(item.find("link")),
            date_text=_text(item.find("pubDate")) or _text(item.find(f"{DC}date")),
            summary=_text(item.find("description")),
        )
        for item in channel.findall("item")
    ]
    return Feed("rss", _text(channel.find("title")), tuple(entries))


def _parse_rdf(root: Element) -> Feed:
    ns = next((ns for ns in RSS1_NAMESPACES if root.find(f"{ns}channel") is not None), None)
    if ns is None:
        raise PermanentFeedError("an RDF document without an RSS 1.0 <channel> element")
    entries = [
        _entry(
            raw_id=item.get(f"{RDF}about"),
            title=_text(item.find(f"{ns}title")),
            link=_text(item.find(f"{ns}link")),
            date_text=_text(item.find(f"{DC}date")),
            summary=_text(item.find(f"{ns}description")),
        )
        for item in root.findall(f"{ns}item")
    ]
    return Feed("rss", _text(root.find(f"{ns}channel/{ns}title")), tuple(entries))


def _parse_atom(root: Element) -> Feed:
    entries = [
        _entry(
            raw_id=_text(item.find(f"{ATOM}id")),
            title=_text(item.find(f"{ATOM}title")),
            link=_atom_link(item),
            date_text=_text(item.find(f"{ATOM}published")) or _text(item.find(f"{ATOM}updated")),
            summary=_text(item.find(f"{ATOM}summary")) or _text(item.find(f"{ATOM}content")),
        )
        for item in root.findall(f"{ATOM}entry")
    ]
    return Feed("atom", _text(root.find(f"{ATOM}title")), tuple(entries))


def _atom_link(item: Element) -> str | None:
    """The ``alternate`` link (a link without ``rel`` is one), else the first link."""
    links = [link for link in item.findall(f"{ATOM}link") if link.get("href")]
    for link in links:
        if link.get("rel", "alternate") == "alternate":
            return link.get("href")
    return links[0].get("href") if links else None


def _text(element: Element | None) -> str | None:
    """All the text inside ``element`` with whitespace runs collapsed; None if there is none."""
    if element is None:
        return None
    return " ".join("".join(element.itertext()).split()) or None


def _entry(
    *,
    raw_id: str | None,
    title: str | None,
    link: str | None,
    date_text: str | None,
    summary: str | None,
) -> Entry:
    return Entry(
        id=entry_id(raw_id, link, title, date_text, summary),
        title=title,
        link=link,
        published=parse_date(date_text),
    )


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
