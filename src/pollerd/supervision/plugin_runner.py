"""Starts, watches and restarts the long-lived plugins that have an entrypoint (DESIGN §7).

One task per plugin runs this loop::

    starting ──ready──▶ running ──exited / pings or ticks unanswered──▶ backoff ──delay──▶ starting
        │                                                                 │
        └─kinds mismatch, no such command, exit 78──▶ failed ◀──too many restarts in the window

A plugin is ready when its micro service answers ``$SRV.INFO.<name>`` within ``start_timeout_s``
and the INFO metadata lists the manifest's kinds and protocol. While it runs, ``$SRV.PING`` goes to
that instance every ``ping_interval_s``; ``ping_failures`` unanswered pings in a row (while
pollerd's own connection is up) kill it. A plugin that answers pings but lets ``stall_timeouts``
ticks in a row time out (no reply at all, across its jobs) is alive but not serving: it is
restarted too. An exit with code ``EXIT_CONFIG`` (78, the SDK's "pollerd started me under another
plugin id") is a problem a restart cannot fix: the plugin is ``failed`` at once. Any other
exit, also during start-up, is a crash: it restarts after an exponential backoff with jitter,
until ``max_restarts`` within ``restart_window_s`` make it ``failed``. A plugin without an
entrypoint runs elsewhere: it is ``external``. How one process is started, logged and ended
is in ``pollerd.supervision.plugin_process``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsClientError

from pollerd import wire
from pollerd.config.manifest import Manifest
from pollerd.engine.policy import recent_restarts, restart_allowed, restart_delay_s
from pollerd.errors import SupervisorError
from pollerd.supervision.lifeline import with_parent_death_signal
from pollerd.supervision.plugin_process import (
    PluginProcess,
    describe_exit,
    plugin_command,
    plugin_environment,
    plugin_identity,
)
from pollerd.supervision.status import PluginState, PluginStatus
from pollerd.transports.natscancel import no_swallowed_cancel
from pollerd.transports.natsmux import mux_for
from pollerd.wire import service_name, tick_subject

logger = logging.getLogger(__name__)

EXIT_CONFIG = 78  # sysexits EX_CONFIG, as pollerd.sdk exits on a plugin id mismatch
READY_POLL_S = 0.05
READY_REQUEST_TIMEOUT_S = 1.0
SRV_INFO = "$SRV.INFO"
SRV_PING = "$SRV.PING"


# --- pure helpers -----------------------------------------------------------------------------


def _join(kinds: Sequence[str] | set[str]) -> str:
    return "[" + ", ".join(sorted(kinds)) + "]"


def check_service_info(info: object, manifest: Manifest) -> str | None:
    """Why the ``$SRV.INFO`` answer shows a plugin pollerd cannot use, or None when it fits."""
    metadata = info.get("metadata") if isinstance(info, dict) else None
    if not isinstance(metadata, dict):
        metadata = {}
    raw_kinds = metadata.get("kinds")
    served = {kind.strip() for kind in str(raw_kinds or "").split(",") if kind.strip()}
    if served != set(manifest.kinds):
        return (
            f"plugin {manifest.id!r} serves kinds {_join(served)} but its manifest "
            f"{manifest.path} declares {_join(manifest.kinds)}: make the kinds in plugin.toml "
            "match the plugin's handlers"
        )
    protocol = str(metadata.get("protocol", ""))
    if protocol != str(wire.PROTOCOL):
        return (
            f"plugin {manifest.id!r} speaks protocol {protocol or 'unknown'}, pollerd speaks "
            f"{wire.PROTOCOL}: upgrade the plugin or pollerd"
        )
    return None


def served_name(info_frame: bytes, subject: str) -> str | None:
    """The service name in a ``$SRV.INFO`` answer if one of its endpoints serves ``subject``."""
    try:
        info = json.loads(info_frame)
    except ValueError:
        return None
    endpoints = info.get("endpoints") if isinstance(info, dict) else None
    for endpoint in endpoints if isinstance(endpoints, list) else ():
        if isinstance(endpoint, dict) and endpoint.get("subject") == subject:
            name = info.get("name")
            return name if isinstance(name, str) else None
    return None


@dataclass(frozen=True, slots=True)
class _Ended:
    """Why one run of a plugin ended; ``restart=False`` is a problem a restart cannot fix.

    ``summary`` is one line for the log; ``reason`` adds the last stderr lines for the status.
    """

    summary: str
    restart: bool = True
    stderr_tail: tuple[str, ...] = ()
    show_stderr: bool = False  # the reason is in stderr: keep it even when not restarting

    @property
    def reason(self) -> str:
        if not self.stderr_tail:
            return self.summary
        return self.summary + "; its stderr ends with:\n" + "\n".join(self.stderr_tail)


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    nc: Client | None  # None: no NATS, so no long-lived plugin (zygotes need none)
    nats_url: str
    environ: Mapping[str, str]
    nats_env: Mapping[str, str]
    plugin_env: Callable[[Manifest], Mapping[str, str]]  # a plugin's own (its credentials)
    extra_env: Mapping[str, str]
    python: str
    clock: Callable[[], datetime]
    rng: random.Random
    start_timeout_s: float
    ping_interval_s: float
    ping_failures: int
    stall_timeouts: int
    backoff_initial_s: float
    backoff_max_s: float
    max_restarts: int
    restart_window_s: float
    stop_grace_s: float
    on_change: Callable[[PluginStatus], None] | None


# --- one plugin --------------------------------------------------------------------------------


class PluginRunner:
    """Keeps one plugin running: start, wait until ready, watch, restart or give up."""

    def __init__(self, manifest: Manifest, settings: RunnerSettings) -> None:
        self.manifest = manifest
        self.plugin_id = manifest.id
        self._s = settings
        self._service = service_name(manifest.id)
        self._instance: str | None = None  # the micro service instance id of the current process
        self._restart_times: list[datetime] = []
        self.settled = asyncio.Event()  # set once it is running, failed or stopped
        self._timeouts = 0  # ticks in a row that got no reply while it ran
        self._stalled = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.status = PluginStatus(
            manifest.id, PluginState.STARTING, 0, None, None, None, settings.clock()
        )

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pollerd-supervise-{self.plugin_id}")

    async def stop(self) -> None:
        """Cancel the loop, which ends the process, and wait for it."""
        task = self.task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        self._set(PluginState.STOPPED, pid=None, reason=None)
        logger.info("plugin %s stopped", self.plugin_id)

    def _set(self, state: PluginState, **changes: Any) -> None:
        previous = self.status
        since = previous.since if state is previous.state else self._s.clock()
        self.status = replace(previous, state=state, since=since, **changes)
        if state in (PluginState.RUNNING, PluginState.FAILED, PluginState.STOPPED):
            self.settled.set()
        notify(self._s.on_change, self.status)

    def tick_finished(self, timed_out: bool) -> None:
        """A tick to this plugin got a reply (``timed_out`` False) or none before its deadline."""
        if not timed_out:
            self._timeouts = 0
        elif self.status.state is PluginState.RUNNING:
            self._timeouts += 1
            if self._timeouts >= self._s.stall_timeouts:
                self._stalled.set()

    def _fail(self, ended: _Ended) -> None:
        logger.error("plugin %s failed: %s", self.plugin_id, ended.reason)
        self._set(PluginState.FAILED, pid=None, reason=ended.reason)

    async def _run(self) -> None:
        try:
            while True:
                ended = await self._run_once()
                if not ended.restart:
                    self._fail(ended)
                    return
                delay_s = self._restart_delay_s(ended)
                if delay_s is None:
                    return
                self._set(PluginState.BACKOFF, pid=None, reason=ended.reason)
                await asyncio.sleep(delay_s)
                self._restart_times.append(self._s.clock())
                self.status = replace(self.status, restarts=self.status.restarts + 1)
        except Exception as exc:  # a bug here must not leave a plugin silently unsupervised
            logger.exception("plugin %s: supervision failed", self.plugin_id)
            self._set(PluginState.FAILED, pid=None, reason=f"supervision failed: {exc!r}")

    def _restart_delay_s(self, ended: _Ended) -> float | None:
        """The backoff before the next start, or None (and ``failed``) when it gives up."""
        now = self._s.clock()
        window_s, max_restarts = self._s.restart_window_s, self._s.max_restarts
        self._restart_times = recent_restarts(self._restart_times, now, window_s)
        recent = len(self._restart_times)
        if not restart_allowed(self._restart_times, now, max_restarts, window_s):
            summary = f"gave up after {recent} restarts within {window_s:g}s; last: {ended.summary}"
            self._fail(replace(ended, summary=summary))
            return None
        delay_s = restart_delay_s(
            recent, self._s.backoff_initial_s, self._s.backoff_max_s, self._s.rng
        )
        logger.warning(
            "plugin %s %s; restarting in %.2fs (restart %d of at most %d within %gs)",
            self.plugin_id,
            ended.summary,
            delay_s,
            recent + 1,
            max_restarts,
            window_s,
        )
        return delay_s

    async def _run_once(self) -> _Ended:
        """Start the plugin, wait until ready, watch it; why this run ended. Always reaps it."""
        search_path = self._s.environ.get("PATH")
        try:
            argv = plugin_command(self.manifest, python=self._s.python, search_path=search_path)
            identity = plugin_identity(self.manifest)
        except SupervisorError as exc:
            return _Ended(str(exc), restart=False)
        env = plugin_environment(
            self.manifest,
            environ=self._s.environ,
            nats_url=self._s.nats_url,
            nats_env={**self._s.nats_env, **self._s.plugin_env(self.manifest)},
            extra_env=self._s.extra_env,
            parent_pid=os.getpid(),
        )
        try:
            process = await PluginProcess.spawn(
                self.plugin_id,
                with_parent_death_signal(argv, python=self._s.python, identity=identity),
                cwd=self.manifest.folder,
                env=env,
            )
        except OSError as exc:
            return _Ended(f"cannot start {argv[0]} in {self.manifest.folder}: {exc}")
        logger.info("plugin %s started (pid %d)", self.plugin_id, process.pid)
        self._set(PluginState.STARTING, pid=process.pid)
        try:
            ended = await self._until_ready(process)
            if ended is None:
                logger.info("plugin %s is running (pid %d)", self.plugin_id, process.pid)
                self._set(PluginState.RUNNING, reason=None)
                ended = await self._watch(process)
        finally:
            returncode = await process.stop(self._s.stop_grace_s)
            self.status = replace(self.status, last_exit=describe_exit(returncode))
        # A crash's reason shows the plugin's last words; read them once its pipes are drained.
        if ended.restart or ended.show_stderr:
            return replace(ended, stderr_tail=tuple(process.stderr_tail))
        return ended

    async def _until_ready(self, process: PluginProcess) -> _Ended | None:
        """None once the service answers INFO with the right kinds; else why it did not."""
        probe = asyncio.create_task(self._probe_info(), name=f"pollerd-probe-{self.plugin_id}")
        try:
            waited: set[asyncio.Future[Any]] = {probe, process.exited}
            await asyncio.wait(
                waited,
                timeout=self._s.start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            probe.cancel()
            await asyncio.wait({probe})
        if process.exited.done():
            returncode = process.exited.result()
            if returncode == EXIT_CONFIG:
                return _Ended(
                    f"exited while starting with code {EXIT_CONFIG}, a configuration problem "
                    "that a restart cannot fix (its stderr says which)",
                    restart=False,
                    show_stderr=True,
                )
            return _Ended(f"exited while starting ({describe_exit(returncode)})")
        if probe.cancelled():
            subject = f"{SRV_INFO}.{self._service}"
            impostor = await self._service_on_our_subject()
            if impostor is not None:
                return _Ended(
                    f"did not answer {subject}, but a service named {impostor!r} serves "
                    f"{tick_subject(self.manifest.subject_prefix)}: the plugin announces another "
                    f"id than its manifest's {self.plugin_id!r} ({self.manifest.path})",
                    restart=False,
                )
            return _Ended(f"did not answer {subject} within {self._s.start_timeout_s:g}s")
        info = probe.result()
        problem = check_service_info(info, self.manifest)
        if problem is not None:
            return _Ended(problem, restart=False)
        instance = info.get("id") if isinstance(info, dict) else None
        self._instance = instance if isinstance(instance, str) and instance else None
        return None

    async def _service_on_our_subject(self) -> str | None:
        """The name of a micro service (under another name) serving this plugin's tick subject."""
        wanted = tick_subject(self.manifest.subject_prefix)
        nc = self._s.nc
        assert nc is not None, "the supervisor starts no long-lived plugin without NATS"
        inbox = nc.new_inbox()
        try:
            sub = await nc.subscribe(inbox)
            try:
                await nc.publish(SRV_INFO, b"", reply=inbox)
                while True:
                    with no_swallowed_cancel():  # or a stopped runner would go on restarting
                        msg = await sub.next_msg(timeout=READY_REQUEST_TIMEOUT_S)
                    name = served_name(msg.data, wanted)
                    if name is not None and name != self._service:
                        return name
            finally:
                await sub.unsubscribe()
        except (NatsClientError, OSError, TimeoutError):  # nobody else answered in time
            return None

    async def _probe_info(self) -> object:
        """Ask ``$SRV.INFO.<name>`` until a service answers; its decoded answer."""
        subject = f"{SRV_INFO}.{self._service}"
        assert self._s.nc is not None, "the supervisor starts no long-lived plugin without NATS"
        # Through the request mux, not nats-py's ``request``, which can lose a cancellation that
        # comes with its answer (``natscancel``): this loop then went on asking for good (a plugin
        # that exited at start stayed "starting"). An answered future never swallows one.
        requests = mux_for(self._s.nc)
        while True:
            try:
                msg = await requests.request(subject, b"", READY_REQUEST_TIMEOUT_S)
            except TimeoutError:
                continue
            except (NatsClientError, OSError):  # no responders yet, or pollerd's NATS is down
                await asyncio.sleep(READY_POLL_S)
                continue
            try:
                return json.loads(msg.data)
            except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
                return None

    async def _watch(self, process: PluginProcess) -> _Ended:
        """Ping the running instance until it exits, misses ``ping_failures`` pings in a row or
        lets ``stall_timeouts`` ticks in a row time out."""
        self._timeouts = 0
        self._stalled.clear()
        stalled = asyncio.create_task(self._stalled.wait())
        try:
            return await self._watch_until_ended(process, stalled)
        finally:
            stalled.cancel()

    async def _watch_until_ended(
        self, process: PluginProcess, stalled: asyncio.Task[Any]
    ) -> _Ended:
        failures = 0
        while True:
            await asyncio.wait(
                {process.exited, stalled},
                timeout=self._s.ping_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if stalled.done() and not process.exited.done():
                return _Ended(
                    f"answered pings but {self._timeouts} ticks in a row got no reply before "
                    "their deadline: alive but not serving, killed"
                )
            if not process.exited.done():
                answered = await self._ping()
                failures = 0 if answered is not False else failures + 1
            if process.exited.done():
                return _Ended(f"exited ({describe_exit(process.exited.result())})")
            if failures >= self._s.ping_failures:
                return _Ended(f"did not answer {failures} pings in a row: killed as hung")
            if failures:
                logger.warning(
                    "plugin %s (pid %d) missed %d of %d pings in a row",
                    self.plugin_id,
                    process.pid,
                    failures,
                    self._s.ping_failures,
                )

    async def _ping(self) -> bool | None:
        """True if the instance answered, False if not, None if pollerd's own NATS is down."""
        subject = f"{SRV_PING}.{self._service}"
        if self._instance is not None:
            subject = f"{subject}.{self._instance}"
        assert self._s.nc is not None, "the supervisor starts no long-lived plugin without NATS"
        try:
            await mux_for(self._s.nc).request(subject, b"", self._s.ping_interval_s)  # as above
        except (NatsClientError, OSError, TimeoutError):
            return False if self._s.nc.is_connected else None
        return True


def notify(on_change: Callable[[PluginStatus], None] | None, status: PluginStatus) -> None:
    if on_change is None:
        return
    try:
        on_change(status)
    except Exception:
        logger.exception("plugin %s: the status callback failed", status.plugin_id)
