"""nats-kv: reading every job survives nats-py's early "nothing pending" marker (real server).

nats-py's KV watch queues its end-of-data marker when its consumer reports nothing pending at
the start; when the server has already pushed the messages, that marker can come before them.
A CI run saw ``all()`` return no job from a bucket holding one. The marker is put first here on
purpose, as nats-py does in that race.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.kv import KeyValue

from natscluster import NatsCluster
from pollerd.natsio.connection import connect
from pollerd.stores.kv import KvStore

pytestmark = pytest.mark.nats


@pytest.fixture
async def store(kv_server: NatsCluster, request: pytest.FixtureRequest) -> AsyncIterator[KvStore]:
    async with KvStore(
        lambda: connect(kv_server.urls, name="pytest"),
        bucket=request.node.name[:20].replace("_", "-"),
    ) as opened:
        yield opened


@pytest.fixture
def early_end_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KV watch gets nats-py's end-of-data marker ahead of its messages."""
    real_watch = KeyValue.watch

    async def watch(self: KeyValue, keys: str, **options: Any) -> Any:
        watcher = await real_watch(self, keys, **options)
        queue = watcher._updates
        pending = [queue.get_nowait() for _ in range(queue.qsize())]
        for item in [None, *(item for item in pending if item is not None)]:
            queue.put_nowait(item)
        return watcher

    monkeypatch.setattr(KeyValue, "watch", watch)


async def test_every_job_is_read_when_the_end_marker_comes_first(
    store: KvStore, early_end_marker: None
) -> None:
    for job_id in ("a", "b", "c"):
        await store.ensure(job_id, "rss")
    await store.delete("b")  # the newest message is a delete marker: it still ends the read

    assert [state.job_id for state in await store.all()] == ["a", "c"]


async def test_an_empty_store_reads_as_empty(store: KvStore, early_end_marker: None) -> None:
    assert await store.all() == []
