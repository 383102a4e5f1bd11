"""How the nats-kv store meets NATS failures: translated to ``StoreError``, retried while
NATS or JetStream is unavailable (a stream electing a leader, a client reconnecting)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from nats.errors import Error as NatsClientError
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError

from pollerd.errors import StoreError

logger = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.1
SERVICE_UNAVAILABLE = 503
JETSTREAM_UNAVAILABLE = 10008

T = TypeVar("T")


@asynccontextmanager
async def translate(what: str) -> AsyncIterator[None]:
    """NATS errors in the block become ``StoreError("<what>: <cause>")``; KV's "not found"
    answers pass through."""
    try:
        yield
    except (KeyNotFoundError, BucketNotFoundError):
        raise  # answers, not failures
    except (NatsClientError, OSError) as exc:
        raise StoreError(f"{what}: {describe(exc)}") from exc


async def retry(what: str, operation: Callable[[], Awaitable[T]], retry_for_s: float) -> T:
    """``operation()``, repeated while NATS or JetStream is unavailable, for up to
    ``retry_for_s``; only for operations that are safe to repeat (a read, a checked write).
    A JetStream refusal (``APIError`` other than 503) is not retried."""
    give_up_at = time.monotonic() + retry_for_s
    while True:
        try:
            async with translate(what):
                return await operation()
        except StoreError as exc:
            refused = isinstance(exc.__cause__, APIError) and not unavailable(exc.__cause__)
            if refused or time.monotonic() > give_up_at:
                raise
            logger.debug("%s, retrying: %s", what, exc)
        await asyncio.sleep(RETRY_PAUSE_S)


def unavailable(exc: APIError) -> bool:
    """JetStream answered "temporarily unavailable" (503, 10008: no meta leader yet)."""
    return exc.code == SERVICE_UNAVAILABLE or exc.err_code == JETSTREAM_UNAVAILABLE


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name
