"""The pure decisions: backoff, breaker, catch-up, overlap and restarts, as tables."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import tenacity

from pollerd.engine import policy
from pollerd.engine.policy import BreakerState

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Retry:
    attempts: int = 3
    initial_s: float = 1.0
    max_s: float = 30.0


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "initial_s", "max_s", "expected"),
    [
        (1, 1.0, 30.0, []),
        (2, 1.0, 30.0, [1.0]),
        (3, 1.0, 30.0, [1.0, 2.0]),
        (7, 1.0, 30.0, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]),
        (4, 0.5, 1.5, [0.5, 1.0, 1.5]),
        (3, 0.0, 30.0, [0.0, 0.0]),
    ],
)
def test_retry_delays_double_from_initial_up_to_max(
    attempts: int, initial_s: float, max_s: float, expected: list[float]
) -> None:
    assert policy.retry_delays(attempts, initial_s, max_s) == expected


def test_a_huge_attempt_number_is_capped_instead_of_overflowing() -> None:
    assert policy.nominal_delay_s(5000, 1.0, 30.0) == 30.0


@pytest.mark.parametrize(
    ("attempt", "initial_s", "max_s"),
    [(0, 1.0, 30.0), (1, -1.0, 30.0), (1, 1.0, -1.0)],
)
def test_nonsense_backoff_arguments_are_refused(
    attempt: int, initial_s: float, max_s: float
) -> None:
    with pytest.raises(ValueError) as caught:
        policy.nominal_delay_s(attempt, initial_s, max_s)

    assert str(caught.value)


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 10])
def test_a_retry_delay_is_jittered_over_the_whole_nominal_window(attempt: int) -> None:
    rng = random.Random(attempt)
    nominal = policy.nominal_delay_s(attempt, 1.0, 30.0)

    delays = [policy.retry_delay_s(attempt, 1.0, 30.0, rng) for _ in range(2000)]

    assert all(0.0 <= delay <= nominal for delay in delays)
    assert min(delays) < nominal * 0.05
    assert max(delays) > nominal * 0.95


def test_the_tenacity_wait_draws_the_same_delays_as_retry_delay_s() -> None:
    wait = policy.tenacity_wait(Retry(initial_s=0.5, max_s=4.0), random.Random(7))
    expected_rng = random.Random(7)
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})

    drawn, expected = [], []
    for attempt in range(1, 8):
        state.attempt_number = attempt
        drawn.append(wait(state))
        expected.append(policy.retry_delay_s(attempt, 0.5, 4.0, expected_rng))

    assert drawn == expected


async def test_tenacity_sleeps_the_delays_of_the_policy() -> None:
    slept: list[float] = []
    calls = 0

    async def record(delay: float) -> None:
        slept.append(delay)

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise RuntimeError("transient")
        return "ok"

    retrying = tenacity.AsyncRetrying(
        wait=policy.tenacity_wait(Retry(initial_s=1.0, max_s=3.0), random.Random(1)),
        stop=tenacity.stop_after_attempt(4),
        sleep=record,
    )
    result: str = await retrying(flaky)

    expected_rng = random.Random(1)
    assert result == "ok"
    assert slept == [policy.retry_delay_s(n, 1.0, 3.0, expected_rng) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("now_s", "delay_s", "fits"),
    [
        (0, 1.0, True),
        (0, 19.999, True),
        (0, 20.0, False),
        (0, 25.0, False),
        (19.5, 0.4, True),
        (20, 0.0, False),
        (25, 0.0, False),
    ],
)
def test_a_retry_fits_only_if_its_delay_ends_before_the_deadline(
    now_s: float, delay_s: float, fits: bool
) -> None:
    assert policy.attempt_fits(at(20), at(now_s), delay_s) is fits


# --- breaker ------------------------------------------------------------------------------------

CLOSED = BreakerState(0, None, None)


@pytest.mark.parametrize(
    ("state", "now_s", "position"),
    [
        (CLOSED, 0, "closed"),
        (BreakerState(4, None, None), 0, "closed"),
        (BreakerState(5, at(30), 30.0), 0, "open"),
        (BreakerState(5, at(30), 30.0), 29.999, "open"),
        (BreakerState(5, at(30), 30.0), 30, "half_open"),
        (BreakerState(5, at(30), 30.0), 3600, "half_open"),
    ],
)
def test_the_breaker_position_follows_its_opening(
    state: BreakerState, now_s: float, position: str
) -> None:
    assert policy.breaker_allows(state, at(now_s)) == position


@pytest.mark.parametrize(
    ("state", "now_s", "expected"),
    [
        pytest.param(CLOSED, 0, BreakerState(1, None, None), id="first failure is counted"),
        pytest.param(
            BreakerState(3, None, None), 0, BreakerState(4, None, None), id="below threshold"
        ),
        pytest.param(
            BreakerState(4, None, None), 10, BreakerState(5, at(40), 30.0), id="threshold opens"
        ),
        pytest.param(
            BreakerState(9, None, None), 10, BreakerState(10, at(40), 30.0), id="past threshold"
        ),
        pytest.param(
            BreakerState(5, at(40), 30.0),
            40,
            BreakerState(6, at(100), 60.0),
            id="failed trial doubles",
        ),
        pytest.param(
            BreakerState(8, at(40), 480.0),
            50,
            BreakerState(9, at(650), 600.0),
            id="doubling capped at max",
        ),
        pytest.param(
            BreakerState(9, at(40), 600.0),
            50,
            BreakerState(10, at(650), 600.0),
            id="stays at max",
        ),
        pytest.param(
            BreakerState(5, at(40), 30.0),
            20,
            BreakerState(6, at(40), 30.0),
            id="failure while open keeps the opening",
        ),
        pytest.param(
            BreakerState(5, at(40), None),
            40,
            BreakerState(6, at(100), 60.0),
            id="unknown cooldown doubles the configured one",
        ),
    ],
)
def test_a_failed_slot_moves_the_breaker(
    state: BreakerState, now_s: float, expected: BreakerState
) -> None:
    after = policy.breaker_after_failure(
        state, at(now_s), threshold=5, cooldown_s=30.0, max_cooldown_s=600.0
    )

    assert after == expected


def test_a_cooldown_longer_than_the_max_is_capped_on_opening() -> None:
    after = policy.breaker_after_failure(CLOSED, T0, threshold=1, cooldown_s=90, max_cooldown_s=60)

    assert after == BreakerState(1, at(60), 60)


def test_a_threshold_below_one_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        policy.breaker_after_failure(CLOSED, T0, threshold=0, cooldown_s=1, max_cooldown_s=2)

    assert "threshold" in str(caught.value)


def test_a_success_closes_the_breaker_and_clears_the_count() -> None:
    assert policy.breaker_after_success() == CLOSED
    assert policy.breaker_allows(policy.breaker_after_success(), T0) == "closed"


# --- catch-up -----------------------------------------------------------------------------------

MISSED = [at(30), at(10), at(20), at(40)]  # unordered on purpose


@pytest.mark.parametrize(
    ("missed", "catchup", "max_catchup", "slots", "dropped"),
    [
        (MISSED, "skip", 10, [], 4),
        (MISSED, "latest", 10, [at(40)], 3),
        (MISSED, "all", 10, [at(10), at(20), at(30), at(40)], 0),
        (MISSED, "all", 4, [at(10), at(20), at(30), at(40)], 0),
        (MISSED, "all", 2, [at(30), at(40)], 2),
        (MISSED, "all", 1, [at(40)], 3),
        (MISSED, "all", 0, [], 4),
        ([], "skip", 10, [], 0),
        ([], "latest", 10, [], 0),
        ([], "all", 10, [], 0),
        ([at(5)], "latest", 0, [at(5)], 0),
    ],
)
def test_catchup_runs_the_missed_slots_the_policy_keeps(
    missed: list[datetime],
    catchup: policy.CatchupPolicy,
    max_catchup: int,
    slots: list[datetime],
    dropped: int,
) -> None:
    assert policy.catchup_slots(missed, catchup, max_catchup) == (slots, dropped)


@pytest.mark.parametrize(("catchup", "max_catchup"), [("sometimes", 1), ("all", -1)])
def test_catchup_refuses_an_unknown_policy_or_a_negative_max(
    catchup: policy.CatchupPolicy, max_catchup: int
) -> None:
    with pytest.raises(ValueError) as caught:
        policy.catchup_slots([T0], catchup, max_catchup)

    assert str(caught.value)


# --- overlap ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "running", "buffered", "decision"),
    [
        ("skip", False, False, "run"),
        ("buffer_one", False, False, "run"),
        ("cancel_other", False, False, "run"),
        ("buffer_one", False, True, "run"),
        ("skip", True, False, "skip"),
        ("buffer_one", True, False, "buffer"),
        ("buffer_one", True, True, "skip"),
        ("cancel_other", True, False, "cancel_and_run"),
    ],
)
def test_a_due_slot_runs_waits_is_skipped_or_cancels_by_overlap_policy(
    overlap: policy.OverlapPolicy, running: bool, buffered: bool, decision: str
) -> None:
    assert policy.overlap_decision(overlap, running, buffered) == decision


def test_an_unknown_overlap_policy_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        policy.overlap_decision("queue_all", True, False)  # type: ignore[arg-type]

    assert "queue_all" in str(caught.value)


# --- supervisor restarts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restarts", "nominal"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (50, 60.0)],
)
def test_a_restart_delay_is_between_half_and_all_of_the_nominal_backoff(
    restarts: int, nominal: float
) -> None:
    rng = random.Random(restarts)

    delays = [policy.restart_delay_s(restarts, 1.0, 60.0, rng) for _ in range(2000)]

    assert all(nominal / 2 <= delay <= nominal for delay in delays)
    assert min(delays) < nominal * 0.55
    assert max(delays) > nominal * 0.95


@pytest.mark.parametrize(
    ("restart_s", "now_s", "allowed"),
    [
        ([], 0, True),
        ([0, 10], 20, True),
        ([0, 10, 20], 30, False),
        ([0, 10, 20], 59.9, False),
        ([0, 10, 20], 60, True),
        ([0, 10, 20, 30, 40], 81, True),
        ([0, 10, 20, 30, 40], 79, False),
    ],
)
def test_restarts_are_allowed_until_too_many_fall_in_the_window(
    restart_s: list[float], now_s: float, allowed: bool
) -> None:
    times = [at(s) for s in restart_s]

    assert policy.restart_allowed(times, at(now_s), max_restarts=3, window_s=60) is allowed


def test_recent_restarts_keeps_only_the_window() -> None:
    times = [at(0), at(30), at(59), at(100)]

    assert policy.recent_restarts(times, at(100), window_s=60) == [at(59), at(100)]


@pytest.mark.parametrize(
    ("hint_s", "interval_s", "expected_s"),
    [
        (1e-6, 1.0, 1.0),  # the case: a 1 s job asking for a microsecond
        (1e-6, 2.0, 1.0),  # the fixed floor
        (1e-6, 600.0, 60.0),  # a tenth of the interval when that is more
        (5.0, 600.0, 60.0),
        (90.0, 600.0, 90.0),  # above the floor: as asked
        (1e-6, 0.2, 0.2),  # a job faster than the floor: its own interval
        (3600.0, 1.0, 3600.0),  # longer delays are the plugin's call
    ],
)
def test_a_next_interval_hint_is_floored_by_the_larger_of_one_second_and_a_tenth_of_the_interval(
    hint_s: float, interval_s: float, expected_s: float
) -> None:
    assert policy.next_interval_s(hint_s, interval_s) == pytest.approx(expected_s)
