"""`pollerd jobs` shows the fire times the scheduler uses: phase and jitter included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import EverySchedule, jitter_offset_s, next_slot
from pollerd.engine.phase import first_slot_bounds
from pollerd.ops.views import NEXT_RUNS, upcoming
from pollerd.stores.base import JobState

NOW = datetime(2026, 11, 22, 8, 0, 3, tzinfo=UTC)
EVERY = EverySchedule(60)


def scheduled_first(job: JobConfig, last: datetime | None) -> datetime:
    after, anchor = first_slot_bounds(job.id, EVERY, align=job.align, last_slot=last, now=NOW)
    slot = next_slot(EVERY, job.timezone, after, anchor)
    assert slot is not None
    return slot


def test_next_runs_of_a_job_that_never_ran_start_at_its_phase() -> None:
    job = JobConfig(id="inbox", kind="k", schedule=EVERY)
    first = scheduled_first(job, None)

    assert upcoming(job, None, NOW) == [first + timedelta(minutes=k) for k in range(NEXT_RUNS)]
    assert first != NOW + timedelta(minutes=1)  # not on the grid of the start


def test_next_runs_include_the_jitter_of_each_slot() -> None:
    job = JobConfig(id="inbox", kind="k", schedule=EVERY, jitter_s=5.0)
    first = scheduled_first(job, None)
    slots = [first + timedelta(minutes=k) for k in range(NEXT_RUNS)]

    assert upcoming(job, None, NOW) == [
        slot + timedelta(seconds=jitter_offset_s("inbox", slot, 5.0)) for slot in slots
    ]


def test_an_aligned_job_that_ran_shows_the_next_whole_minutes() -> None:
    job = JobConfig(id="inbox", kind="k", schedule=EVERY, align=True)
    state = JobState("inbox", "k", last_scheduled_at=datetime(2026, 11, 22, 8, 0, tzinfo=UTC))

    assert upcoming(job, state, NOW) == [
        datetime(2026, 11, 22, 8, minute, tzinfo=UTC) for minute in (1, 2, 3)
    ]
