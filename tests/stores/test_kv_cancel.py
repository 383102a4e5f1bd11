"""nats-kv: a cancelled read or write ends cancelled even as its answer lands (real server).

A tick cancelled by a newer slot, a reload or shutdown commits nothing; on Python 3.11 nats-py
lost the cancellation that came in the loop turn where a KV answer landed, and the commit went on.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from cancelrace import lost_cancellations
from natscluster import NatsCluster
from pollerd.natsio.connection import connect
from pollerd.stores.base import JobUpdate
from pollerd.stores.kv import KvStore

pytestmark = pytest.mark.nats


@pytest.fixture
async def store(kv_server: NatsCluster) -> AsyncIterator[KvStore]:
    async with KvStore(lambda: connect(kv_server.urls, name="pytest"), bucket="cancel") as opened:
        await opened.ensure("a", "rss")
        yield opened


async def test_a_cancelled_write_ends_cancelled_even_as_its_acknowledgement_lands(
    store: KvStore,
) -> None:
    cursors = (str(number).encode() for number in itertools.count())

    lost = await lost_cancellations(lambda: store.update("a", JobUpdate(cursor=next(cursors))))

    assert lost == []


async def test_a_cancelled_read_ends_cancelled_even_as_its_answer_lands(store: KvStore) -> None:
    lost = {"get": await lost_cancellations(lambda: store.get("a"))}
    lost["all"] = await lost_cancellations(store.all)

    assert lost == {"get": [], "all": []}
