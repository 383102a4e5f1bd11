"""What the service records about ticks and jobs: the tick log and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pollerd.config.pollers import JobConfig
from pollerd.config.setup import Setup
from pollerd.engine.runner import TickOutcome
from pollerd.errors import PollerdError
from pollerd.ops.metrics import Metrics
from pollerd.ops.ticklog import log_outcome, log_skip, tick_logger
from pollerd.stores.base import Store


class TickRecorder:
    """Logs each outcome and skip, and keeps the per-job metrics in step with them."""

    def __init__(self, metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self._metrics = metrics
        self._clock = clock

    def outcome(self, job: JobConfig, outcome: TickOutcome) -> None:
        level = logging.INFO if outcome.ok else logging.WARNING
        if tick_logger.isEnabledFor(level):  # the arguments cost more than the check
            log_outcome(level, outcome)
        now = self._clock()
        lateness = max(0.0, (now - outcome.slot).total_seconds() - outcome.duration_s)
        self._metrics.tick_finished(job.id, job.kind, outcome.status, outcome.duration_s, lateness)
        if outcome.state is not None:
            open_until = outcome.state.breaker_open_until
            self._metrics.job_health(
                job.id,
                outcome.state.consecutive_errors,
                open_until is not None and open_until > now,
            )
        if outcome.reply is not None:
            self._metrics.events_published(job.kind, len(outcome.reply.events))

    def skip(self, job: JobConfig, plugin_id: str | None, slot: datetime, reason: str) -> None:
        log_skip(job.id, job.kind, plugin_id, slot, reason)
        self._metrics.slot_skipped(job.id, reason)

    async def refresh_job_gauges(self, store: Store, setup: Setup) -> None:
        """Jobs by state for the metrics (paused or broken by the CLI or a plugin's reply)."""
        from pollerd.ops.views import job_state

        try:
            states = {state.job_id: state for state in await store.all()}
        except PollerdError:
            return  # readiness reports the store
        counts = {"active": 0, "paused": 0, "broken": len(setup.broken), "disabled": 0}
        for job in setup.jobs:
            counts[job_state(job, states.get(job.id))[0]] += 1
        self._metrics.jobs_by_state(counts)
