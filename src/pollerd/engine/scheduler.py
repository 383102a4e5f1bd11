"""The scheduling shell: one timer for all jobs turns their slots into ``on_slot`` calls.

Every scheduled job has one entry in a heap ordered by its next fire time (``slot + jitter``);
one event loop timer is armed for the earliest, rounded up to a grid of ``BATCH_S``. When it
fires, every entry that is due is taken off the heap, its next slot is computed and pushed back,
and then its slot is handed over. So a wake-up costs a heap pop and push per due slot, whatever
the number of jobs, and the jobs due within one batch step are handled in one wake-up.

APScheduler 3 kept these timers before: one job object, trigger and executor call per job, and a
wake-up whose cost grew with the number of jobs sharing a fire time (its job store searches a
list for each job it updates). At 10,000 jobs that machinery was a third of pollerd's CPU; the
design notes have the figures.

``on_slot(job_id, slot)`` is called on the event loop, once per slot and in slot order, at or
just after the slot's fire time (later if the loop was busy: a late slot is still dispatched,
never dropped, and the slots a stalled loop missed all come, oldest first). It may add, remove
or move jobs; it must not block. Slots not yet handed over when their job is removed or
replaced are dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from zoneinfo import ZoneInfo

from pollerd.config.schedule import EverySchedule, Schedule, jitter_offset_s, next_slot, utc_now
from pollerd.wire import format_time

logger = logging.getLogger(__name__)

SlotCallback = Callable[[str, datetime], None]
"""``(job_id, slot)``: called on the event loop; must not block."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)
_IDLE_RETRY_S = 0.001
# Wake-ups are rounded up to this grid of loop time: the jobs due within one step are handed
# over together, so their requests leave in one socket write, their replies come back in few
# reads and their commits share one transaction. It adds half a step of lateness on average.
# Measured at 10,000 jobs every 10 s, the grids run in turn on one tree (pollerd's CPU per tick,
# plugin-side lateness p99): 10 ms 295–326 µs, 15–17 ms; 20 ms 234–291 µs, 25–27 ms; 30 ms
# 227–275 µs, 36–39 ms; 50 ms 200–210 µs, 56 ms. 20 ms keeps p99 well inside 50 ms.
BATCH_S = 0.02


class _Entry:
    """One scheduled job: its schedule and the next slot with its fire time."""

    __slots__ = ("job_id", "schedule", "tz", "jitter_s", "step", "slot", "fire_us", "generation")

    def __init__(self, job_id: str, schedule: Schedule, tz: ZoneInfo, jitter_s: float) -> None:
        self.job_id = job_id
        self.schedule = schedule
        self.tz = tz
        self.jitter_s = jitter_s
        # An every-job's interval, computed once: most jobs are every-jobs.
        self.step = (
            timedelta(microseconds=schedule.interval_us)
            if isinstance(schedule, EverySchedule)
            else None
        )
        self.slot = _EPOCH
        self.fire_us = 0  # slot + jitter, in µs since the Unix epoch: the heap's key
        self.generation = 0  # bumped when the next slot moves: older heap items are stale

    def move_to(self, slot: datetime) -> None:
        self.slot = slot
        if self.jitter_s:
            slot += timedelta(seconds=jitter_offset_s(self.job_id, slot, self.jitter_s))
        self.fire_us = (slot - _EPOCH) // _ONE_US
        self.generation += 1

    def following(self) -> datetime | None:
        """The slot after the current one; an every-job continues every interval from it."""
        if self.step is not None:
            return self.slot + self.step
        return next_slot(self.schedule, self.tz, self.slot)


_HeapItem = tuple[int, int, int, _Entry]  # (fire_us, sequence, generation, entry)


class Scheduler:
    """Turns job schedules into ``on_slot(job_id, slot)`` calls; an async context manager."""

    def __init__(self, on_slot: SlotCallback, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._on_slot = on_slot
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entries: dict[str, _Entry] = {}
        self._heap: list[_HeapItem] = []
        self._sequence = 0  # ties between equal fire times go to the first pushed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_us: int | None = None  # the fire time the timer is armed for
        self._rearm_pending = False

    async def __aenter__(self) -> Scheduler:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._disarm()
        self._loop = None
        for entry in self._entries.values():
            entry.generation += 1  # slots in hand are dropped
        self._entries.clear()
        self._heap.clear()

    def add(
        self,
        job_id: str,
        schedule: Schedule,
        tz: ZoneInfo,
        *,
        jitter_s: float = 0.0,
        after: datetime | None = None,
        anchor: datetime | None = None,
    ) -> datetime | None:
        """Schedule a job from ``next_slot(schedule, tz, after, anchor)``; returns that first slot.

        ``after`` defaults to now. A first slot in the past is dispatched at once, followed by every
        later slot up to now: apply catch-up before, and pass ``after=now`` (with ``anchor`` = the
        last slot to keep an every-job on its grid). None means there is nothing to run (an ``at``
        in the past) and the job is not scheduled. Adding an existing id replaces that job.
        """
        self._require_running()
        first = next_slot(schedule, tz, self._clock() if after is None else after, anchor)
        if first is None:
            self.remove(job_id)
            return None
        entry = _Entry(job_id, schedule, tz, jitter_s)
        self._entries[job_id] = entry
        entry.move_to(first)
        self._push(entry)
        return first

    def remove(self, job_id: str) -> None:
        """Unschedule a job; slots not yet handed over are dropped. No error if it is absent."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            entry.generation += 1  # its heap item is skipped, its slots in hand are dropped

    def override_next(self, job_id: str, slot: datetime) -> None:
        """Make ``slot`` the job's next slot; an every-job then continues every interval from it.

        Does nothing if the job is not scheduled (removed, or an ``at`` that has fired).
        """
        entry = self._entries.get(job_id)
        if entry is None or self._loop is None:
            logger.debug(
                "job_id=%s is not scheduled: next slot %s ignored", job_id, format_time(slot)
            )
            return
        entry.move_to(slot.astimezone(UTC))
        self._push(entry)

    def next_run_at(self, job_id: str) -> datetime | None:
        """The job's next fire time, jitter included, or None if it is not scheduled."""
        entry = self._entries.get(job_id)
        return None if entry is None else _from_us(entry.fire_us)

    def next_fire_s(self, job_id: str) -> float | None:
        """``next_run_at`` in Unix seconds, without building a datetime (for a scrape)."""
        entry = self._entries.get(job_id)
        return None if entry is None else entry.fire_us / _US_PER_S

    def job_ids(self) -> list[str]:
        """The ids of the scheduled jobs, sorted."""
        return sorted(self._entries)

    def _require_running(self) -> None:
        if self._loop is None:
            raise RuntimeError("the scheduler is not running: use it inside `async with Scheduler`")

    def _push(self, entry: _Entry) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (entry.fire_us, self._sequence, entry.generation, entry))
        if self._timer_us is None or entry.fire_us < self._timer_us:
            self._rearm_soon()

    def _rearm_soon(self) -> None:
        """Re-arm the timer on the next turn of the loop: adding many jobs arms it once."""
        if not self._rearm_pending and self._loop is not None:
            self._rearm_pending = True
            self._loop.call_soon(self._rearm)

    def _rearm(self, min_delay_s: float = 0.0) -> None:
        self._rearm_pending = False
        self._disarm()
        heap = self._heap
        while heap:  # drop stale items at the top so the timer is not armed for nothing
            _, _, generation, entry = heap[0]
            if entry.generation == generation and self._entries.get(entry.job_id) is entry:
                break
            heapq.heappop(heap)
        loop = self._loop
        if not heap or loop is None:
            return
        fire_us = heap[0][0]
        delay_s = (fire_us - _to_us(self._clock())) / _US_PER_S
        self._timer_us = fire_us
        when = loop.time() + max(delay_s, min_delay_s)
        self._timer = loop.call_at(math.ceil(when / BATCH_S) * BATCH_S, self._wake)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_us = None

    def _wake(self) -> None:
        self._timer = None
        self._timer_us = None
        heap = self._heap
        now_us = _to_us(self._clock())
        due: list[tuple[_Entry, int, datetime]] = []
        while heap and heap[0][0] <= now_us:
            _, _, generation, entry = heapq.heappop(heap)
            if entry.generation != generation or self._entries.get(entry.job_id) is not entry:
                continue  # moved or removed since it was pushed
            slot = entry.slot
            following = entry.following()
            if following is None:
                del self._entries[entry.job_id]  # an ``at`` job that has fired
            else:
                entry.move_to(following)
                self._sequence += 1
                heapq.heappush(heap, (entry.fire_us, self._sequence, entry.generation, entry))
            due.append((entry, entry.generation, slot))
        # Woken before the first fire time (the loop's timer resolution, or an injected clock
        # that did not move): wait a little instead of spinning.
        self._rearm(0.0 if due else _IDLE_RETRY_S)
        for entry, generation, slot in due:
            self._deliver(entry, generation, slot)

    def _deliver(self, entry: _Entry, generation: int, slot: datetime) -> None:
        job_id = entry.job_id
        current = self._entries.get(job_id)
        if current is not entry and not (current is None and entry.generation == generation):
            logger.debug(
                "job_id=%s was removed or replaced: slot %s dropped", job_id, format_time(slot)
            )
            return
        try:
            self._on_slot(job_id, slot)
        except Exception:
            logger.exception(
                "job_id=%s slot=%s: the slot callback failed", job_id, format_time(slot)
            )


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
