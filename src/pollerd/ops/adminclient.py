"""A small client of the admin HTTP API, for CLI commands that act on a running service."""

from __future__ import annotations

import json as jsonlib
import logging
from typing import Any

import aiohttp

from pollerd.errors import PollerdError
from pollerd.ops.httpguard import API_HEADER

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 0.5
HEALTH_PATH = "/healthz"


def base_url(host: str, port: int) -> str:
    """``http://host:port``, with IPv6 literals in brackets."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


async def call(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[int, Any]:
    """Send one request; return the status and the decoded JSON body (text if not JSON).

    Raises PollerdError when the service cannot be reached or does not answer in time; an HTTP
    error status is returned, not raised.
    """
    url = base_url(host, port) + path
    # The API header marks a deliberate API call: browsers cannot send it across sites.
    headers = {API_HEADER: "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=json, headers=headers) as response,
        ):
            text = await response.text()
            status = response.status
    except TimeoutError as exc:
        raise PollerdError(f"{method} {url}: no answer within {timeout_s:g}s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise PollerdError(
            f"{method} {url}: cannot reach the pollerd admin API ({exc}); is the service running?"
        ) from exc
    if not text:
        return status, None
    try:
        return status, jsonlib.loads(text)
    except jsonlib.JSONDecodeError:
        return status, text


async def service_is_up(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when a pollerd answers GET /healthz with 200 at host:port within ``timeout_s``."""
    try:
        status, _ = await call(host, port, "GET", HEALTH_PATH, timeout_s=timeout_s)
    except PollerdError as exc:
        logger.debug("no pollerd service at %s: %s", base_url(host, port), exc)
        return False
    return status == 200
