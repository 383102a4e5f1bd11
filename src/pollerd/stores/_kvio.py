"""How the nats-kv store meets NATS failures: translated to ``StoreError``, retried while
NATS or JetStream is unavailable (a stream electing a leader, a client reconnecting); and a
cancellation that nats-py loses, raised again (``natscancel``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from nats.errors import Error as NatsClientError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from pollerd.errors import StoreError
from pollerd.transports.natscancel import no_swallowed_cancel

logger = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.1
SERVICE_UNAVAILABLE = 503
JETSTREAM_UNAVAILABLE = 10008

T = TypeVar("T")


@asynccontextmanager
async def translate(what: str) -> AsyncIterator[None]:
    """NATS errors in the block become ``StoreError("<what>: <cause>")``; KV's "not found"
    answers pass through. A cancellation lost in the block is raised: a cancelled tick must not
    go on to commit."""
    try:
        with no_swallowed_cancel():
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
    """JetStream answered "temporarily unavailable" (503, 10008: no meta leader yet).

    nats-py's KV errors that are also ``APIError`` (``KeyWrongLastSequenceError``) are raised
    without APIError's fields: a refusal, read with ``getattr``."""
    code, err_code = getattr(exc, "code", None), getattr(exc, "err_code", None)
    return code == SERVICE_UNAVAILABLE or err_code == JETSTREAM_UNAVAILABLE


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


# After nats-py says "nothing pending" before any entry, how long to look for entries it had
# already received (see ``latest_values``); only an empty set of keys waits this long.
EARLY_END_GRACE_S = 0.2


async def latest_values(kv: KeyValue, keys: str, timeout_s: float) -> list[tuple[str, bytes, int]]:
    """``(key, value, revision)`` of every key matching ``keys`` that holds a value.

    A watch delivers the last message of each key; the last one says it has nothing pending
    after it (``delta`` 0), and that ends the read. nats-py also queues an end-of-data marker
    (None) when its consumer reports nothing pending at the start, and it can do so *before*
    the messages the server had already pushed to it: seen as an empty read of a full bucket
    under load. So a marker that comes first is trusted only if no entry follows it shortly.
    Delete markers are read (not ignored) so that the last message is always seen.
    """
    found: list[tuple[str, bytes, int]] = []
    watcher = await kv.watch(keys)
    try:
        entry = await watcher.updates(timeout=timeout_s)  # type: ignore[no-untyped-call]
        if entry is None:
            try:
                entry = await watcher.updates(timeout=EARLY_END_GRACE_S)  # type: ignore[no-untyped-call]
            except NatsTimeoutError:
                return found  # truly nothing
        while entry is not None:
            if entry.value and entry.operation is None:  # not a delete or purge marker
                found.append((entry.key, entry.value, entry.revision or 0))
            if not entry.delta:
                break
            entry = await watcher.updates(timeout=timeout_s)  # type: ignore[no-untyped-call]
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found
