"""Phases spread every-jobs over their interval, deterministically; align gives phase 0."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pollerd.config.schedule import CronSchedule, EverySchedule, next_slot
from pollerd.engine.phase import EPOCH, first_slot_bounds, grid_anchor, phase_us

TEN_S = EverySchedule(10)
NOW = datetime(2026, 11, 22, 8, 0, 3, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")


def first_slot(job_id: str, *, align: bool = False, last: datetime | None = None) -> datetime:
    after, anchor = first_slot_bounds(job_id, TEN_S, align=align, last_slot=last, now=NOW)
    slot = next_slot(TEN_S, UTC_ZONE, after, anchor)
    assert slot is not None
    return slot


def test_a_phase_is_a_pure_function_of_the_job_id_within_the_interval() -> None:
    phases = [phase_us(f"job{n}", TEN_S.interval_us) for n in range(1000)]

    assert phases == [phase_us(f"job{n}", TEN_S.interval_us) for n in range(1000)]
    assert all(0 <= phase < TEN_S.interval_us for phase in phases)


def test_jobs_with_the_same_interval_are_spread_over_it() -> None:
    buckets = Counter(phase_us(f"job{n:05d}", 10_000) * 10 // 10_000 for n in range(10_000))

    assert sorted(buckets) == list(range(10))  # every tenth of the interval gets jobs
    assert max(buckets.values()) < 1_100  # about 1,000 each: no herd


def test_the_first_slot_is_the_next_point_of_the_jobs_grid() -> None:
    slot = first_slot("inbox")
    offset = timedelta(microseconds=phase_us("inbox", TEN_S.interval_us))

    assert NOW < slot <= NOW + timedelta(seconds=10)
    assert (slot - EPOCH - offset) % timedelta(seconds=10) == timedelta(0)


def test_an_aligned_job_fires_on_multiples_of_its_interval() -> None:
    assert first_slot("inbox", align=True) == datetime(2026, 11, 22, 8, 0, 10, tzinfo=UTC)
    assert grid_anchor("inbox", TEN_S, align=True) == EPOCH


@pytest.mark.parametrize("last_s", [-25, 0, 4, 40])
def test_a_stored_last_slot_resumes_on_the_grid_after_it_and_after_now(last_s: int) -> None:
    last = NOW + timedelta(seconds=last_s)

    slot = first_slot("inbox", last=last)

    assert slot > max(NOW, last)
    assert slot - timedelta(seconds=10) <= max(NOW, last)
    assert (slot - first_slot("inbox")) % timedelta(seconds=10) == timedelta(0)


def test_cron_jobs_have_no_phase() -> None:
    after, anchor = first_slot_bounds(
        "inbox", CronSchedule("0 * * * *"), align=False, last_slot=None, now=NOW
    )

    assert (after, anchor) == (NOW, None)
