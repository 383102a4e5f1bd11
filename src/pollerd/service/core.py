"""The running service: store, NATS, plugins, scheduler and dispatcher, put together."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from nats.aio.client import Client

from pollerd.config.pollers import JobConfig
from pollerd.config.reload import ReloadPlan
from pollerd.config.schedule import EverySchedule, utc_now
from pollerd.config.setup import Setup
from pollerd.engine import policy
from pollerd.engine.dispatcher import Dispatcher
from pollerd.engine.events import EventPublisher
from pollerd.engine.phase import first_slot_bounds
from pollerd.engine.runner import STATUS_STORE, TickOutcome, TickRunner
from pollerd.engine.scheduler import Scheduler
from pollerd.errors import NotReadyError, PollerdError
from pollerd.natsio.connection import connect_from_config
from pollerd.natsio.jetstream import JetStreamPublisher
from pollerd.ops.metrics import Metrics
from pollerd.service.catchup import catchup
from pollerd.service.faults import fault_after_publish
from pollerd.service.leadership import Leadership, make_leadership
from pollerd.service.natsaccess import NatsAccess
from pollerd.service.natslink import NatsLink
from pollerd.service.observer import TickRecorder
from pollerd.service.reloading import ReloadRefusedError, SpareReader, prepare_reload
from pollerd.service.routes import RouteTable, supervised
from pollerd.service.watch import config_fingerprint
from pollerd.stores import SERVICE_CHECKPOINT_EVERY_S, SERVICE_COMMIT_WINDOW_S, open_store
from pollerd.stores.base import JobSeed, JobState, Store
from pollerd.stores.statelock import StateLock
from pollerd.supervision.status import PluginState, PluginStatus
from pollerd.supervision.supervisor import Supervisor

logger = logging.getLogger(__name__)

PHASE_STARTING = "starting"
PHASE_RUNNING = "running"
PHASE_STOPPING = "stopping"


class Service:
    """``async with Service(setup, environ=os.environ) as svc: await svc.wait()``.

    With ``schedule=False`` nothing is scheduled: the CLI uses that to run one tick through the
    same path (store, plugins, NATS, events) while the service is not running.
    """

    def __init__(
        self,
        setup: Setup,
        *,
        environ: Mapping[str, str],
        clock: Callable[[], datetime] = utc_now,
        publisher: EventPublisher | None = None,
        store: Store | None = None,
        schedule: bool = True,
        http: bool = True,
        supervisor_options: Mapping[str, float] | None = None,
    ) -> None:
        self.setup = setup
        self.config = setup.config
        self.environ = dict(environ)
        # Which pollerd ran a tick, in its history: the host name (a pod's name in Kubernetes).
        self.replica = self.environ.get("POLLERD_REPLICA") or socket.gethostname()
        self.clock = clock
        nats = self.config.nats
        self.store = store or open_store(
            self.config,
            connect=lambda: connect_from_config(nats, name="pollerd-store"),
            commit_window_s=SERVICE_COMMIT_WINDOW_S,
            checkpoint_every_s=SERVICE_CHECKPOINT_EVERY_S,
        )
        self.metrics = Metrics()
        self.recorder = TickRecorder(self.metrics, clock, lambda p: self._routes.full(p))
        self.metrics.watch(
            job_times=lambda: self.recorder.job_times(self.setup, self._next_fire_s),
            readiness=self.readiness,
        )
        self.nc: Client | None = None
        self.nats = NatsAccess(self.config.nats)
        self.nats_url: str | None = None
        self.supervisor: Supervisor | None = None
        self.config_error: str | None = None
        self.http_port: int | None = None
        self._publisher = publisher
        self._schedule = schedule
        self._http = http and self.config.http.enabled
        self._supervisor_options = dict(supervisor_options or {})
        self._stack = AsyncExitStack()
        self._stopped = asyncio.Event()
        self._routes = RouteTable(self.config, self.environ, None, None)
        self._scheduler: Scheduler | None = None
        self._dispatcher: Dispatcher | None = None
        self._runner: TickRunner | None = None
        self._reload_lock = asyncio.Lock()
        self._spare_reader = SpareReader()
        # The files as the last reload found them (modification times and sizes): the watcher
        # does not read again what a reload asked for over HTTP has just read.
        self.loaded_fingerprint: tuple[object, ...] | None = None
        self.leadership: Leadership | None = None
        self.reload_requested = asyncio.Event()
        self.store_error: str | None = None
        self.link = NatsLink(self.stop)  # fatal_error: why the service stopped by itself
        # starting → running → stopping: health answers in every phase, ticks only when running.
        self.phase = PHASE_STARTING

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.phase = PHASE_STOPPING
        await self._stack.aclose()

    async def _start(self) -> None:
        if not self.config.store.replicated:  # replicas are kept apart by the leader lease
            self._stack.enter_context(StateLock(self.config.state_dir))
        await self._stack.enter_async_context(self.store)
        publisher = self._publisher or await self._start_nats()
        if self._http:
            # Before the plugins: /healthz and /readyz answer while a plugin starts or backs off
            # (the supervisor waits up to its start timeout for each to be running).
            await self._start_http()
        await self._start_plugins()
        self.leadership = make_leadership(self)
        self._runner = TickRunner(
            store=self.leadership.tick_store() if self.leadership else self.store,
            publisher=publisher,
            clock=self.clock,
            after_publish=fault_after_publish(self.environ),
            nats_link=self.link.state if self.nc is not None else None,
            replica=self.replica,
            epoch=self.leadership.lease.fence if self.leadership else None,
        )
        self._dispatcher = Dispatcher(
            self._runner, on_outcome=self._on_outcome, on_skip=self._on_skip
        )
        self._scheduler = Scheduler(self._on_slot, clock=self.clock)
        # Exit runs in reverse: stop scheduling, then drain running ticks within the grace period,
        # then stop plugins, NATS and the store.
        if self.leadership is not None:  # released after the drain: its commits are fenced
            self._stack.push_async_callback(self.leadership.lease.__aexit__, None, None, None)
        self._stack.push_async_callback(self._drain)
        await self._stack.enter_async_context(self._scheduler)
        await self._add_jobs(self.setup.jobs)
        if self.leadership is not None:
            await self.leadership.lease.__aenter__()
        for broken in self.setup.broken:
            logger.error("job %s is broken and will not run: %s", broken.id or "?", broken.reason)
        self.phase = PHASE_RUNNING
        self._stack.push_async_callback(self._spare_reader.aclose)
        self._spare_reader.start_for(self.config.path, self.environ)
        logger.info(
            "pollerd running %d job(s) with %d plugin(s); state in %s",
            len(self.setup.jobs),
            len(self._routes),
            self.config.state_dir,
        )

    async def _start_nats(self) -> EventPublisher:
        manifests = self.setup.router.plugins()
        store_dir = self.config.state_dir / "nats"
        nc = await self.nats.start(self._stack, store_dir, manifests, on_lost=self.link.lost)
        self.nats_url = self.nats.url
        self.link.server = self.nats.server  # restarted when JetStream is stuck
        self.nc = self.link.attach(nc, self.nats_url)
        self._stack.push_async_callback(self.link.close)
        publisher = JetStreamPublisher(self.nc, on_stall=self.link.restart_server)
        await publisher.ensure_stream()
        return publisher

    async def _start_plugins(self) -> None:
        manifests = self.setup.router.plugins()
        if (watched := [m for m in manifests if supervised(m, self.nc)]) or self.nc is not None:
            self.supervisor = Supervisor(
                watched,
                nc=self.nc,
                nats_url=self.nats_url or "",
                environ=self.environ,
                plugin_env=self.nats.plugin_env,
                extra_env=self._extra_env(),
                on_change=self._on_plugin_change,
                **self._supervisor_options,  # type: ignore[arg-type]
            )
            await self._stack.enter_async_context(self.supervisor)
        self._routes = RouteTable(
            self.config, self.environ, self.nc, self.supervisor, extra_env=self._extra_env()
        )
        for manifest in manifests:
            self._routes.add(manifest)
        self._stack.push_async_callback(self._routes.aclose)

    async def _start_http(self) -> None:
        from pollerd.ops.http import AdminServer
        from pollerd.service.backend import ServiceBackend

        http = self.config.http
        server = AdminServer(
            ServiceBackend(self), self.metrics, host=http.host, port=http.port, token=http.token
        )
        await self._stack.enter_async_context(server)
        self.http_port = server.port
        logger.info("admin API on http://%s:%d", http.host, server.port)

    def _extra_env(self) -> dict[str, str]:
        return {"POLLERD_CONFIG_DIR": str(self.config.path.parent)}

    async def _drain(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.drain(self.config.shutdown_grace_s)

    def stop(self) -> None:
        self._stopped.set()

    def request_reload(self, reason: str) -> None:
        logger.info("reload requested (%s)", reason)
        self.reload_requested.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    # -- jobs ----------------------------------------------------------------------------------

    async def _add_jobs(self, jobs: Sequence[JobConfig]) -> None:
        """Store (one transaction for all), then schedule each job: O(N) with no I/O per job."""
        assert self._scheduler is not None and self._dispatcher is not None
        states = await self.store.ensure_many([JobSeed(j.id, j.kind, j.paused) for j in jobs])
        self.recorder.seed(states)
        now = self.clock()
        for job in jobs:
            self._add_job(job, states[job.id], now)

    def _add_job(self, job: JobConfig, state: JobState, now: datetime) -> None:
        assert self._scheduler is not None and self._dispatcher is not None
        manifest = self.setup.router.plugin_for(job.kind)
        assert manifest is not None, "resolve_jobs keeps only jobs with an owner"
        if not job.enabled:
            logger.info("job_id=%s is disabled", job.id)
            return
        self._dispatcher.set_job(job, self._routes[manifest.id])
        if not self._schedule or not self._leads():
            return
        self._dispatcher.submit_backlog(job.id, catchup(job, state, now, self.metrics))
        after, anchor = first_slot_bounds(
            job.id, job.schedule, align=job.align, last_slot=state.last_scheduled_at, now=now
        )
        first = self._scheduler.add(
            job.id, job.schedule, job.timezone, jitter_s=job.jitter_s, after=after, anchor=anchor
        )
        # Per job at DEBUG only: 10,000 INFO lines made a start-up slower and its log unreadable.
        logger.debug("job_id=%s plugin=%s scheduled, first slot %s", job.id, manifest.id, first)

    def _remove_job(self, job_id: str) -> None:
        assert self._scheduler is not None and self._dispatcher is not None
        self._scheduler.remove(job_id)
        self._dispatcher.remove_job(job_id)
        self.recorder.forget(job_id)

    def _on_slot(self, job_id: str, slot: datetime) -> None:
        assert self._dispatcher is not None
        if self._leads():  # a replica frozen past its lease starts nothing when it wakes up
            self._dispatcher.submit(job_id, slot)

    def _on_outcome(self, job: JobConfig, outcome: TickOutcome) -> None:
        if outcome.skipped:
            self._on_skip(job, outcome.slot, outcome.skipped)
            return
        self.recorder.outcome(job, outcome)
        if outcome.status == STATUS_STORE:  # readiness says so until a check succeeds
            self.store_error = outcome.error
        hint = outcome.reply.next_interval_secs if outcome.reply is not None else None
        if hint and isinstance(job.schedule, EverySchedule) and self._scheduler is not None:
            delay_s = policy.next_interval_s(hint, job.schedule.interval_s)
            self._scheduler.override_next(job.id, self.clock() + timedelta(seconds=delay_s))

    def _on_skip(self, job: JobConfig, slot: datetime, reason: str) -> None:
        manifest = self.setup.router.plugin_for(job.kind)
        self.recorder.skip(job, manifest.id if manifest else None, slot, reason)

    def _on_plugin_change(self, status: PluginStatus) -> None:
        self.metrics.plugin_state(status.plugin_id, status.state.value, status.restarts)
        self._routes.plugin_changed(status)

    async def tick_now(self, job_id: str, *, dry_run: bool = False) -> TickOutcome | None:
        """One tick now, through the overlap policy and concurrency limit of a scheduled one.

        None means the overlap policy did not run it (a tick of the job is already running).
        """
        if self.phase != PHASE_RUNNING or self._dispatcher is None or self._runner is None:
            raise NotReadyError(f"pollerd is {self.phase}: no ticks now; retry once it is ready")
        job = self._dispatcher.job(job_id)
        if job is None:
            raise KeyError(job_id)
        if not dry_run and self.leadership is not None and not self.leadership.leading():
            raise PollerdError(self.leadership.standby_message())
        slot = self.clock()
        if dry_run:
            manifest = self.setup.router.plugin_for(job.kind)
            assert manifest is not None
            return await self._runner.run(job, self._routes[manifest.id], slot, dry_run=True)
        return await self._dispatcher.run_now(job_id, slot)

    # -- reload --------------------------------------------------------------------------------

    async def reload(self) -> dict[str, object]:
        """Validate the config on disk; apply it if valid, else keep running the old one."""
        if self.phase != PHASE_RUNNING:
            raise NotReadyError(f"pollerd is {self.phase}; reload once it is ready")
        async with self._reload_lock:
            self.loaded_fingerprint = config_fingerprint(self.config.path, self.config.plugin_dirs)
            try:
                prepared = await prepare_reload(self.setup, self.environ, self._spare_reader)
            except ReloadRefusedError as exc:
                return self._refuse_reload(str(exc))
            plan, new, pending = prepared.plan, prepared.setup, prepared.restart_needed
            if pending:
                logger.warning(
                    "pollers.yaml changed %s: these apply after a restart of pollerd; the jobs "
                    "and plugins are reloaded now",
                    ", ".join(pending),
                )
            try:
                await self._apply(plan, new)
            except PollerdError as exc:
                self.config_error = str(exc)
                self.metrics.config_reloaded(False)
                logger.error("config reload failed while applying: %s", exc)
                return {"ok": False, "error": str(exc), **plan.summary()}
            self.config_error = None
            self.metrics.config_reloaded(True)
            if not plan.empty:
                logger.info("config reloaded: %s", plan.summary())
            return {"ok": True, "error": None, "restart_needed": pending, **plan.summary()}

    def _refuse_reload(self, error: str) -> dict[str, object]:
        self.config_error = error
        self.metrics.config_reloaded(False)
        logger.error("config reload refused, still running the previous config:\n%s", error)
        return {"ok": False, "error": error}

    async def _apply(self, plan: ReloadPlan, new: Setup) -> None:
        for job_id in plan.jobs_removed:
            self._remove_job(job_id)
        for job in plan.jobs_changed:
            self._remove_job(job.id)
        for plugin_id in (*plan.plugins_removed, *(m.id for m in plan.plugins_changed)):
            if self.supervisor is not None:
                await self.supervisor.remove(plugin_id)
            await self._routes.remove(plugin_id)
            self.metrics.forget_plugin(plugin_id)
        self.setup = new
        await self.nats.plugins_changed(new.router.plugins())
        for manifest in (*plan.plugins_added, *plan.plugins_changed):
            if supervised(manifest, self.nc) and self.supervisor is not None:
                await self.supervisor.add(manifest)
            self._routes.add(manifest)
        await self._add_jobs([*plan.jobs_added, *plan.jobs_changed])
        for broken in new.broken:
            logger.error("job %s is broken and will not run: %s", broken.id or "?", broken.reason)

    # -- queries -------------------------------------------------------------------------------

    def next_run_at(self, job_id: str) -> datetime | None:
        return self._scheduler.next_run_at(job_id) if self._scheduler else None

    def _next_fire_s(self, job_id: str) -> float | None:
        return self._scheduler.next_fire_s(job_id) if self._scheduler else None

    def _leads(self) -> bool:
        return self.leadership is None or self.leadership.leading()

    def readiness(self) -> dict[str, str | None]:
        """Component → None when ready, else why not."""
        result: dict[str, str | None] = {"store": self.store_error, "nats": None, "plugins": None}
        result["config"] = self.config_error
        result["service"] = None if self.phase == PHASE_RUNNING else self.phase
        if self.nc is not None and not self.nc.is_connected:
            result["nats"] = f"not connected to {self.nats_url}"
        if self.supervisor is not None:
            waiting = [
                f"{s.plugin_id} is {s.state.value}" + (f" ({s.reason})" if s.reason else "")
                for s in self.supervisor.statuses()
                if s.state not in (PluginState.RUNNING, PluginState.EXTERNAL)
            ]
            result["plugins"] = "; ".join(waiting) or None
        return result

    async def refresh_job_gauges(self) -> None:
        await self.recorder.refresh_job_gauges(self.store, self.setup)

    async def check_store(self) -> None:
        try:
            await self.store.ping()
        except PollerdError as exc:
            self.store_error = str(exc)
        else:
            self.store_error = None
