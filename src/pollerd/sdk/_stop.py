"""When a long-lived plugin stops: SIGTERM, SIGINT, or the death of the process that started it.

The parent is polled every ``PARENT_POLL_S``: a direct parent through ``os.getppid()`` (robust to
zombies and pid reuse), any other pid through ``kill(pid, 0)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from pollerd.errors import NatsError

__all__ = ["ENV_PARENT_PID", "PARENT_POLL_S", "StopTrigger", "watched_parent"]

ENV_PARENT_PID = "POLLERD_PARENT_PID"
INIT_PID = 1
PARENT_POLL_S = 0.5


def watched_parent(environ: Mapping[str, str], ppid: int) -> int | None:
    """The parent pid whose death ends the service, or None to never watch."""
    raw = environ.get(ENV_PARENT_PID, "").strip()
    if not raw:
        return None if ppid == INIT_PID else ppid
    try:
        pid = int(raw)
    except ValueError:
        raise NatsError(f"{ENV_PARENT_PID} must be a process id or 0, got {raw!r}") from None
    return pid if pid > 0 else None


def _process_alive(pid: int, *, direct: bool) -> bool:
    """Whether ``pid`` still runs; for our direct parent, whether it is still our parent."""
    if direct:
        return os.getppid() == pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class StopTrigger:
    """Resolves on SIGTERM/SIGINT, when the watched parent process is gone, or on ``put()``."""

    def __init__(self, parent_pid: int | None, poll_s: float) -> None:
        self._parent_pid = parent_pid
        self._poll_s = poll_s
        self._reasons: asyncio.Queue[str] = asyncio.Queue()
        self._signals: list[signal.Signals] = []
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._reasons.put_nowait, f"got {signum.name}")
            self._signals.append(signum)
        if self._parent_pid is not None:
            self._watcher = asyncio.create_task(self._watch_parent(self._parent_pid))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._signals:
            loop.remove_signal_handler(signum)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch_parent(self, parent_pid: int) -> None:
        direct = os.getppid() == parent_pid
        # No event tells that a process died (pidfd is Linux-only): poll.
        while _process_alive(parent_pid, direct=direct):  # noqa: ASYNC110
            await asyncio.sleep(self._poll_s)
        self._reasons.put_nowait(f"parent process {parent_pid} is gone")

    async def wait(self) -> str:
        return await self._reasons.get()

    def put(self, reason: str) -> None:
        """Stop for a reason of the service's own."""
        self._reasons.put_nowait(reason)
