"""The zygote of a pre-forked plugin, supervised like a long-lived plugin.

A ``prefork = true`` ephemeral plugin runs its entrypoint once, as a zygote
(``POLLERD_MODE=prefork``, the ephemeral environment, one end of a socketpair on the descriptor in
``POLLERD_ZYGOTE_FD``). It is ready when it says so on that socket with the manifest's kinds; while
it runs, it is pinged over the socket every ``ping_interval_s``. Start, crash, backoff, give-up
and stop are ``PluginRunner``'s (``pollerd.supervision.plugin_runner``), with the same states;
only how a run starts, becomes ready and is watched differs. When it stops, its socket closes
first: the zygote then kills its children and exits; pollerd kills what it still knows of too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pollerd.config.manifest import Manifest
from pollerd.errors import PluginUnavailableError, SupervisorError
from pollerd.supervision.lifeline import with_parent_death_signal
from pollerd.supervision.plugin_process import (
    PluginProcess,
    describe_exit,
    plugin_command,
)
from pollerd.supervision.plugin_runner import (
    PluginRunner,
    RunnerSettings,
    _Ended,
    check_service_info,
)
from pollerd.supervision.status import PluginState
from pollerd.transports.subprocess import plugin_environ
from pollerd.transports.zygote import ZygoteChannel

logger = logging.getLogger(__name__)

MODE_PREFORK = "prefork"
ZYGOTE_FD_ENV = "POLLERD_ZYGOTE_FD"


def zygote_environment(
    manifest: Manifest,
    *,
    environ: Mapping[str, str],
    extra_env: Mapping[str, str],
    zygote_fd: int,
    parent_pid: int,
) -> dict[str, str]:
    """An ephemeral plugin's environment (allow-list, ``extra_env``, protocol variables) in
    ``prefork`` mode, with the zygote socket's descriptor and pollerd's pid."""
    allowed = manifest.entrypoint.env if manifest.entrypoint is not None else ()
    env = plugin_environ(manifest.id, allowed, environ, extra_env)
    env["POLLERD_MODE"] = MODE_PREFORK
    env[ZYGOTE_FD_ENV] = str(zygote_fd)
    env["POLLERD_PARENT_PID"] = str(parent_pid)
    return env


class ZygoteRunner(PluginRunner):
    """Keeps a plugin's zygote running; ``channel()`` is how ticks reach it."""

    def __init__(self, manifest: Manifest, settings: RunnerSettings) -> None:
        super().__init__(manifest, settings)
        self._channel: ZygoteChannel | None = None
        self._changed = asyncio.Event()

    async def channel(self, wait_s: float) -> ZygoteChannel:
        """The running zygote's channel; waits at most ``wait_s`` while it is starting.

        ``PluginUnavailableError`` in any other state, or when it is not running in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            channel = self._channel
            if channel is not None and channel.lost is None:
                return channel
            status = self.status
            remaining = deadline - loop.time()
            if status.state is not PluginState.STARTING or remaining <= 0:
                why = f" ({status.reason.splitlines()[0]})" if status.reason else ""
                raise PluginUnavailableError(
                    f"plugin {self.plugin_id!r}: its zygote is {status.state.value}{why}",
                    plugin=self.plugin_id,
                )
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                pass

    def _set(self, state: PluginState, **changes: Any) -> None:
        super()._set(state, **changes)
        self._changed.set()  # wake who waits in channel(); later waits use a fresh event
        self._changed = asyncio.Event()

    async def _run_once(self) -> _Ended:
        search_path = self._s.environ.get("PATH")
        try:
            argv = plugin_command(self.manifest, python=self._s.python, search_path=search_path)
        except SupervisorError as exc:
            return _Ended(str(exc), restart=False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = zygote_environment(
            self.manifest,
            environ=self._s.environ,
            extra_env=self._s.extra_env,
            zygote_fd=theirs.fileno(),
            parent_pid=os.getpid(),
        )
        try:
            process = await PluginProcess.spawn(
                self.plugin_id,
                with_parent_death_signal(argv, python=self._s.python),
                cwd=self.manifest.folder,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            return _Ended(f"cannot start {argv[0]} in {self.manifest.folder}: {exc}")
        finally:
            theirs.close()
        logger.info("plugin %s zygote started (pid %d)", self.plugin_id, process.pid)
        channel = ZygoteChannel(ours, self.plugin_id)
        self._set(PluginState.STARTING, pid=process.pid)
        try:
            ended = await self._until_forking(process, channel)
            if ended is None:
                logger.info("plugin %s zygote is ready (pid %d)", self.plugin_id, process.pid)
                self._channel = channel
                self._set(PluginState.RUNNING, reason=None)
                ended = await self._watch_zygote(process, channel)
        finally:
            self._channel = None
            channel.close("its zygote stopped")
            returncode = await process.stop(self._s.stop_grace_s)
            self.status = replace(self.status, last_exit=describe_exit(returncode))
        return replace(ended, stderr_tail=tuple(process.stderr_tail)) if ended.restart else ended

    async def _until_forking(self, process: PluginProcess, channel: ZygoteChannel) -> _Ended | None:
        """None once the zygote said ``ready`` with the manifest's kinds; else why it did not."""
        starting: set[asyncio.Future[Any]] = {channel.ready, process.exited}
        await asyncio.wait(
            starting,
            timeout=self._s.start_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if process.exited.done():
            return _Ended(
                f"zygote exited while starting ({describe_exit(process.exited.result())})"
            )
        if channel.ready.done() and channel.ready.exception() is not None:
            return _Ended("zygote closed its socket while starting")
        if not channel.ready.done():
            return _Ended(
                f"zygote did not say ready within {self._s.start_timeout_s:g}s: is the entrypoint "
                "an SDK plugin (plugin.run())? Only those can be pre-forked"
            )
        message = channel.ready.result()
        if message.get("op") == "unfit":
            return _Ended(f"cannot be pre-forked: {message.get('error')}", restart=False)
        metadata = {
            "kinds": ",".join(str(kind) for kind in message.get("kinds") or ()),
            "protocol": str(message.get("protocol", "")),
        }
        problem = check_service_info({"metadata": metadata}, self.manifest)
        return _Ended(problem, restart=False) if problem is not None else None

    async def _watch_zygote(self, process: PluginProcess, channel: ZygoteChannel) -> _Ended:
        """Ping the zygote until it exits, closes its socket or misses pings in a row."""
        failures = 0
        while True:
            ending: set[asyncio.Future[Any]] = {process.exited, channel.closed}
            await asyncio.wait(
                ending,
                timeout=self._s.ping_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not (process.exited.done() or channel.closed.done()):
                failures = 0 if await channel.ping(self._s.ping_interval_s) else failures + 1
            if process.exited.done():
                return _Ended(f"zygote exited ({describe_exit(process.exited.result())})")
            if channel.closed.done():
                return _Ended(f"zygote closed its socket: {channel.closed.result()}")
            if failures >= self._s.ping_failures:
                return _Ended(f"zygote did not answer {failures} pings in a row: killed as hung")
