"""Turns due slots into running ticks, one job at a time, by the job's overlap policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from pollerd.config.pollers import JobConfig
from pollerd.engine import policy
from pollerd.engine.runner import Route, TickOutcome, TickRunner
from pollerd.wire import make_tick_id

logger = logging.getLogger(__name__)

SKIP_OVERLAP = "overlap"
SKIP_REPLACED = "buffer_full"
SKIP_SHUTDOWN = "shutdown"
STATUS_CANCELLED = "cancelled"

_NO_BACKLOG: list[datetime] = []  # shared by every job without one; never appended to

OutcomeCallback = Callable[[JobConfig, TickOutcome], None]
SkipCallback = Callable[[JobConfig, datetime, str], None]


class _Job:
    """A job's definition and what it is doing; one per job, so kept small (slots)."""

    __slots__ = ("config", "route", "task", "buffered", "backlog")

    def __init__(self, config: JobConfig, route: Route) -> None:
        self.config = config
        self.route = route
        self.task: asyncio.Task[TickOutcome] | None = None
        self.buffered: datetime | None = None
        self.backlog: list[datetime] = _NO_BACKLOG  # missed slots, run one at a time


class Dispatcher:
    """Owns every running tick task; never more than one per job.

    ``submit`` is called by the scheduler on the event loop for each due slot and returns at once.
    The outcome of every slot, run or skipped, reaches ``on_outcome`` or ``on_skip``.
    """

    def __init__(
        self,
        runner: TickRunner,
        *,
        on_outcome: OutcomeCallback,
        on_skip: SkipCallback,
    ) -> None:
        self._runner = runner
        self._on_outcome = on_outcome
        self._on_skip = on_skip
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[TickOutcome]] = set()
        self._accepting = True
        self._held = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain(0)

    def set_job(self, job: JobConfig, route: Route) -> None:
        """Add a job or replace its definition; a running tick keeps its old definition."""
        current = self._jobs.get(job.id)
        if current is None:
            self._jobs[job.id] = _Job(job, route)
        else:
            current.config = job
            current.route = route

    def remove_job(self, job_id: str) -> None:
        """Forget a job; its running tick is cancelled and commits nothing."""
        entry = self._jobs.pop(job_id, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def hold(self) -> None:
        """Start no tick until ``resume`` (a replica that lost the lead): backlogs and buffered
        slots are dropped and running ticks cancelled; they commit nothing (the next leader
        runs their slots again)."""
        self._held = True
        for entry in self._jobs.values():
            entry.backlog.clear()
            entry.buffered = None
            if entry.task is not None:
                entry.task.cancel()

    def resume(self) -> None:
        self._held = False

    def job(self, job_id: str) -> JobConfig | None:
        entry = self._jobs.get(job_id)
        return entry.config if entry else None

    def running(self, job_id: str) -> bool:
        entry = self._jobs.get(job_id)
        return entry is not None and entry.task is not None

    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, job_id: str, slot: datetime) -> asyncio.Task[TickOutcome] | None:
        """Start, buffer, replace or skip the slot; returns the task that will run it, if any."""
        entry = self._jobs.get(job_id)
        if entry is None or self._held:
            return None
        if not self._accepting:
            self._on_skip(entry.config, slot, SKIP_SHUTDOWN)
            return None
        decision = policy.overlap_decision(
            entry.config.overlap, entry.task is not None, entry.buffered is not None
        )
        if decision == "run":
            return self._start(entry, slot, after=None)
        if decision == "buffer":
            entry.buffered = slot
            return None
        if decision == "cancel_and_run":
            previous = entry.task
            assert previous is not None
            previous.cancel()
            self._drop_backlog(entry, SKIP_OVERLAP)
            return self._start(entry, slot, after=previous)
        self._on_skip(entry.config, slot, SKIP_OVERLAP)
        return None

    def submit_backlog(self, job_id: str, slots: Sequence[datetime]) -> None:
        """Run missed slots (catch-up) one after another, oldest first, before any buffered slot.

        They are not subject to the overlap policy among themselves: each starts when the previous
        one ends. A slot that comes meanwhile meets the overlap policy as usual; ``cancel_other``
        cancels the running one and drops the rest of the backlog.
        """
        entry = self._jobs.get(job_id)
        if entry is None or not slots or self._held:
            return
        entry.backlog = sorted([*entry.backlog, *slots])
        if entry.task is None and self._accepting:
            self._start(entry, entry.backlog.pop(0), after=None)

    async def run_now(self, job_id: str, slot: datetime) -> TickOutcome | None:
        """Submit a slot and wait for it; None when the overlap policy did not run it now.

        A tick cancelled by someone else (a newer slot under ``cancel_other``, the job removed by
        a reload, shutdown) comes back as a "cancelled" outcome: the caller is not cancelled.
        """
        entry = self._jobs.get(job_id)
        task = self.submit(job_id, slot)
        if task is None or entry is None:
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise
        return TickOutcome(
            job_id,
            entry.config.kind,
            entry.route.plugin_id,
            make_tick_id(job_id, slot),
            slot,
            status=STATUS_CANCELLED,
            error="cancelled before it finished (a newer slot, a reload or shutdown); "
            "nothing was committed",
        )

    async def drain(self, grace_s: float) -> None:
        """Stop accepting slots, give running ticks ``grace_s`` to finish, cancel the rest."""
        self._accepting = False
        for entry in self._jobs.values():
            self._drop_backlog(entry, SKIP_SHUTDOWN)
            if entry.buffered is not None:
                self._on_skip(entry.config, entry.buffered, SKIP_SHUTDOWN)
                entry.buffered = None
        pending = set(self._tasks)
        if pending and grace_s > 0:
            logger.info("waiting up to %.1fs for %d running tick(s)", grace_s, len(pending))
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("cancelled %d tick(s) still running at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def _start(
        self, entry: _Job, slot: datetime, *, after: asyncio.Task[TickOutcome] | None
    ) -> asyncio.Task[TickOutcome]:
        task = asyncio.create_task(
            self._run(entry.config, entry.route, slot, after), name=f"tick:{entry.config.id}"
        )
        entry.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(entry, t))
        return task

    async def _run(
        self,
        job: JobConfig,
        route: Route,
        slot: datetime,
        after: asyncio.Task[TickOutcome] | None,
    ) -> TickOutcome:
        if after is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await after
        try:
            outcome = await self._runner.run(job, route, slot)
        except asyncio.CancelledError:
            logger.info(
                "job_id=%s plugin=%s tick cancelled, nothing committed", job.id, route.plugin_id
            )
            raise
        except Exception:
            # The runner translates every expected failure; anything else is a bug, and a bug in one
            # tick must not stop the service. The cursor is not committed.
            logger.exception(
                "job_id=%s plugin=%s tick failed unexpectedly", job.id, route.plugin_id
            )
            raise
        self._on_outcome(job, outcome)
        return outcome

    def _finished(self, entry: _Job, task: asyncio.Task[TickOutcome]) -> None:
        self._tasks.discard(task)
        if entry.task is task:
            entry.task = None
        if not task.cancelled():
            task.exception()  # mark retrieved; logged in _run
        if entry.task is not None or self._jobs.get(entry.config.id) is not entry:
            return
        if self._held:
            return
        if entry.backlog and self._accepting:
            self._start(entry, entry.backlog.pop(0), after=None)
        elif entry.buffered is not None:
            slot, entry.buffered = entry.buffered, None
            self._start(entry, slot, after=None)

    def _drop_backlog(self, entry: _Job, reason: str) -> None:
        for slot in entry.backlog:
            self._on_skip(entry.config, slot, reason)
        entry.backlog = _NO_BACKLOG
