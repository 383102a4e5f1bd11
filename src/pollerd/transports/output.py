"""A plugin's stderr (and a supervised plugin's stdout) as bounded log lines.

A plugin can write faster than anyone can read a log: 3 ticks once wrote 60 MB of pollerd log.
``OutputLimiter`` turns the bytes of one stream into lines for the log, within a budget:

- a line longer than ``max_line_bytes`` is cut, and says how many bytes were cut;
- an ephemeral tick logs at most ``TICK_MAX_LINES`` lines and ``TICK_MAX_BYTES`` bytes
  (``TickBudget``); a supervised plugin at most ``RATE_LINES_PER_S`` lines and ``RATE_BYTES_PER_S``
  bytes a second, in bursts of 10 s worth (``RateBudget``, a token bucket);
- what is dropped is counted and said in one line: at the end of the tick, or, under a rate
  limit, before the next line that gets through and at the end.

The stream is always read to its end (a plugin blocked on a full pipe would hang), and the last
lines are kept for error messages whatever the budget. Budgets are plain objects with an
injected clock: they are tested without I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

MAX_LINE_BYTES = 4 * 1024
TICK_MAX_LINES = 200
TICK_MAX_BYTES = 64 * 1024
RATE_LINES_PER_S = 100.0
RATE_BYTES_PER_S = 64 * 1024.0
RATE_BURST_S = 10.0
TAIL_LINES = 10


class Budget(Protocol):
    """Whether one more line of ``size`` bytes may be logged (taking it from the budget)."""

    def take(self, size: int) -> bool: ...

    def describe(self) -> str: ...


@dataclass
class TickBudget:
    """A fixed number of lines and bytes for the whole life of the stream (one tick)."""

    max_lines: int = TICK_MAX_LINES
    max_bytes: int = TICK_MAX_BYTES
    lines: int = 0
    bytes: int = 0

    def take(self, size: int) -> bool:
        if self.lines >= self.max_lines or self.bytes + size > self.max_bytes:
            self.lines = self.max_lines  # once over, stay over: no line reappears after a gap
            return False
        self.lines += 1
        self.bytes += size
        return True

    def describe(self) -> str:
        return f"limit {self.max_lines} lines / {self.max_bytes // 1024} KiB per tick"


@dataclass
class RateBudget:
    """A token bucket of lines and bytes per second, ``burst_s`` seconds deep."""

    clock: Callable[[], float]
    lines_per_s: float = RATE_LINES_PER_S
    bytes_per_s: float = RATE_BYTES_PER_S
    burst_s: float = RATE_BURST_S
    _lines: float = field(init=False)
    _bytes: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._lines = self.lines_per_s * self.burst_s
        self._bytes = self.bytes_per_s * self.burst_s
        self._at = self.clock()

    def take(self, size: int) -> bool:
        now = self.clock()
        elapsed_s, self._at = max(0.0, now - self._at), now
        self._lines = min(
            self.lines_per_s * self.burst_s, self._lines + elapsed_s * self.lines_per_s
        )
        self._bytes = min(
            self.bytes_per_s * self.burst_s, self._bytes + elapsed_s * self.bytes_per_s
        )
        if self._lines < 1 or self._bytes < size:
            return False
        self._lines -= 1
        self._bytes -= size
        return True

    def describe(self) -> str:
        return f"limit {self.lines_per_s:g} lines / {self.bytes_per_s / 1024:g} KiB a second"


class OutputLimiter:
    """Feeds raw chunks of one stream in, calls ``emit(text)`` for each line to log and
    ``notice(text)`` (default: ``emit``) for the lines that say what was dropped.

    ``tail`` keeps the last ``TAIL_LINES`` lines (cut to ``max_line_bytes``), logged or not.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        budget: Budget,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        what: str = "stderr",
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self._emit = emit
        self._notice = notice or emit
        self._budget = budget
        self._max_line_bytes = max_line_bytes
        self._what = what
        self._pending = bytearray()
        self._cut = 0  # bytes of the current over-long line not kept
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def feed(self, chunk: bytes) -> None:
        *lines, rest = chunk.split(b"\n")
        for line in lines:
            self._append(line)
            self._line(bytes(self._pending))
            self._pending.clear()
        self._append(rest)

    def close(self) -> None:
        """The stream ended: log its unterminated last line and what was dropped."""
        if self._pending or self._cut:
            self._line(bytes(self._pending))
            self._pending.clear()
        self._report_dropped()

    def _append(self, part: bytes) -> None:
        room = max(0, self._max_line_bytes - len(self._pending))
        if len(part) > room:
            self._cut += len(part) - room
            part = part[:room]
        self._pending += part

    def _line(self, raw: bytes) -> None:
        cut, self._cut = self._cut, 0
        text = raw.decode("utf-8", "replace").rstrip()
        if cut:
            text += f" … ({cut} more bytes of this line cut)"
        if not text:
            return
        self.tail.append(text)
        if not self._budget.take(len(raw)):  # what reaches the log: the cut part does not
            self.dropped_lines += 1
            self.dropped_bytes += len(raw) + cut
            return
        self._report_dropped()
        self._emit(text)

    def _report_dropped(self) -> None:
        if not self.dropped_lines:
            return
        lines, size = self.dropped_lines, self.dropped_bytes
        self.dropped_lines = self.dropped_bytes = 0
        self._notice(
            f"… {size} more bytes ({lines} lines) of {self._what} dropped "
            f"({self._budget.describe()})"
        )
