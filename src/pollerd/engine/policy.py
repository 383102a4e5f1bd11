"""Pure decisions of the runner and the supervisor: backoff, breaker, catch-up, overlap, restarts.

Nothing here reads the clock, sleeps or does I/O: ``now`` and random generators are passed in, so
the async shells (runner, dispatcher, supervisor) call these and persist or act on the result.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import tenacity

logger = logging.getLogger(__name__)

BACKOFF_BASE = 2.0
# 2.0 ** 1024 overflows; past this exponent every sane delay is capped at max_s anyway.
MAX_EXPONENT = 1000

BreakerPosition = Literal["closed", "open", "half_open"]
CatchupPolicy = Literal["skip", "latest", "all"]
OverlapPolicy = Literal["skip", "buffer_one", "cancel_other"]
OverlapDecision = Literal["run", "skip", "buffer", "cancel_and_run"]
# A plugin's next_interval_secs is never shorter than this, nor than this share of the job's
# interval (a job's own interval, when shorter, is the floor: a hint never ticks faster than it).
MIN_NEXT_INTERVAL_S = 1.0
MIN_NEXT_INTERVAL_SHARE = 0.1


# --- retries within one slot -------------------------------------------------------------------


class RetryPolicy(Protocol):
    """What ``tenacity_wait`` reads from a job's ``retry`` settings."""

    @property
    def initial_s(self) -> float: ...

    @property
    def max_s(self) -> float: ...


def nominal_delay_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The un-jittered delay after failed attempt number ``attempt`` (1-based).

    ``initial_s * 2 ** (attempt - 1)``, capped at ``max_s``: 1, 2, 4, 8 … for ``initial_s=1``.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if initial_s < 0 or max_s < 0:
        raise ValueError(f"backoff delays must be >= 0, got initial={initial_s} max={max_s}")
    exponent = min(attempt - 1, MAX_EXPONENT)
    return min(max_s, initial_s * BACKOFF_BASE**exponent)


def retry_delays(attempts: int, initial_s: float, max_s: float) -> list[float]:
    """The nominal delays of a slot with ``attempts`` tries in all: one delay between two tries.

    ``retry_delays(3, 1, 30) == [1.0, 2.0]``; ``attempts=1`` means no retry and no delay.
    """
    return [nominal_delay_s(attempt, initial_s, max_s) for attempt in range(1, attempts)]


def retry_delay_s(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """The delay after failed attempt ``attempt``: *full jitter*, uniform in [0, nominal].

    Full jitter rather than equal jitter because the retries that matter come in herds: when a
    backend fails, every job polling it fails in the same second, and spreading their retries over
    the whole window is what keeps the backend from being hit in waves. It is the distribution of
    tenacity's ``wait_random_exponential``, with an injectable generator.
    """
    return rng.uniform(0.0, nominal_delay_s(attempt, initial_s, max_s))


class JitteredWait(tenacity.wait.wait_base):
    """A tenacity wait strategy that is ``retry_delay_s`` of tenacity's attempt number."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return retry_delay_s(retry_state.attempt_number, self.initial_s, self.max_s, self.rng)


def tenacity_wait(retry: RetryPolicy, rng: random.Random | None = None) -> JitteredWait:
    """The wait strategy for ``tenacity.AsyncRetrying(wait=...)`` that matches ``retry_delay_s``.

    ``rng`` defaults to a private ``random.Random()`` (the module-level generator is left alone).
    """
    return JitteredWait(retry.initial_s, retry.max_s, rng if rng is not None else random.Random())


def attempt_fits(deadline: datetime, now: datetime, delay_s: float) -> bool:
    """Whether a retry that waits ``delay_s`` from ``now`` still starts before the slot deadline."""
    return now + timedelta(seconds=delay_s) < deadline


# --- circuit breaker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerState:
    """A job's breaker, as stored in ``JobState`` (consecutive_errors, breaker_*).

    ``open_until is None``: closed. ``now < open_until``: open. Otherwise half-open.
    ``cooldown_s`` is the cooldown of the current or last opening (doubles on a failed trial).
    """

    consecutive_errors: int = 0
    open_until: datetime | None = None
    cooldown_s: float | None = None


def breaker_allows(state: BreakerState, now: datetime) -> BreakerPosition:
    """``closed``: run the slot. ``open``: skip it. ``half_open``: the cooldown is over, run one
    trial slot; its result closes the breaker or reopens it for twice as long."""
    if state.open_until is None:
        return "closed"
    if now < state.open_until:
        return "open"
    return "half_open"


def breaker_after_failure(
    state: BreakerState, now: datetime, threshold: int, cooldown_s: float, max_cooldown_s: float
) -> BreakerState:
    """The breaker after one more failed slot (its retries exhausted) at ``now``.

    - closed: the failure is counted; at ``threshold`` consecutive failed slots it opens for
      ``cooldown_s``;
    - half-open (the trial failed): it reopens for twice the last cooldown, at most
      ``max_cooldown_s``;
    - open (a slot ran anyway, e.g. a manual tick): the failure is counted, the opening unchanged.
    """
    if threshold < 1:
        raise ValueError(f"the breaker threshold must be >= 1, got {threshold}")
    errors = state.consecutive_errors + 1
    position = breaker_allows(state, now)
    if position == "open":
        return BreakerState(errors, state.open_until, state.cooldown_s)
    if position == "half_open":
        cooldown = min(max_cooldown_s, (state.cooldown_s or cooldown_s) * 2)
        return BreakerState(errors, now + timedelta(seconds=cooldown), cooldown)
    if errors >= threshold:
        cooldown = min(max_cooldown_s, cooldown_s)
        return BreakerState(errors, now + timedelta(seconds=cooldown), cooldown)
    return BreakerState(errors, None, None)


def breaker_after_success() -> BreakerState:
    """One successful slot closes the breaker and clears the count."""
    return BreakerState(0, None, None)


# --- catch-up after downtime -------------------------------------------------------------------


def catchup_slots(
    missed: Sequence[datetime], policy: CatchupPolicy, max_catchup: int
) -> tuple[list[datetime], int]:
    """The missed slots to run now (oldest first) and how many are dropped.

    - ``skip``: none; the schedule resumes with the next slot.
    - ``latest``: only the most recent missed slot.
    - ``all``: every missed slot, at most ``max_catchup``: the **most recent** ones are kept. A
      poller's cursor already carries progress, so older slots add little that the newer ones do
      not cover; the newest data is the one consumers are waiting for; and the last slot run is
      then the last slot missed, which is what the store records as ``last_scheduled_at``.
    """
    if max_catchup < 0:
        raise ValueError(f"max_catchup must be >= 0, got {max_catchup}")
    ordered = sorted(missed)
    if policy == "skip" or not ordered:
        kept: list[datetime] = []
    elif policy == "latest":
        kept = ordered[-1:]
    elif policy == "all":
        kept = ordered[len(ordered) - max_catchup :] if max_catchup else []
    else:
        raise ValueError(f"unknown catch-up policy {policy!r}")
    return kept, len(ordered) - len(kept)


# --- overlapping slots -------------------------------------------------------------------------


def overlap_decision(policy: OverlapPolicy, running: bool, buffered: bool) -> OverlapDecision:
    """What to do with a slot that is due now, given whether the job's previous tick still runs
    (``running``) and whether a slot already waits for it (``buffered``).

    - ``run``: start the tick now (nothing is running, whatever the policy).
    - ``skip``: drop the slot and count it: policy ``skip`` while running, or ``buffer_one`` when a
      slot is already buffered (at most one waits; the one already waiting keeps its place).
    - ``buffer``: keep the slot and start it as soon as the running tick ends (``buffer_one``).
    - ``cancel_and_run``: cancel the running tick (nothing of it is committed) and start this slot
      (``cancel_other``).
    """
    if not running:
        return "run"
    if policy == "skip":
        return "skip"
    if policy == "buffer_one":
        return "skip" if buffered else "buffer"
    if policy == "cancel_other":
        return "cancel_and_run"
    raise ValueError(f"unknown overlap policy {policy!r}")


# --- supervisor restarts -----------------------------------------------------------------------


def restart_delay_s(restarts: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """The delay before the next start of a plugin that has been restarted ``restarts`` times.

    *Equal jitter*: half the nominal ``initial_s * 2 ** restarts`` (capped at ``max_s``) plus a
    uniform share of the other half. Unlike tick retries there is no herd to spread, and a crash
    loop must really slow down, so the delay never drops below half the nominal one.
    """
    nominal = nominal_delay_s(restarts + 1, initial_s, max_s)
    return nominal / 2 + rng.uniform(0.0, nominal / 2)


def recent_restarts(
    restart_times: Sequence[datetime], now: datetime, window_s: float
) -> list[datetime]:
    """The restarts that happened less than ``window_s`` seconds before ``now``."""
    since = now - timedelta(seconds=window_s)
    return [moment for moment in restart_times if moment > since]


def restart_allowed(
    restart_times: Sequence[datetime], now: datetime, max_restarts: int, window_s: float
) -> bool:
    """Whether one more restart is allowed: fewer than ``max_restarts`` in the last ``window_s``.

    ``False`` means the plugin gives up and becomes ``failed``.
    """
    return len(recent_restarts(restart_times, now, window_s)) < max_restarts


# --- next_interval_secs ------------------------------------------------------------------------


def next_interval_floor_s(interval_s: float) -> float:
    """The shortest delay a plugin's ``next_interval_secs`` may ask of a job every ``interval_s``.

    The larger of ``MIN_NEXT_INTERVAL_S`` and a tenth of the interval, but never more than the
    interval itself: a hint may bring a tick closer, never make a job tick faster than one a
    second nor than ten times its schedule.
    """
    return min(interval_s, max(MIN_NEXT_INTERVAL_S, interval_s * MIN_NEXT_INTERVAL_SHARE))


def next_interval_s(hint_s: float, interval_s: float) -> float:
    """The delay to the next tick that a ``next_interval_secs`` hint gets: at least the floor."""
    return max(hint_s, next_interval_floor_s(interval_s))
