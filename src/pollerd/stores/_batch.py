"""Group commit: the writes that arrive during one event loop turn go to the store together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Writes one batch, in order, and returns one result or exception per item.
BatchWriter = Callable[[Sequence[T]], Sequence["R | Exception"]]


class WriteQueue(Generic[T, R]):
    """Collects ``submit``-ted items and hands them to ``write_batch`` in one call, made soon
    after the first item arrives (``call_soon``), so concurrent writers share one transaction.

    Each caller awaits the result of its own item. A caller cancelled before the batch is
    written withdraws its item; once the batch is written, the item stays written even if its
    caller is cancelled before it resumes.
    """

    def __init__(self, write_batch: BatchWriter[T, R]) -> None:
        self._write_batch = write_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, done))
        if len(self._waiting) == 1:
            loop.call_soon(self.flush)
        return await done

    def flush(self) -> None:
        """Write what waits now: before an operation that must come after it, and on close."""
        waiting, self._waiting = self._waiting, []
        batch = [(item, done) for item, done in waiting if not done.cancelled()]
        if not batch:
            return
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
