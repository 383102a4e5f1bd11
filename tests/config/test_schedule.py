"""Slots of every, cron and at schedules, DST rules, cron validation and jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from pollerd.config.schedule import (
    AtSchedule,
    CronSchedule,
    EverySchedule,
    Schedule,
    jitter_offset_s,
    next_slot,
    next_slots,
    slots_between,
    utc_now,
    validate_cron,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
ONE_MINUTE = timedelta(minutes=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- every -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval_s", "after", "anchor", "expected"),
    [
        (10, utc(2026, 1, 1, 12), None, utc(2026, 1, 1, 12, 0, 10)),
        (10, utc(2026, 1, 1, 12, 0, 3), utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 0, 10)),
        (10, utc(2026, 1, 1, 12, 0, 10), utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 0, 20)),
        (10, utc(2026, 1, 1, 11, 59, 59), utc(2026, 1, 1, 12), utc(2026, 1, 1, 12)),
        (0.05, utc(2026, 1, 1, 12), None, utc(2026, 1, 1, 12, 0, 0, 50_000)),
        (3600, utc(2026, 3, 29, 0, 30), None, utc(2026, 3, 29, 1, 30)),
    ],
)
def test_every_slots_sit_on_the_anchor_grid(
    interval_s: float, after: datetime, anchor: datetime | None, expected: datetime
) -> None:
    assert next_slot(EverySchedule(interval_s), PARIS, after, anchor) == expected


def test_every_slots_do_not_drift_over_many_steps() -> None:
    start = utc(2026, 1, 1)
    slots = next_slots(EverySchedule(0.1), PARIS, start, 1000)
    assert slots[-1] == start + timedelta(seconds=100)
    assert {b - a for a, b in zip(slots, slots[1:], strict=False)} == {timedelta(seconds=0.1)}


def test_an_every_slot_from_an_anchor_in_another_zone_is_returned_in_utc() -> None:
    anchor = datetime(2026, 1, 1, 13, tzinfo=PARIS)
    slot = next_slot(EverySchedule(60), PARIS, utc(2026, 1, 1, 12, 0, 30), anchor)
    assert slot == utc(2026, 1, 1, 12, 1)
    assert slot is not None and slot.tzinfo is UTC


# --- cron --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected"),
    [
        ("0 * * * *", UTC, utc(2026, 1, 1, 12), [utc(2026, 1, 1, 13), utc(2026, 1, 1, 14)]),
        ("*/15 9 * * *", UTC, utc(2026, 1, 1, 9, 40), [utc(2026, 1, 1, 9, 45), utc(2026, 1, 2, 9)]),
        ("0 8 1 * *", UTC, utc(2026, 1, 15), [utc(2026, 2, 1, 8), utc(2026, 3, 1, 8)]),
        ("0 9 * * *", PARIS, utc(2026, 1, 1), [utc(2026, 1, 1, 8), utc(2026, 1, 2, 8)]),
        ("0 9 * * *", PARIS, utc(2026, 7, 1), [utc(2026, 7, 1, 7), utc(2026, 7, 2, 7)]),
        ("0 0 29 2 *", UTC, utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        # Six fields: the seconds come first.
        (
            "*/20 * * * * *",
            UTC,
            utc(2026, 1, 1),
            [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40)],
        ),
        (
            "30 0 12 * * *",
            UTC,
            utc(2026, 1, 1),
            [utc(2026, 1, 1, 12, 0, 30), utc(2026, 1, 2, 12, 0, 30)],
        ),
    ],
)
def test_cron_slots_follow_the_expression_in_the_zone(
    expression: str, tz: ZoneInfo, after: datetime, expected: list[datetime]
) -> None:
    assert next_slots(CronSchedule(expression), tz, after, len(expected)) == expected


def test_a_cron_slot_is_strictly_after_the_given_instant() -> None:
    schedule = CronSchedule("* * * * *")
    assert next_slot(schedule, UTC, utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 1)
    assert next_slot(schedule, UTC, utc(2026, 1, 1, 11, 59, 59, 999_999)) == utc(2026, 1, 1, 12)


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_is_both_0_and_7(sunday: str) -> None:
    slots = next_slots(CronSchedule(f"0 9 * * {sunday}"), UTC, utc(2026, 1, 1), 3)
    assert slots == [utc(2026, 1, 4, 9), utc(2026, 1, 11, 9), utc(2026, 1, 18, 9)]
    assert {slot.isoweekday() for slot in slots} == {7}


def test_monday_is_1() -> None:
    slot = next_slot(CronSchedule("0 9 * * 1"), UTC, utc(2026, 1, 1))
    assert slot == utc(2026, 1, 5, 9)
    assert slot.isoweekday() == 1


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # Paris springs forward on 2026-03-29 at 01:00 UTC: 02:00 CET becomes 03:00 CEST.
        # A fixed wall time inside the gap fires once, at the first instant after it.
        ("30 2 * * *", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
        ("0 2 * * *", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0)]),
        # Periodic expressions (hour field "*") keep elapsed time; the gap's slots do not exist.
        (
            "0 * * * *",
            utc(2026, 3, 28, 23, 30),
            [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)],
        ),
        (
            "*/30 * * * *",
            utc(2026, 3, 29, 0),
            [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)],
        ),
        # Paris falls back on 2026-10-25 at 01:00 UTC: 03:00 CEST becomes 02:00 CET.
        # A fixed wall time that occurs twice fires once, at its first occurrence.
        ("30 2 * * *", utc(2026, 10, 24, 12), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        ("30 2 * * *", utc(2026, 10, 25, 1), [utc(2026, 10, 26, 1, 30)]),
        (
            "*/20 30 2 * * *",
            utc(2026, 10, 25, 0, 30, 30),
            [utc(2026, 10, 25, 0, 30, 40), utc(2026, 10, 26, 1, 30)],
        ),
        # Periodic expressions fire through the repeated hour by elapsed time.
        (
            "0 * * * *",
            utc(2026, 10, 24, 23, 30),
            [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)],
        ),
        (
            "*/30 * * * *",
            utc(2026, 10, 25, 0),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 30)],
        ),
    ],
)
def test_cron_in_paris_across_dst_changes(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert next_slots(CronSchedule(expression), PARIS, after, len(expected)) == expected


def _reference_slots(
    expression: str, tz: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    """The documented DST rules, checked minute by minute on the UTC time line."""
    periodic = expression.split()[1] == "*"
    slots: set[datetime] = set()
    moment = start.replace(second=0, microsecond=0) + ONE_MINUTE
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        if croniter.match(expression, wall) and (periodic or not repeated):
            slots.add(moment)
        skipped = (moment - ONE_MINUTE).astimezone(tz).replace(tzinfo=None) + ONE_MINUTE
        while not periodic and skipped < wall:  # wall times of a spring-forward gap
            if croniter.match(expression, skipped):
                slots.add(moment)
            skipped += ONE_MINUTE
        moment += ONE_MINUTE
    return sorted(slots)


@pytest.mark.parametrize(
    ("tz", "transition"),
    [
        (PARIS, utc(2026, 3, 29, 1)),
        (PARIS, utc(2026, 10, 25, 1)),
        (NEW_YORK, utc(2026, 3, 8, 7)),
        (NEW_YORK, utc(2026, 11, 1, 6)),
        (LORD_HOWE, utc(2026, 4, 4, 15)),
        (LORD_HOWE, utc(2026, 10, 3, 15, 30)),
    ],
)
@pytest.mark.parametrize(
    "expression", ["30 2 * * *", "0 * * * *", "*/20 * * * *", "*/15 1-3 * * *", "45 1,2 * * *"]
)
def test_cron_slots_around_dst_changes_match_the_documented_rules(
    expression: str, tz: ZoneInfo, transition: datetime
) -> None:
    starts = [transition + timedelta(minutes=m) for m in (-180, -61, -25, 0, 10, 35, 70)]
    end = transition + timedelta(hours=4)
    reference = _reference_slots(expression, tz, starts[0], end)
    schedule = CronSchedule(expression)
    for start in starts:
        slots: list[datetime] = []
        slot = next_slot(schedule, tz, start)
        while slot is not None and slot <= end:
            slots.append(slot)
            slot = next_slot(schedule, tz, slot)
        assert slots == [moment for moment in reference if moment > start], (start, expression)


# --- at ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "after", "expected"),
    [
        (utc(2026, 11, 22, 8), utc(2026, 11, 22, 7), utc(2026, 11, 22, 8)),
        (datetime(2026, 11, 22, 9, tzinfo=PARIS), utc(2026, 11, 22, 7), utc(2026, 11, 22, 8)),
        (utc(2026, 11, 22, 8), utc(2026, 11, 22, 8), None),
        (utc(2026, 11, 22, 8), utc(2026, 11, 22, 9), None),
    ],
)
def test_an_at_schedule_fires_once_and_never_in_the_past(
    at: datetime, after: datetime, expected: datetime | None
) -> None:
    assert next_slot(AtSchedule(at), PARIS, after) == expected


def test_an_at_schedule_has_one_slot_only() -> None:
    schedule = AtSchedule(utc(2026, 11, 22, 8))
    assert next_slots(schedule, UTC, utc(2026, 1, 1), 5) == [utc(2026, 11, 22, 8)]


# --- ranges of slots ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "start", "end", "limit", "expected"),
    [
        (
            EverySchedule(10),
            utc(2026, 1, 1, 12),
            utc(2026, 1, 1, 12, 0, 35),
            10,
            [utc(2026, 1, 1, 12, 0, 10), utc(2026, 1, 1, 12, 0, 20), utc(2026, 1, 1, 12, 0, 30)],
        ),
        (
            EverySchedule(10),
            utc(2026, 1, 1, 12),
            utc(2026, 1, 8, 12),
            2,
            [utc(2026, 1, 8, 11, 59, 50), utc(2026, 1, 8, 12)],
        ),
        (EverySchedule(10), utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 0, 9), 5, []),
        (
            CronSchedule("0 0 1 1 *"),
            utc(2000, 6, 1),
            utc(2026, 6, 1),
            3,
            [utc(2024, 1, 1), utc(2025, 1, 1), utc(2026, 1, 1)],
        ),
        (
            CronSchedule("* * * * * *"),
            utc(2026, 1, 1),
            utc(2026, 2, 1),
            2,
            [utc(2026, 1, 31, 23, 59, 59), utc(2026, 2, 1)],
        ),
        (
            CronSchedule("0 12 * * *"),
            utc(2026, 1, 1, 13),
            utc(2026, 1, 4),
            10,
            [utc(2026, 1, 2, 12), utc(2026, 1, 3, 12)],
        ),
        (CronSchedule("0 12 * * *"), utc(2026, 1, 1, 13), utc(2026, 1, 2, 11), 10, []),
        (AtSchedule(utc(2026, 1, 2)), utc(2026, 1, 1), utc(2026, 1, 3), 10, [utc(2026, 1, 2)]),
        (AtSchedule(utc(2026, 1, 2)), utc(2026, 1, 2), utc(2026, 1, 3), 10, []),
        (EverySchedule(10), utc(2026, 1, 1, 12), utc(2026, 1, 1, 13), 0, []),
    ],
)
def test_slots_between_gives_the_latest_slots_oldest_first(
    schedule: Schedule, start: datetime, end: datetime, limit: int, expected: list[datetime]
) -> None:
    assert slots_between(schedule, UTC, start, end, limit) == expected


def test_slots_between_includes_the_end_and_excludes_the_start() -> None:
    schedule = CronSchedule("0 * * * *")
    slots = slots_between(schedule, UTC, utc(2026, 1, 1, 10), utc(2026, 1, 1, 12), 10)
    assert slots == [utc(2026, 1, 1, 11), utc(2026, 1, 1, 12)]


def test_slots_between_agrees_with_next_slots_across_a_dst_change() -> None:
    schedule = CronSchedule("*/30 * * * *")
    start = utc(2026, 10, 24, 22)
    forward = next_slots(schedule, PARIS, start, 12)
    assert slots_between(schedule, PARIS, start, forward[-1], 100) == forward


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "problem_part"),
    [
        ("* * * *", "has 4 field(s)"),
        ("0 0 * * * * *", "has 7 field(s)"),
        ("@daily", "has 1 field(s)"),
        ("", "has 0 field(s)"),
        ("61 * * * *", "out of range"),
        ("0 24 * * *", "out of range"),
        ("0 0 * 13 *", "out of range"),
        ("0 0 * * 8", "out of range"),
        ("60 * * * * *", "out of range"),
        ("*/0 * * * *", "not valid"),
        ("x * * * *", "not valid"),
        ("0 0 30 2 *", "never matches a real date"),
        ("0 0 31 4,6 *", "never matches a real date"),
    ],
)
def test_invalid_cron_expressions_are_explained(expression: str, problem_part: str) -> None:
    problem = validate_cron(expression)
    assert problem is not None
    assert problem_part in problem
    assert repr(expression) in problem


@pytest.mark.parametrize(
    "expression", ["* * * * *", "0 0 29 2 *", "*/5 * * * * *", "0 9 * * mon-fri", "0 0 L * *"]
)
def test_valid_cron_expressions_have_no_problem(expression: str) -> None:
    assert validate_cron(expression) is None


def test_a_cron_schedule_refuses_an_invalid_expression() -> None:
    with pytest.raises(ValueError) as caught:
        CronSchedule("0 0 30 2 *")
    assert "never matches" in str(caught.value)


@pytest.mark.parametrize("interval_s", [0, -1, float("inf"), float("nan"), 1e-9])
def test_an_every_schedule_refuses_a_non_positive_interval(interval_s: float) -> None:
    with pytest.raises(ValueError) as caught:
        EverySchedule(interval_s)
    assert "positive interval" in str(caught.value)


def test_an_at_schedule_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError) as caught:
        AtSchedule(datetime(2026, 11, 22, 8))
    assert "UTC offset" in str(caught.value)


def test_slot_functions_refuse_naive_instants() -> None:
    with pytest.raises(ValueError) as caught:
        next_slot(EverySchedule(1), UTC, datetime(2026, 1, 1))
    assert "aware" in str(caught.value)


# --- describe, jitter, clock ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "description"),
    [
        (EverySchedule(10), "every 10s"),
        (EverySchedule(0.5), "every 500ms"),
        (EverySchedule(5400), "every 1h30m"),
        (CronSchedule("0 * * * *"), "cron '0 * * * *'"),
        (AtSchedule(datetime(2026, 11, 22, 9, tzinfo=PARIS)), "at 2026-11-22T08:00:00Z"),
    ],
)
def test_schedules_describe_themselves(schedule: Schedule, description: str) -> None:
    assert schedule.describe() == description


@pytest.mark.parametrize("jitter_s", [0.001, 0.5, 2.0, 3600.0])
def test_jitter_stays_in_range_and_spreads(jitter_s: float) -> None:
    slots = next_slots(EverySchedule(1), UTC, utc(2026, 1, 1), 200)
    offsets = [jitter_offset_s("inbox", slot, jitter_s) for slot in slots]
    assert all(0 <= offset < jitter_s for offset in offsets)
    assert max(offsets) - min(offsets) > jitter_s / 2


def test_jitter_is_deterministic_per_job_and_slot() -> None:
    slot = utc(2026, 1, 1, 12)
    same_instant_elsewhere = slot.astimezone(PARIS)
    first = jitter_offset_s("inbox", slot, 2.0)
    assert jitter_offset_s("inbox", slot, 2.0) == first
    assert jitter_offset_s("inbox", same_instant_elsewhere, 2.0) == first
    assert jitter_offset_s("outbox", slot, 2.0) != first
    assert jitter_offset_s("inbox", slot + timedelta(seconds=1), 2.0) != first


@pytest.mark.parametrize("jitter_s", [0.0, -1.0])
def test_no_jitter_means_no_offset(jitter_s: float) -> None:
    assert jitter_offset_s("inbox", utc(2026, 1, 1), jitter_s) == 0.0


def test_the_clock_edge_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
