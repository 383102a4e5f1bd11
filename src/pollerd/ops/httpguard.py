"""What keeps the admin API to its operators: no forged browser writes, no reads through a
rebinding host name, no open admin port on the network, errors as RFC 9457 problem details.

- **Writes** (POST, PUT, PATCH, DELETE) must say they are API calls: a JSON content type or the
  ``X-Pollerd-Request`` header. A browser can send neither across sites without a CORS
  preflight, which pollerd never grants, so a page cannot forge a "simple" POST (text/plain,
  form) to the loopback port. A write with an ``Origin`` must come from the API's own origin.
- **Without a token**, only loopback peers may write, and every request outside ``/healthz``,
  ``/readyz`` and ``/metrics`` must name a loopback host (``127.0.0.1``, ``[::1]``,
  ``localhost``) in ``Host``: a DNS-rebound name cannot read cursors through a browser.
- **Listening beyond loopback without a token is refused** at start (``check_listen``).
- Errors are ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and,
  for older clients, ``error`` (the same text as ``detail``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from pollerd.errors import PollerdError

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_HEADER = "X-Pollerd-Request"
JSON_CONTENT_TYPES = frozenset({"application/json", PROBLEM_CONTENT_TYPE})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class HttpError(Exception):
    """A request the admin API refuses, answered as a problem with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        super().__init__(message)


def problem(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    """An RFC 9457 problem details response."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra)
    body["error"] = detail
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def is_loopback_host(host: str) -> bool:
    """True for a loopback literal (127.0.0.0/8, ::1) or ``localhost``."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_name(host_header: str | None) -> str:
    """The name part of a ``Host`` header (no port; IPv6 literals keep their brackets off)."""
    if not host_header:
        return ""
    parsed = urlsplit(f"//{host_header.strip()}")
    return parsed.hostname or ""


def check_listen(host: str, token: str | None) -> None:
    """``PollerdError`` when the admin API would listen beyond loopback without a token."""
    if token is None and not is_loopback_host(host):
        raise PollerdError(
            f"http listens on {host} without a token: anyone who can reach that address could "
            "read every job's cursor and last error and pause jobs; set http.token (e.g. "
            "http: {listen: ..., token: ${POLLERD_ADMIN_TOKEN}}) or listen on 127.0.0.1"
        )


def check_browser_safety(
    method: str, path: str, headers: Mapping[str, str], *, token: str | None
) -> HttpError | None:
    """None when the request is not one a foreign web page could have made, else the refusal."""
    host = headers.get("Host")
    if token is None and path not in OPEN_PATHS and not is_loopback_host(host_name(host)):
        return HttpError(
            421,
            f"Host {host!r} is not a loopback name; without a token the API answers only to "
            "127.0.0.1, [::1] or localhost",
        )
    if method not in WRITE_METHODS:
        return None
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_CONTENT_TYPES and API_HEADER not in headers:
        return HttpError(
            415,
            f"admin writes need Content-Type: application/json or an {API_HEADER} header "
            f"(got {content_type or 'no content type'})",
        )
    origin = headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != (host or "").lower():
        return HttpError(403, f"cross-origin write refused: Origin {origin} is not {host}")
    return None
