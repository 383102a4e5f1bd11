"""Connections to NATS with deliberate options: fail fast at first, then reconnect forever.

nats-py's defaults retry a first connect to a closed port for about two minutes, logging a traceback
per try (DESIGN §11), and it has no option to fail the first connect at once (nats-io/nats.py#352).
``connect`` aborts at the first failed attempt with a ``NatsError`` that names the server and the
cause. Once connected, the client reconnects forever every ``RECONNECT_TIME_WAIT_S`` and logs one
line when the connection is lost and one when it is back, instead of a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client
from nats.errors import AuthorizationError, StaleConnectionError, UnexpectedEOF
from nats.errors import Error as NatsClientError

from pollerd.errors import NatsError

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 2.0
RECONNECT_TIME_WAIT_S = 0.5
# A hung server (SIGSTOP, a frozen VM) answers no PING: with these the client gives it up after
# 6-9 s and moves to another server of the list (nats-py's default is 120 s x 2).
PING_INTERVAL_S = 3
MAX_OUTSTANDING_PINGS = 2
DRAIN_TIMEOUT_S = 5
SECRET_MASK = "***"

PathArg = str | os.PathLike[str]
_CONNECTION_LOSS = (UnexpectedEOF, StaleConnectionError, OSError)


class _FirstConnectFailedError(Exception):
    """Raised from the error callback to end nats-py's first-connect retry loop at once."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(describe_error(cause))


def describe_error(exc: BaseException) -> str:
    """One line for a log or a message: the type, and the text when there is one."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def redact_url(url: str) -> str:
    """The URL without its password or token, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{SECRET_MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _ConnectionEvents:
    """The client callbacks: one log line per state change, never a traceback."""

    def __init__(self, name: str, where: str, servers: int = 1) -> None:
        self.name = name
        self.where = where
        self.servers = servers  # the first connect tries each server once before giving up
        self.first_failures = 0
        self.client: Client | None = None
        self.connected = False
        self.abandoned = False  # the first connect failed: errors while closing are noise
        self.failed_attempts = 0
        self.loss_cause = "connection closed"
        self.on_lost: Callable[[str], None] | None = None

    async def on_error(self, exc: Exception) -> None:
        if self.abandoned:
            logger.debug("NATS %r (%s) while closing: %s", self.name, self.where, exc)
            return
        if not self.connected:
            self.first_failures += 1
            if self.first_failures >= self.servers:
                raise _FirstConnectFailedError(exc)
            logger.debug("NATS %r: a server of %s refused: %s", self.name, self.where, exc)
            return
        if self.client is not None and self.client.is_reconnecting:
            self.failed_attempts += 1
            logger.debug("NATS %r: reconnect to %s failed: %s", self.name, self.where, exc)
            return
        if isinstance(exc, _CONNECTION_LOSS):
            # Reported next by on_disconnected, in the same line as the cause.
            self.loss_cause = describe_error(exc)
            return
        logger.warning("NATS %r (%s): %s", self.name, self.where, describe_error(exc))

    async def on_disconnected(self) -> None:
        if not self.connected or self.client is None or self.client.is_closed:
            return
        self.failed_attempts = 0
        logger.warning(
            "NATS %r lost its connection to %s (%s); reconnecting every %gs",
            self.name,
            self.where,
            self.loss_cause,
            RECONNECT_TIME_WAIT_S,
        )
        self.loss_cause = "connection closed"

    async def on_reconnected(self) -> None:
        logger.warning(
            "NATS %r reconnected to %s after %d failed attempts",
            self.name,
            self.where,
            self.failed_attempts,
        )

    async def on_closed(self) -> None:
        logger.debug("NATS %r connection to %s closed", self.name, self.where)
        if self.connected and self.on_lost is not None and self.client is not None:
            # Closed by nats-py itself after a server error (e.g. a maximum payload
            # violation): it never reconnects from there.
            error = self.client.last_error
            self.on_lost(describe_error(error) if error else self.loss_cause)


def build_tls_context(
    tls_ca: PathArg | None, tls_cert: PathArg | None, tls_key: PathArg | None
) -> ssl.SSLContext | None:
    """A client TLS context from PEM files, or None when no TLS option is set."""
    if tls_ca is None and tls_cert is None and tls_key is None:
        return None
    if tls_key is not None and tls_cert is None:
        raise NatsError("NATS tls_key is set without tls_cert: set both or neither")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
        if tls_cert is not None:
            context.load_cert_chain(tls_cert, tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise NatsError(
            f"cannot load the NATS TLS files (ca={tls_ca}, cert={tls_cert}, key={tls_key}): "
            f"{describe_error(exc)}"
        ) from exc
    return context


def _hint(cause: BaseException, connect_timeout_s: float) -> str:
    if isinstance(cause, AuthorizationError) or "authorization" in str(cause).lower():
        return "check the NATS token, user/password or creds"
    if isinstance(cause, ConnectionRefusedError):
        return "is nats-server running and listening there?"
    if isinstance(cause, asyncio.TimeoutError):
        return f"the server did not answer within {connect_timeout_s:g}s"
    if isinstance(cause, ssl.SSLError):
        return "check the TLS settings on both sides"
    return "check the NATS URL and that the server is reachable"


async def connect(
    url: str,
    *,
    name: str,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    creds: PathArg | None = None,
    tls_ca: PathArg | None = None,
    tls_cert: PathArg | None = None,
    tls_key: PathArg | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    on_lost: Callable[[str], None] | None = None,
) -> Client:
    """Connect to ``url`` or raise ``NatsError`` after the first failed attempt.

    The returned client reconnects forever; close it with ``await client.close()`` or ``drain()``.
    nats-py still closes it for good after some server errors: ``on_lost`` is then called with
    the cause (and also after ``close()``: the caller tells which close it made itself).
    """
    where = redact_url(url)
    if creds is not None and importlib.util.find_spec("nkeys") is None:
        raise NatsError(
            f"NATS creds file {creds} needs the nkeys package: pip install 'nats-py[nkeys]'"
        )
    options: dict[str, Any] = {
        "name": name,
        "token": token,
        "user": user,
        "password": password,
        "user_credentials": None if creds is None else os.fspath(creds),
        "tls": build_tls_context(tls_ca, tls_cert, tls_key),
    }
    servers = [part.strip() for part in url.split(",") if part.strip()]
    events = _ConnectionEvents(name, where, len(servers))
    events.on_lost = on_lost
    client = Client()
    events.client = client
    try:
        await client.connect(
            servers=servers,
            error_cb=events.on_error,
            disconnected_cb=events.on_disconnected,
            reconnected_cb=events.on_reconnected,
            closed_cb=events.on_closed,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_TIME_WAIT_S,  # type: ignore[arg-type]
            connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
            ping_interval=PING_INTERVAL_S,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            drain_timeout=DRAIN_TIMEOUT_S,
            **{key: value for key, value in options.items() if value is not None},
        )
    except (_FirstConnectFailedError, NatsClientError, OSError, ValueError, TimeoutError) as exc:
        events.abandoned = True
        await client.close()
        cause = exc.cause if isinstance(exc, _FirstConnectFailedError) else exc
        raise NatsError(
            f"cannot connect to NATS at {where} as {name!r}: {describe_error(cause)}; "
            f"{_hint(cause, connect_timeout_s)}"
        ) from cause
    events.connected = True
    logger.info("NATS %r connected to %s", name, where)
    return client


def _plain(value: Any) -> Any:
    """A config value as a plain str: unwraps secret wrappers (``get_secret_value``)."""
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else value


async def connect_from_config(
    config: Any,
    *,
    name: str,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    on_lost: Callable[[str], None] | None = None,
) -> Client:
    """``connect`` with the settings of a config object (attributes ``url``, ``token``, ``user``,
    ``password``, ``creds``, ``tls_ca``, ``tls_cert``, ``tls_key``; missing ones count as unset)."""
    settings = {
        key: _plain(getattr(config, key, None))
        for key in ("token", "user", "password", "creds", "tls_ca", "tls_cert", "tls_key")
    }
    return await connect(
        str(config.url),
        name=name,
        connect_timeout_s=connect_timeout_s,
        on_lost=on_lost,
        **settings,
    )


CANCEL_RETRY_S = 0.1


async def cancel_until_done(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and return once it has really ended.

    nats-py swallows a ``CancelledError`` that lands while it flushes a publish or a request, so a
    single ``cancel()`` can leave a task running: ask again every ``CANCEL_RETRY_S`` until it ends.
    """
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_S)
