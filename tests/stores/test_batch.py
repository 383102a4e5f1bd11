"""WriteQueue: the writes of one event loop turn (or of one window) go to the writer together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pollerd.stores._batch import WriteQueue, flush_delay


class Recorder:
    """A batch writer that records its batches; negative items fail, "bug" breaks the batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.broken = False
        self.short = False

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        if self.broken:
            raise RuntimeError("bug in the writer")
        results: list[int | Exception] = [
            ValueError(item) if item < 0 else item * 10 for item in items
        ]
        return results[:-1] if self.short else results


@pytest.fixture
def writer() -> Recorder:
    return Recorder()


async def test_writes_submitted_in_one_turn_go_in_one_batch_in_order(writer: Recorder) -> None:
    queue = WriteQueue(writer)

    results = await asyncio.gather(*(queue.submit(item) for item in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert writer.batches == [[0, 1, 2, 3, 4]]


async def test_writes_submitted_one_after_another_go_in_batches_of_one(writer: Recorder) -> None:
    queue = WriteQueue(writer)

    first = await queue.submit(1)
    second = await queue.submit(2)

    assert (first, second) == (10, 20)
    assert writer.batches == [[1], [2]]


async def test_a_failed_item_fails_only_its_own_caller(writer: Recorder) -> None:
    queue = WriteQueue(writer)

    results = await asyncio.gather(
        queue.submit(1), queue.submit(-1), queue.submit(2), return_exceptions=True
    )

    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)


async def test_a_broken_writer_fails_every_caller_of_the_batch(writer: Recorder) -> None:
    queue = WriteQueue(writer)
    writer.broken = True

    results = await asyncio.gather(queue.submit(1), queue.submit(2), return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in results)


async def test_a_writer_returning_too_few_results_fails_every_caller(writer: Recorder) -> None:
    queue = WriteQueue(writer)
    writer.short = True

    results = await asyncio.gather(queue.submit(1), queue.submit(2), return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in results)
    assert "1 results for a batch of 2" in str(results[0])


async def test_a_caller_cancelled_before_the_batch_is_written_withdraws_its_write(
    writer: Recorder,
) -> None:
    queue = WriteQueue(writer)
    kept = asyncio.create_task(queue.submit(1))
    withdrawn = asyncio.create_task(queue.submit(2))
    await asyncio.sleep(0)  # both are queued; the batch is written on the next turn
    withdrawn.cancel()

    assert await kept == 10
    assert withdrawn.cancelled()
    assert writer.batches == [[1]]


async def test_flush_writes_the_waiting_batch_at_once(writer: Recorder) -> None:
    queue = WriteQueue(writer)
    task = asyncio.create_task(queue.submit(3))
    await asyncio.sleep(0)

    queue.flush()

    assert writer.batches == [[3]]
    assert await task == 30
    assert writer.batches == [[3]]  # the turn's scheduled write found nothing left


@pytest.mark.parametrize(
    ("now", "last_flush", "window_s", "delay"),
    [
        (10.0, None, 0.005, 0.0),  # the first batch: at the end of the turn
        (10.0, 9.0, 0.005, 0.0),  # the previous batch is older than the window
        (10.0, 9.998, 0.005, 0.003),  # within the window: until it ends
        (10.0, 10.0, 0.005, 0.005),
        (10.0, 9.999, 0.0, 0.0),  # no window
    ],
)
def test_a_batch_waits_for_the_window_only_right_after_another_batch(
    now: float, last_flush: float | None, window_s: float, delay: float
) -> None:
    assert flush_delay(now, last_flush, window_s) == pytest.approx(delay)


async def test_with_a_window_a_lone_write_is_written_at_once_and_the_next_waits(
    writer: Recorder,
) -> None:
    queue = WriteQueue(writer, window_s=3600)
    assert await queue.submit(1) == 10
    second = asyncio.create_task(queue.submit(2))
    third = asyncio.create_task(queue.submit(3))
    for _ in range(5):
        await asyncio.sleep(0)  # turns go by: the window holds the batch
    waited = list(writer.batches)

    queue.flush()

    assert waited == [[1]]
    assert (await second, await third) == (20, 30)
    assert writer.batches == [[1], [2, 3]]
