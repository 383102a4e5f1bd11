"""Runs one scheduled slot of one job: read cursor → tick (with retries) → publish → commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import tenacity

from pollerd.config.pollers import JobConfig
from pollerd.engine import policy
from pollerd.engine.events import EventPublisher
from pollerd.errors import (
    ErrorClass,
    EventPublishError,
    SlotCommittedError,
    StoreError,
    TickTimeoutError,
    TransportError,
)
from pollerd.stores.base import UNSET, JobState, JobUpdate, Store, TickRecord
from pollerd.transports.base import Transport
from pollerd.wire import TickReply, TickRequest, make_tick_id

logger = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_STORE = "store"  # the tick's state could not be read or written: nothing committed
SKIP_PAUSED = "paused"
SKIP_BROKEN = "broken"
SKIP_BREAKER = "breaker_open"
SKIP_COMMITTED = "committed"  # another tick committed the slot first (replicas): this one dropped
MAX_RECORDED_ERROR_CHARS = 2000  # a tick record keeps this much of an error message


@dataclass(frozen=True, slots=True)
class Route:
    """How a job's ticks reach its plugin."""

    plugin_id: str
    transport: Transport
    limit: asyncio.Semaphore  # the plugin's max_concurrent_ticks, shared by all its jobs
    tick_timeout_s: float  # the manifest's default, used when the job sets none


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What happened to one slot. ``status`` is "ok", a failure reason, or "skipped"."""

    job_id: str
    kind: str
    plugin: str
    tick_id: str
    slot: datetime
    status: str
    attempts: int = 0
    duration_s: float = 0.0
    error: str | None = None
    error_class: ErrorClass | None = None
    skipped: str | None = None  # paused | broken | breaker_open
    reply: TickReply | None = None
    committed: bool = False
    state: JobState | None = None  # the job's state after the commit
    duplicates: int = 0  # events the stream already held (dropped by Nats-Msg-Id)
    # From the slot to the moment its first request was sent (after waiting for the plugin's
    # concurrency limit): what the plugin sees as lateness. None when nothing was sent.
    lateness_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass
class TickRunner:
    """Executes slots. Stateless between slots: everything that must survive is in the store."""

    store: Store
    publisher: EventPublisher
    clock: Callable[[], datetime]
    sleep: Callable[[float], object] = field(default=asyncio.sleep)
    # Fault-injection point for crash tests: runs after the events are acknowledged and before
    # the cursor is committed (see Service: POLLERD_FAULT_EXIT_AFTER_PUBLISH).
    after_publish: Callable[[str], None] | None = None
    # pollerd's own NATS link: (connected, reconnects so far). A transient failure while it is
    # down, or across a reconnect, is not the plugin's: it does not count toward the breaker.
    nats_link: Callable[[], tuple[bool, int]] | None = None
    replica: str = ""  # written into each tick record: which pollerd ran the tick
    # The leader's epoch for the tick request (replicas: service/leadership.py); None: no epoch.
    epoch: Callable[[], int] | None = None

    async def run(
        self, job: JobConfig, route: Route, slot: datetime, *, dry_run: bool = False
    ) -> TickOutcome:
        """Run one slot. Cancellation before the commit is written commits nothing and
        propagates. A store that cannot be read or written gives a ``store`` outcome."""
        base = _Base(job.id, job.kind, route.plugin_id, make_tick_id(job.id, slot), slot)
        started = time.perf_counter()
        try:
            return await self._run(job, route, base, dry_run)
        except SlotCommittedError as exc:  # a duplicate run of the slot: not a store failure
            logger.warning("job_id=%s plugin=%s tick dropped: %s", base.job_id, base.plugin, exc)
            return base.outcome(status="skipped", skipped=SKIP_COMMITTED, error=str(exc))
        except StoreError as exc:  # logged in the tick line; readiness shows it too
            return base.outcome(
                status=STATUS_STORE,
                attempts=1,
                duration_s=time.perf_counter() - started,
                error=str(exc),
                error_class=ErrorClass.TRANSIENT,
            )

    async def _run(self, job: JobConfig, route: Route, base: _Base, dry_run: bool) -> TickOutcome:
        state = await self.store.get(job.id)
        if state is None:
            state = await self.store.ensure(job.id, job.kind, paused=job.paused)
        if not dry_run:
            skipped = await self._skip_reason(job, state)
            if skipped is not None:
                return base.outcome(status="skipped", skipped=skipped)
        started = time.perf_counter()
        link = self.nats_link() if self.nats_link is not None else None
        attempts = [0]  # the attempt in progress, kept when the retries give up
        duplicates = 0
        try:
            reply = await self._tick_with_retries(job, route, state, base, attempts)
            if not dry_run:
                duplicates = await self.publisher.publish(
                    job.kind, job.id, reply.events, space=state.event_space
                )
                if self.after_publish is not None:
                    self.after_publish(job.id)
        except (TransportError, EventPublishError) as exc:
            duration = time.perf_counter() - started
            error_class = (
                exc.error_class if isinstance(exc, TransportError) else ErrorClass.TRANSIENT
            )
            outcome = base.outcome(
                status=exc.reason,
                attempts=max(attempts[0], 1),
                duration_s=duration,
                error=str(exc),
                error_class=error_class,
            )
            if not dry_run:
                excused = error_class is ErrorClass.TRANSIENT and self._link_lost(link)
                new_state = await self._commit_failure(job, state, outcome, excused=excused)
                outcome = replace(outcome, committed=True, state=new_state)
            return outcome
        duration = time.perf_counter() - started
        if dry_run:
            return base.outcome(
                status=STATUS_OK, attempts=attempts[0], duration_s=duration, reply=reply
            )
        finished = self.clock()
        record = self._record(
            base, STATUS_OK, attempts[0], duration, len(reply.events), None, finished
        )
        new_state = await self._commit_success(job, state, base, reply, record)
        return base.outcome(
            status=STATUS_OK,
            attempts=attempts[0],
            duration_s=duration,
            reply=reply,
            committed=True,
            state=new_state,
            duplicates=duplicates,
        )

    def _link_lost(self, before: tuple[bool, int] | None) -> bool:
        """Whether pollerd's own NATS link is down now or went down since ``before``."""
        if before is None or self.nats_link is None:
            return False
        connected, reconnects = self.nats_link()
        return not (connected and before[0] and reconnects == before[1])

    async def _skip_reason(self, job: JobConfig, state: JobState) -> str | None:
        if state.paused:
            return SKIP_PAUSED
        if state.broken_reason is not None:
            if state.broken_config_hash == job.config_hash:
                return SKIP_BROKEN
            await self.store.update(job.id, JobUpdate(broken_reason=None, broken_config_hash=None))
            logger.info("job_id=%s config changed: no longer broken", job.id)
        if state.breaker_open_until is None:  # closed (policy.breaker_allows), the usual case
            return None
        breaker = policy.BreakerState(
            state.consecutive_errors, state.breaker_open_until, state.breaker_cooldown_s
        )
        if policy.breaker_allows(breaker, self.clock()) == "open":
            return SKIP_BREAKER
        return None

    async def _tick_with_retries(
        self, job: JobConfig, route: Route, state: JobState, tick: _Base, attempts: list[int]
    ) -> TickReply:
        timeout_s = job.tick_timeout_s or route.tick_timeout_s
        deadline = self.clock() + timedelta(seconds=timeout_s)
        # The first attempt runs outside tenacity: it usually succeeds, and building and driving
        # AsyncRetrying costs about as much as a NATS request. A transient failure is replayed
        # as tenacity's attempt 1, so stops, waits and retry logs are exactly tenacity's.
        attempts[0] = 1
        try:
            return await self._send(job, route, state, tick, 1, deadline)
        except TransportError as exc:
            if not _is_transient(exc):
                raise
            first_failure = exc
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(job.retry.attempts) | _StopAtDeadline(self, deadline),
            wait=policy.tenacity_wait(job.retry),
            retry=tenacity.retry_if_exception(_is_transient),
            sleep=self.sleep,  # type: ignore[arg-type]
            reraise=True,
            before_sleep=lambda rs: _log_retry(job, route, tick.tick_id, rs),
        )
        async for try_ in retrying:
            with try_:
                number = try_.retry_state.attempt_number
                attempts[0] = number
                if number == 1:
                    raise first_failure
                reply = await self._send(job, route, state, tick, number, deadline)
        return reply

    async def _send(
        self,
        job: JobConfig,
        route: Route,
        state: JobState,
        tick: _Base,
        attempt: int,
        deadline: datetime,
    ) -> TickReply:
        async with route.limit:
            # Built once the plugin's concurrency limit is taken: `now` then tells the plugin
            # how much of the budget is left (the SDK stops its handler by it).
            now = self.clock()
            if tick.sent_at is None:  # lateness runs to here: the wait for the limit is in it
                tick.sent_at = now
            remaining = (deadline - now).total_seconds()
            if remaining <= 0:
                raise _deadline_passed(route, job.id)
            request = TickRequest(
                kind=job.kind,
                job_id=job.id,
                tick_id=tick.tick_id,
                attempt=attempt,
                agent_id=job.target,
                cursor=state.cursor,
                config=job.config,
                now=now,
                scheduled_at=tick.slot,
                deadline=deadline,
                interval_hint_secs=_interval_hint(job),
                epoch=(self.epoch() or None) if self.epoch is not None else None,
            )
            return await route.transport.send(request, remaining)

    def _record(
        self,
        base: _Base,
        status: str,
        attempts: int,
        duration_s: float,
        events: int,
        error: str | None,
        finished: datetime | None = None,
    ) -> TickRecord:
        return TickRecord(
            tick_id=base.tick_id,
            slot=base.slot,
            finished_at=self.clock() if finished is None else finished,
            status=status,
            attempts=attempts,
            duration_s=duration_s,
            events=events,
            error=None if error is None else error[:MAX_RECORDED_ERROR_CHARS],
            replica=self.replica,
        )

    async def _commit_success(
        self, job: JobConfig, state: JobState, tick: _Base, reply: TickReply, record: TickRecord
    ) -> JobState:
        now = record.finished_at
        change = JobUpdate(
            cursor=UNSET if reply.next_cursor is None else reply.next_cursor,
            last_status=STATUS_OK,
            last_error=None,
            last_run_at=now,
            last_success_at=now,
            last_scheduled_at=tick.slot,
            consecutive_errors=0,
            breaker_open_until=None,
            breaker_cooldown_s=None,
            tick=record,
            keep_ticks=job.history,
        )
        if reply.next_cursor is None:
            return await self.store.update(job.id, change)
        # `pollerd cursor set|reset` may have run during the tick: the operator's cursor wins,
        # and the next tick starts from it. The store checks that in the commit's transaction.
        new_state = await self.store.update(job.id, change, expect_cursor=state.cursor)
        if new_state.cursor != reply.next_cursor:
            logger.warning(
                "job_id=%s plugin=%s tick_id=%s: cursor changed by an operator during the "
                "tick; keeping it and dropping the plugin's next_cursor",
                job.id,
                tick.plugin,
                tick.tick_id,
            )
        return new_state

    async def _commit_failure(
        self, job: JobConfig, state: JobState, outcome: TickOutcome, *, excused: bool = False
    ) -> JobState:
        now = self.clock()
        base = _Base(outcome.job_id, outcome.kind, outcome.plugin, outcome.tick_id, outcome.slot)
        common = {
            "last_status": outcome.status,
            "last_error": outcome.error,
            "last_run_at": now,
            "last_scheduled_at": outcome.slot,
            "tick": self._record(
                base, outcome.status, outcome.attempts, outcome.duration_s, 0, outcome.error
            ),
            "keep_ticks": job.history,
        }
        if outcome.error_class is ErrorClass.PERMANENT:
            change = JobUpdate(paused=True, pause_reason=outcome.error, **common)  # type: ignore[arg-type]
        elif excused:  # pollerd's NATS was down: not the plugin's failure, the breaker waits
            change = JobUpdate(**common)  # type: ignore[arg-type]
        elif outcome.error_class is ErrorClass.CONFIG:
            change = JobUpdate(
                broken_reason=outcome.error,
                broken_config_hash=job.config_hash,
                **common,  # type: ignore[arg-type]
            )
        else:
            breaker = policy.breaker_after_failure(
                policy.BreakerState(
                    state.consecutive_errors, state.breaker_open_until, state.breaker_cooldown_s
                ),
                now,
                job.breaker.threshold,
                job.breaker.cooldown_s,
                job.breaker.max_cooldown_s,
            )
            change = JobUpdate(
                consecutive_errors=breaker.consecutive_errors,
                breaker_open_until=breaker.open_until,
                breaker_cooldown_s=breaker.cooldown_s,
                **common,  # type: ignore[arg-type]
            )
        return await self.store.update(job.id, change)


class _Base:
    """What every outcome of one slot shares, and when its first request was sent."""

    __slots__ = ("job_id", "kind", "plugin", "tick_id", "slot", "sent_at")

    def __init__(self, job_id: str, kind: str, plugin: str, tick_id: str, slot: datetime) -> None:
        self.job_id = job_id
        self.kind = kind
        self.plugin = plugin
        self.tick_id = tick_id
        self.slot = slot
        self.sent_at: datetime | None = None

    def outcome(self, **kw: object) -> TickOutcome:
        if self.sent_at is not None:
            kw["lateness_s"] = (self.sent_at - self.slot).total_seconds()
        return TickOutcome(self.job_id, self.kind, self.plugin, self.tick_id, self.slot, **kw)  # type: ignore[arg-type]


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop retrying when the next attempt would start after the slot's deadline."""

    def __init__(self, runner: TickRunner, deadline: datetime) -> None:
        self._runner = runner
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not policy.attempt_fits(
            self._deadline, self._runner.clock(), retry_state.upcoming_sleep
        )


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.error_class is ErrorClass.TRANSIENT


def _log_retry(job: JobConfig, route: Route, tick_id: str, rs: tenacity.RetryCallState) -> None:
    exc = rs.outcome.exception() if rs.outcome else None
    logger.warning(
        "job_id=%s plugin=%s tick_id=%s attempt %d failed, retrying in %.2fs: %s",
        job.id,
        route.plugin_id,
        tick_id,
        rs.attempt_number,
        rs.upcoming_sleep,
        exc,
    )


def _interval_hint(job: JobConfig) -> float | None:
    interval = getattr(job.schedule, "interval_s", None)
    return float(interval) if interval is not None else None


def _deadline_passed(route: Route, job_id: str) -> TransportError:
    return TickTimeoutError(plugin=route.plugin_id, job_id=job_id, timeout_s=0.0)
