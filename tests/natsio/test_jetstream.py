"""The JetStream event publisher on a real nats-server: a cancelled publish ends cancelled.

A tick cancelled while its events were being published went on (nats-py lost the cancellation
that came with an answer) or failed with ``EventPublishError`` (nats-py turns a cancellation
of its wait for a free publish slot into ``TooManyStalledMsgsError``), and the runner then
committed that failure for a tick that had been cancelled.
"""

from __future__ import annotations

import itertools

import pytest
from nats.aio.client import Client

from cancelrace import lost_cancellations
from pollerd.natsio.jetstream import JetStreamPublisher
from pollerd.wire import Event

pytestmark = pytest.mark.nats


async def test_a_cancelled_publish_ends_cancelled_even_as_its_acknowledgement_lands(
    nats_client: Client,
) -> None:
    publisher = JetStreamPublisher(nats_client)
    await publisher.ensure_stream()
    ids = (str(number) for number in itertools.count())

    lost = await lost_cancellations(
        lambda: publisher.publish("rss", "a", [Event(next(ids), {}), Event(next(ids), {})])
    )

    assert lost == []
