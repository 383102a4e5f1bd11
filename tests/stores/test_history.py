"""The tick-history part of the Store contract, run over every store that keeps history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pollerd.stores.base import JobUpdate, Store, TickRecord
from pollerd.stores.memory import MemoryStore
from pollerd.stores.sqlite import SqliteStore
from stores.test_contract import STORES, make_store

SLOT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with make_store(request.param, tmp_path, request) as opened:
        if not opened.keeps_history:
            pytest.skip(f"{type(opened).__name__} keeps no tick history (Store.keeps_history)")
        yield opened


def record(n: int, status: str = "ok", error: str | None = None) -> TickRecord:
    slot = SLOT + timedelta(minutes=n)
    return TickRecord(
        tick_id=f"job@{n}",
        slot=slot,
        finished_at=slot + timedelta(seconds=1.5),
        status=status,
        attempts=1 + (status != "ok"),
        duration_s=1.25,
        events=0 if error else n,
        error=error,
        replica="host-a",
    )


async def commit(store: Store, job_id: str, tick: TickRecord, keep: int = 50) -> None:
    await store.update(job_id, JobUpdate(last_status=tick.status, tick=tick, keep_ticks=keep))


async def test_history_lists_the_committed_ticks_newest_first_as_written(store: Store) -> None:
    await store.ensure("job", "rss")
    written = [record(1), record(2, "timeout", "plugin 'x' timed out after 5s"), record(3)]
    for tick in written:
        await commit(store, "job", tick)

    assert await store.history("job", 10) == written[::-1]
    assert await store.history("job", 2) == [written[2], written[1]]


async def test_history_keeps_only_the_newest_keep_ticks_of_a_job(store: Store) -> None:
    await store.ensure("job", "rss")
    await store.ensure("other", "rss")
    for n in range(1, 8):
        await commit(store, "job", record(n), keep=3)
    await commit(store, "other", record(100), keep=3)

    assert [t.tick_id for t in await store.history("job", 10)] == ["job@7", "job@6", "job@5"]
    assert [t.tick_id for t in await store.history("other", 10)] == ["job@100"]


async def test_an_update_without_a_tick_adds_nothing(store: Store) -> None:
    await store.ensure("job", "rss")
    await store.update("job", JobUpdate(paused=True))

    assert await store.history("job", 10) == []
    assert await store.history("unknown", 10) == []


async def test_ticks_committed_together_keep_their_order(store: Store) -> None:
    await store.ensure("job", "rss")

    await asyncio.gather(*(commit(store, "job", record(n)) for n in range(1, 6)))

    assert [t.tick_id for t in await store.history("job", 10)] == [
        f"job@{n}" for n in range(5, 0, -1)
    ]


async def test_ticks_committed_together_past_keep_leave_the_newest_keep(store: Store) -> None:
    await store.ensure("job", "rss")
    await store.ensure("other", "rss")
    for n in range(1, 4):
        await commit(store, "job", record(n), keep=3)

    await asyncio.gather(
        *(commit(store, "job", record(n), keep=3) for n in range(4, 9)),
        commit(store, "other", record(100), keep=3),
    )

    assert [t.tick_id for t in await store.history("job", 10)] == ["job@8", "job@7", "job@6"]
    assert [t.tick_id for t in await store.history("other", 10)] == ["job@100"]


async def test_a_tick_kept_zero_times_among_ticks_committed_together_drops_the_earlier(
    store: Store,
) -> None:
    await store.ensure("job", "rss")
    await commit(store, "job", record(1))

    await asyncio.gather(
        commit(store, "job", record(2)),
        commit(store, "job", record(3), keep=0),
        commit(store, "job", record(4)),
    )

    assert [t.tick_id for t in await store.history("job", 10)] == ["job@4"]


async def test_deleting_a_job_or_changing_its_kind_forgets_its_history(store: Store) -> None:
    await store.ensure("gone", "rss")
    await store.ensure("moved", "rss")
    await commit(store, "gone", record(1))
    await commit(store, "moved", record(2))

    await store.delete("gone")
    await store.ensure("moved", "atom")

    assert await store.history("gone", 10) == []
    assert await store.history("moved", 10) == []


async def test_a_write_that_fails_records_no_tick(store: Store) -> None:
    with pytest.raises(KeyError):
        await commit(store, "unknown", record(1))

    assert await store.history("unknown", 10) == []


async def test_sqlite_history_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as first:
        await first.ensure("job", "rss")
        await commit(first, "job", record(1))

    async with SqliteStore(path) as second:
        assert await second.history("job", 5) == [record(1)]


def test_the_stores_that_ship_keep_history() -> None:
    assert MemoryStore.keeps_history and SqliteStore.keeps_history
