"""Where an every-job's slots fall: spread over the interval by a hash of the job id, or aligned.

Jobs with the same interval would otherwise all fire in the same instant (a herd that queues
behind the plugins' concurrency limits). Each every-job's grid is instead shifted by a phase in
``[0, interval)`` derived from its id: deterministic, so a restart, a reload and
``pollerd jobs`` all agree on the fire times, and spread evenly over the interval across many
jobs. A job with ``align: true`` has phase 0: its slots are the multiples of the interval since
the Unix epoch (UTC), such as every 10 s on :00, :10, :20.

The first slot of a job is then the next point of its grid, whether it has run before or not,
so a job that never ran no longer ticks at start: it ticks within one interval.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta

from pollerd.config.schedule import EverySchedule, Schedule

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HASH_BYTES = 8


def phase_us(job_id: str, interval_us: int) -> int:
    """The job's phase in ``[0, interval_us)`` microseconds, from a SHA-256 of its id."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") % interval_us


def grid_anchor(job_id: str, schedule: EverySchedule, *, align: bool) -> datetime:
    """A point of the job's grid: the epoch, shifted by its phase unless it is aligned."""
    offset_us = 0 if align else phase_us(job_id, schedule.interval_us)
    return EPOCH + timedelta(microseconds=offset_us)


def first_slot_bounds(
    job_id: str,
    schedule: Schedule,
    *,
    align: bool,
    last_slot: datetime | None,
    now: datetime,
) -> tuple[datetime, datetime | None]:
    """``(after, anchor)`` for ``next_slot``: where a job's schedule resumes at start or reload.

    The next slot is strictly after ``now`` and after the last slot that was due (catch-up of
    the missed ones is decided separately); an every-job's comes from its grid.
    """
    after = max(now, last_slot) if last_slot is not None else now
    if isinstance(schedule, EverySchedule):
        return after, grid_anchor(job_id, schedule, align=align)
    return after, None
