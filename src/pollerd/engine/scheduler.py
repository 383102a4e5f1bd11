"""The scheduling shell: APScheduler turns every job's slots into dispatches on the event loop.

APScheduler 3.11's ``AsyncIOScheduler`` keeps the timers; pollerd decides everything else. Each
job gets a :class:`_SlotTrigger` that fires at ``slot + jitter`` and remembers which slot each fire
time stands for, and every job runs on a :class:`_SlotExecutor` that only hands the slots to the
``on_slot`` callback. Nothing runs inside APScheduler, so its safety valves, which would drop or
refuse slots on their own, are switched off (see ``_JOB_OPTIONS``): overlap, concurrency and
catch-up are pollerd's decisions, taken by the runner that ``on_slot`` feeds.

``on_slot(job_id, slot)`` is called on the event loop, once per slot and in slot order, just after
the slot's fire time (later if the loop was busy: a late slot is still dispatched, never dropped).
It is called outside APScheduler's processing, so it may add, remove or move jobs; it must not
block. Slots not yet handed over when their job is removed or replaced are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, SchedulerEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from pollerd.config.schedule import EverySchedule, Schedule, jitter_offset_s, next_slot, utc_now
from pollerd.wire import format_time

logger = logging.getLogger(__name__)

SlotCallback = Callable[[str, datetime], None]
"""``(job_id, slot)``: called on the event loop; must not block."""

EXECUTOR = "pollerd-slots"
# Each run logs at INFO inside APScheduler; at 10k runs a second that alone makes it late.
APSCHEDULER_LOG_LEVEL = logging.WARNING
# APScheduler's valves would drop or refuse slots behind pollerd's back, so each is off, on purpose:
# - misfire_grace_time=None: a run later than the grace time (1 s by default) is otherwise dropped
#   with a "missed" warning; a busy loop or a past first slot must still dispatch every slot.
# - coalesce=False: several due runs are otherwise folded into one without any warning.
# - max_instances: a run is otherwise refused while the previous one "runs". Our executor returns
#   at once and keeps no instance count at all; the large value only documents the intent.
_JOB_OPTIONS: dict[str, Any] = {
    "misfire_grace_time": None,
    "coalesce": False,
    "max_instances": 1_000_000,
}


class _SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no type hints
    """Fires at each slot of a schedule plus the job's jitter; maps fire times back to slots."""

    def __init__(
        self, job_id: str, schedule: Schedule, tz: ZoneInfo, jitter_s: float, first: datetime
    ) -> None:
        self.job_id = job_id
        self.schedule = schedule
        self.tz = tz
        self.jitter_s = jitter_s
        self._first = first
        # Fire time -> slot, in the order computed. APScheduler asks for the next fire time after
        # a previous one (sometimes twice for the same one); entries before the last dispatched
        # fire time are dropped, so this holds a handful of entries.
        self._slots: dict[datetime, datetime] = {}

    def __str__(self) -> str:
        return f"pollerd {self.schedule.describe()}"

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            return self._remember(self._first)
        slot = self._following(self.slot_for(previous_fire_time))
        return None if slot is None else self._remember(slot)

    def slot_for(self, fire_time: datetime) -> datetime:
        slot = self._slots.get(fire_time)
        if slot is None:  # not expected: APScheduler only hands back fire times it got from here
            logger.warning(
                "job_id=%s: no slot is known for fire time %s; using the fire time as the slot",
                self.job_id,
                format_time(fire_time),
            )
            return fire_time.astimezone(UTC)
        return slot

    def restart_at(self, slot: datetime) -> datetime:
        """Make ``slot`` the next slot, forgetting the others; returns its fire time."""
        self._slots.clear()
        return self._remember(slot.astimezone(UTC))

    def forget_before(self, fire_time: datetime) -> None:
        """Drop the slots computed before ``fire_time``'s: they have been dispatched."""
        for earlier in list(self._slots):
            if earlier == fire_time:
                return
            del self._slots[earlier]

    def _following(self, slot: datetime) -> datetime | None:
        # An every-job continues every interval from its last slot, also after override_next.
        anchor = slot if isinstance(self.schedule, EverySchedule) else None
        return next_slot(self.schedule, self.tz, slot, anchor)

    def _remember(self, slot: datetime) -> datetime:
        fire_time = slot + timedelta(seconds=jitter_offset_s(self.job_id, slot, self.jitter_s))
        self._slots[fire_time] = slot
        return fire_time


DueCallback = Callable[[str, _SlotTrigger, list[datetime]], None]


class _SlotExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler ships no type hints
    """Hands due slots to pollerd instead of running anything."""

    def __init__(self, on_due: DueCallback) -> None:
        super().__init__()
        self._on_due = on_due

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # No instance count: nothing runs here, so there is never a "running instance" that could
        # make APScheduler refuse the next run (its max_instances check lives in the base method).
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        trigger: _SlotTrigger = job.trigger
        slots = [trigger.slot_for(fire_time) for fire_time in run_times]
        trigger.forget_before(run_times[-1])
        self._on_due(job.id, trigger, slots)


def _never_called() -> None:
    """The callable APScheduler requires of a job; the slot executor never calls it."""


class Scheduler:
    """Turns job schedules into ``on_slot(job_id, slot)`` calls; an async context manager."""

    def __init__(self, on_slot: SlotCallback, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._on_slot = on_slot
        self._clock = clock
        self._scheduler: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._triggers: dict[str, _SlotTrigger] = {}

    async def __aenter__(self) -> Scheduler:
        quiet = logging.getLogger("apscheduler")
        if quiet.level == logging.NOTSET:  # leave it alone if someone configured it on purpose
            quiet.setLevel(APSCHEDULER_LOG_LEVEL)
        self._loop = asyncio.get_running_loop()
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={EXECUTOR: _SlotExecutor(self._due)},
            job_defaults=_JOB_OPTIONS,
        )
        scheduler.start()
        self._scheduler = scheduler
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scheduler, self._scheduler = self._scheduler, None
        self._triggers.clear()  # slots already on their way are dropped by _deliver
        if scheduler is None:
            return
        stopped = asyncio.Event()

        def on_shutdown(event: SchedulerEvent) -> None:
            stopped.set()

        scheduler.add_listener(on_shutdown, EVENT_SCHEDULER_SHUTDOWN)
        # AsyncIOScheduler shuts down on the next turn of the loop, cancelling its timer there.
        scheduler.shutdown(wait=False)
        await stopped.wait()

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
        scheduler = self._require_running()
        first = next_slot(schedule, tz, self._clock() if after is None else after, anchor)
        if first is None:
            self.remove(job_id)
            return None
        trigger = _SlotTrigger(job_id, schedule, tz, jitter_s, first)
        self._triggers[job_id] = trigger
        scheduler.add_job(
            _never_called,
            trigger=trigger,
            id=job_id,
            name=job_id,
            executor=EXECUTOR,
            replace_existing=True,
            **_JOB_OPTIONS,
        )
        return first

    def remove(self, job_id: str) -> None:
        """Unschedule a job; slots not yet handed over are dropped. No error if it is absent."""
        self._triggers.pop(job_id, None)
        if self._scheduler is None:
            return
        try:
            self._scheduler.remove_job(job_id)
        except JobLookupError:
            pass

    def override_next(self, job_id: str, slot: datetime) -> None:
        """Make ``slot`` the job's next slot; an every-job then continues every interval from it.

        Does nothing if the job is not scheduled (removed, or an ``at`` that has fired).
        """
        trigger = self._triggers.get(job_id)
        if self._scheduler is None or trigger is None or self._scheduler.get_job(job_id) is None:
            logger.debug(
                "job_id=%s is not scheduled: next slot %s ignored", job_id, format_time(slot)
            )
            return
        fire_time = trigger.restart_at(slot)
        self._scheduler.modify_job(job_id, next_run_time=fire_time)

    def next_run_at(self, job_id: str) -> datetime | None:
        """The job's next fire time, jitter included, or None if it is not scheduled."""
        job = self._scheduler.get_job(job_id) if self._scheduler is not None else None
        if job is None or job.next_run_time is None:
            return None
        fire_time: datetime = job.next_run_time
        return fire_time.astimezone(UTC)

    def job_ids(self) -> list[str]:
        """The ids of the scheduled jobs, sorted."""
        if self._scheduler is None:
            return []
        return sorted(job.id for job in self._scheduler.get_jobs())

    def _require_running(self) -> AsyncIOScheduler:
        if self._scheduler is None:
            raise RuntimeError("the scheduler is not running: use it inside `async with Scheduler`")
        return self._scheduler

    def _due(self, job_id: str, trigger: _SlotTrigger, slots: list[datetime]) -> None:
        # Called inside APScheduler's processing, which updates the job right after: hand the
        # slots over on the next turn of the loop, where on_slot may change jobs safely.
        assert self._loop is not None
        self._loop.call_soon(self._deliver, job_id, trigger, slots)

    def _deliver(self, job_id: str, trigger: _SlotTrigger, slots: list[datetime]) -> None:
        for slot in slots:
            if self._triggers.get(job_id) is not trigger:
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
        finished = self._scheduler is not None and self._scheduler.get_job(job_id) is None
        if finished and self._triggers.get(job_id) is trigger:
            del self._triggers[job_id]  # an ``at`` job that has fired
