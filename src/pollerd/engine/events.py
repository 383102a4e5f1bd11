"""Where the events of a successful tick go before its cursor is committed."""

from __future__ import annotations

import base64
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pollerd.wire import Event

logger = logging.getLogger(__name__)

STREAM_NAME = "POLLERD_EVENTS"
SUBJECT_ROOT = "pollerd.events"


def event_subject(kind: str, job_id: str) -> str:
    return f"{SUBJECT_ROOT}.{kind}.{job_id}"


# An id is written as it is only when a NATS header carries it unchanged: printable ASCII,
# inner spaces allowed, no leading or trailing space (clients trim values and fold CR/LF).
_PLAIN_ID = re.compile(r"[!-~](?:[ -~]*[!-~])?")


def event_msg_id(job_id: str, event_id: str, space: int = 0) -> str:
    """The JetStream de-duplication id of an event: an exact, header-safe function of the job,
    its event-id space (bumped when an operator changes the cursor) and the event id.

    ``<job>:<id>`` for a plain id, ``<job>#<base64url of the UTF-8 id>`` for any other; a space
    above 0 adds ``@<space>`` after the job. Job ids hold none of ``@ : #``, so the first of them
    tells the form and two different inputs never give the same message id. A re-run tick
    publishes the same ids, so JetStream drops them as duplicates.
    """
    job = job_id if space == 0 else f"{job_id}@{space}"
    if _PLAIN_ID.fullmatch(event_id):
        return f"{job}:{event_id}"
    encoded = base64.urlsafe_b64encode(event_id.encode("utf-8", "surrogatepass")).rstrip(b"=")
    return f"{job}#{encoded.decode('ascii')}"


class EventPublisher(ABC):
    """Publishes a tick's events and returns only once every one is acknowledged.

    Returns how many of them the stream dropped as duplicates (their message id was already
    stored). Raises ``EventPublishError`` when any publish is not acknowledged; the caller then
    commits nothing, so the tick re-runs and de-duplication keeps consumers from seeing an event
    twice. ``space`` is the job's event-id space (``event_msg_id``).
    """

    @abstractmethod
    async def publish(
        self, kind: str, job_id: str, events: Sequence[Event], *, space: int = 0
    ) -> int: ...


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

    async def publish(
        self, kind: str, job_id: str, events: Sequence[Event], *, space: int = 0
    ) -> int:
        duplicates = 0
        for event in events:
            msg_id = event_msg_id(job_id, event.id, space)
            if msg_id in self._seen:
                duplicates += 1
                continue
            self._seen.add(msg_id)
            self.published.append(PublishedEvent(event_subject(kind, job_id), msg_id, event))
        return duplicates
