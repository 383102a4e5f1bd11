"""Where each job of pollers.yaml is written: what a reader that loads the file again reuses.

The source of an item of the top-level ``jobs`` is the column it starts at and its text, up to
its last token (``Source``): the blank lines and comments after it are left out, so that the last
job of the file and a job followed by a comment have the source they have elsewhere. Two items
written the same are the same data wherever they are in the file, as long as neither holds an
alias or an anchor (an alias's data is written elsewhere; an anchor's node may be used elsewhere)
and no ``%TAG`` directive gives tags another meaning (``parse_yaml`` then gives no item a
source). Their lines differ only by where they start.

Where the items are is told by the limits' pass over the parse events (``ItemSpans``), before
anything is composed: the items whose source the caller knows are then written as ``~`` on as
many lines (``ItemSources.reduced``), and libyaml composes only the others.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Container
from typing import Any

from yaml.events import MappingStartEvent, ScalarEvent, SequenceStartEvent

logger = logging.getLogger(__name__)

ITEMS_KEY = "jobs"  # the top-level sequence whose items a caller may already know

Source = tuple[int, str]
Span = tuple[int, int, int, int]  # where it starts, its column, where its last token ends, its end


class ItemSpans:
    """The span of each item of the top-level ``jobs``, from the parse events near the root.

    ``check_shape`` calls ``node`` for each node that starts at ``level`` 0 (the root), 1 (a key
    or value of the root mapping) or 2 (an item, inside ``jobs``), and ``end`` for a collection
    that ends back at such a level, with the mark where the last scalar, alias or flow
    collection ended. A second ``jobs`` key (an error of its own) leaves no span at all.
    """

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._root_mapping = False
        self._slots = 0  # nodes seen in the root mapping: keys are the even ones
        self._jobs_next = False  # the last key was ``jobs``
        self._in_jobs = False
        self._jobs_seen = 0
        self._open: Any = None  # the start mark of the item being read

    @property
    def usable(self) -> bool:
        return self._jobs_seen == 1

    def node(self, event: Any, level: int) -> None:
        if level == 0:
            self._root_mapping = type(event) is MappingStartEvent
        elif level == 1 and self._root_mapping:
            self._root_node(event)
        elif level == 2 and self._in_jobs:
            if type(event) is MappingStartEvent or type(event) is SequenceStartEvent:
                self._open = event.start_mark
            else:  # a scalar or an alias: the item ends here
                mark, end = event.start_mark, event.end_mark.index
                self.spans.append((mark.index, mark.column, end, end))

    def end(self, event: Any, level: int, last: Any) -> None:
        if level == 2 and self._in_jobs and self._open is not None:
            self.spans.append(
                (self._open.index, self._open.column, last.index, event.end_mark.index)
            )
            self._open = None
        elif level == 1 and self._in_jobs:
            self._in_jobs = False

    def _root_node(self, event: Any) -> None:
        key = self._slots % 2 == 0
        self._slots += 1
        if key:
            self._jobs_next = type(event) is ScalarEvent and event.value == ITEMS_KEY
            return
        if self._jobs_next:
            self._jobs_seen += 1
            self._in_jobs = type(event) is SequenceStartEvent
        self._jobs_next = False


class ItemSources:
    """The source of each item of the top-level ``jobs``, and those the caller knows."""

    def __init__(
        self,
        text: str,
        spans: list[Span],
        written: tuple[list[int], list[int]],
        known: Container[Source],
    ) -> None:
        self._text = text
        self._spans = spans
        self.found: dict[int, Source] = {}
        self.reused: list[int] = []  # positions, in order
        for position, span in enumerate(spans):
            source = self._source(span, written)
            if source is not None:
                self.found[position] = source
                if source in known:
                    self.reused.append(position)

    def reduced(self) -> str:
        """The text with each reused item written as ``~`` on as many lines as it had: its
        lines and columns, and those of what follows, are as they were."""
        parts: list[str] = []
        at = 0
        for position in self.reused:
            start, _, content_end, _ = self._spans[position]
            parts += (self._text[at:start], "~", "\n" * self._text.count("\n", start, content_end))
            at = content_end
        parts.append(self._text[at:])
        return "".join(parts)

    def _source(self, span: Span, written: tuple[list[int], list[int]]) -> Source | None:
        start, column, content_end, end = span
        for offsets in written:  # aliases, anchors
            first = bisect_left(offsets, start)
            if first < len(offsets) and offsets[first] < end:
                return None
        gap = self._text[content_end:end] if start < content_end <= end else "x"
        if not all(not line.strip() or line.lstrip().startswith("#") for line in gap.split("\n")):
            return None  # not expected: something is written after the item's last token
        return (column, self._text[start:content_end])
