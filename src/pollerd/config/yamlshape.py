"""The limits a YAML file must keep before it is built: nesting depth and alias expansion.

Checked on the parse events before any node is built (one pass, no recursion), so that a hostile
or careless file costs an error message instead of the process:

- collections may nest at most ``MAX_DEPTH`` levels (deeper input overflowed Python's recursion
  limit in the YAML composer);
- aliases may expand the document to at most ``EXPANSION_FACTOR`` times the nodes written plus
  ``EXPANSION_SLACK``: a "billion laughs" file of a few hundred bytes expands to billions of
  nodes, while aliases used to share values stay far below the limit.

The same pass notes where aliases and anchors are written, whether a ``%TAG`` directive is set,
and (for a reader that keeps its jobs) where each item of the top-level ``jobs`` is written: what
it needs to know which parts of the text mean the same data wherever they are
(``pollerd.config.yamlsource``), before anything is composed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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
    anchors: list[int]  # where each anchored node starts (likewise)
    directives: bool  # a %TAG directive: the same text may mean other data in another file


class ItemSpansHook(Protocol):
    """Told of the events near the root: where the items of the top-level ``jobs`` are."""

    def node(self, event: Any, level: int) -> None: ...

    def end(self, event: Any, level: int, last: Any) -> None: ...


def check_shape(text: str, spans: ItemSpansHook | None = None) -> Shape:
    """Refuse too deep nesting and alias bombs from the parse events; raises ``ShapeError``.

    Dispatched on the exact event type, scalars first: they are most of the events, and this
    pass is a sixth of the time a 10,000-job file takes to load. ``spans`` is told of each node
    that starts at the first two levels below the root, and of each collection that ends there.
    """
    walk = _Walk(spans)
    events: Iterator[Any] = yaml.parse(text, Loader=_Parser)  # typed Any: dispatched on type()
    for event in events:
        kind = type(event)
        if kind is ScalarEvent:
            walk.scalars += 1
            walk.last = event.end_mark
            if event.anchor is not None:
                walk.anchor(event, 1)
            if walk.depth <= 2 and spans is not None:
                spans.node(event, walk.depth)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            walk.start(event)
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            walk.end(event)
        elif kind is AliasEvent:
            walk.alias(event)
        elif kind is DocumentStartEvent:
            walk.directives = walk.directives or bool(event.tags)
    return Shape(walk.aliases, walk.anchors, walk.directives)


class _Walk:
    """The state of one pass. Scalars count apart (``scalars``): each is one node written and
    one expanded, and they are most of the events."""

    def __init__(self, spans: ItemSpansHook | None) -> None:
        self.spans = spans
        self.depth = 0
        self.scalars = 0
        self.collections = 0
        self.expanded = 0  # the nodes aliases add, and collections: with scalars, the expansion
        self.starts: list[tuple[int, str | None, bool]] = []  # expanded before, anchor, flow
        self.sizes: dict[str, int] = {}  # anchor -> expanded nodes under it
        self.aliases: list[int] = []
        self.anchors: list[int] = []
        self.directives = False
        self.last: Any = None  # where the last scalar, alias or flow collection ended

    def start(self, event: Any) -> None:
        if self.depth <= 2 and self.spans is not None:
            self.spans.node(event, self.depth)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ShapeError(
                _event_line(event), f"nested deeper than {MAX_DEPTH} levels; flatten the structure"
            )
        self.starts.append((self.expanded + self.scalars, event.anchor, bool(event.flow_style)))
        if event.anchor is not None:
            self.anchors.append(event.start_mark.index)
        self.collections += 1
        self.expanded += 1

    def end(self, event: Any) -> None:
        self.depth -= 1
        before, anchor, flow = self.starts.pop()
        if anchor is not None:
            self.sizes[anchor] = self.expanded + self.scalars - before
        if flow:
            self.last = event.end_mark
        if self.depth <= 2 and self.spans is not None:
            self.spans.end(event, self.depth, self.last)

    def anchor(self, event: Any, size: int) -> None:
        self.sizes[event.anchor] = size
        self.anchors.append(event.start_mark.index)

    def alias(self, event: Any) -> None:
        self.aliases.append(event.start_mark.index)
        self.last = event.end_mark
        self.expanded += self.sizes.get(event.anchor or "", 1)  # undefined: the composer says
        written = self.scalars + self.collections
        _check_expansion(event, self.expanded + self.scalars, written)
        if self.depth <= 2 and self.spans is not None:
            self.spans.node(event, self.depth)


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
