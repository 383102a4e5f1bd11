"""The SDK stops a handler at its tick's deadline and exits when too many threads are stuck.

A real plugin process (tests/fixtures/edges/hanging.py: at most 4 ticks at once, 1 stuck thread
tolerated) on a real nats-server, reached through pollerd's NATS transport.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client

from conftest import FIXTURES_DIR, Spawn, long_lived_env, wait_until_served
from pollerd import wire
from pollerd.errors import PluginReplyError
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.transports.nats import NatsTransport

pytestmark = pytest.mark.nats

HANGING = FIXTURES_DIR / "edges" / "hanging.py"
PLUGIN_ID = "edgy"
PREFIX = f"pollerd.plugins.{PLUGIN_ID}"
BUDGET_S = 0.4
EXIT_STUCK = 70
EXIT_WAIT_S = 10.0


def short_tick(kind: str, job_id: str, log: Path) -> wire.TickRequest:
    now = datetime.now(UTC)
    return wire.TickRequest(
        kind=kind,
        job_id=job_id,
        tick_id=f"{job_id}@{now.isoformat()}",
        attempt=1,
        agent_id="",
        cursor=None,
        config={"log": str(log)},
        now=now,
        scheduled_at=now,
        deadline=now + timedelta(seconds=BUDGET_S),
    )


async def expect_overdue(transport: NatsTransport, request: wire.TickRequest) -> PluginReplyError:
    """Send a tick whose handler never ends; the error reply the plugin sends before timeout."""
    with pytest.raises(PluginReplyError) as caught:
        await transport.send(request, BUDGET_S + 1.0)
    return caught.value


async def test_a_stuck_sync_handler_is_answered_in_time_and_too_many_make_the_plugin_exit(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn, tmp_path: Path
) -> None:
    env = long_lived_env(nats_server.url, plugin_id=PLUGIN_ID, subject_prefix=PREFIX)
    process = await spawn(HANGING, env=env)
    await wait_until_served(nats_client, f"$SRV.PING.{PLUGIN_ID}", process)
    transport = NatsTransport(nats_client, plugin_id=PLUGIN_ID, subject_prefix=PREFIX)
    log = tmp_path / "runs.log"

    started = time.monotonic()
    first = await expect_overdue(transport, short_tick("hang_sync", "one", log))
    answered_after_s = time.monotonic() - started
    canary = await transport.send(short_tick("canary", "canary", log), BUDGET_S + 1.0)
    second = await expect_overdue(transport, short_tick("hang_sync", "two", log))
    async with asyncio.timeout(EXIT_WAIT_S):
        returncode = await process.wait()

    assert answered_after_s < BUDGET_S  # answered before pollerd's own timeout
    assert first.error_class.value == "transient"
    assert "did not finish by the tick's deadline" in str(first)
    assert "its thread cannot be cancelled and still runs" in str(first)
    assert canary.next_cursor == b"+"  # one stuck thread is tolerated: the rest still serve
    assert "did not finish by the tick's deadline" in str(second)
    assert returncode == EXIT_STUCK  # the second stuck thread is one too many


async def test_async_handlers_past_their_deadline_are_cancelled_and_queued_ticks_answered_in_time(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn, tmp_path: Path
) -> None:
    env = long_lived_env(nats_server.url, plugin_id=PLUGIN_ID, subject_prefix=PREFIX)
    process = await spawn(HANGING, env=env)
    await wait_until_served(nats_client, f"$SRV.PING.{PLUGIN_ID}", process)
    transport = NatsTransport(nats_client, plugin_id=PLUGIN_ID, subject_prefix=PREFIX)
    log = tmp_path / "runs.log"
    slots = 4  # hanging.py runs at most 4 ticks at once

    started = time.monotonic()
    errors = await asyncio.gather(
        *(expect_overdue(transport, short_tick("hang", f"h{i}", log)) for i in range(2 * slots))
    )
    all_answered_after_s = time.monotonic() - started
    canary = await transport.send(short_tick("canary", "canary", log), BUDGET_S + 1.0)

    messages = [str(error) for error in errors]
    overdue = [m for m in messages if "did not finish by the tick's deadline" in m]
    assert len(overdue) == slots and all(m.endswith("cancelled") for m in overdue)
    assert sum("no free slot before the tick's deadline" in m for m in messages) == slots
    assert all_answered_after_s < BUDGET_S  # the queued ones too: their wait counts
    assert canary.next_cursor == b"+"
    assert process.returncode is None
