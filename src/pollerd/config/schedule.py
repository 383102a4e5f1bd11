"""Schedules and their slots: pure functions of a schedule, a time zone and given instants.

A *slot* is the instant a tick is scheduled for, before jitter. Every function takes and returns
aware datetimes in UTC; nothing here reads the clock except :func:`utc_now`, the single clock
edge that callers inject.

``every``
    Slots are ``anchor + k * interval`` in integer microseconds, so they never drift. Without an
    anchor the grid starts at ``after``: the next slot is ``after + interval``. The time zone
    plays no part: an interval is elapsed time.

``cron``
    Five fields ``minute hour day-of-month month day-of-week``; in pollers.yaml the seconds, when
    wanted, are a separate ``seconds`` field, because a six-field string reads differently in
    different tools (Quartz and APScheduler put the seconds first, croniter last:
    ``0 9 * * 1-5 0``). Inside, a ``CronSchedule`` with seconds holds six fields *seconds first*
    (croniter is told ``second_at_beginning``). Day-of-week
    follows cron: Sunday is 0 and 7, Monday is 1. When both day-of-month and day-of-week are
    restricted, a day matching either fires (cron's rule). The expression is evaluated in the
    job's time zone, with these rules at DST changes (checked against a minute-by-minute
    reference in the tests):

    - Spring forward, a wall time that does not exist: an expression with a fixed hour field
      names wall-clock times, and one in the gap fires once at the first instant after it
      (``30 2 * * *`` in Europe/Paris fires at 03:00 CEST on 2026-03-29). When the hour field
      is ``*`` the expression is periodic and slots inside the gap do not exist (``0 * * * *``
      goes from 01:00 CET to 03:00 CEST, one hour of elapsed time). This is croniter's rule.
    - Fall back, a wall time that occurs twice: an expression with a fixed hour field fires
      once, at the first occurrence (``30 2 * * *`` fires at 02:30 CEST, not again at 02:30
      CET). When the hour field is ``*`` the expression is periodic and keeps firing by elapsed
      time through the repeated hour (``*/30 * * * *`` fires at 02:00 and 02:30 CEST, then at
      02:00 and 02:30 CET), as Vixie/ISC cron does: otherwise an every-minute job would go
      silent for an hour each autumn.

``at``
    One slot, the moment itself, if strictly after ``after``: an ``at`` in the past never fires.

Jitter is a deterministic offset in ``[0, jitter_s)`` from a hash of the job id and the slot, so
a restarted service re-derives the same fire time and tests can predict it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import dropwhile, takewhile
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from pollerd.config.duration import format_duration
from pollerd.config.slotstate import quick_pickle
from pollerd.wire import format_time

logger = logging.getLogger(__name__)

CRON_FIELDS = 5
CRON_FIELDS_WITH_SECONDS = 6
_HOUR_FIELD = {CRON_FIELDS: 1, CRON_FIELDS_WITH_SECONDS: 2}
_US_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
# UTC offsets are probed this often when looking for a DST change: tzdata has no two changes
# less than a day apart (checked for every zone from 1970 to 2040).
_TRANSITION_PROBE = timedelta(days=1)
# A cron slot sequence stops after this many spans of constant UTC offset: a few centuries of
# DST changes, far past croniter's own 50-year search for a match.
_MAX_SPANS = 1000
# A fixed instant to evaluate a cron expression from when validating it: croniter accepts
# expressions such as "0 0 30 2 *" and only fails when asked for the next date.
_VALIDATION_REFERENCE = datetime(2000, 1, 1)
# slots_between looks back from its end in windows that double from this length.
_FIRST_LOOKBACK = timedelta(seconds=1)
_JITTER_HASH_BITS = 53


def utc_now() -> datetime:
    """The current time, aware, in UTC: the clock edge that components receive as ``clock``."""
    return datetime.now(UTC)


@quick_pickle
@dataclass(frozen=True, slots=True)
class EverySchedule:
    """A tick every ``interval_s`` seconds of elapsed time."""

    interval_s: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.interval_s) or round(self.interval_s * _US_PER_S) < 1:
            raise ValueError(
                f"an every schedule needs a positive interval, got {self.interval_s!r} seconds"
            )

    @property
    def interval_us(self) -> int:
        return round(self.interval_s * _US_PER_S)

    def describe(self) -> str:
        return f"every {format_duration(self.interval_s)}"


@quick_pickle
@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression of 5 fields, or 6 with the seconds first, evaluated in the job's zone."""

    expression: str

    def __post_init__(self) -> None:
        problem = validate_cron(self.expression)
        if problem is not None:
            raise ValueError(problem)

    @property
    def with_seconds(self) -> bool:
        return len(self.expression.split()) == CRON_FIELDS_WITH_SECONDS

    @property
    def periodic(self) -> bool:
        """True when the hour field is ``*``: DST gaps and folds follow elapsed time."""
        fields = self.expression.split()
        return fields[_HOUR_FIELD[len(fields)]] == "*"

    def describe(self) -> str:
        if self.with_seconds:
            seconds, _, rest = self.expression.strip().partition(" ")
            return f"cron {rest.strip()!r} seconds {seconds!r}"
        return f"cron {self.expression!r}"


@quick_pickle
@dataclass(frozen=True, slots=True)
class AtSchedule:
    """A single tick at an aware moment."""

    at: datetime

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError(f"an at schedule needs a moment with a UTC offset, got {self.at!r}")

    def describe(self) -> str:
        return f"at {format_time(self.at)}"


Schedule = EverySchedule | CronSchedule | AtSchedule


def validate_cron(expression: str) -> str | None:
    """What is wrong with a cron expression, in words for an operator, or None if it is usable."""
    fields = expression.split()
    if len(fields) not in _HOUR_FIELD:
        return (
            f"cron {expression!r} has {len(fields)} field(s); expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 with the seconds first "
            "(second minute hour day-of-month month day-of-week)"
        )
    try:
        iterator = croniter(
            expression,
            _VALIDATION_REFERENCE,
            second_at_beginning=len(fields) == CRON_FIELDS_WITH_SECONDS,
        )
        iterator.get_next(datetime)
    except CroniterBadDateError:
        return f"cron {expression!r} never matches a real date (such as 30 February)"
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        if "out of range" in str(exc):
            return (
                f"cron {expression!r} has a value out of range (second and minute 0-59, hour 0-23, "
                "day-of-month 1-31, month 1-12, day-of-week 0-7 with Sunday 0 or 7)"
            )
        return f"cron {expression!r} is not valid: {exc}"
    return None


def ambiguous_cron(expression: str) -> str | None:
    """Why a six-field cron string is refused in pollers.yaml, with both ways to write it."""
    fields = expression.split()
    if len(fields) != CRON_FIELDS_WITH_SECONDS:
        return None
    first = f"cron: {' '.join(fields[1:])!r}, seconds: {fields[0]!r}"
    last = f"cron: {' '.join(fields[:-1])!r}, seconds: {fields[-1]!r}"
    return (
        f"cron {expression!r} has 6 fields, which tools read differently (seconds first in "
        "Quartz and APScheduler, last in croniter); write the 5 standard fields and the seconds "
        f"apart: {{{first}}} for seconds first, or {{{last}}} for seconds last"
    )


def next_slot(
    schedule: Schedule, tz: ZoneInfo, after: datetime, anchor: datetime | None = None
) -> datetime | None:
    """The first slot strictly after ``after``, or None when the schedule has no more slots.

    ``anchor`` places the grid of an ``every`` schedule (default: ``after``); other kinds ignore it.
    """
    _require_aware(after, "after")
    if isinstance(schedule, EverySchedule):
        base = after if anchor is None else anchor
        _require_aware(base, "anchor")
        steps = (after - base) // _ONE_US // schedule.interval_us + 1
        return (base + timedelta(microseconds=steps * schedule.interval_us)).astimezone(UTC)
    if isinstance(schedule, CronSchedule):
        return _next_cron_slot(schedule, tz, after)
    moment = schedule.at.astimezone(UTC)
    return moment if moment > after else None


def next_slots(
    schedule: Schedule,
    tz: ZoneInfo,
    after: datetime,
    count: int,
    *,
    anchor: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` slots strictly after ``after`` (fewer when the schedule runs out)."""
    slots: list[datetime] = []
    current: datetime | None = after
    while current is not None and len(slots) < count:
        current = next_slot(schedule, tz, current, anchor if not slots else None)
        if current is not None:
            slots.append(current)
    return slots


def slots_between(
    schedule: Schedule,
    tz: ZoneInfo,
    start_exclusive: datetime,
    end_inclusive: datetime,
    limit: int,
) -> list[datetime]:
    """The *latest* ``limit`` slots in ``(start_exclusive, end_inclusive]``, oldest first.

    Meant for catch-up from the last persisted slot: ``limit=1`` gives the latest missed slot,
    ``limit=max_catchup`` the most recent missed ones. An ``every`` grid is anchored on
    ``start_exclusive``. The cost follows ``limit``, not the length of the downtime.
    """
    _require_aware(start_exclusive, "start_exclusive")
    _require_aware(end_inclusive, "end_inclusive")
    if limit <= 0 or end_inclusive <= start_exclusive:
        return []
    if isinstance(schedule, EverySchedule):
        interval_us = schedule.interval_us
        last_step = (end_inclusive - start_exclusive) // _ONE_US // interval_us
        first_step = max(1, last_step - limit + 1)
        base = start_exclusive.astimezone(UTC)
        return [
            base + timedelta(microseconds=step * interval_us)
            for step in range(first_step, last_step + 1)
        ]
    if isinstance(schedule, AtSchedule):
        moment = schedule.at.astimezone(UTC)
        return [moment] if start_exclusive < moment <= end_inclusive else []
    return _latest_cron_slots(schedule, tz, start_exclusive, end_inclusive, limit)


def jitter_offset_s(job_id: str, slot: datetime, jitter_s: float) -> float:
    """A deterministic delay in ``[0, jitter_s)`` for this job's slot; 0 without jitter."""
    if not jitter_s > 0:
        return 0.0
    key = f"{job_id}\x00{slot.astimezone(UTC).isoformat()}".encode()
    bits = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> (64 - _JITTER_HASH_BITS)
    offset = bits / (1 << _JITTER_HASH_BITS) * jitter_s
    return min(offset, math.nextafter(jitter_s, 0.0))


def _require_aware(moment: datetime, name: str) -> None:
    if moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment!r}")


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _wall(instant: datetime, offset: timedelta) -> datetime:
    """The naive wall-clock time of ``instant`` at ``offset``."""
    return (instant.astimezone(UTC) + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


def _walls(schedule: CronSchedule, after_wall: datetime) -> Iterator[datetime]:
    """The wall-clock times after ``after_wall`` that the expression names (naive, no DST)."""
    iterator = croniter(schedule.expression, after_wall, second_at_beginning=schedule.with_seconds)
    while True:
        try:
            wall: datetime = iterator.get_next(datetime)
        except CroniterBadDateError:  # no match within croniter's 50-year search
            return
        yield wall


def _offset_change(
    tz: ZoneInfo, start: datetime, end: datetime, offset: timedelta
) -> datetime | None:
    """The first instant in ``(start, end]`` whose UTC offset is not ``offset``, if any."""
    low = start
    while low < end:
        high = min(low + _TRANSITION_PROBE, end)
        if _offset(tz, high) != offset:
            while high - low > _ONE_US:  # bisect down to the exact transition instant
                middle = low + (high - low) / 2
                if _offset(tz, middle) == offset:
                    low = middle
                else:
                    high = middle
            return high
        low = high
    return None


def _cron_slots_from(schedule: CronSchedule, tz: ZoneInfo, start: datetime) -> Iterator[datetime]:
    """The cron slots after ``start``, which must not be in the second pass of a repeated hour.

    Walks the time line one span of constant UTC offset at a time: inside a span the expression's
    wall times map to instants by a fixed shift, and the DST rules (module docstring) apply where
    one span ends and the next begins. croniter does the calendar arithmetic on naive wall times
    only: its own DST handling misses repeated wall times when the shift is not a whole hour.
    """
    periodic = schedule.periodic
    span_start = start.astimezone(UTC)
    offset = _offset(tz, span_start)
    after_wall = _wall(span_start, offset)  # exclusive: only later walls count
    last: datetime | None = None
    for _ in range(_MAX_SPANS):
        checked = span_start
        change: datetime | None = None
        for wall in _walls(schedule, after_wall):
            candidate = _instant(wall, offset)
            change = _offset_change(tz, checked, candidate, offset)
            if change is not None:
                break
            if last is None or candidate > last:
                last = candidate
                yield candidate
            checked = candidate
        if change is None:
            return
        new_offset = _offset(tz, change)
        if new_offset > offset and not periodic and (last is None or change > last):
            # Spring forward: a wall time named inside the gap fires at the end of the gap.
            in_gap = next(_walls(schedule, _wall(change, offset) - _ONE_US), None)
            if in_gap is not None and in_gap < _wall(change, new_offset):
                last = change
                yield change
        # The next span starts at the change, its first wall included. After a fall back, a
        # fixed-hour expression resumes where the wall clock was, past the repeated walls.
        resume = offset if new_offset < offset and not periodic else new_offset
        after_wall = _wall(change, resume) - _ONE_US
        span_start, offset = change, new_offset


def _cron_slots(schedule: CronSchedule, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The cron slots strictly after ``after``, in order."""
    local = after.astimezone(tz)
    first_offset = local.replace(fold=0).utcoffset()
    if schedule.periodic or local.fold == 0 or first_offset == local.utcoffset():
        return _cron_slots_from(schedule, tz, after)
    # ``after`` is in the second pass of a repeated hour: start before that hour began, so the
    # walls that fired on the first pass are known, and drop the slots up to ``after``.
    assert first_offset is not None
    start = after - (first_offset - _offset(tz, after)) - _ONE_SECOND
    return dropwhile(lambda slot: slot <= after, _cron_slots_from(schedule, tz, start))


def _next_cron_slot(schedule: CronSchedule, tz: ZoneInfo, after: datetime) -> datetime | None:
    return next(_cron_slots(schedule, tz, after), None)


def _cron_slots_until(
    schedule: CronSchedule, tz: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    return list(takewhile(lambda slot: slot <= end, _cron_slots(schedule, tz, start)))


def _latest_cron_slots(
    schedule: CronSchedule, tz: ZoneInfo, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """Looks back from ``end`` in disjoint windows that double in length until ``limit`` slots."""
    windows: list[list[datetime]] = []
    found = 0
    window_end = end
    lookback = _FIRST_LOOKBACK
    while found < limit and window_end > start:
        window_start = max(start, window_end - lookback)
        windows.append(_cron_slots_until(schedule, tz, window_start, window_end))
        found += len(windows[-1])
        window_end = window_start
        lookback *= 2
    return [slot for window in reversed(windows) for slot in window][-limit:]
