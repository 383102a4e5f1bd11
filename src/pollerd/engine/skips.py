"""Which skipped slots are worth a WARNING, and what each job has skipped since start.

A slot skipped because the job's previous tick still runs (``overlap``) or because a slot was
already waiting (``buffer_full``) is a slot lost: the job cannot keep up with its schedule (often
because its plugin's ``max_concurrent_ticks`` makes ticks queue). Those were counted at INFO only;
now the first one warns at once and later ones are gathered into at most one WARNING per job per
``WARN_INTERVAL_S``. Skips that follow a state the operator already sees (paused, broken, breaker
open, shutdown, catch-up policy) only count. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WARN_INTERVAL_S = 60.0
LOST_SLOT_REASONS = frozenset({"overlap", "buffer_full"})


@dataclass(frozen=True, slots=True)
class SkipSummary:
    """What a job skipped since pollerd started (``pollerd jobs``)."""

    count: int
    last_reason: str
    last_at: datetime


@dataclass(frozen=True, slots=True)
class SkipWarning:
    """Lost slots to report now: ``count`` of them since ``since`` (the previous warning)."""

    count: int
    since: datetime


@dataclass
class _JobSkips:
    count: int
    last_reason: str
    last_at: datetime
    unreported: int = 0
    unreported_since: datetime | None = None
    warned_at: datetime | None = None


class SkipWatch:
    """Counts each job's skipped slots and says when a lost one deserves a WARNING."""

    def __init__(self, warn_interval_s: float = WARN_INTERVAL_S) -> None:
        self._interval = timedelta(seconds=warn_interval_s)
        self._jobs: dict[str, _JobSkips] = {}

    def record(self, job_id: str, reason: str, now: datetime, count: int = 1) -> SkipWarning | None:
        """Count ``count`` skipped slots; a warning to log now, or None (counted for later)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            entry = self._jobs[job_id] = _JobSkips(0, reason, now)
        entry.count += count
        entry.last_reason, entry.last_at = reason, now
        if reason not in LOST_SLOT_REASONS:
            return None
        if entry.unreported_since is None:
            entry.unreported_since = now
        entry.unreported += count
        if entry.warned_at is not None and now - entry.warned_at < self._interval:
            return None
        warning = SkipWarning(entry.unreported, entry.unreported_since)
        entry.unreported, entry.unreported_since, entry.warned_at = 0, None, now
        return warning

    def summary(self, job_id: str) -> SkipSummary | None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        return SkipSummary(entry.count, entry.last_reason, entry.last_at)

    def summaries(self) -> dict[str, SkipSummary]:
        return {
            job_id: SkipSummary(e.count, e.last_reason, e.last_at)
            for job_id, e in self._jobs.items()
        }

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
