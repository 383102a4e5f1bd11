"""Processes an ephemeral tick left behind outside its process group, found and killed.

A tick's process runs in a session of its own and its group is killed when the tick ends, but a
descendant that calls ``setsid()`` (a daemonising helper, ``setsid cmd &``) leaves that group and
survived every tick (9 ticks, 9 processes left). Each tick's environment carries
``POLLERD_TICK_MARK=<sweeper token>-<tick number>``; children inherit it, whatever their session
or parent. ``LeftoverSweeper`` reads ``/proc/<pid>/environ`` and SIGKILLs every process carrying
its token with the number of a tick that has ended.

Reading every process's environment costs about 60 µs a process (8 ms for 140): the sweep runs in
a worker thread, at most once per ``SWEEP_INTERVAL_S`` after a tick ended, for all the ticks that
ended meanwhile. A leftover so lives up to about a second after its tick.

Limits (documented for operators): Linux only (``/proc``; elsewhere nothing is swept); a process
that clears or replaces its environment (``env -i``, ``execve`` with a new one) or runs as another
user is not found; leftovers of a previous pollerd (SIGKILLed) carry another token and are not
touched, nor are other pollerd instances' on the same host. A per-tick cgroup would close these
gaps where cgroup v2 delegation is available; not done here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MARK_VARIABLE = "POLLERD_TICK_MARK"
SWEEP_INTERVAL_S = 1.0
PROC = Path("/proc")


def leftover_pids(
    environs: Iterable[tuple[int, bytes]], token: str, running: set[int], newest: int
) -> list[int]:
    """The pids whose environment marks them as part of one of our ticks that has ended: not
    running, and not newer than ``newest`` (the last tick begun when ``running`` was taken: a
    tick begun while the sweep reads ``/proc`` is in neither, and is not a leftover)."""
    prefix = f"{MARK_VARIABLE}={token}-".encode()
    found = []
    for pid, environ in environs:
        start = environ.find(prefix)
        if start < 0 or (start > 0 and environ[start - 1] != 0):
            continue
        end = environ.find(b"\0", start)
        number = environ[start + len(prefix) : end if end >= 0 else None]
        if number.isdigit() and int(number) <= newest and int(number) not in running:
            found.append(pid)
    return found


def _environs(own_pid: int) -> Iterator[tuple[int, bytes]]:
    """Every readable process environment on the host but ours."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == own_pid:
            continue
        try:
            with open(PROC / name / "environ", "rb") as file:
                yield int(name), file.read()
        except OSError:  # gone meanwhile, or another user's
            continue


def _sweep(token: str, running: set[int], newest: int) -> list[int]:
    """Kill the leftovers of ended ticks; the pids signalled."""
    killed = []
    for pid in leftover_pids(_environs(os.getpid()), token, running, newest):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


class LeftoverSweeper:
    """Hands out tick marks and kills what ended ticks left running (see the module docstring)."""

    def __init__(self, owner: str, *, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.owner = owner
        self.token = secrets.token_hex(8)
        self._interval_s = interval_s
        self._next = 0
        self._running: set[int] = set()
        self._ended = False
        self._task: asyncio.Task[None] | None = None
        self.enabled = PROC.joinpath("self", "environ").exists()

    def begin(self) -> tuple[int, dict[str, str]]:
        """A new tick's number and the environment variable that marks its processes."""
        self._next += 1
        self._running.add(self._next)
        return self._next, {MARK_VARIABLE: f"{self.token}-{self._next}"}

    def end(self, number: int) -> None:
        """The tick is over: its leftovers go at the next sweep."""
        self._running.discard(number)
        if not self.enabled:
            return
        self._ended = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._sweep_soon(), name=f"pollerd-sweep-{self.owner}")

    async def _sweep_soon(self) -> None:
        while self._ended:
            self._ended = False
            running, newest = set(self._running), self._next
            killed = await asyncio.to_thread(_sweep, self.token, running, newest)
            if killed:
                logger.warning(
                    "plugin=%s: killed %d process(es) that ended ticks left running outside their "
                    "process group (setsid): pids %s",
                    self.owner,
                    len(killed),
                    ", ".join(map(str, killed)),
                )
            await asyncio.sleep(self._interval_s)

    async def aclose(self) -> None:
        """Stop sweeping, after a last sweep for the ticks that ended since the previous one."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.enabled and self._next:
            await asyncio.to_thread(_sweep, self.token, set(self._running), self._next)
