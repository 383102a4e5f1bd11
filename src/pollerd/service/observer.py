"""What the service records about ticks and jobs: the tick log and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import AtSchedule, EverySchedule, next_slots
from pollerd.config.setup import Setup
from pollerd.engine.runner import TickOutcome
from pollerd.engine.skips import WARN_INTERVAL_S, SkipWarning, SkipWatch
from pollerd.errors import PollerdError
from pollerd.ops.metrics import JobTimes, Metrics
from pollerd.ops.ticklog import log_outcome, log_skip, tick_logger
from pollerd.stores.base import JobState, Store

NextFireS = Callable[[str], float | None]  # a job's next fire time in Unix seconds


def nominal_interval_s(job: JobConfig, now: datetime) -> float | None:
    """An ``every`` job's interval; for cron, the gap between its next two slots; None for at."""
    if isinstance(job.schedule, EverySchedule):
        return job.schedule.interval_s
    if isinstance(job.schedule, AtSchedule):
        return None
    first, *rest = next_slots(job.schedule, job.timezone, now, 2) or [now]
    return (rest[0] - first).total_seconds() if rest else None


# Lost-slot warnings are not tick lines: `pollerd.tick` keeps one line per tick or skipped slot.
slots_logger = logging.getLogger("pollerd.slots")


class TickRecorder:
    """Logs each outcome and skip, and keeps the per-job metrics in step with them.

    It also keeps the latest known state of every job (from the store every refresh, and from
    each committed tick in between) for the series computed at scrape time.
    """

    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], datetime],
        plugin_full: Callable[[str | None], bool] = lambda plugin_id: False,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._plugin_full = plugin_full  # all of a plugin's max_concurrent_ticks places taken
        self._states: dict[str, JobState] = {}
        self._held: list[JobState] = []  # paused or broken at the last refresh
        self._counted: Setup | None = None  # the setup the job gauges were counted for
        self._intervals: dict[str, tuple[str, float | None]] = {}  # job id → (config hash, s)
        self.skips = SkipWatch()

    def outcome(self, job: JobConfig, outcome: TickOutcome) -> None:
        level = logging.INFO if outcome.ok else logging.WARNING
        if tick_logger.isEnabledFor(level):  # the arguments cost more than the check
            log_outcome(level, outcome)
        now = self._clock()
        self._metrics.tick_finished(
            job.id, job.kind, outcome.status, outcome.duration_s, outcome.lateness_s
        )
        if outcome.state is not None:
            self._states[job.id] = outcome.state
            open_until = outcome.state.breaker_open_until
            self._metrics.job_health(
                job.id,
                outcome.state.consecutive_errors,
                open_until is not None and open_until > now,
            )
        if outcome.reply is not None:
            self._metrics.events_published(job.kind, len(outcome.reply.events))
            self._metrics.events_duplicate(job.kind, outcome.duplicates)

    def skip(self, job: JobConfig, plugin_id: str | None, slot: datetime, reason: str) -> None:
        """Log and count a skipped slot; a lost one (overlap) also warns, rate-limited per job."""
        log_skip(job.id, job.kind, plugin_id, slot, reason)
        self._metrics.slot_skipped(job.id, reason)
        warning = self.skips.record(job.id, reason, self._clock())
        if warning is not None:
            log_lost_slots(job, plugin_id, reason, warning, self._plugin_full(plugin_id))

    def forget(self, job_id: str) -> None:
        """A job is gone: drop its metric series and its skip counts."""
        self._metrics.forget_job(job_id)
        self.skips.forget(job_id)

    async def refresh_job_gauges(self, store: Store, setup: Setup) -> None:
        """Jobs by state for the metrics (paused or broken by the CLI or a plugin's reply)."""
        from pollerd.ops.views import job_state

        try:
            held = await store.held()  # paused or broken: usually few, whatever the job count
            if held == self._held and setup is self._counted:
                return
            # A job paused or broken before and not now was changed by the CLI (resumed) or
            # by a reload: read it again. The others' states come from their commits.
            now_held = {state.job_id for state in held}
            for gone in {s.job_id for s in self._held} - now_held:
                state = await store.get(gone)
                if state is not None:
                    self._states[gone] = state
        except PollerdError:
            return  # readiness reports the store
        self._states.update((state.job_id, state) for state in held)
        self._held, self._counted = held, setup
        counts = {"active": 0, "paused": 0, "broken": len(setup.broken), "disabled": 0}
        for job in setup.jobs:
            counts[job_state(job, self._states.get(job.id))[0]] += 1
        self._metrics.jobs_by_state(counts)

    def seed(self, states: Mapping[str, JobState]) -> None:
        """The states read when jobs are added (start-up, reload): the base the commits update."""
        self._states.update(states)

    def job_times(self, setup: Setup, next_fire_s: NextFireS) -> Iterator[JobTimes]:
        """Last success, next run and interval of every runnable job, as a scrape shows them,
        computed as they are read (a scrape reads them a slice at a time).

        Only active jobs have a next run: an alert joined on it ignores paused and broken jobs.
        """
        from pollerd.ops.views import job_state

        now = self._clock()
        for job in setup.jobs:
            state = self._states.get(job.id)
            success = state.last_success_at if state else None
            active = job_state(job, state)[0] == "active"
            yield JobTimes(
                job_id=job.id,
                last_success_s=success.timestamp() if success else None,
                next_run_s=next_fire_s(job.id) if active else None,
                interval_s=self._interval(job, now),
            )

    def _interval(self, job: JobConfig, now: datetime) -> float | None:
        known = self._intervals.get(job.id)
        if known is None or known[0] != job.config_hash:
            known = (job.config_hash, nominal_interval_s(job, now - timedelta(microseconds=1)))
            self._intervals[job.id] = known
        return known[1]


def log_lost_slots(
    job: JobConfig, plugin_id: str | None, reason: str, warning: SkipWarning, plugin_full: bool
) -> None:
    """One WARNING for the slots a job lost since the previous one (at most one a minute)."""
    why = f"its previous tick was still running (overlap: {job.overlap})"
    if plugin_full:
        why += (
            f"; plugin {plugin_id} had all its max_concurrent_ticks places taken, so ticks queue "
            "for one"
        )
    slots_logger.warning(
        "job_id=%s plugin=%s lost %d slot(s) since %s: %s. The job cannot keep up with its "
        "schedule: raise the plugin's max_concurrent_ticks, shorten its ticks or lengthen the "
        "schedule (at most one such warning per job every %gs; every skip is counted in "
        "pollerd_slots_skipped_total and `pollerd jobs`)",
        job.id,
        plugin_id,
        warning.count,
        warning.since.isoformat(),
        why,
        WARN_INTERVAL_S,
        extra={"job_id": job.id, "plugin": plugin_id, "lost_slots": warning.count},
    )
