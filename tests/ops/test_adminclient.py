from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pollerd.errors import PollerdError
from pollerd.ops.adminclient import base_url, call, service_is_up
from pollerd.ops.http import AdminServer
from pollerd.ops.metrics import Metrics

TOKEN = "s3cret"


class PauseOnlyBackend:
    """Just enough of an AdminBackend for a client round trip: one job that can be paused."""

    def __init__(self) -> None:
        self.row: dict[str, Any] = {"id": "feeds", "state": "active", "reason": None}

    async def job(self, job_id: str) -> dict[str, Any] | None:
        return self.row if job_id == "feeds" else None

    async def pause(self, job_id: str, reason: str | None) -> dict[str, Any]:
        if job_id != "feeds":
            raise KeyError(job_id)
        self.row.update(state="paused", reason=reason)
        return self.row


@pytest.fixture
async def server() -> AsyncIterator[AdminServer]:
    backend: Any = PauseOnlyBackend()
    async with AdminServer(backend, Metrics(), host="127.0.0.1", port=0, token=TOKEN) as running:
        yield running


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_service_is_up_when_healthz_answers(server: AdminServer) -> None:
    assert await service_is_up("127.0.0.1", server.port) is True


async def test_service_is_not_up_when_the_port_refuses(closed_port: int) -> None:
    assert await service_is_up("127.0.0.1", closed_port) is False


async def test_call_returns_the_status_and_the_json_body(server: AdminServer) -> None:
    status, body = await call("127.0.0.1", server.port, "GET", "/v1/jobs/nope")

    assert status == 404
    assert body["error"] == body["detail"] == "unknown job 'nope'"


async def test_call_sends_the_token_and_the_json_body(server: AdminServer) -> None:
    status, body = await call(
        "127.0.0.1",
        server.port,
        "POST",
        "/v1/jobs/feeds/pause",
        token=TOKEN,
        json={"reason": "upgrade"},
    )

    assert status == 200
    assert body["reason"] == "upgrade"


async def test_call_to_a_refusing_port_is_a_pollerd_error_with_the_url(closed_port: int) -> None:
    with pytest.raises(PollerdError) as info:
        await call("127.0.0.1", closed_port, "POST", "/v1/reload")

    assert f"POST http://127.0.0.1:{closed_port}/v1/reload" in str(info.value)


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8080"), ("::1", "http://[::1]:8080")],
)
def test_base_url_brackets_ipv6_literals(host: str, url: str) -> None:
    assert base_url(host, 8080) == url
