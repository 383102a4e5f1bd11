"""Work cut into slices with turns of the event loop between them (pollerd.ops.slices)."""

from __future__ import annotations

import asyncio
import itertools
import json

from pollerd.ops import slices


class Turns:
    """Counts the turns the event loop takes while it runs."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    def stop(self) -> None:
        self._task.cancel()


def ticking_clock(step_s: float) -> itertools.count[float]:
    return itertools.count(0.0, step_s)


async def test_each_gives_every_item_in_order_and_the_loop_a_turn_per_slice_of_time() -> None:
    clock = ticking_clock(slices.SLICE_S / 4)  # each item "costs" a quarter of a slice
    turns = Turns()

    seen = [item async for item in slices.each(range(100), clock=clock.__next__)]
    during = turns.count
    turns.stop()

    assert seen == list(range(100))
    assert 100 // 4 - 2 <= during <= 100 // 4 + 2


async def test_each_lets_the_loop_wait_when_the_work_is_quick() -> None:
    turns = Turns()

    seen = [item async for item in slices.each(range(100), clock=lambda: 0.0)]
    during = turns.count
    turns.stop()

    assert seen == list(range(100))
    assert during == 0


def test_chunks_cut_a_sequence_or_an_iterator_into_lists_of_the_size() -> None:
    assert list(slices.chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(slices.chunks(iter("abcd"), 2)) == [["a", "b"], ["c", "d"]]
    assert list(slices.chunks([], 3)) == []


async def test_json_array_writes_what_json_dumps_writes() -> None:
    rows = [
        {"id": f"job{index}", "next_runs": ["2026-12-02T12:00:00Z"], "n": index}
        for index in range(333)
    ]

    assert await slices.json_array(rows) == json.dumps(rows).encode()
    assert await slices.json_array([]) == b"[]"
    assert json.loads(await slices.json_array(iter(rows))) == rows


async def test_joined_text_is_the_pieces_in_order() -> None:
    assert await slices.joined(iter(["a", "", "b", "c"])) == "abc"
