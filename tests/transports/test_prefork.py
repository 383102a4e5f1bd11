"""PreforkTransport against a real zygote (tests/fixtures/prefork/zygote) and its real children."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import make_tick_request, process_exists, wait_for_condition
from pollerd.config.manifest import Manifest, load_manifest
from pollerd.errors import TickTimeoutError, TransportError
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.prefork import PreforkTransport

ZYGOTE_PLUGIN = Path(__file__).parents[1] / "fixtures" / "prefork" / "zygote" / "plugin.toml"
HANG_TIMEOUT_S = 1.0
KILL_GRACE_S = 0.5
GONE_WITHIN_S = 5.0


@pytest.fixture
def manifest() -> Manifest:
    return load_manifest(ZYGOTE_PLUGIN)


@pytest.fixture
async def supervisor(manifest: Manifest) -> AsyncIterator[Supervisor]:
    environ = {**os.environ, "PREFORK_TEST_MARKER": "passed", "PREFORK_TEST_SECRET": "kept out"}
    async with Supervisor([manifest], nc=None, nats_url="", environ=environ) as running:
        yield running


@pytest.fixture
def transport(manifest: Manifest, supervisor: Supervisor) -> PreforkTransport:
    environ = {**os.environ, "PREFORK_TEST_MARKER": "passed", "PREFORK_TEST_SECRET": "kept out"}
    return PreforkTransport.from_manifest(
        manifest,
        environ,
        kill_grace_s=KILL_GRACE_S,
        connect=functools.partial(supervisor.zygote_channel, manifest.id),
    )


def logged_pids(caplog: pytest.LogCaptureFixture, pattern: str) -> list[int]:
    return [int(found) for found in re.findall(pattern, caplog.text)]


async def test_each_tick_runs_in_a_fresh_child_that_sees_no_earlier_tick(
    transport: PreforkTransport, supervisor: Supervisor
) -> None:
    replies = [await transport.send(make_tick_request(kind="echo"), 5.0) for _ in range(3)]

    status = supervisor.status("zygote")
    pids = {reply.metrics["pid"] for reply in replies}
    assert status is not None and status.pid is not None
    assert len(pids) == 3 and status.pid not in pids
    assert {reply.metrics["zygote"] for reply in replies} == {status.pid}  # imported once
    assert [reply.metrics["seen"] for reply in replies] == [1, 1, 1]  # module state not shared
    assert all(reply.events[0].data["pgid"] == reply.metrics["pid"] for reply in replies)


async def test_concurrent_ticks_each_get_their_own_child_and_their_own_reply(
    transport: PreforkTransport,
) -> None:
    requests = [
        make_tick_request(kind="echo", job_id=f"job-{n}", cursor=b"%d" % n) for n in range(8)
    ]

    replies = await asyncio.gather(*(transport.send(request, 10.0) for request in requests))

    assert [reply.next_cursor for reply in replies] == [b"%d" % n for n in range(8)]
    assert len({reply.metrics["pid"] for reply in replies}) == 8


async def test_a_cancelled_tick_kills_its_child(
    transport: PreforkTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    tick = asyncio.create_task(transport.send(make_tick_request(kind="hang"), 30.0))
    await wait_for_condition(lambda: bool(logged_pids(caplog, r"hanging in pid (\d+)")), 10.0)

    tick.cancel()
    with pytest.raises(asyncio.CancelledError):
        await tick

    [child] = logged_pids(caplog, r"hanging in pid (\d+)")
    await wait_for_condition(lambda: not process_exists(child), GONE_WITHIN_S)


@pytest.mark.parametrize("repeat", [1, 64, 900], ids=["256B", "16KiB", "225KiB-over-a-pipe"])
async def test_binary_cursors_round_trip_byte_for_byte(
    transport: PreforkTransport, repeat: int
) -> None:
    cursor = bytes(range(256)) * repeat + b"\x00\xff\n\r"

    reply = await transport.send(make_tick_request(kind="echo", cursor=cursor), 5.0)

    assert reply.next_cursor == cursor


async def test_a_hanging_child_is_killed_at_the_timeout(
    transport: PreforkTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")

    with pytest.raises(TickTimeoutError) as caught:
        await transport.send(make_tick_request(kind="hang"), HANG_TIMEOUT_S)

    [child] = logged_pids(caplog, r"hanging in pid (\d+)")
    await wait_for_condition(lambda: not process_exists(child), GONE_WITHIN_S)
    assert "did not reply within 1s" in str(caught.value)


async def test_a_grandchild_that_ignores_sigterm_is_killed_with_the_child(
    transport: PreforkTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")

    with pytest.raises(TickTimeoutError):
        await transport.send(make_tick_request(kind="orphan"), HANG_TIMEOUT_S)

    [grandchild] = logged_pids(caplog, r"grandchild (\d+)")
    await wait_for_condition(lambda: not process_exists(grandchild), GONE_WITHIN_S)
    assert "ignored SIGTERM" in caplog.text


async def test_a_helper_that_left_the_group_with_setsid_is_killed_after_the_tick(
    transport: PreforkTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")

    try:
        await transport.send(make_tick_request(kind="escape"), 5.0)
        [escaped] = logged_pids(caplog, r"escaped (\d+)")
        await wait_for_condition(lambda: not process_exists(escaped), GONE_WITHIN_S)
    finally:
        await transport.aclose()


async def test_a_crash_costs_one_tick_and_says_what_happened(
    transport: PreforkTransport,
) -> None:
    with pytest.raises(TransportError) as caught:
        await transport.send(make_tick_request(kind="crash"), 5.0)
    after = await transport.send(make_tick_request(kind="echo"), 5.0)

    assert "exited with code 3 without a reply" in str(caught.value)
    assert "about to crash" in str(caught.value)  # the tail of its stderr
    assert (caught.value.plugin, caught.value.job_id) == ("zygote", "inbox")
    assert after.metrics["seen"] == 1


async def test_a_child_gets_the_allow_listed_environment_only(
    transport: PreforkTransport,
) -> None:
    reply = await transport.send(make_tick_request(kind="env"), 5.0)

    # LC_CTYPE: Python's own C-locale coercion (PEP 538) sets it at start-up when no locale is set.
    names = set(reply.events[0].data["names"]) - {"LC_CTYPE"}
    assert "PREFORK_TEST_MARKER" in names
    assert "PREFORK_TEST_SECRET" not in names and "PATH" not in names
    assert {name for name in names if not name.startswith("POLLERD_")} == {"PREFORK_TEST_MARKER"}
    assert "POLLERD_ZYGOTE_FD" not in names
