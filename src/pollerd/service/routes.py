"""How the service reaches each plugin: one route (transport, concurrency limit, timeout) per
plugin, built from its manifest."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Iterator, Mapping

from nats.aio.client import Client

from pollerd.config.manifest import Manifest
from pollerd.config.pollers import ServiceConfig
from pollerd.engine.runner import Route
from pollerd.errors import PollerdError, SupervisorError
from pollerd.supervision.lifeline import popen_identity
from pollerd.supervision.plugin_process import plugin_identity
from pollerd.supervision.status import PluginState, PluginStatus
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.base import Transport
from pollerd.transports.guarded import GuardedTransport
from pollerd.transports.nats import NatsTransport
from pollerd.transports.prefork import PreforkTransport
from pollerd.transports.subprocess import SubprocessTransport

# A supervised plugin in one of these states has no process: its in-flight ticks fail at once.
_GONE = (PluginState.BACKOFF, PluginState.FAILED, PluginState.STOPPED)


def supervised(manifest: Manifest, nc: Client | None) -> bool:
    """Long-lived plugins (when there is NATS) and the zygotes of pre-forked ones are supervised."""
    return manifest.prefork or (manifest.lifecycle == "long_lived" and nc is not None)


class RouteTable:
    """The routes by plugin id; owns their transports and closes them."""

    def __init__(
        self,
        config: ServiceConfig,
        environ: Mapping[str, str],
        nc: Client | None,
        supervisor: Supervisor | None,
        *,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._environ = environ
        self._nc = nc
        self._supervisor = supervisor
        self._extra_env = dict(extra_env or {})
        self._routes: dict[str, Route] = {}

    def __getitem__(self, plugin_id: str) -> Route:
        return self._routes[plugin_id]

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def full(self, plugin_id: str | None) -> bool:
        """Whether the plugin has all its ``max_concurrent_ticks`` places taken right now."""
        route = self._routes.get(plugin_id) if plugin_id is not None else None
        return route is not None and route.limit.locked()

    def add(self, manifest: Manifest) -> Route:
        route = self._routes[manifest.id] = self._build(manifest)
        return route

    async def remove(self, plugin_id: str) -> None:
        route = self._routes.pop(plugin_id, None)
        if route is not None:
            await route.transport.aclose()

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.transport.aclose()

    def plugin_changed(self, status: PluginStatus) -> None:
        """A supervised plugin without a process fails its in-flight ticks now, not at timeout."""
        route = self._routes.get(status.plugin_id)
        if (
            route is not None
            and isinstance(route.transport, GuardedTransport)
            and status.state in _GONE
        ):
            route.transport.plugin_exited(status.last_exit)

    def _build(self, manifest: Manifest) -> Route:
        transport: Transport
        if manifest.prefork and self._supervisor is not None:
            transport = PreforkTransport.from_manifest(
                manifest,
                self._environ,
                python=sys.executable,
                max_cursor_bytes=self._config.max_cursor_bytes,
                extra_env=self._extra_env,
                connect=functools.partial(self._supervisor.zygote_channel, manifest.id),
            )
        elif manifest.lifecycle == "ephemeral":
            try:
                identity = plugin_identity(manifest)
            except SupervisorError as exc:
                raise PollerdError(str(exc)) from exc
            transport = SubprocessTransport.from_manifest(
                manifest,
                self._environ,
                python=sys.executable,
                max_cursor_bytes=self._config.max_cursor_bytes,
                extra_env=self._extra_env,
                identity=popen_identity(identity),
            )
        else:
            if self._nc is None:
                raise PollerdError(f"plugin {manifest.id!r} is long-lived and needs NATS")
            transport = NatsTransport(
                self._nc,
                plugin_id=manifest.id,
                subject_prefix=manifest.subject_prefix,
                max_cursor_bytes=self._config.max_cursor_bytes,
            )
            if self._supervisor is not None:
                supervisor, plugin_id = self._supervisor, manifest.id
                transport = GuardedTransport(
                    transport,
                    plugin_id,
                    supervisor.available,
                    lambda timed_out: supervisor.tick_finished(plugin_id, timed_out),
                )
        return Route(
            plugin_id=manifest.id,
            transport=transport,
            limit=asyncio.Semaphore(manifest.max_concurrent_ticks),
            tick_timeout_s=manifest.tick_timeout_s,
        )
