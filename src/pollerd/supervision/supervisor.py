"""The supervisor of every long-lived plugin with an entrypoint; one ``PluginRunner`` each (see
``pollerd.supervision.plugin_runner`` for the loop and its states)."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Self

from nats.aio.client import Client

from pollerd.config.manifest import Manifest
from pollerd.errors import PluginUnavailableError, SupervisorError
from pollerd.supervision.plugin_process import (
    MODE_LONG_LIVED,
)
from pollerd.supervision.plugin_runner import PluginRunner, RunnerSettings, notify
from pollerd.supervision.status import UNAVAILABLE_STATES, PluginState, PluginStatus, utc_now
from pollerd.supervision.zygote import ZygoteRunner
from pollerd.transports.zygote import ZygoteChannel

logger = logging.getLogger(__name__)


def _no_env(manifest: Manifest) -> Mapping[str, str]:
    return {}


# --- all plugins -------------------------------------------------------------------------------


class Supervisor:
    """Runs the long-lived plugins of ``manifests`` that have an entrypoint, as a context manager.

    Entering starts them and waits (at most ``start_timeout_s``) until each is running or failed,
    so that scheduling starts with plugins ready. Leaving stops every plugin and reaps it; their
    statuses stay, as ``stopped``.
    Ephemeral manifests are ignored, but for pre-forked ones, whose zygote runs like a long-lived
    plugin (``pollerd.supervision.zygote``). Long-lived ones without an entrypoint are
    ``external``; without ``nc`` (no NATS) a long-lived plugin cannot run and is ``failed``.
    ``on_change`` is called with the new status on every change of state or pid.
    """

    def __init__(
        self,
        manifests: Sequence[Manifest],
        *,
        nc: Client | None,
        nats_url: str,
        environ: Mapping[str, str],
        nats_env: Mapping[str, str] | None = None,
        plugin_env: Callable[[Manifest], Mapping[str, str]] | None = None,
        extra_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        start_timeout_s: float = 10.0,
        ping_interval_s: float = 5.0,
        ping_failures: int = 3,
        stall_timeouts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        stop_grace_s: float = 5.0,
        on_change: Callable[[PluginStatus], None] | None = None,
    ) -> None:
        self._manifests = list(manifests)
        self._settings = RunnerSettings(
            nc=nc,
            nats_url=nats_url,
            environ=dict(environ),
            nats_env=dict(nats_env or {}),
            plugin_env=plugin_env or _no_env,
            extra_env=dict(extra_env or {}),
            python=python,
            clock=clock,
            rng=rng or random.Random(),
            start_timeout_s=start_timeout_s,
            ping_interval_s=ping_interval_s,
            ping_failures=ping_failures,
            stall_timeouts=stall_timeouts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            max_restarts=max_restarts,
            restart_window_s=restart_window_s,
            stop_grace_s=stop_grace_s,
            on_change=on_change,
        )
        self._runners: dict[str, PluginRunner] = {}
        self._external: dict[str, PluginStatus] = {}

    async def __aenter__(self) -> Self:
        try:
            started = [runner for m in self._manifests if (runner := self._start(m)) is not None]
            await self._wait_settled(started)
        except BaseException:
            await self._stop_all()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_all()

    def status(self, plugin_id: str) -> PluginStatus | None:
        runner = self._runners.get(plugin_id)
        return runner.status if runner is not None else self._external.get(plugin_id)

    def statuses(self) -> list[PluginStatus]:
        found = [runner.status for runner in self._runners.values()]
        return sorted([*found, *self._external.values()], key=lambda status: status.plugin_id)

    def available(self, plugin_id: str) -> bool:
        """False while the plugin is failed or stopped: its ticks fail fast as unavailable.

        A plugin the supervisor does not know (ephemeral, removed) counts as available.
        """
        status = self.status(plugin_id)
        return status is None or status.state not in UNAVAILABLE_STATES

    def tick_finished(self, plugin_id: str, timed_out: bool) -> None:
        """A tick to ``plugin_id`` got a reply or timed out: how the supervisor sees a plugin
        that answers pings but no longer serves ticks."""
        runner = self._runners.get(plugin_id)
        if runner is not None:
            runner.tick_finished(timed_out)

    async def add(self, manifest: Manifest) -> None:
        """Start supervising one more plugin; returns once it is running or failed (bounded)."""
        if manifest.id in self._runners or manifest.id in self._external:
            raise SupervisorError(
                f"plugin {manifest.id!r} is already supervised: remove it before adding it again"
            )
        runner = self._start(manifest)
        if runner is not None:
            await self._wait_settled([runner])

    async def remove(self, plugin_id: str) -> None:
        """Stop a plugin and forget it; a plugin the supervisor does not know is ignored."""
        runner = self._runners.pop(plugin_id, None)
        if runner is not None:
            await runner.stop()
        external = self._external.pop(plugin_id, None)
        if external is not None:
            self._stopped(external)

    def _stopped(self, status: PluginStatus) -> PluginStatus:
        stopped = replace(status, state=PluginState.STOPPED, since=self._settings.clock())
        notify(self._settings.on_change, stopped)
        return stopped

    async def zygote_channel(self, plugin_id: str, wait_s: float) -> ZygoteChannel:
        """The channel to a pre-forked plugin's running zygote (see ``ZygoteRunner.channel``)."""
        runner = self._runners.get(plugin_id)
        if not isinstance(runner, ZygoteRunner):
            raise PluginUnavailableError(
                f"plugin {plugin_id!r} has no zygote under supervision", plugin=plugin_id
            )
        return await runner.channel(wait_s)

    def _start(self, manifest: Manifest) -> PluginRunner | None:
        if manifest.prefork:
            zygote = ZygoteRunner(manifest, self._settings)
            self._runners[manifest.id] = zygote
            zygote.start()
            return zygote
        if manifest.lifecycle != MODE_LONG_LIVED:
            return None
        if self._settings.nc is None:
            status = PluginStatus(
                manifest.id,
                PluginState.FAILED,
                0,
                None,
                None,
                "a long-lived plugin needs NATS, and this pollerd has no connection",
                self._settings.clock(),
            )
            self._external[manifest.id] = status
            notify(self._settings.on_change, status)
            return None
        if manifest.entrypoint is None:
            status = PluginStatus(
                manifest.id, PluginState.EXTERNAL, 0, None, None, None, self._settings.clock()
            )
            self._external[manifest.id] = status
            notify(self._settings.on_change, status)
            return None
        runner = PluginRunner(manifest, self._settings)
        self._runners[manifest.id] = runner
        runner.start()
        return runner

    async def _wait_settled(self, runners: Sequence[PluginRunner]) -> None:
        try:
            async with asyncio.timeout(self._settings.start_timeout_s):
                for runner in runners:
                    await runner.settled.wait()
        except TimeoutError:
            waiting = [runner.plugin_id for runner in runners if not runner.settled.is_set()]
            logger.warning(
                "plugins %s are not running after %gs; scheduling starts anyway",
                ", ".join(waiting),
                self._settings.start_timeout_s,
            )

    async def _stop_all(self) -> None:
        """Stop every plugin; their statuses stay, as ``stopped``."""
        runners = [r for r in self._runners.values() if r.status.state is not PluginState.STOPPED]
        if runners:
            await asyncio.gather(*(runner.stop() for runner in runners))
        for plugin_id, status in self._external.items():
            if status.state is not PluginState.STOPPED:
                self._external[plugin_id] = self._stopped(status)
