"""Publishes tick events to the JetStream stream POLLERD_EVENTS, de-duplicated by message id."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
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
from pollerd.errors import EventPublishError, NatsError
from pollerd.wire import Event

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0
# A tick re-run after a crash republishes the same message ids; JetStream drops them within this
# window. It bounds how long pollerd may be down between a publish and its cursor commit.
DUPLICATE_WINDOW_S = 15 * 60.0
STREAM_MAX_BYTES = 256 * 1024 * 1024
STREAM_MAX_AGE_S = 7 * 24 * 3600.0


class JetStreamPublisher(EventPublisher):
    def __init__(self, nc: Client, *, ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=ack_timeout_s)
        self._ack_timeout_s = ack_timeout_s

    async def ensure_stream(self) -> None:
        """Create POLLERD_EVENTS if it is missing; an existing stream is left as it is."""
        config = api.StreamConfig(
            name=STREAM_NAME,
            subjects=[f"{SUBJECT_ROOT}.>"],
            duplicate_window=DUPLICATE_WINDOW_S,
            max_bytes=STREAM_MAX_BYTES,
            max_age=STREAM_MAX_AGE_S,
            storage=api.StorageType.FILE,
        )
        try:
            await self._js.stream_info(STREAM_NAME)
            return
        except nats.js.errors.NotFoundError:
            pass
        except (TimeoutError, nats.errors.Error) as exc:
            raise NatsError(f"JetStream is not available on the NATS server: {exc!r}") from exc
        try:
            await self._js.add_stream(config)
        except (TimeoutError, nats.errors.Error) as exc:
            raise NatsError(f"could not create the stream {STREAM_NAME}: {exc!r}") from exc
        logger.info("created JetStream stream %s on %s.>", STREAM_NAME, SUBJECT_ROOT)

    async def publish(self, kind: str, job_id: str, events: Sequence[Event]) -> None:
        if not events:
            return
        subject = event_subject(kind, job_id)
        try:
            futures = [
                await self._js.publish_async(
                    subject,
                    _payload(event),
                    wait_stall=self._ack_timeout_s,
                    headers={api.Header.MSG_ID: event_msg_id(job_id, event.id)},
                )
                for event in events
            ]
            async with asyncio.timeout(self._ack_timeout_s):
                await asyncio.gather(*futures)
        except (nats.errors.Error, TimeoutError) as exc:
            raise EventPublishError(
                f"job {job_id!r}: {len(events)} event(s) to {subject} not acknowledged: {exc!r}"
            ) from exc


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
