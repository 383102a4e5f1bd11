"""Shared fixtures: a real nats-server on a free loopback port, a client, and process helpers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from pollerd.natsio import connection as natsconn
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.wire import TickRequest

FIXTURES_DIR = Path(__file__).parent / "fixtures"
NATS_PLUGINS_DIR = FIXTURES_DIR / "nats_plugins"
PROCESS_GONE_TIMEOUT_S = 10.0
PROCESS_POLL_S = 0.02
READY_TIMEOUT_S = 15.0
NATS_FIXTURES = {"nats_server", "nats_client"}
TICK_NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the NATS fixtures are marked ``nats`` even when they forget to say so."""
    for item in items:
        if NATS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nats)


def free_port() -> int:
    """A TCP port free on loopback right now (another process may take it before you bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_exists(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no /proc: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_process_gone(pid: int, timeout_s: float = PROCESS_GONE_TIMEOUT_S) -> None:
    """Wait until ``pid`` is gone; ``TimeoutError`` if it still runs after ``timeout_s``."""
    await wait_for_condition(lambda: not process_exists(pid), timeout_s)


async def wait_for_condition(
    condition: Callable[[], bool], timeout_s: float = PROCESS_GONE_TIMEOUT_S
) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` after ``timeout_s``.

    For states nothing signals (a process gone, a counter reached); prefer an event if there is one.
    """
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling a state that no event announces
            await asyncio.sleep(PROCESS_POLL_S)


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """A started embedded nats-server (JetStream on) on a free loopback port, stopped after."""
    async with EmbeddedNatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def nats_client(nats_server: EmbeddedNatsServer) -> AsyncIterator[Client]:
    """A client connected to ``nats_server`` with pollerd's connection options, closed after."""
    client = await natsconn.connect(nats_server.url, name="pytest")
    yield client
    await client.close()


async def wait_until_served(
    nc: Client,
    subject: str,
    process: asyncio.subprocess.Process | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> bytes:
    """Request ``subject`` until someone answers (e.g. ``$SRV.PING.<name>``); return the answer.

    Fails early if ``process`` (the program expected to answer) exits first.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            if process is not None and process.returncode is not None:
                raise AssertionError(f"pid {process.pid} exited with {process.returncode}")
            try:
                return (await nc.request(subject, b"", timeout=1.0)).data
            except (NoRespondersError, NatsTimeoutError):
                await asyncio.sleep(PROCESS_POLL_S)


def make_tick_request(
    *,
    kind: str = "echo",
    job_id: str = "inbox",
    cursor: bytes | None = None,
    config: dict[str, Any] | None = None,
    now: datetime = TICK_NOW,
) -> TickRequest:
    """A tick request with fixed times (``tick_id`` is ``<job_id>@<now>``)."""
    return TickRequest(
        kind=kind,
        job_id=job_id,
        tick_id=f"{job_id}@{now.isoformat()}",
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config or {},
        now=now,
        scheduled_at=now,
        deadline=now + timedelta(seconds=20),
    )


def long_lived_env(nats_url: str, *, plugin_id: str, subject_prefix: str) -> dict[str, str]:
    """The environment pollerd gives a long-lived plugin (DESIGN §5)."""
    return {
        "POLLERD_PROTOCOL": "1",
        "POLLERD_MODE": "long_lived",
        "POLLERD_PLUGIN_ID": plugin_id,
        "POLLERD_NATS_URL": nats_url,
        "POLLERD_SUBJECT_PREFIX": subject_prefix,
    }


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for starting fixture programs."""
    return sys.executable


@pytest.fixture
async def spawn(python: str) -> AsyncIterator[Spawn]:
    """Start ``python <script> [args]`` with extra environment; every process is killed after.

    stdout is a pipe (fixture programs print markers there); stderr goes to the test's output.
    """
    processes: list[asyncio.subprocess.Process] = []

    async def start(
        script: Path, *args: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            python,
            str(script),
            *args,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()
