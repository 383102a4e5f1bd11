"""nats-kv: JetStream's refusals reach the store's callers as store errors (real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from natscluster import NatsCluster
from pollerd.errors import StoreError
from pollerd.natsio.connection import connect
from pollerd.stores._kvio import retry

pytestmark = pytest.mark.nats

RETRY_FOR_S = 5.0


@pytest.fixture
async def kv(kv_server: NatsCluster) -> AsyncIterator[KeyValue]:
    nc = await connect(kv_server.urls, name="pytest")
    try:
        yield await nc.jetstream().create_key_value(KeyValueConfig(bucket="kvio", history=1))
    finally:
        await nc.close()


async def test_a_create_that_finds_the_key_written_is_refused_at_once_as_a_store_error(
    kv: KeyValue,
) -> None:
    # Two replicas opening a new bucket both create its schema key: the second one's create is
    # refused with nats-py's KeyWrongLastSequenceError, which lacks APIError's `code`. Reading it
    # raised AttributeError, and the replica exited instead of taking the other one's key.
    await kv.create("schema", b"1")

    with pytest.raises(StoreError) as raised:
        await retry("write the schema version", lambda: kv.create("schema", b"1"), RETRY_FOR_S)

    assert isinstance(raised.value.__cause__, APIError)
    assert "wrong last sequence" in str(raised.value)
