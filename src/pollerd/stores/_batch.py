"""Group commit: the writes that arrive close together go to the store together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Writes one batch, in order, and returns one result or exception per item.
BatchWriter = Callable[[Sequence[T]], Sequence["R | Exception"]]


def flush_delay(now: float, last_flush: float | None, window_s: float) -> float:
    """How long a batch whose first write arrives at ``now`` waits for more writes: none
    (the end of this loop turn) unless the previous batch was written less than ``window_s``
    ago, then until ``window_s`` after it. A lone write is written at once; a stream of writes
    is written at most once per window."""
    if last_flush is None or window_s <= 0:
        return 0.0
    return max(last_flush + window_s - now, 0.0)


class WriteQueue(Generic[T, R]):
    """Collects ``submit``-ted items and hands them to ``write_batch`` in one call, so
    concurrent writers share one transaction.

    The call is made at the end of the loop turn in which the first item arrived (``call_soon``)
    or, with ``window_s`` and a batch written less than ``window_s`` ago, ``window_s`` after
    that batch (``flush_delay``): a store receiving a steady stream of writes (1,000 ticks a
    second) then commits a few each time rather than one. ``flush`` writes what waits at once.

    Each caller awaits the result of its own item. A caller cancelled before the batch is
    written withdraws its item; once the batch is written, the item stays written even if its
    caller is cancelled before it resumes.
    """

    def __init__(self, write_batch: BatchWriter[T, R], *, window_s: float = 0.0) -> None:
        self._write_batch = write_batch
        self.window_s = window_s
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.Handle | None = None
        self._last_flush: float | None = None  # time.monotonic(), the clock of the loop's timers

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, done))
        if len(self._waiting) == 1:
            delay = flush_delay(time.monotonic(), self._last_flush, self.window_s)
            if delay > 0:
                self._timer = loop.call_later(delay, self.flush)
            else:
                self._timer = loop.call_soon(self.flush)
        return await done

    def flush(self) -> None:
        """Write what waits now: before an operation that must come after it, and on close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        batch = [(item, done) for item, done in waiting if not done.cancelled()]
        if not batch:
            return
        if self.window_s > 0:
            self._last_flush = time.monotonic()
        try:
            results = self._write_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)} writes")
        except Exception as exc:  # a bug in the writer: every caller sees it
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)
