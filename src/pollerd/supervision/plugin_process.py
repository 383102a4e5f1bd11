"""One process of a supervised plugin: its command line, its environment, its output, its end.

The plugin leads a session of its own (its pid is its process group id), so stopping it reaches
every process it started: SIGTERM to the group, a grace period, then SIGKILL to the group, and the
plugin is always reaped. Its stdout and stderr go line by line to the ``pollerd.plugin`` logger and
the last stderr lines are kept for the reason of a crash. The plugin also gets a parent-death
signal (``supervision.lifeline``), so it ends with pollerd even when pollerd itself is SIGKILLed;
the SDK watches its parent as well. Its output is logged within a rate limit
(``pollerd.transports.output``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from pollerd import wire
from pollerd.config.manifest import Manifest
from pollerd.errors import SupervisorError
from pollerd.transports.output import OutputLimiter, RateBudget
from pollerd.transports.pluginlog import log_plugin_line

logger = logging.getLogger(__name__)
plugin_logger = logging.getLogger("pollerd.plugin")

MODE_LONG_LIVED = "long_lived"
PYTHON_COMMAND = "python"
READ_CHUNK_BYTES = 64 * 1024
PIPE_EOF_WAIT_S = 1.0
KILL_WAIT_S = 5.0
STREAM_LIMIT = 2**16  # the buffer limit create_subprocess_exec uses


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` for a subprocess return code."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def plugin_environment(
    manifest: Manifest,
    *,
    environ: Mapping[str, str],
    nats_url: str,
    nats_env: Mapping[str, str],
    extra_env: Mapping[str, str],
    parent_pid: int,
) -> dict[str, str]:
    """The whole environment of a supervised plugin.

    The manifest's allow-list taken from ``environ``, then ``extra_env`` and ``nats_env``, then
    pollerd's own variables, which nothing overrides. Nothing else is inherited.
    """
    allowed = manifest.entrypoint.env if manifest.entrypoint is not None else ()
    env = {name: environ[name] for name in allowed if name in environ}
    env.update(extra_env)
    env.update(nats_env)
    env.update(
        {
            "POLLERD_PROTOCOL": str(wire.PROTOCOL),
            "POLLERD_MODE": MODE_LONG_LIVED,
            "POLLERD_PLUGIN_ID": manifest.id,
            "POLLERD_PLUGIN_VERSION": manifest.version,
            "POLLERD_SUBJECT_PREFIX": manifest.subject_prefix,
            "POLLERD_NATS_URL": nats_url,
            "POLLERD_PARENT_PID": str(parent_pid),
        }
    )
    return env


def plugin_command(manifest: Manifest, *, python: str, search_path: str | None) -> list[str]:
    """The argv of a plugin; ``SupervisorError`` when its command is not an executable file.

    ``python`` stands for the interpreter running pollerd; a command with a slash is relative to
    the plugin folder; a bare name is looked up on ``search_path`` (pollerd's PATH).
    """
    entrypoint = manifest.entrypoint
    if entrypoint is None:
        raise SupervisorError(f"plugin {manifest.id!r} has no entrypoint to start")
    command = entrypoint.command
    if command == PYTHON_COMMAND:
        program: str | None = python
    elif os.sep in command:
        candidate = manifest.folder / command
        program = str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    else:
        program = shutil.which(command, path=search_path)
    if program is None:
        raise SupervisorError(
            f"plugin {manifest.id!r}: entrypoint command {command!r} is not an executable file "
            f"(looked in {manifest.folder} and on PATH): fix [plugin.entrypoint] in {manifest.path}"
        )
    return [program, *entrypoint.args]


def plugin_identity(manifest: Manifest, *, euid: int | None = None) -> tuple[int, int] | None:
    """The (uid, gid) a plugin runs as, from ``user``/``group`` of its entrypoint; None: as
    pollerd. ``SupervisorError`` when a name is unknown or pollerd cannot switch (not root)."""
    entry = manifest.entrypoint
    if entry is None or (entry.user is None and entry.group is None):
        return None
    where = f"plugin {manifest.id!r} ({manifest.path})"
    try:
        user = pwd.getpwnam(entry.user) if entry.user is not None else None
        group = grp.getgrnam(entry.group).gr_gid if entry.group is not None else None
    except KeyError as exc:
        raise SupervisorError(f"{where}: unknown user or group {exc.args[0]}") from None
    if (os.geteuid() if euid is None else euid) != 0:
        raise SupervisorError(
            f"{where}: runs as user={entry.user} group={entry.group}, but pollerd is not root "
            "and cannot switch users; run pollerd as root or remove user/group"
        )
    uid = user.pw_uid if user is not None else os.getuid()
    gid = group if group is not None else (user.pw_gid if user is not None else os.getgid())
    return uid, gid


async def _drain(stream: asyncio.StreamReader | None, output: OutputLimiter) -> None:
    """Log the lines of a pipe until EOF, within the output's rate limit."""
    if stream is None:
        return
    try:
        while chunk := await stream.read(READ_CHUNK_BYTES):
            output.feed(chunk)
    finally:
        output.close()


def _output(plugin_id: str, what: str) -> OutputLimiter:
    def emit(text: str) -> None:
        log_plugin_line(text, plugin_id)

    def notice(text: str) -> None:
        plugin_logger.warning("plugin=%s: %s", plugin_id, text, extra={"plugin": plugin_id})

    return OutputLimiter(emit, RateBudget(time.monotonic), what=what, notice=notice)


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol of ``create_subprocess_exec``, plus a future of the exit code.

    On Python 3.11 ``Process.wait()`` returns only once the process has exited *and* its pipes
    are closed: a child the plugin left behind holding stderr would hide the plugin's exit. The
    protocol hears of the exit itself as soon as the child watcher reaps the process.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exit_code: asyncio.Future[int] = loop.create_future()
        self._exit_transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if isinstance(transport, asyncio.SubprocessTransport):
            self._exit_transport = transport

    def process_exited(self) -> None:
        super().process_exited()
        code = self._exit_transport.get_returncode() if self._exit_transport else None
        if not self.exit_code.done():
            self.exit_code.set_result(code if code is not None else -1)


class PluginProcess:
    """A started plugin with the tasks that reap it and drain its pipes; ``stop()`` ends them all.

    ``exited`` is the future of the return code, resolved as soon as the process ends.
    """

    def __init__(
        self,
        plugin_id: str,
        process: asyncio.subprocess.Process,
        exit_code: asyncio.Future[int] | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self._process = process
        stdout, stderr = _output(plugin_id, "stdout"), _output(plugin_id, "stderr")
        self.stderr_tail: deque[str] = stderr.tail
        self.exited: asyncio.Future[int] = (
            exit_code
            if exit_code is not None
            else asyncio.create_task(process.wait(), name=f"pollerd-reap-{plugin_id}")
        )
        self._pipes = [
            asyncio.create_task(_drain(process.stdout, stdout), name=f"pollerd-stdout-{plugin_id}"),
            asyncio.create_task(_drain(process.stderr, stderr), name=f"pollerd-stderr-{plugin_id}"),
        ]

    @classmethod
    async def spawn(
        cls,
        plugin_id: str,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> Self:
        """Start ``argv`` in a session of its own, with the descriptors ``pass_fds`` open in it;
        ``OSError`` when it cannot be started."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitProtocol(STREAM_LIMIT, loop),
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        process = asyncio.subprocess.Process(transport, protocol, loop)
        return cls(plugin_id, process, protocol.exit_code)

    @property
    def pid(self) -> int:
        return self._process.pid

    def signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM to the group, ``grace_s``, SIGKILL to the group; reap; finish the pipes.

        Returns the return code. Also right after the process exited on its own: what it left
        behind in its group is killed, and its last output is read.
        """
        try:
            if not self.exited.done():
                self.signal_group(signal.SIGTERM)
                await asyncio.wait({self.exited}, timeout=grace_s)
                if not self.exited.done():
                    logger.warning(
                        "plugin %s (pid %d) still runs %gs after SIGTERM: killing it",
                        self.plugin_id,
                        self.pid,
                        grace_s,
                    )
            self.signal_group(signal.SIGKILL)
            returncode = await self.exited
            await asyncio.wait(self._pipes, timeout=PIPE_EOF_WAIT_S)
        except asyncio.CancelledError:
            self.signal_group(signal.SIGKILL)
            await asyncio.wait({self.exited}, timeout=KILL_WAIT_S)
            raise
        finally:
            for pipe in self._pipes:
                pipe.cancel()
            await asyncio.wait(self._pipes)
        return returncode
