"""NATS connections: fail fast at the first connect, reconnect forever after."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from conftest import free_port, wait_for_condition
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.natsio.server import EmbeddedNatsServer

# Generous bounds: the first connect must fail long before nats-py's default two-minute retry.
FAIL_FAST_BOUND_S = 10.0
RECONNECT_BOUND_S = 10.0


async def test_connect_to_a_closed_port_fails_at_once_saying_where() -> None:
    port = free_port()
    with pytest.raises(NatsError) as failed:
        await asyncio.wait_for(natsconn.connect(f"nats://127.0.0.1:{port}", name="t"), 10.0)
    assert f"127.0.0.1:{port}" in str(failed.value)
    assert "is nats-server running" in str(failed.value)


async def test_a_server_list_connects_to_the_one_that_is_up_whatever_the_order(
    nats_server: EmbeddedNatsServer,
) -> None:
    down = f"nats://127.0.0.1:{free_port()}"
    for _ in range(4):  # nats-py shuffles the list: the dead server is often tried first
        client = await asyncio.wait_for(
            natsconn.connect(f"{down}, {nats_server.url}", name="t"), FAIL_FAST_BOUND_S
        )
        try:
            assert client.is_connected
        finally:
            await client.close()


async def test_a_server_list_with_every_server_down_fails_at_once() -> None:
    urls = [f"nats://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(NatsError):
        await asyncio.wait_for(natsconn.connect(",".join(urls), name="t"), FAIL_FAST_BOUND_S)


@pytest.mark.nats
async def test_connect_with_a_wrong_token_fails_naming_the_credentials(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path, token="right") as server:
        with pytest.raises(NatsError) as failed:
            await asyncio.wait_for(
                natsconn.connect(server.url, name="t", token="wrong"), FAIL_FAST_BOUND_S
            )
    assert "token" in str(failed.value)


@pytest.mark.nats
async def test_connection_comes_back_after_the_server_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.natsio.connection")
    server = EmbeddedNatsServer(tmp_path)
    await server.start()
    nc = await natsconn.connect(server.url, name="t")
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("echo", cb=echo)
        await server.stop()
        await server.start()
        await wait_for_condition(lambda: nc.stats["reconnects"] >= 1, RECONNECT_BOUND_S)
        reply = await nc.request("echo", b"again", timeout=5)
    finally:
        await nc.close()
        await server.stop()
    assert reply.data == b"again"
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost its connection" in m for m in messages)
    assert any("reconnected" in m for m in messages)
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://user:pw@example.com:4222", "nats://***@example.com:4222"),
        ("nats://tok@example.com", "nats://***@example.com"),
        ("tls://example.com:4443", "tls://example.com:4443"),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert natsconn.redact_url(url) == shown


def test_tls_key_without_a_cert_is_refused() -> None:
    with pytest.raises(NatsError) as refused:
        natsconn.build_tls_context(None, None, "key.pem")
    assert "tls_cert" in str(refused.value)


def test_missing_tls_files_are_reported_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(NatsError) as refused:
        natsconn.build_tls_context(missing, None, None)
    assert str(missing) in str(refused.value)


def test_no_tls_option_means_no_tls_context() -> None:
    assert natsconn.build_tls_context(None, None, None) is None


@pytest.mark.skipif(importlib.util.find_spec("nkeys") is not None, reason="nkeys is installed")
async def test_creds_without_nkeys_say_what_to_install() -> None:
    with pytest.raises(NatsError) as refused:
        await natsconn.connect("nats://127.0.0.1:1", name="t", creds="user.creds")
    assert "nkeys" in str(refused.value)


@dataclass
class _Secret:
    value: str

    def get_secret_value(self) -> str:
        return self.value


@dataclass
class _Config:
    url: str
    token: _Secret | None = None


@pytest.mark.nats
async def test_connect_from_config_reads_the_settings_and_unwraps_secrets(
    tmp_path: Path,
) -> None:
    async with EmbeddedNatsServer(tmp_path, token="abc") as server:
        nc = await natsconn.connect_from_config(
            _Config(url=server.url, token=_Secret("abc")), name="t"
        )
        connected = nc.is_connected
        await nc.close()
    assert connected
