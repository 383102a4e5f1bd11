"""Which skipped slots warn, and what each job has skipped (pure, with explicit times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pollerd.engine.skips import SkipSummary, SkipWarning, SkipWatch

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_lost_slot_warns_at_once_and_later_ones_are_gathered_per_interval() -> None:
    watch = SkipWatch(warn_interval_s=60)
    results = [watch.record("a", "overlap", at(s)) for s in (0, 1, 2, 59, 60, 61)]
    assert results == [
        SkipWarning(1, at(0)),
        None,
        None,
        None,
        SkipWarning(4, at(1)),  # the three held back, and this one
        None,
    ]


def test_each_job_has_its_own_interval() -> None:
    watch = SkipWatch(warn_interval_s=60)
    assert watch.record("a", "overlap", at(0)) == SkipWarning(1, at(0))
    assert watch.record("b", "buffer_full", at(1)) == SkipWarning(1, at(1))


def test_skips_the_operator_already_sees_are_counted_but_never_warn() -> None:
    watch = SkipWatch()
    reasons = ("paused", "broken", "breaker_open", "shutdown", "catchup_dropped")
    assert [watch.record("a", reason, at(i)) for i, reason in enumerate(reasons)] == [None] * 5
    assert watch.summary("a") == SkipSummary(5, "catchup_dropped", at(4))


def test_summaries_count_every_skip_and_a_forgotten_job_starts_over() -> None:
    watch = SkipWatch()
    watch.record("a", "overlap", at(0))
    watch.record("a", "paused", at(5))
    assert watch.summaries() == {"a": SkipSummary(2, "paused", at(5))}
    watch.forget("a")
    assert watch.summary("a") is None
    assert watch.record("a", "overlap", at(6)) == SkipWarning(1, at(6))
