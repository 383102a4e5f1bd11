"""The Scheduler (one timer heap): exact slots, jitter, overrides, removal, no drops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pollerd.config.schedule import AtSchedule, EverySchedule, jitter_offset_s, utc_now
from pollerd.engine.scheduler import Scheduler

TAKE_TIMEOUT_S = 5.0
TICK = timedelta(milliseconds=50)
FAST = EverySchedule(TICK.total_seconds())
SLOW = EverySchedule(3600)

Dispatch = tuple[str, datetime]


@pytest.fixture(autouse=True)
def no_apscheduler_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """APScheduler reports dropped ("missed") or refused runs only in its log, not as warnings;
    an exception escaping its processing shows only in the event loop's log."""
    yield
    loud = [
        record
        for record in caplog.get_records("call")
        if record.name.split(".")[0] in {"apscheduler", "asyncio"}
        and record.levelno >= logging.WARNING
    ]
    assert loud == []


class Slots:
    """Records dispatches; tests await them with a timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Dispatch] = asyncio.Queue()
        self.seen: list[Dispatch] = []
        self.received_at: list[datetime] = []

    def __call__(self, job_id: str, slot: datetime) -> None:
        self.seen.append((job_id, slot))
        self.received_at.append(utc_now())
        self.queue.put_nowait((job_id, slot))

    async def take(self, count: int, job_id: str | None = None) -> list[datetime]:
        """The next ``count`` slots (of ``job_id`` only, when given)."""
        slots: list[datetime] = []
        async with asyncio.timeout(TAKE_TIMEOUT_S):
            while len(slots) < count:
                got_id, slot = await self.queue.get()
                if job_id is None or got_id == job_id:
                    slots.append(slot)
        return slots


def grid(anchor: datetime, step: timedelta, first: int, count: int) -> list[datetime]:
    return [anchor + step * k for k in range(first, first + count)]


async def test_an_every_job_dispatches_the_exact_grid_slots() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        anchor = utc_now()
        first = scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        got = await slots.take(4)
    assert first == anchor + TICK
    assert got == grid(anchor, TICK, 1, 4)
    assert {job_id for job_id, _ in slots.seen} == {"inbox"}


async def test_an_every_job_anchored_at_now_fires_right_away() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        now = utc_now()
        first = scheduler.add("inbox", FAST, UTC, after=now - timedelta(microseconds=1), anchor=now)
        got = await slots.take(2)
    assert first == now
    assert got == [now, now + TICK]


async def test_the_clock_gives_the_default_start() -> None:
    start = utc_now() - timedelta(hours=1)
    async with Scheduler(Slots(), clock=lambda: start) as scheduler:
        first = scheduler.add("inbox", SLOW, UTC)
    assert first == start + timedelta(hours=1)


async def test_jittered_fire_times_still_report_unjittered_slots() -> None:
    slots = Slots()
    jitter_s = 0.04
    async with Scheduler(slots) as scheduler:
        anchor = utc_now()
        first = scheduler.add("inbox", FAST, UTC, jitter_s=jitter_s, after=anchor, anchor=anchor)
        assert first is not None
        fire_at = scheduler.next_run_at("inbox")
        assert fire_at is not None and scheduler.next_fire_s("inbox") == fire_at.timestamp()
        assert scheduler.next_fire_s("unknown") is None
        got = await slots.take(3)
    assert fire_at == first + timedelta(seconds=jitter_offset_s("inbox", first, jitter_s))
    assert fire_at != first
    assert got == grid(anchor, TICK, 1, 3)
    for slot, received in zip(got, slots.received_at, strict=True):
        assert received >= slot + timedelta(seconds=jitter_offset_s("inbox", slot, jitter_s))


async def test_override_next_moves_the_next_slot_and_the_grid_follows() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        scheduler.add("inbox", SLOW, UTC)
        moved = utc_now() + TICK
        scheduler.override_next("inbox", moved)
        assert scheduler.next_run_at("inbox") == moved
        got = await slots.take(1)
        assert scheduler.next_run_at("inbox") == moved + timedelta(hours=1)
    assert got == [moved]


async def test_override_next_of_an_unknown_job_does_nothing() -> None:
    async with Scheduler(Slots()) as scheduler:
        scheduler.override_next("ghost", utc_now())
        assert scheduler.job_ids() == []


async def test_remove_stops_dispatches() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        scheduler.add("other", FAST, UTC, after=anchor, anchor=anchor)
        await slots.take(1, "inbox")
        scheduler.remove("inbox")
        removed_at = len(slots.seen)
        await slots.take(4, "other")  # four more ticks in which "inbox" would have fired
        scheduler.remove("never-added")
        assert scheduler.job_ids() == ["other"]
    assert "inbox" not in {job_id for job_id, _ in slots.seen[removed_at:]}


async def test_re_adding_a_job_replaces_it() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        scheduler.add("inbox", SLOW, UTC)
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        got = await slots.take(2)
        assert scheduler.job_ids() == ["inbox"]
    assert got == grid(anchor, TICK, 1, 2)


async def test_an_at_in_the_past_is_never_dispatched() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        now = utc_now()
        first = scheduler.add("once", AtSchedule(now - timedelta(seconds=1)), UTC, after=now)
        scheduler.add("barrier", FAST, UTC, after=now, anchor=now)
        await slots.take(3, "barrier")
        assert scheduler.job_ids() == ["barrier"]
    assert first is None
    assert "once" not in {job_id for job_id, _ in slots.seen}


async def test_an_at_in_the_future_is_dispatched_once_then_unscheduled() -> None:
    slots = Slots()
    async with Scheduler(slots) as scheduler:
        now = utc_now()
        moment = now + TICK
        scheduler.add("once", AtSchedule(moment), UTC, after=now)
        scheduler.add("barrier", FAST, UTC, after=now, anchor=now)
        assert await slots.take(1, "once") == [moment]
        await slots.take(3, "barrier")
        assert scheduler.job_ids() == ["barrier"]
        assert scheduler.next_run_at("once") is None
    assert [slot for job_id, slot in slots.seen if job_id == "once"] == [moment]


async def test_late_slots_are_all_dispatched_not_dropped_as_missed() -> None:
    slots = Slots()
    step = timedelta(milliseconds=500)
    async with Scheduler(slots) as scheduler:
        anchor = utc_now() - timedelta(seconds=2)  # up to 1.5 s late: past APScheduler's grace
        scheduler.add("inbox", EverySchedule(0.5), UTC, after=anchor, anchor=anchor)
        got = await slots.take(4)
    assert got == grid(anchor, step, 1, 4)


async def test_a_stalled_loop_makes_no_slot_coalesce_or_get_refused() -> None:
    slots = Slots()

    def stall_once(job_id: str, slot: datetime) -> None:
        if not slots.seen:
            time.sleep(0.3)  # blocks the loop: about six slots fall due at once
        slots(job_id, slot)

    async with Scheduler(stall_once) as scheduler:
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        got = await slots.take(10)
    assert got == grid(anchor, TICK, 1, 10)


async def test_the_callback_may_change_jobs_while_it_is_called() -> None:
    slots = Slots()
    scheduler = Scheduler(lambda job_id, slot: react(job_id, slot))

    def react(job_id: str, slot: datetime) -> None:
        slots(job_id, slot)
        if job_id == "inbox":
            scheduler.remove("inbox")
            scheduler.add("next", FAST, UTC, after=slot, anchor=slot)

    async with scheduler:
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        got = await slots.take(3, "next")
        assert scheduler.job_ids() == ["next"]
    assert got == grid(anchor, TICK, 2, 3)
    assert [slot for job_id, slot in slots.seen if job_id == "inbox"] == [anchor + TICK]


async def test_a_failing_callback_is_logged_and_scheduling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = Slots()
    calls = 0

    def fail_first(job_id: str, slot: datetime) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        slots(job_id, slot)

    async with Scheduler(fail_first) as scheduler:
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        got = await slots.take(2)
    assert got == grid(anchor, TICK, 2, 2)
    failures = [r for r in caplog.records if r.name == "pollerd.engine.scheduler" and r.exc_info]
    assert len(failures) == 1
    assert "job_id=inbox" in failures[0].getMessage()


async def test_leaving_the_context_leaves_no_task_and_no_timer() -> None:
    before = asyncio.all_tasks()
    old = Slots()
    async with Scheduler(old) as scheduler:
        anchor = utc_now()
        scheduler.add("inbox", FAST, UTC, after=anchor, anchor=anchor)
        await old.take(1)
    seen_at_exit = len(old.seen)
    assert asyncio.all_tasks() == before
    assert scheduler.job_ids() == []
    assert scheduler.next_run_at("inbox") is None

    barrier = Slots()  # a fresh scheduler's ticks measure time in which the old one would fire
    async with Scheduler(barrier) as fresh:
        now = utc_now()
        fresh.add("barrier", FAST, UTC, after=now, anchor=now)
        await barrier.take(4)
    assert len(old.seen) == seen_at_exit


async def test_adding_outside_the_context_is_an_error() -> None:
    scheduler = Scheduler(Slots())
    with pytest.raises(RuntimeError) as caught:
        scheduler.add("inbox", SLOW, UTC)
    assert "async with" in str(caught.value)
