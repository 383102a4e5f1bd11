"""The operator's HTTP surface: health, readiness, metrics and the admin API (DESIGN §9)."""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

from aiohttp import web

from pollerd.errors import NotReadyError, PollerdError
from pollerd.ops import slices
from pollerd.ops.httpguard import (
    HttpError,
    check_browser_safety,
    check_listen,
    problem,
)
from pollerd.ops.metrics import Metrics
from pollerd.wire import MAX_CURSOR_BYTES, decode_cursor

logger = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
GUARDED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SHUTDOWN_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 1024 * 1024
BEARER_PREFIX = "Bearer "
DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 10_000
RETRY_AFTER_S = "1"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminBackend(Protocol):
    """What the running service offers the HTTP surface."""

    async def jobs(self) -> list[dict[str, Any]]:
        """Rows as `pollerd jobs --json` prints them."""

    async def skips(self) -> list[dict[str, Any]]:
        """``{"id", "skipped_slots", "last_skip"}`` of each job that lost slots since the start."""

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """One row, or None for an unknown job."""

    async def plugins(self) -> list[dict[str, Any]]:
        """Rows as `pollerd plugins --json` prints them."""

    async def history(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        """The job's last ``limit`` ticks, newest first; KeyError for an unknown job."""

    async def pause(self, job_id: str, reason: str | None) -> dict[str, Any]:
        """Pause a job; KeyError for an unknown job."""

    async def resume(self, job_id: str) -> dict[str, Any]:
        """Resume a job; KeyError for an unknown job."""

    async def tick(self, job_id: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Run one tick through the normal path and return its outcome (dry: commit nothing)."""

    async def set_cursor(self, job_id: str, cursor: bytes | None) -> dict[str, Any]:
        """Replace (or with None reset) a job's cursor."""

    async def reload(self) -> dict[str, Any]:
        """Reload the config: {"ok", "error", "added", "removed", "changed"}."""

    def readiness(self) -> dict[str, str | None]:
        """Component name -> None when ready, else why it is not."""


def error_response(status: int, message: str) -> web.Response:
    return problem(status, message)


def is_loopback(remote: str | None) -> bool:
    """True when the peer address is a loopback address (127.0.0.0/8, ::1)."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_authorization(
    method: str, header: str | None, remote: str | None, token: str | None
) -> HttpError | None:
    """None when the request may proceed, else the refusal.

    With a token, every write needs ``Authorization: Bearer <token>``. Without one, writes are
    accepted only from loopback peers.
    """
    if method not in GUARDED_METHODS:
        return None
    if token is None:
        if is_loopback(remote):
            return None
        return HttpError(403, "admin writes are accepted only from loopback without a token")
    if header is None or not header.startswith(BEARER_PREFIX):
        return HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
    given = header[len(BEARER_PREFIX) :].strip().encode()
    if not hmac.compare_digest(given, token.encode()):
        return HttpError(401, "invalid bearer token")
    return None


def parse_cursor_body(body: Any) -> bytes | None:
    """The cursor of a ``{"cursor": "<base64url>" | null}`` body; HttpError(400) otherwise."""
    if not isinstance(body, dict) or "cursor" not in body:
        raise HttpError(400, 'body must be {"cursor": "<base64url>"} or {"cursor": null}')
    text = body["cursor"]
    if text is None:
        return None
    try:
        cursor = decode_cursor(text)
    except ValueError as exc:
        raise HttpError(400, f"bad cursor: {exc}") from exc
    if len(cursor) > MAX_CURSOR_BYTES:
        raise HttpError(400, f"cursor is {len(cursor)} bytes; the limit is {MAX_CURSOR_BYTES}")
    return cursor


def parse_limit(text: str | None) -> int:
    """The ``limit`` query parameter of a list: 1..MAX_HISTORY_LIMIT; HttpError(400) else."""
    if text is None:
        return DEFAULT_HISTORY_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise HttpError(
            400, f"limit must be an integer from 1 to {MAX_HISTORY_LIMIT}, got {text!r}"
        )
    return limit


def parse_reason_body(body: Any) -> str | None:
    """The reason of an optional ``{"reason": "..."}`` body."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise HttpError(400, 'body must be a JSON object like {"reason": "..."}')
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise HttpError(400, "reason must be a string")
    return reason


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, None when empty; HttpError(400) when it is not JSON."""
    text = await request.text()
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"body is not valid JSON: {exc}") from exc


def error_for(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to an exception raised while serving ``request``."""
    job_id = request.match_info.get("id")
    if isinstance(exc, HttpError):
        return problem(exc.status, exc.message, headers=exc.headers)
    if isinstance(exc, KeyError) and job_id is not None:
        return error_response(404, f"unknown job {job_id!r}")
    if isinstance(exc, ValueError):
        return error_response(400, str(exc))
    if isinstance(exc, NotReadyError):
        return problem(503, str(exc), headers={"Retry-After": RETRY_AFTER_S})
    if isinstance(exc, PollerdError):
        return error_response(409, str(exc))
    if request.path in HEALTH_PATHS:
        return web.json_response(
            {"status": "not ready", "error": f"health check failed: {exc}"}, status=503
        )
    logger.error("admin request %s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


class AdminServer:
    """The HTTP server, as an async context manager: listening inside, closed after."""

    def __init__(
        self,
        backend: AdminBackend,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        token: str | None,
    ) -> None:
        self._backend = backend
        self._metrics = metrics
        self._host = host
        self._requested_port = port
        self._token = token or None
        self._runner: web.AppRunner | None = None
        self.port: int = port

    def _app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors_middleware, self._auth_middleware],
            client_max_size=MAX_BODY_BYTES,
        )
        app.router.add_get("/", self._status_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_text)
        app.router.add_get("/v1/jobs", self._jobs)
        app.router.add_get("/v1/jobs/{id}", self._job)
        app.router.add_get("/v1/jobs/{id}/history", self._history)
        app.router.add_get("/v1/plugins", self._plugins)
        app.router.add_post("/v1/jobs/{id}/pause", self._pause)
        app.router.add_post("/v1/jobs/{id}/resume", self._resume)
        app.router.add_post("/v1/jobs/{id}/tick", self._tick)
        app.router.add_put("/v1/jobs/{id}/cursor", self._cursor)
        app.router.add_post("/v1/jobs/{id}/cursor", self._cursor)
        app.router.add_post("/v1/reload", self._reload)
        return app

    async def __aenter__(self) -> Self:
        check_listen(self._host, self._token)
        runner = web.AppRunner(self._app(), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
            raise PollerdError(
                f"cannot listen on {self._host}:{self._requested_port}: {reason}; "
                "choose another http port or stop the process that holds it"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        logger.info("admin HTTP listening on %s:%d", self._host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kept = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}
            detail = f"{exc.reason}: {request.method} {request.path}"
            return problem(exc.status, detail, headers=kept)
        except Exception as exc:
            return error_for(request, exc)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        refusal = check_browser_safety(
            request.method, request.path, request.headers, token=self._token
        ) or check_authorization(
            request.method, request.headers.get("Authorization"), request.remote, self._token
        )
        if refusal is not None:
            logger.warning(
                "admin request %s %s from %s refused: %s",
                request.method,
                request.path,
                request.remote,
                refusal.message,
            )
            raise refusal
        return await handler(request)

    # -- health --------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            components = dict(self._backend.readiness())
        except Exception as exc:
            logger.warning("readiness check failed: %s", exc)
            return web.json_response(
                {"status": "not ready", "error": f"readiness check failed: {exc}"}, status=503
            )
        reasons = {name: reason for name, reason in components.items() if reason is not None}
        leadership = getattr(self._backend, "leadership", None)  # replicas: who leads
        extra = {"leadership": leadership()} if callable(leadership) and leadership() else {}
        if reasons:
            return web.json_response(
                {"status": "not ready", "components": components, "reasons": reasons, **extra},
                status=503,
            )
        return web.json_response({"status": "ready", "components": components, **extra})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(
            body=await self._metrics.render_async(),
            headers={"Content-Type": self._metrics.content_type},
        )

    async def _status_page(self, request: web.Request) -> web.Response:
        from pollerd import __version__
        from pollerd.ops import statuspage

        jobs = await self._backend.jobs()
        history: dict[str, list[dict[str, Any]]] = {}
        async for row in slices.each(jobs):
            try:
                history[row["id"]] = await self._backend.history(row["id"], statuspage.STRIP_TICKS)
            except KeyError:  # a broken job: it never ran under this id
                history[row["id"]] = []
        selected = request.query.get("state", "all")
        page = await slices.joined(
            statuspage.status_page_pieces(
                jobs=jobs,
                history=history,
                plugins=await self._backend.plugins(),
                readiness=self._backend.readiness(),
                now=datetime.now(UTC),
                selected=selected if selected in statuspage.FILTERS else "all",
                version=__version__,
            )
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    # -- admin API -----------------------------------------------------------------------------

    async def _jobs(self, request: web.Request) -> web.Response:
        if request.query.get("only") == "skips":  # what `pollerd jobs` adds to the store's rows
            return web.json_response(await self._backend.skips())
        body = await slices.json_array(await self._backend.jobs())  # 5 MB at 10,000 jobs
        return web.Response(body=body, content_type="application/json")

    async def _job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        row = await self._backend.job(job_id)
        if row is None:
            raise HttpError(404, f"unknown job {job_id!r}")
        return web.json_response(row)

    async def _history(self, request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        return web.json_response(await self._backend.history(request.match_info["id"], limit))

    async def _plugins(self, request: web.Request) -> web.Response:
        return web.json_response(await self._backend.plugins())

    async def _pause(self, request: web.Request) -> web.Response:
        reason = parse_reason_body(await read_json(request))
        job_id = request.match_info["id"]
        result = await self._backend.pause(job_id, reason)
        logger.info("job %s paused through the admin API (reason: %s)", job_id, reason)
        return web.json_response(result)

    async def _resume(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        result = await self._backend.resume(job_id)
        logger.info("job %s resumed through the admin API", job_id)
        return web.json_response(result)

    async def _tick(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        dry_run = request.query.get("dry_run", "") in ("1", "true")
        return web.json_response(await self._backend.tick(job_id, dry_run=dry_run))

    async def _cursor(self, request: web.Request) -> web.Response:
        cursor = parse_cursor_body(await read_json(request))
        job_id = request.match_info["id"]
        result = await self._backend.set_cursor(job_id, cursor)
        logger.info(
            "job %s cursor %s through the admin API", job_id, "reset" if cursor is None else "set"
        )
        return web.json_response(result)

    async def _reload(self, request: web.Request) -> web.Response:
        result = await self._backend.reload()
        if result.get("ok"):
            return web.json_response(result)
        return problem(409, str(result.get("error")), **result)
