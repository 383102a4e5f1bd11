"""Where each job of pollers.yaml is written: what a reader that loads the file again reuses.

The source of an item of the top-level ``jobs`` is the column it starts at and its text, up to
its last token (``Source``). Two items written the same are the same data, wherever they are in
the file, as long as neither holds an alias (an alias's data is written elsewhere: an item with
one has no source) and no ``%TAG`` directive gives tags another meaning (``parse_yaml`` then gives
no item a source). Their lines differ only by where they start.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Container

from yaml.nodes import MappingNode, Node, SequenceNode

logger = logging.getLogger(__name__)

Source = tuple[int, str]


class ItemSources:
    """The source of each item of the top-level ``jobs``, and whether the caller knows it."""

    def __init__(self, text: str, aliases: list[int], known: Container[Source]) -> None:
        self._text = text
        self._aliases = aliases
        self._known = known
        self._after = 0  # where the last item ended: an item that starts before is an alias
        self.found: dict[int, Source] = {}
        self.reused = 0

    def enter(self, sequence: Node) -> None:
        self._after = sequence.start_mark.index
        self.found = {}
        self.reused = 0

    def known(self, position: int, item: Node) -> bool:
        """Record the source of ``item`` if it has one; True if the caller knows that source."""
        start, end = item.start_mark.index, item.end_mark.index
        if start < self._after:
            return False
        self._after = end
        first = bisect_left(self._aliases, start)
        if first < len(self._aliases) and self._aliases[first] < end:
            return False
        source = (item.start_mark.column, self._text[start : self._content_end(item, end)])
        self.found[position] = source
        if source not in self._known:
            return False
        self.reused += 1
        return True

    def _content_end(self, item: Node, end: int) -> int:
        """Where the text of ``item`` ends. A block collection's end mark is at the next token,
        past the blank lines and comments that follow it: without them, the last job of the file
        and a job followed by a comment have the source they have elsewhere."""
        node = item
        while isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
            last = node.value[-1]
            node = last[1] if isinstance(node, MappingNode) else last
        content_end: int = node.end_mark.index
        gap = self._text[content_end:end] if item.start_mark.index < content_end <= end else "x"
        if all(not line.strip() or line.lstrip().startswith("#") for line in gap.split("\n")):
            return content_end
        return end
