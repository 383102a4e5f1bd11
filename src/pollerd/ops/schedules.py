"""How `pollerd check` shows each job's schedule: what it means and when it fires next."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pollerd.config.duration import format_duration
from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import EverySchedule, Schedule, next_slots
from pollerd.engine.phase import first_slot_bounds

logger = logging.getLogger(__name__)

NEXT_FIRES = 3
_JUST_BEFORE = timedelta(microseconds=1)


def job_schedules(jobs: Iterable[JobConfig], now: datetime) -> list[dict[str, Any]]:
    """Per job: id, schedule, time zone, jitter and the next fire times (ISO, in its zone).

    ``every`` jobs fire on their own grid (phase from the job id, or aligned), computed per
    job; identical cron and at schedules are computed once (fleets share a few cron lines;
    10,000 jobs stay fast). Times are slots, without jitter.
    """
    computed: dict[tuple[Schedule, str], list[str]] = {}
    rows = []
    for job in jobs:
        zone = str(job.timezone)
        key = (job.schedule, zone)
        if isinstance(job.schedule, EverySchedule):
            computed[key] = _next_grid_fires(job, now)
        elif key not in computed:
            computed[key] = _next_fires(job.schedule, job.timezone, now)
        rows.append(
            {
                "id": job.id,
                "schedule": job.schedule.describe(),
                "timezone": zone,
                "jitter_s": job.jitter_s,
                "next": computed[key],
            }
        )
    return rows


def _next_grid_fires(job: JobConfig, now: datetime) -> list[str]:
    after, anchor = first_slot_bounds(
        job.id, job.schedule, align=job.align, last_slot=None, now=now
    )
    slots = next_slots(job.schedule, job.timezone, after, NEXT_FIRES, anchor=anchor)
    return [slot.isoformat() for slot in slots]


def _next_fires(schedule: Schedule, zone: ZoneInfo, now: datetime) -> list[str]:
    slots = next_slots(schedule, zone, now - _JUST_BEFORE, NEXT_FIRES)
    return [slot.astimezone(zone).isoformat() for slot in slots]


def format_schedule(row: dict[str, Any]) -> str:
    """``job <id>: <schedule> (<zone>)[, jitter]; next: ...`` for the text output."""
    text = f"job {row['id']}: {row['schedule']}"
    if not row["schedule"].startswith("every"):
        text += f" ({row['timezone']})"
    if row["jitter_s"]:
        text += f" + up to {format_duration(row['jitter_s'])} jitter"
    fires = ", ".join(row["next"]) or "never (its time has passed)"
    return f"{text}; next: {fires}"
