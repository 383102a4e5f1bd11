"""Catch-up at start or when a replica takes the lead: the missed slots a job runs now."""

from __future__ import annotations

import logging
from datetime import datetime

from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import slots_between
from pollerd.engine import policy
from pollerd.ops.metrics import Metrics
from pollerd.stores.base import JobState

logger = logging.getLogger(__name__)

CATCHUP_SCAN_LIMIT = 1_000  # catch-up looks at most this many missed slots back


def catchup(job: JobConfig, state: JobState, now: datetime, metrics: Metrics) -> list[datetime]:
    """The slots missed since the job's stored last slot that its catch-up policy runs."""
    last = state.last_scheduled_at
    if last is None:
        return []
    missed = slots_between(job.schedule, job.timezone, last, now, CATCHUP_SCAN_LIMIT)
    run, dropped = policy.catchup_slots(missed, job.catchup, job.max_catchup)
    if missed:
        logger.info(
            "job_id=%s missed %d slot(s) while down: catch-up %s runs %d, drops %d",
            job.id,
            len(missed),
            job.catchup,
            len(run),
            dropped,
        )
    if dropped:
        metrics.slot_skipped(job.id, "catchup_dropped", dropped)
    return run
