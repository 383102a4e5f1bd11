"""RequestMux: many requests on one connection, each reply to its own caller (real nats-server)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from pollerd.transports.natsmux import RequestMux, mux_for

pytestmark = pytest.mark.nats


async def echo_later(nc: Client, subject: str) -> None:
    """Answers each request with its own payload, in the reverse order of arrival per batch."""

    async def answer(msg: Msg) -> None:
        await asyncio.sleep(0.001 * (len(msg.data) % 7))  # replies come out of order
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=answer)


async def test_concurrent_requests_each_get_their_own_reply(nats_client: Client) -> None:
    await echo_later(nats_client, "echo.tick")
    mux = RequestMux(nats_client)
    payloads = [f"request-{index}".encode() * (index % 5 + 1) for index in range(200)]
    replies = await asyncio.gather(*(mux.request("echo.tick", p, 10.0) for p in payloads))
    assert [reply.data for reply in replies] == payloads
    assert mux._pending == {}
    assert all(not tokens for tokens in mux._expiring.values())  # answered: nothing kept


async def test_nobody_listening_is_no_responders(nats_client: Client) -> None:
    with pytest.raises(NoRespondersError):
        await RequestMux(nats_client).request("nobody.tick", b"x", 10.0)


async def test_a_request_nobody_answers_times_out_and_leaves_nothing_behind(
    nats_client: Client,
) -> None:
    async def swallow(msg: Msg) -> None:
        return None

    await nats_client.subscribe("silent.tick", cb=swallow)
    mux = RequestMux(nats_client)
    results = await asyncio.gather(
        mux.request("silent.tick", b"x", 0.05),
        mux.request("silent.tick", b"y", 0.3),
        return_exceptions=True,
    )
    assert [type(result) for result in results] == [NatsTimeoutError, NatsTimeoutError]
    assert mux._pending == {}
    assert mux._expiring == {}  # each sweep step forgets its tokens


async def test_a_cancelled_request_is_forgotten_and_a_late_reply_ignored(
    nats_client: Client,
) -> None:
    held: list[Msg] = []
    arrived = asyncio.Event()

    async def hold(msg: Msg) -> None:
        held.append(msg)
        arrived.set()

    await nats_client.subscribe("held.tick", cb=hold)
    await echo_later(nats_client, "echo.tick")
    mux = RequestMux(nats_client)
    waiting = asyncio.create_task(mux.request("held.tick", b"first", 10.0))
    await arrived.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert mux._pending == {}
    await held[0].respond(b"too late")  # nobody waits for it: dropped
    assert (await mux.request("echo.tick", b"next", 10.0)).data == b"next"


async def test_one_mux_per_connection(nats_client: Client) -> None:
    assert mux_for(nats_client) is mux_for(nats_client)
