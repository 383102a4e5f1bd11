"""Where the events of a successful tick go before its cursor is committed."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pollerd.wire import Event

logger = logging.getLogger(__name__)

STREAM_NAME = "POLLERD_EVENTS"
SUBJECT_ROOT = "pollerd.events"


def event_subject(kind: str, job_id: str) -> str:
    return f"{SUBJECT_ROOT}.{kind}.{job_id}"


def event_msg_id(job_id: str, event_id: str) -> str:
    """The JetStream de-duplication id: a re-run tick publishes the same ids."""
    return f"{job_id}:{event_id}"


class EventPublisher(ABC):
    """Publishes a tick's events and returns only once every one is acknowledged.

    Raises ``EventPublishError`` when any publish is not acknowledged; the caller then commits
    nothing, so the tick re-runs and de-duplication keeps consumers from seeing an event twice.
    """

    @abstractmethod
    async def publish(self, kind: str, job_id: str, events: Sequence[Event]) -> None: ...


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    subject: str
    msg_id: str
    event: Event


class MemoryEventPublisher(EventPublisher):
    """Keeps events in a list, de-duplicated by message id like JetStream does."""

    def __init__(self) -> None:
        self.published: list[PublishedEvent] = []
        self._seen: set[str] = set()

    async def publish(self, kind: str, job_id: str, events: Sequence[Event]) -> None:
        for event in events:
            msg_id = event_msg_id(job_id, event.id)
            if msg_id in self._seen:
                continue
            self._seen.add(msg_id)
            self.published.append(PublishedEvent(event_subject(kind, job_id), msg_id, event))
