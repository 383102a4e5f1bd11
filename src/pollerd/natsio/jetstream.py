"""Publishes tick events to the JetStream stream POLLERD_EVENTS, de-duplicated by message id."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from pollerd.engine.events import (
    STREAM_NAME,
    SUBJECT_ROOT,
    EventPublisher,
    event_msg_id,
    event_subject,
)
from pollerd.errors import EventPublishError, EventRejectedError, NatsError
from pollerd.transports.natscancel import no_swallowed_cancel
from pollerd.wire import Event

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0
# Acknowledgements missing this long, across several ticks, mean a stuck stream or server: after
# a disk-full write error nats-server keeps refusing writes to the stream until its store is
# reopened (measured with nats-server 2.15 on a full tmpfs).
STALL_S = 10.0
# A tick re-run after a crash republishes the same message ids; JetStream drops them within this
# window. It bounds how long pollerd may be down between a publish and its cursor commit.
DUPLICATE_WINDOW_S = 15 * 60.0
STREAM_MAX_BYTES = 256 * 1024 * 1024
STREAM_MAX_AGE_S = 7 * 24 * 3600.0


class JetStreamPublisher(EventPublisher):
    """``on_stall`` is awaited when no publish was acknowledged for ``stall_s`` (the service
    restarts its embedded nats-server there); at most once per ``stall_s``."""

    def __init__(
        self,
        nc: Client,
        *,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        on_stall: Callable[[float], Awaitable[None]] | None = None,
        stall_s: float | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=ack_timeout_s)
        self._ack_timeout_s = ack_timeout_s
        self._ensuring = asyncio.Lock()
        self._on_stall = on_stall
        self._stall_s = STALL_S if stall_s is None else stall_s
        self._stalled_since: float | None = None  # monotonic time of the first missing ack

    async def ensure_stream(self) -> bool:
        """Create POLLERD_EVENTS if it is missing (True then); an existing one is left as it is."""
        async with self._ensuring:
            try:
                await self._js.stream_info(STREAM_NAME)
                return False
            except nats.js.errors.NotFoundError:
                pass
            except (TimeoutError, nats.errors.Error) as exc:
                raise NatsError(f"JetStream is not available on the NATS server: {exc!r}") from exc
            try:
                await self._js.add_stream(_stream_config())
            except (TimeoutError, nats.errors.Error) as exc:
                raise NatsError(f"could not create the stream {STREAM_NAME}: {exc!r}") from exc
        logger.info("created JetStream stream %s on %s.>", STREAM_NAME, SUBJECT_ROOT)
        return True

    async def publish(
        self, kind: str, job_id: str, events: Sequence[Event], *, space: int = 0
    ) -> int:
        if not events:
            return 0
        subject = event_subject(kind, job_id)
        messages = [self._message(job_id, event, space) for event in events]
        try:
            # A cancelled tick must end cancelled: not go on to commit, nor commit a failure
            # (nats-py turns a cancelled wait for a publish slot into TooManyStalledMsgsError).
            with no_swallowed_cancel():
                acks = await self._publish_to_stream(job_id, subject, messages)
        except (nats.errors.Error, TimeoutError, NatsError) as exc:
            if isinstance(exc, TimeoutError):
                await self._stalled()
            raise EventPublishError(
                f"job {job_id!r}: {len(events)} event(s) to {subject} not acknowledged: {exc!r}"
            ) from exc
        self._stalled_since = None
        return sum(1 for ack in acks if ack.duplicate)

    async def _publish_to_stream(
        self, job_id: str, subject: str, messages: Sequence[tuple[bytes, str]]
    ) -> list[api.PubAck]:
        """Publish, recreating the stream once if nobody stores ``pollerd.events`` (the stream
        was deleted, or JetStream is off)."""
        try:
            return await self._publish_all(subject, messages)
        except nats.js.errors.NoStreamResponseError:
            if not await self.ensure_stream():
                raise
            logger.warning(
                "job_id=%s: the stream %s was missing (deleted?): recreated it; "
                "events published before that are gone with it",
                job_id,
                STREAM_NAME,
            )
            return await self._publish_all(subject, messages)

    async def _stalled(self) -> None:
        if self._on_stall is None:
            return
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since >= self._stall_s:
            stalled_s, self._stalled_since = now - self._stalled_since, None
            await self._on_stall(stalled_s)

    def _message(self, job_id: str, event: Event, space: int) -> tuple[bytes, str]:
        """The payload and message id of an event, checked against the server's max_payload:
        a message over it makes the server close the connection (headers count too)."""
        try:
            payload = _payload(event)
        except (RecursionError, ValueError) as exc:
            raise EventRejectedError(
                f"job {job_id!r}: event {_short(event.id)} cannot be encoded as JSON: {exc}"
            ) from None
        msg_id = event_msg_id(job_id, event.id, space)
        size = len(payload) + len(msg_id) + _HEADER_OVERHEAD
        limit = self._nc.max_payload
        if size > limit:
            raise EventRejectedError(
                f"job {job_id!r}: event {_short(event.id)} is {size} bytes with its headers, "
                f"over the NATS server's max_payload of {limit} bytes; nothing was published"
            )
        return payload, msg_id

    async def _publish_all(
        self, subject: str, messages: Sequence[tuple[bytes, str]]
    ) -> list[api.PubAck]:
        futures = [
            await self._js.publish_async(
                subject,
                payload,
                wait_stall=self._ack_timeout_s,
                headers={api.Header.MSG_ID: msg_id},
            )
            for payload, msg_id in messages
        ]
        async with asyncio.timeout(self._ack_timeout_s):
            return list(await asyncio.gather(*futures))


# What nats-py adds for the one header: "NATS/1.0\r\n" "Nats-Msg-Id: <id>\r\n" "\r\n".
_HEADER_OVERHEAD = len(f"NATS/1.0\r\n{api.Header.MSG_ID}: \r\n\r\n".encode())


def _stream_config() -> api.StreamConfig:
    return api.StreamConfig(
        name=STREAM_NAME,
        subjects=[f"{SUBJECT_ROOT}.>"],
        duplicate_window=DUPLICATE_WINDOW_S,
        max_bytes=STREAM_MAX_BYTES,
        max_age=STREAM_MAX_AGE_S,
        storage=api.StorageType.FILE,
    )


def _short(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _payload(event: Event) -> bytes:
    return json.dumps({"id": event.id, "data": event.data}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    subject: str
    msg_id: str
    id: str
    data: Any


async def read_events(
    nc: Client, *, job_id: str | None = None, follow: bool = False, idle_s: float = 0.5
) -> AsyncIterator[StoredEvent]:
    """Events in the stream, oldest first; with ``follow`` it waits for new ones forever."""
    js = nc.jetstream()
    subject = f"{SUBJECT_ROOT}.*.{job_id}" if job_id else f"{SUBJECT_ROOT}.>"
    try:
        sub = await js.subscribe(subject, ordered_consumer=True, stream=STREAM_NAME)
    except (TimeoutError, nats.errors.Error) as exc:
        raise NatsError(f"cannot read {STREAM_NAME}: {exc!r}") from exc
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s if not follow else 3600)
            except nats.errors.TimeoutError:
                if follow:
                    continue
                return
            body = json.loads(msg.data)
            yield StoredEvent(
                seq=msg.metadata.sequence.stream,
                subject=msg.subject,
                msg_id=(msg.headers or {}).get(api.Header.MSG_ID, ""),
                id=body.get("id", ""),
                data=body.get("data"),
            )
    finally:
        await sub.unsubscribe()
