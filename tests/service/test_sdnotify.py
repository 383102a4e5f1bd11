"""systemd notifications (Type=notify): READY, WATCHDOG and STOPPING from a real `pollerd run`,
and pollerd as PID 1 of a fresh PID namespace (as in a container) stopping on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import free_port
from ops.test_operator import count_job, wait_until, write_config
from pollerd.ops.adminclient import call
from pollerd.service.sdnotify import Notifier
from system_tools import require_tool

WAIT_S = 20.0
WATCHDOG_USEC = 400_000


def test_the_notifier_reads_systemds_variables() -> None:
    abstract = Notifier({"NOTIFY_SOCKET": "@pollerd/notify", "WATCHDOG_USEC": "30000000"}, pid=7)
    other_pid = Notifier(
        {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "8"}, pid=7
    )
    silent = Notifier({})

    assert (abstract.address, abstract.watchdog_interval_s) == ("\0pollerd/notify", 15.0)
    assert other_pid.watchdog_interval_s is None
    assert silent.notify("READY=1") is False


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock
    sock.close()


async def receive(sock: socket.socket, done: Callable[[list[str]], bool], seen: list[str]) -> None:
    """Read datagrams into ``seen`` (one entry per line) until ``done(seen)``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT_S):
        while not done(seen):
            data = await loop.sock_recv(sock, 4096)
            seen.extend(data.decode().splitlines())


def pings_after_ready(seen: list[str]) -> int:
    return seen[seen.index("READY=1") :].count("WATCHDOG=1") if "READY=1" in seen else 0


@pytest.mark.slow
async def test_pollerd_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("fast", every="1s")])
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.getsockname(),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pollerd",
        "run",
        "-c",
        str(config),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    seen: list[str] = []
    try:
        await receive(notify_socket, lambda lines: pings_after_ready(lines) >= 2, seen)
        process.send_signal(signal.SIGTERM)
        await receive(notify_socket, lambda lines: "STOPPING=1" in lines, seen)
        async with asyncio.timeout(WAIT_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0
    assert seen.index("READY=1") < seen.index("STOPPING=1")
    assert pings_after_ready(seen) >= 2


def child_and_its_namespace_pid(parent: int) -> tuple[int, int]:
    """The pid of ``parent``'s child, and the pid that child has in its own PID namespace."""
    child = int(Path(f"/proc/{parent}/task/{parent}/children").read_text().split()[0])
    status = Path(f"/proc/{child}/status").read_text().splitlines()
    nspid = next(line for line in status if line.startswith("NSpid:"))
    return child, int(nspid.split()[-1])


@pytest.mark.slow
async def test_pollerd_as_pid_1_of_a_pid_namespace_serves_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    unshare = require_tool("unshare")
    port = free_port()
    config = write_config(tmp_path, port, [count_job("fast", every="1s")])
    process = await asyncio.create_subprocess_exec(
        unshare,
        "--pid",
        "--fork",
        "--kill-child",
        sys.executable,
        "-m",
        "pollerd",
        "run",
        "-c",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def healthy() -> bool:
            try:
                status, _ = await call("127.0.0.1", port, "GET", "/healthz")
            except Exception:
                return False
            return status == 200

        await wait_until(healthy, WAIT_S)
        pollerd_pid, namespace_pid = child_and_its_namespace_pid(process.pid)
        os.kill(pollerd_pid, signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert namespace_pid == 1  # pollerd was PID 1 in its namespace
    assert code == 0
