"""pollerd's end of the socket to a plugin's zygote: ask for a forked child, hear of its exit.

The other end is ``pollerd.sdk._zygote`` (its docstring has the protocol): one JSON message per
``SOCK_SEQPACKET`` datagram. ``fork()`` sends three descriptors (the child's stdin, stdout and
stderr) and returns the child's pid with a future of its return code; the zygote reports the code
once it reaped the child. When the zygote's end closes (it exited, or was killed), pending forks
fail as unavailable and every child still known is killed with its process group: its exit code
then reads as SIGKILL and ``lost`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pollerd.errors import PluginUnavailableError

__all__ = ["ForkedPid", "ZygoteChannel", "ZygoteLost"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4096  # the same cap as pollerd.sdk._zygote
ZYGOTE_FDS = 3


class ZygoteLost(Exception):
    """The zygote's end of the socket closed; the message says what pollerd knows of why."""


@dataclass(frozen=True, slots=True)
class ForkedPid:
    pid: int
    exited: asyncio.Future[int]  # the return code, as the zygote reports it after reaping


class ZygoteChannel:
    """One connection to one zygote process. ``ready`` resolves with its ``ready`` message."""

    def __init__(self, sock: socket.socket, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._next_id = 0
        self._forks: dict[int, asyncio.Future[ForkedPid]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._pongs: list[asyncio.Future[None]] = []
        self.ready: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def lost(self) -> str | None:
        """Why the channel closed, or None while it is open."""
        return self.closed.result() if self.closed.done() else None

    async def fork(
        self, fds: Sequence[int], timeout_s: float, env: Mapping[str, str] | None = None
    ) -> ForkedPid:
        """A new child with ``fds`` as its stdin, stdout and stderr, and ``env`` added to its
        environment (the tick's mark, which what it starts inherits).

        ``PluginUnavailableError`` when the zygote refuses, is gone or does not answer in time.
        """
        self._check_open()
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[ForkedPid] = self._loop.create_future()
        self._forks[request_id] = answer
        try:
            message = {"op": "fork", "id": request_id, "env": dict(env or {})}
            await self._send(message, fds, timeout_s)
            async with asyncio.timeout(timeout_s):
                return await answer
        except TimeoutError:
            raise self._unavailable(f"its zygote did not fork within {timeout_s:g}s") from None
        finally:
            self._forks.pop(request_id, None)

    async def ping(self, timeout_s: float) -> bool:
        """True if the zygote answered a ping within ``timeout_s``."""
        if self.lost is not None:
            return False
        pong: asyncio.Future[None] = self._loop.create_future()
        self._pongs.append(pong)
        try:
            await self._send({"op": "ping"}, (), timeout_s)
            # Not wait_for: on Python 3.11 it returns the pong that lands with a cancellation
            # and loses the cancellation (the supervisor's watch loop then went on pinging).
            async with asyncio.timeout(timeout_s):
                await pong
        except (TimeoutError, PluginUnavailableError):
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._pongs.remove(pong)
        return True

    def close(self, reason: str = "pollerd closed the zygote's socket") -> None:
        """Close the socket (the zygote then kills its children and exits); kill what is left."""
        if self.closed.done():
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self.closed.set_result(reason)
        lost = PluginUnavailableError(f"plugin {self.plugin_id!r}: {reason}", plugin=self.plugin_id)
        waiters: list[asyncio.Future[Any]] = [self.ready, *self._forks.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(lost)
        if not self.ready.done():  # nobody may be waiting for it
            self.ready.exception()
        for pid, exited in self._exits.items():
            if not exited.done():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                exited.set_result(-signal.SIGKILL)
        self._exits.clear()

    # -- the socket ------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any], fds: Sequence[int], timeout_s: float) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        async with asyncio.timeout(timeout_s):
            while True:
                self._check_open()
                try:
                    socket.send_fds(self._sock, [data], list(fds))
                    return
                except BlockingIOError:
                    await self._writable()
                except OSError as exc:
                    self.close(f"the zygote's socket failed: {exc.strerror or exc}")

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        while not self.closed.done():
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._sock, MAX_MESSAGE_BYTES, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(f"the zygote's socket failed: {exc.strerror or exc}")
                return
            for fd in fds:  # the zygote sends none; never leak one
                os.close(fd)
            if not data:
                self.close("its zygote exited")
                return
            try:
                self._dispatch(data)
            except (KeyError, TypeError, ValueError):
                logger.warning(
                    "plugin=%s: zygote sent a malformed message %r", self.plugin_id, data
                )

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            logger.warning("plugin=%s: zygote sent an unreadable message %r", self.plugin_id, data)
            return
        op = message.get("op")
        if op in ("ready", "unfit") and not self.ready.done():
            self.ready.set_result(message)
        elif op == "forked":
            pid = int(message["pid"])
            exited = self._exits[pid] = self._loop.create_future()
            self._resolve_fork(message.get("id"), ForkedPid(pid, exited))
        elif op == "refused":
            error = self._unavailable(f"its zygote refused to fork: {message.get('error')}")
            self._resolve_fork(message.get("id"), error)
        elif op == "exited":
            ended = self._exits.pop(int(message["pid"]), None)
            if ended is not None and not ended.done():
                ended.set_result(int(message["code"]))
        elif op == "pong":
            for pong in self._pongs:
                if not pong.done():
                    pong.set_result(None)
                    break

    def _resolve_fork(self, request_id: object, outcome: ForkedPid | Exception) -> None:
        waiter = self._forks.get(request_id) if isinstance(request_id, int) else None
        if waiter is None or waiter.done():  # the tick gave up waiting: the child is not wanted
            if isinstance(outcome, ForkedPid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(outcome.pid, signal.SIGKILL)
            return
        if isinstance(outcome, Exception):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)

    def _check_open(self) -> None:
        if self.closed.done():
            raise self._unavailable(self.closed.result())

    def _unavailable(self, what: str) -> PluginUnavailableError:
        return PluginUnavailableError(f"plugin {self.plugin_id!r}: {what}", plugin=self.plugin_id)
