"""systemd's service notification protocol (sd_notify), in the few lines it takes.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket path; ``@`` means an
abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). pollerd
sends ``READY=1`` once it runs its jobs, ``STOPPING=1`` when it starts to drain, and
``WATCHDOG=1`` every half watchdog interval from its event loop: a loop stuck for the whole
interval stops the pings and systemd restarts the service. Without ``NOTIFY_SOCKET`` every call
does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

logger = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"
RELOADING = "RELOADING=1"


class Notifier:
    """Sends notifications to systemd when it asked for them (``NOTIFY_SOCKET``)."""

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address
        pid = os.getpid() if pid is None else pid
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(pid)
        self.watchdog_interval_s: float | None = (
            int(watchdog_usec) / 2_000_000 if watchdog_usec.isdigit() and for_us else None
        )
        if self.watchdog_interval_s is not None and self.watchdog_interval_s <= 0:
            self.watchdog_interval_s = None

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``KEY=value`` lines) as one datagram; False when not sent."""
        if self.address is None:
            return False
        message = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            logger.warning("cannot notify systemd on %s: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    @contextlib.asynccontextmanager
    async def watchdog(self) -> AsyncIterator[None]:
        """Ping the watchdog every half interval while the block runs (if systemd asked)."""
        if self.watchdog_interval_s is None or self.address is None:
            yield
            return
        task = asyncio.create_task(self._ping(self.watchdog_interval_s), name="pollerd-watchdog")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ping(self, interval_s: float) -> None:
        while True:
            self.notify(WATCHDOG)
            await asyncio.sleep(interval_s)
