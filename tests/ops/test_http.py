from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pollerd.errors import NotReadyError, PollerdError
from pollerd.ops.http import AdminServer, HttpError, check_authorization, parse_cursor_body
from pollerd.ops.httpguard import API_HEADER, PROBLEM_CONTENT_TYPE
from pollerd.ops.metrics import Metrics

TOKEN = "s3cret"


class DictBackend:
    """An in-memory AdminBackend: jobs are rows in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            "feeds": {"id": "feeds", "kind": "rss", "state": "active", "cursor": None},
            "prices": {"id": "prices", "kind": "http", "state": "active", "cursor": None},
        }
        self.ready: dict[str, str | None] = {
            "store": None,
            "nats": None,
            "plugins": None,
            "config": None,
        }
        self.readiness_error: Exception | None = None
        self.tick_error: Exception | None = None
        self.reload_result: dict[str, Any] = {
            "ok": True,
            "error": None,
            "added": [],
            "removed": [],
            "changed": [],
        }

    def _row(self, job_id: str) -> dict[str, Any]:
        return self.rows[job_id]  # KeyError for an unknown job, as the contract says

    async def jobs(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    async def skips(self) -> list[dict[str, Any]]:
        return [{"id": "feeds", "skipped_slots": 2, "last_skip": "overlap at 2026-12-02T01:20:03Z"}]

    async def job(self, job_id: str) -> dict[str, Any] | None:
        return self.rows.get(job_id)

    async def plugins(self) -> list[dict[str, Any]]:
        return [{"id": "rss", "kinds": ["rss"], "state": "running", "restarts": 0}]

    async def pause(self, job_id: str, reason: str | None) -> dict[str, Any]:
        self._row(job_id).update(state="paused", reason=reason)
        return self._row(job_id)

    async def resume(self, job_id: str) -> dict[str, Any]:
        self._row(job_id).update(state="active", reason=None)
        return self._row(job_id)

    async def tick(self, job_id: str, *, dry_run: bool = False) -> dict[str, Any]:
        self._row(job_id)
        if self.tick_error is not None:
            raise self.tick_error
        return {"job_id": job_id, "status": "ok", "events": 0}

    async def set_cursor(self, job_id: str, cursor: bytes | None) -> dict[str, Any]:
        self._row(job_id)["cursor"] = None if cursor is None else cursor.hex()
        return self._row(job_id)

    async def reload(self) -> dict[str, Any]:
        return self.reload_result

    def readiness(self) -> dict[str, str | None]:
        if self.readiness_error is not None:
            raise self.readiness_error
        return dict(self.ready)


class Client:
    """Requests against one running AdminServer."""

    def __init__(self, session: aiohttp.ClientSession, server: AdminServer) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{server.port}"
        self.problems: list[dict[str, Any]] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        api_header: bool = True,
        extra_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        headers = {API_HEADER: "1"} if api_header else {}
        headers |= {"Authorization": f"Bearer {token}"} if token else {}
        headers |= extra_headers or {}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            if response.content_type == PROBLEM_CONTENT_TYPE:
                # RFC 9457 problem details; the tests compare the message alone.
                problem = await response.json(content_type=None)
                assert problem["status"] == response.status
                assert problem["type"] == "about:blank" and problem["title"]
                assert problem["error"] == problem["detail"]
                self.problems.append(problem)
                return response.status, {"error": problem["detail"]}
            return response.status, await response.text()


Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def backend() -> DictBackend:
    return DictBackend()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def start(backend: DictBackend, metrics: Metrics) -> AsyncIterator[Start]:
    """Start an AdminServer on a free loopback port; return a client for it."""
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def _start(token: str | None = None) -> Client:
            server = AdminServer(backend, metrics, host="127.0.0.1", port=0, token=token)
            await stack.enter_async_context(server)
            return Client(session, server)

        yield _start


async def test_healthz_answers_ok(start: Start) -> None:
    client = await start()

    assert await client.request("GET", "/healthz") == (200, {"status": "ok"})


async def test_the_bound_port_is_exposed_when_port_zero_was_asked(
    backend: DictBackend, metrics: Metrics
) -> None:
    async with AdminServer(backend, metrics, host="127.0.0.1", port=0, token=None) as server:
        port = server.port

    assert port > 0


async def test_readyz_is_200_when_every_component_is_ready(start: Start) -> None:
    client = await start()

    status, body = await client.request("GET", "/readyz")

    assert status == 200
    assert body["status"] == "ready"


async def test_readyz_is_503_and_names_the_component_that_is_not_ready(
    start: Start, backend: DictBackend
) -> None:
    client = await start()
    backend.ready["nats"] = "connection refused on 127.0.0.1:4222"

    status, body = await client.request("GET", "/readyz")

    assert status == 503
    assert body["reasons"] == {"nats": "connection refused on 127.0.0.1:4222"}


async def test_readyz_is_503_not_500_when_the_readiness_check_raises(
    start: Start, backend: DictBackend
) -> None:
    client = await start()
    backend.readiness_error = RuntimeError("store handle closed")

    status, body = await client.request("GET", "/readyz")

    assert status == 503
    assert "store handle closed" in body["error"]


async def test_metrics_serves_prometheus_text_with_the_tick_counters(
    start: Start, metrics: Metrics
) -> None:
    client = await start()
    metrics.tick_finished("feeds", "rss", "ok", 0.25, 0.01)

    async with client.session.get(client.base + "/metrics") as response:
        content_type = response.headers["Content-Type"]
        text = await response.text()

    samples = {
        (s.name, s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert content_type.startswith("text/plain; version=0.0.4")
    assert samples[("pollerd_ticks_total", "ok")] == 1


async def test_jobs_lists_the_backend_rows_as_json(start: Start) -> None:
    client = await start()

    status, body = await client.request("GET", "/v1/jobs")

    assert status == 200
    assert [row["id"] for row in body] == ["feeds", "prices"]


async def test_jobs_with_only_skips_lists_the_skipped_slots_alone(start: Start) -> None:
    client = await start()

    status, body = await client.request("GET", "/v1/jobs?only=skips")

    assert status == 200
    assert body == [
        {"id": "feeds", "skipped_slots": 2, "last_skip": "overlap at 2026-12-02T01:20:03Z"}
    ]


async def test_one_job_is_returned_by_id_and_an_unknown_one_is_404(start: Start) -> None:
    client = await start()

    found = await client.request("GET", "/v1/jobs/feeds")
    missing = await client.request("GET", "/v1/jobs/nope")

    assert found[0] == 200
    assert found[1]["kind"] == "rss"
    assert missing == (404, {"error": "unknown job 'nope'"})


async def test_plugins_are_listed(start: Start) -> None:
    client = await start()

    status, body = await client.request("GET", "/v1/plugins")

    assert status == 200
    assert body[0]["id"] == "rss"


async def test_a_write_without_the_configured_token_is_401(start: Start) -> None:
    client = await start(token=TOKEN)

    no_token = await client.request("POST", "/v1/jobs/feeds/pause")
    wrong_token = await client.request("POST", "/v1/jobs/feeds/pause", token="guess")

    assert no_token[0] == 401
    assert wrong_token[0] == 401


async def test_a_write_with_the_right_token_is_done(start: Start, backend: DictBackend) -> None:
    client = await start(token=TOKEN)

    status, body = await client.request(
        "POST", "/v1/jobs/feeds/pause", token=TOKEN, json={"reason": "maintenance"}
    )

    assert status == 200
    assert body["state"] == "paused"
    assert backend.rows["feeds"]["reason"] == "maintenance"


async def test_reads_need_no_token(start: Start) -> None:
    client = await start(token=TOKEN)

    status, _ = await client.request("GET", "/v1/jobs")

    assert status == 200


async def test_pause_and_resume_without_a_token_are_accepted_from_loopback(
    start: Start, backend: DictBackend
) -> None:
    client = await start()

    paused = await client.request("POST", "/v1/jobs/feeds/pause")
    after_pause = backend.rows["feeds"]["state"]
    resumed = await client.request("POST", "/v1/jobs/feeds/resume")

    assert paused[0] == 200
    assert after_pause == "paused"
    assert resumed[1]["state"] == "active"


async def test_an_action_on_an_unknown_job_is_404(start: Start) -> None:
    client = await start()

    status, body = await client.request("POST", "/v1/jobs/nope/tick")

    assert status == 404
    assert body == {"error": "unknown job 'nope'"}


async def test_tick_returns_the_outcome(start: Start) -> None:
    client = await start()

    status, body = await client.request("POST", "/v1/jobs/feeds/tick")

    assert status == 200
    assert body["status"] == "ok"


async def test_a_pollerd_error_from_the_backend_is_409(start: Start, backend: DictBackend) -> None:
    client = await start()
    backend.tick_error = PollerdError("job 'feeds' is already ticking")

    status, body = await client.request("POST", "/v1/jobs/feeds/tick")

    assert status == 409
    assert body == {"error": "job 'feeds' is already ticking"}


async def test_an_unexpected_backend_failure_is_a_json_500(
    start: Start, backend: DictBackend, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start()
    backend.tick_error = RuntimeError("bug")

    status, body = await client.request("POST", "/v1/jobs/feeds/tick")

    assert status == 500
    assert body == {"error": "internal error: RuntimeError: bug"}
    assert "POST /v1/jobs/feeds/tick failed" in caplog.text


async def test_cursor_is_set_from_base64url_with_put_or_post(
    start: Start, backend: DictBackend
) -> None:
    client = await start()
    encoded = base64.urlsafe_b64encode(b"\xfa\xfb-page-2").rstrip(b"=").decode()

    put = await client.request("PUT", "/v1/jobs/feeds/cursor", json={"cursor": encoded})
    post = await client.request("POST", "/v1/jobs/prices/cursor", json={"cursor": None})

    assert put[0] == 200
    assert backend.rows["feeds"]["cursor"] == b"\xfa\xfb-page-2".hex()
    assert post[0] == 200
    assert backend.rows["prices"]["cursor"] is None


async def test_cursor_with_bad_base64_is_400_with_the_reason(start: Start) -> None:
    client = await start()

    status, body = await client.request(
        "PUT", "/v1/jobs/feeds/cursor", json={"cursor": "not base64!"}
    )

    assert status == 400
    assert "not URL-safe base64" in body["error"]


async def test_a_body_that_is_not_json_is_400(start: Start) -> None:
    client = await start()

    status, body = await client.request("POST", "/v1/jobs/feeds/pause", data=b"{nope")

    assert status == 400
    assert "not valid JSON" in body["error"]


async def test_reload_answers_200_when_applied_and_409_when_the_config_is_invalid(
    start: Start, backend: DictBackend
) -> None:
    client = await start()
    applied = await client.request("POST", "/v1/reload")
    backend.reload_result = {"ok": False, "error": "pollers.yaml:3: kind: unknown", "added": []}
    refused = await client.request("POST", "/v1/reload")

    assert applied[0] == 200
    assert refused[0] == 409
    assert refused[1]["error"] == "pollers.yaml:3: kind: unknown"


async def test_an_unknown_route_is_a_json_404(start: Start) -> None:
    client = await start()

    status, body = await client.request("GET", "/v1/nothing")

    assert status == 404
    assert "error" in body


async def test_a_port_in_use_is_a_clear_pollerd_error(
    backend: DictBackend, metrics: Metrics
) -> None:
    async with AdminServer(backend, metrics, host="127.0.0.1", port=0, token=None) as first:
        second = AdminServer(backend, metrics, host="127.0.0.1", port=first.port, token=None)
        with pytest.raises(PollerdError) as info:
            await second.__aenter__()

    assert f"cannot listen on 127.0.0.1:{first.port}: address in use" in str(info.value)


@pytest.mark.parametrize(
    ("method", "header", "remote", "token", "status"),
    [
        ("GET", None, "203.0.113.9", None, None),
        ("GET", None, "203.0.113.9", TOKEN, None),
        ("POST", None, "127.0.0.1", None, None),
        ("POST", None, "127.8.0.3", None, None),
        ("PUT", None, "::1", None, None),
        ("POST", None, "203.0.113.9", None, 403),
        ("POST", None, None, None, 403),
        ("POST", None, "127.0.0.1", TOKEN, 401),
        ("POST", "Basic czNjcmV0", "127.0.0.1", TOKEN, 401),
        ("POST", "Bearer wrong", "127.0.0.1", TOKEN, 401),
        ("POST", f"Bearer {TOKEN}", "203.0.113.9", TOKEN, None),
        ("PUT", f"Bearer {TOKEN}", "203.0.113.9", TOKEN, None),
    ],
)
def test_authorization_table(
    method: str, header: str | None, remote: str | None, token: str | None, status: int | None
) -> None:
    refusal = check_authorization(method, header, remote, token)

    assert (refusal.status if refusal else None) == status


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"cursor": None}, None),
        ({"cursor": "YWJj"}, b"abc"),
        ({"cursor": "YWJjZA"}, b"abcd"),
        ({"cursor": "YWJjZA=="}, b"abcd"),
    ],
)
def test_cursor_bodies_that_decode(body: Any, expected: bytes | None) -> None:
    assert parse_cursor_body(body) == expected


@pytest.mark.parametrize("body", [None, [], {"value": "YWJj"}, {"cursor": 12}, {"cursor": "a+b/"}])
def test_cursor_bodies_that_are_refused(body: Any) -> None:
    with pytest.raises(HttpError) as info:
        parse_cursor_body(body)

    assert info.value.status == 400


# --- browsers, hosts and the network ---------------------------------------------------------


async def test_a_forged_cross_site_text_plain_post_is_refused(
    start: Start, backend: DictBackend
) -> None:
    client = await start()

    forged = await client.request(
        "POST",
        "/v1/jobs/feeds/pause",
        api_header=False,
        data=b'{"reason": "pwned"}',
        extra_headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )

    assert forged[0] == 415
    assert "application/json" in forged[1]["error"]
    assert backend.rows["feeds"]["state"] == "active"


async def test_a_json_post_from_a_foreign_origin_is_refused(
    start: Start, backend: DictBackend
) -> None:
    client = await start()

    forged = await client.request(
        "POST",
        "/v1/jobs/feeds/pause",
        json={"reason": "pwned"},
        api_header=False,
        extra_headers={"Origin": "http://evil.example"},
    )

    assert forged[0] == 403
    assert "cross-origin" in forged[1]["error"]
    assert backend.rows["feeds"]["state"] == "active"


async def test_a_same_origin_json_post_is_accepted(start: Start) -> None:
    client = await start()
    origin = client.base

    paused = await client.request(
        "POST",
        "/v1/jobs/feeds/pause",
        json={"reason": "maintenance"},
        api_header=False,
        extra_headers={"Origin": origin},
    )

    assert paused[0] == 200


async def test_without_a_token_a_rebound_host_name_cannot_read_the_jobs(start: Start) -> None:
    client = await start()

    rebound = await client.request("GET", "/v1/jobs", extra_headers={"Host": "evil.example"})
    health = await client.request("GET", "/healthz", extra_headers={"Host": "pod.internal"})

    assert rebound[0] == 421
    assert health[0] == 200


async def test_a_wrong_method_is_405_with_allow(start: Start) -> None:
    client = await start()

    status, _ = await client.request("DELETE", "/v1/jobs/feeds/pause")

    assert status == 405
    assert client.problems[-1]["status"] == 405


async def test_405_names_the_allowed_methods(start: Start) -> None:
    client = await start()
    async with client.session.get(client.base + "/v1/reload") as response:
        allow = response.headers.get("Allow")
        content_type = response.content_type

    assert response.status == 405
    assert allow == "POST"
    assert content_type == PROBLEM_CONTENT_TYPE


async def test_a_tick_while_starting_is_503_with_retry_after(
    start: Start, backend: DictBackend
) -> None:
    backend.tick_error = NotReadyError("pollerd is starting: no ticks now")
    client = await start()
    async with client.session.post(
        client.base + "/v1/jobs/feeds/tick", headers={API_HEADER: "1"}
    ) as response:
        retry_after = response.headers.get("Retry-After")

    assert response.status == 503
    assert retry_after == "1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
async def test_listening_beyond_loopback_without_a_token_is_refused(
    backend: DictBackend, metrics: Metrics, host: str
) -> None:
    server = AdminServer(backend, metrics, host=host, port=0, token=None)
    with pytest.raises(PollerdError) as refused:
        await server.__aenter__()
    assert "without a token" in str(refused.value)


async def test_listening_beyond_loopback_with_a_token_is_allowed(
    backend: DictBackend, metrics: Metrics
) -> None:
    async with AdminServer(backend, metrics, host="0.0.0.0", port=0, token="t") as server:
        assert server.port > 0
