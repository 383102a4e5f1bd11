"""NatsTransport: ticks as NATS requests, against a real nats-server and real plugin processes."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from conftest import (
    NATS_PLUGINS_DIR,
    Spawn,
    long_lived_env,
    wait_until_served,
)
from conftest import make_tick_request as make_request
from pollerd.errors import (
    PluginUnavailableError,
    ProtocolError,
    TickTimeoutError,
)
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.transports.nats import NatsTransport, tick_subject
from pollerd.wire import TickReply, encode_result

pytestmark = pytest.mark.nats

# Outer bounds far above the expected time and far below the tick timeouts used with them:
# hitting one means the transport waited for its timeout instead of failing at once.
LONG_TIMEOUT_S = 60.0
FAIL_FAST_BOUND_S = 10.0


def test_tick_subject_is_the_prefix_and_tick() -> None:
    assert tick_subject("pollerd.plugins.feeds") == "pollerd.plugins.feeds.tick"


async def test_nobody_serving_the_subject_is_unavailable_at_once(nats_client: Client) -> None:
    transport = NatsTransport(
        nats_client, plugin_id="ghost", subject_prefix="pollerd.plugins.ghost"
    )
    with pytest.raises(PluginUnavailableError) as unavailable:
        await asyncio.wait_for(transport.send(make_request(), LONG_TIMEOUT_S), FAIL_FAST_BOUND_S)
    assert "no plugin serves pollerd.plugins.ghost.tick" in str(unavailable.value)
    assert "'ghost'" in str(unavailable.value)
    assert unavailable.value.job_id == "inbox"


async def test_a_plugin_that_does_not_answer_times_out(nats_client: Client) -> None:
    async def never_answer(msg: Msg) -> None:
        return None

    await nats_client.subscribe("slow.tick", cb=never_answer)
    transport = NatsTransport(nats_client, plugin_id="slow", subject_prefix="slow")
    with pytest.raises(TickTimeoutError) as timed_out:
        await transport.send(make_request(), 0.2)
    assert timed_out.value.timeout_s == 0.2
    assert timed_out.value.plugin == "slow"


async def test_a_closed_connection_is_unavailable(nats_server: EmbeddedNatsServer) -> None:
    from pollerd.natsio import connection as natsconn

    nc = await natsconn.connect(nats_server.url, name="t")
    await nc.close()
    transport = NatsTransport(nc, plugin_id="p", subject_prefix="p")
    with pytest.raises(PluginUnavailableError) as unavailable:
        await transport.send(make_request(), 5)
    assert "closed" in str(unavailable.value)


@pytest.mark.parametrize(
    ("reply", "headers", "expected"),
    [
        (b"not json", None, "not JSON"),
        (b"", {"Nats-Service-Error": "boom", "Nats-Service-Error-Code": "500"}, "boom"),
    ],
)
async def test_a_broken_reply_is_a_protocol_error(
    nats_client: Client, reply: bytes, headers: dict[str, str] | None, expected: str
) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(reply) if headers is None else await nats_client.publish(
            msg.reply, reply, headers=headers
        )

    await nats_client.subscribe("broken.tick", cb=answer)
    transport = NatsTransport(nats_client, plugin_id="broken", subject_prefix="broken")
    with pytest.raises(ProtocolError) as broken:
        await transport.send(make_request(), 5)
    assert expected in str(broken.value)


async def test_a_reply_over_the_cursor_cap_is_a_protocol_error(nats_client: Client) -> None:
    request = make_request()

    async def answer(msg: Msg) -> None:
        await msg.respond(encode_result(request.tick_id, TickReply(next_cursor=b"x" * 11)))

    await nats_client.subscribe("big.tick", cb=answer)
    transport = NatsTransport(
        nats_client, plugin_id="big", subject_prefix="big", max_cursor_bytes=10
    )
    with pytest.raises(ProtocolError) as too_big:
        await transport.send(request, 5)
    assert "over the 10 cap" in str(too_big.value)


async def test_cancelling_send_abandons_the_request(nats_client: Client) -> None:
    received = asyncio.Event()

    async def hold(msg: Msg) -> None:
        received.set()

    await nats_client.subscribe("held.tick", cb=hold)
    transport = NatsTransport(nats_client, plugin_id="held", subject_prefix="held")
    sending = asyncio.create_task(transport.send(make_request(), LONG_TIMEOUT_S))
    await asyncio.wait_for(received.wait(), FAIL_FAST_BOUND_S)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert sending.cancelled()


async def test_ticks_round_trip_through_an_sdk_served_plugin(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn
) -> None:
    prefix = "pollerd.plugins.echo"
    plugin = await spawn(
        NATS_PLUGINS_DIR / "sdk_plugin.py",
        env=long_lived_env(nats_server.url, plugin_id="echo", subject_prefix=prefix),
    )
    await wait_until_served(nats_client, "$SRV.PING.echo", plugin)
    transport = NatsTransport(nats_client, plugin_id="echo", subject_prefix=prefix)
    cursor: bytes | None = b"\x00\xfb\xff-_=/"
    seen = []
    for _ in range(3):
        reply = await transport.send(make_request(cursor=cursor), 10)
        seen.append(reply.next_cursor)
        cursor = reply.next_cursor
    assert seen == [b"\x00\xfb\xff-_=/+", b"\x00\xfb\xff-_=/++", b"\x00\xfb\xff-_=/+++"]


async def test_a_plain_nats_plugin_round_trips_its_cursor_byte_for_byte(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn
) -> None:
    prefix = "pollerd.plugins.raw"
    plugin = await spawn(
        NATS_PLUGINS_DIR / "raw_plugin.py",
        env=long_lived_env(nats_server.url, plugin_id="raw", subject_prefix=prefix),
    )
    assert plugin.stdout is not None
    assert await asyncio.wait_for(plugin.stdout.readline(), 15) == b"ready\n"
    transport = NatsTransport(nats_client, plugin_id="raw", subject_prefix=prefix)
    first = bytes(range(256))[::-1]
    cursors = [first]
    for _ in range(5):
        reply = await transport.send(make_request(cursor=cursors[-1]), 10)
        assert reply.next_cursor is not None
        cursors.append(reply.next_cursor)
    assert cursors[1:] == [first + bytes(range(n)) for n in range(1, 6)]
