"""A supervised plugin's transport: fails fast when the plugin is down or dies mid-tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pollerd.errors import (
    PluginReplyError,
    PluginUnavailableError,
    ProtocolError,
    TickTimeoutError,
)
from pollerd.transports.base import Transport
from pollerd.wire import TickReply, TickRequest


class GuardedTransport(Transport):
    """Wraps a supervised plugin's NATS transport.

    A tick to a plugin the supervisor has given up on (failed, stopped) fails at once, and the
    ticks in flight when the plugin process exits fail as soon as the supervisor sees the exit,
    instead of waiting out their timeout: nobody is left to answer them. ``on_finished`` hears
    whether each tick timed out (no reply before its deadline) or got a reply of any kind: the
    supervisor restarts a plugin that answers pings but no longer answers ticks.
    """

    def __init__(
        self,
        inner: Transport,
        plugin_id: str,
        available: Callable[[str], bool],
        on_finished: Callable[[bool], None] | None = None,
    ) -> None:
        self._inner = inner
        self._plugin_id = plugin_id
        self._available = available
        self._on_finished = on_finished
        self._in_flight: set[asyncio.Task[object]] = set()
        self._orphaned: set[asyncio.Task[object]] = set()
        self.last_exit: str | None = None

    def plugin_exited(self, last_exit: str | None) -> None:
        """Called when the supervised process goes away: fail its in-flight ticks now."""
        self.last_exit = last_exit
        for task in self._in_flight:
            if task not in self._orphaned:
                self._orphaned.add(task)
                task.cancel()

    async def send(self, request: TickRequest, timeout_s: float) -> TickReply:
        if not self._available(self._plugin_id):
            raise self._unavailable(request, "is failed or stopped (see `pollerd plugins`)")
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            reply = await self._inner.send(request, timeout_s)
        except TickTimeoutError:
            self._finished(timed_out=True)
            raise
        except (PluginReplyError, ProtocolError):  # an answer, if not a useful one
            self._finished(timed_out=False)
            raise
        except asyncio.CancelledError:
            if task in self._orphaned and task.uncancel() == 0:
                # Our own cancellation, and nobody else's: the plugin died under this tick.
                raise self._unavailable(
                    request, f"exited during the tick ({self.last_exit or 'exited'})"
                ) from None
            raise
        finally:
            self._in_flight.discard(task)
            self._orphaned.discard(task)
        self._finished(timed_out=False)
        return reply

    def _finished(self, *, timed_out: bool) -> None:
        if self._on_finished is not None:
            self._on_finished(timed_out)

    def _unavailable(self, request: TickRequest, what: str) -> PluginUnavailableError:
        return PluginUnavailableError(
            f"plugin {self._plugin_id!r} {what}", plugin=self._plugin_id, job_id=request.job_id
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
