"""pollerd's own NATS connection, watched: its state for the breaker, its loss for good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client

from pollerd.errors import NatsError
from pollerd.natsio.server import EmbeddedNatsServer

logger = logging.getLogger(__name__)


class NatsLink:
    """Holds the service's client once connected (``attach``) and closes it (``close``).

    nats-py closes a connection for good after some server errors (a maximum payload violation
    among them) and never reconnects from there: every tick would fail until a restart. ``lost``
    (the client's ``on_lost``) then records why and calls ``on_fatal``: the service stops with
    exit 1, so that its process supervisor starts a fresh pollerd.
    """

    def __init__(self, on_fatal: Callable[[], None]) -> None:
        self.nc: Client | None = None
        self.url: str | None = None
        self.fatal_error: str | None = None
        self.server: EmbeddedNatsServer | None = None  # the embedded one, restarted when stuck
        self._on_fatal = on_fatal
        self._closing = False
        self._restarting = asyncio.Lock()

    def attach(self, nc: Client, url: str) -> Client:
        self.nc, self.url = nc, url
        return nc

    def lost(self, cause: str) -> None:
        if self._closing:
            return
        self.fatal_error = (
            f"the NATS connection to {self.url} was closed by the client after a server error "
            f"({cause}) and will not reconnect; pollerd stops so that its supervisor restarts it"
        )
        logger.error("%s", self.fatal_error)
        self._on_fatal()

    def state(self) -> tuple[bool, int]:
        """(connected now, reconnects so far): a change tells a tick that the link went down."""
        nc = self.nc
        return (False, 0) if nc is None else (nc.is_connected, nc.stats["reconnects"])

    async def restart_server(self, stalled_s: float) -> None:
        """Restart the embedded nats-server on its port and data: JetStream refuses every write
        to a stream after a disk-full error until the server reopens it (see STALL_S)."""
        if self.server is None or self._closing or self._restarting.locked():
            return
        async with self._restarting:
            logger.warning(
                "JetStream acknowledged no event for %.0fs (disk full?): restarting the "
                "embedded nats-server on %s with the same data",
                stalled_s,
                self.url,
            )
            await self.server.stop()
            try:
                await self.server.start()
            except NatsError as exc:  # still no space: the next stall tries again
                logger.error("the embedded nats-server did not start again: %s", exc)

    async def close(self) -> None:
        self._closing = True
        if self.nc is not None:
            await self.nc.close()
