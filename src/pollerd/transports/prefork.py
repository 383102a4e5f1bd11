"""Pre-forked ephemeral plugins: each tick runs in a child that the plugin's zygote forks.

A ``prefork = true`` plugin has a zygote (started, watched and restarted by
``pollerd.supervision.zygote``) that imported the plugin once. For each tick this transport makes
three pipes, has the zygote fork a child onto them (``pollerd.transports.zygote``), and from there
the tick is exactly a spawned one: the subprocess transport writes the request line, reads and
validates the reply line, forwards and bounds stderr, and at the timeout or after the exit kills
the child's process group. Only how the process comes to be differs.

When the zygote is not running the tick fails as unavailable (transient, so retried within the
slot); while it is starting, the tick waits for it within its own timeout. It never falls back to
a spawn: that would hide a broken zygote behind ticks ten times slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pollerd.errors import PluginUnavailableError
from pollerd.transports.subprocess import ChildProcess, SubprocessTransport
from pollerd.transports.zygote import ForkedPid, ZygoteChannel

__all__ = ["ConnectZygote", "ForkedChild", "PreforkTransport"]

STREAM_LIMIT = 2**16  # the buffer limit create_subprocess_exec uses
EXIT_REPORT_WAIT_S = 1.0  # how long a tick without a reply waits for its exit code

ConnectZygote = Callable[[float], Awaitable[ZygoteChannel]]
"""The running zygote's channel, waiting at most that many seconds for one that is starting;
``PluginUnavailableError`` when there is none."""


class ForkedChild:
    """A forked child seen as a ``ChildProcess``: its pid, its pipes, its exit.

    The child is not pollerd's, so pollerd watches it with a pidfd: ``wait()`` returns as soon as
    it is gone, without waiting for the zygote to be scheduled, reap it and report its code.
    ``returncode`` is the code the zygote reported, or ``0`` for a child that is gone and not yet
    reported: only a tick that got its reply sees that, and there the code does not matter (a tick
    without a reply waits for the report, ``exit_reported()``, to say how the child ended).
    """

    def __init__(
        self,
        forked: ForkedPid,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        pipes: list[asyncio.BaseTransport],
        *,
        written: int = 0,
    ) -> None:
        self._forked = forked
        self.written = written  # how much of the request is in the stdin pipe already
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr
        self._pipes = pipes
        self._loop = asyncio.get_running_loop()
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self._pidfd: int | None = None
        forked.exited.add_done_callback(self._ended)
        if not forked.exited.done():
            with contextlib.suppress(OSError):  # already reaped, or no pidfd: the report will do
                self._pidfd = os.pidfd_open(forked.pid)
                self._loop.add_reader(self._pidfd, self._ended)

    @property
    def pid(self) -> int:
        return self._forked.pid

    @property
    def returncode(self) -> int | None:
        exited = self._forked.exited
        if exited.done():
            return exited.result()
        return 0 if self._gone.done() else None

    async def wait(self) -> int:
        await asyncio.shield(self._gone)
        return self.returncode or 0

    async def exit_reported(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until the zygote reported the exit code."""
        await asyncio.wait({self._forked.exited}, timeout=timeout_s)

    def close_pipes(self) -> None:
        for pipe in self._pipes:
            pipe.close()
        self._unwatch()

    def _ended(self, *_: object) -> None:
        self._unwatch()
        if not self._gone.done():
            self._gone.set_result(None)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class PreforkTransport(SubprocessTransport):
    """Runs each tick in a child forked by the plugin's zygote (see the module docstring).

    Takes the subprocess transport's options (the entrypoint is what the supervisor runs as the
    zygote) plus ``connect``, which finds the running zygote.
    """

    def __init__(self, *, connect: ConnectZygote, **kw: Any) -> None:
        super().__init__(**kw)
        self._connect = connect

    async def _spawn(
        self, job_id: str, mark: Mapping[str, str], timeout_s: float, frame: bytes
    ) -> ChildProcess:
        try:
            channel = await self._connect(timeout_s)
        except PluginUnavailableError as exc:
            raise PluginUnavailableError(str(exc), **self._ids(job_id)) from None
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours = [stdin_w, stdout_r, stderr_r]
        try:
            written = _write_early(stdin_w, frame)
            forked = await channel.fork([stdin_r, stdout_w, stderr_w], timeout_s, env=mark)
        except PluginUnavailableError as exc:
            _close(ours)
            raise PluginUnavailableError(str(exc), **self._ids(job_id)) from None
        except BaseException:
            _close(ours)
            raise
        finally:
            _close([stdin_r, stdout_w, stderr_w])  # the child has its own copies now
        try:
            return await _attach(forked, *ours, written=written)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(forked.pid, signal.SIGKILL)
            raise

    async def _exchange(
        self, proc: ChildProcess, frame: bytes, job_id: str, timeout_s: float
    ) -> bytes | None:
        if not isinstance(proc, ForkedChild):  # pragma: no cover - _spawn makes only those
            return await super()._exchange(proc, frame, job_id, timeout_s)
        line = await super()._exchange(proc, frame[proc.written :], job_id, timeout_s)
        if line is None:  # the error message says how it ended: wait for the zygote's word
            await proc.exit_reported(EXIT_REPORT_WAIT_S)
        return line

    async def _reap(self, proc: ChildProcess, stderr_task: asyncio.Task[None], job_id: str) -> None:
        try:
            await super()._reap(proc, stderr_task, job_id)
        finally:
            if isinstance(proc, ForkedChild):
                proc.close_pipes()


async def _attach(
    forked: ForkedPid, stdin_fd: int, stdout_fd: int, stderr_fd: int, *, written: int
) -> ForkedChild:
    """Our ends of the child's pipes as asyncio streams (as ``create_subprocess_exec`` makes)."""
    loop = asyncio.get_running_loop()
    files = [
        os.fdopen(stdin_fd, "wb", buffering=0),
        os.fdopen(stdout_fd, "rb", buffering=0),
        os.fdopen(stderr_fd, "rb", buffering=0),
    ]
    pipes: list[asyncio.BaseTransport] = []
    try:
        readers = [asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop) for _ in range(2)]
        for reader, file in zip(readers, files[1:], strict=True):
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            read_transport, _ = await loop.connect_read_pipe(
                functools.partial(_same, protocol), file
            )
            pipes.append(read_transport)
        write_transport, flow = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), files[0]
        )
        pipes.append(write_transport)
        writer = asyncio.StreamWriter(write_transport, flow, None, loop)
    except BaseException:
        for pipe in pipes:
            pipe.close()
        for file in files:
            file.close()
        raise
    return ForkedChild(forked, writer, readers[0], readers[1], pipes, written=written)


def _write_early(fd: int, frame: bytes) -> int:
    """Put what fits of the request in the child's stdin pipe before the fork, without waiting:
    the child reads it at once instead of waiting for pollerd to hear of the fork."""
    os.set_blocking(fd, False)
    try:
        return os.write(fd, frame)
    except BlockingIOError:
        return 0


def _same(protocol: asyncio.StreamReaderProtocol) -> asyncio.StreamReaderProtocol:
    return protocol


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
