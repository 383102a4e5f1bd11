"""The Store contract, run over every implementation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pollerd.errors import StoreError
from pollerd.natsio.connection import connect
from pollerd.stores.base import JobSeed, JobState, JobUpdate, Store
from pollerd.stores.kv import KvStore
from pollerd.stores.memory import MemoryStore
from pollerd.stores.sqlite import SqliteStore

MOMENT = datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)
STORES = ["memory", "sqlite", pytest.param("nats-kv", marks=pytest.mark.nats)]
_buckets = itertools.count()


def make_store(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if name == "sqlite":
        return SqliteStore(tmp_path / "state" / "state.db")
    if name == "nats-kv":
        url = request.getfixturevalue("kv_server").urls
        return KvStore(lambda: connect(url, name="pytest-kv"), bucket=f"T{next(_buckets)}")
    return MemoryStore()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with make_store(request.param, tmp_path, request) as opened:
        yield opened


async def test_ensure_creates_a_job_with_the_initial_paused_flag(store: Store) -> None:
    created = await store.ensure("inbox", "dir_watch", paused=True)

    assert created == JobState(job_id="inbox", kind="dir_watch", paused=True)
    assert await store.get("inbox") == created


async def test_ensure_keeps_a_stored_job_of_the_same_kind_untouched(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    updated = await store.update("inbox", JobUpdate(cursor=b"c", consecutive_errors=2))
    version = await store.version()

    again = await store.ensure("inbox", "dir_watch", paused=True)

    assert again == updated
    assert await store.version() == version


async def test_ensure_with_another_kind_starts_the_job_over(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    before = await store.update(
        "inbox",
        JobUpdate(
            cursor=b"c",
            last_status="ok",
            last_run_at=MOMENT,
            consecutive_errors=3,
            breaker_open_until=MOMENT,
            breaker_cooldown_s=30.0,
        ),
    )

    reset = await store.ensure("inbox", "rss")

    # Its state starts over, but its events get a new id space: the old ids are not reused.
    assert reset == JobState(
        job_id="inbox", kind="rss", revision=before.revision + 1, event_space=1
    )
    assert await store.get("inbox") == reset


async def test_update_changes_only_the_fields_that_are_set(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    first = await store.update("inbox", JobUpdate(cursor=b"one", last_status="ok"))

    second = await store.update("inbox", JobUpdate(consecutive_errors=4, last_error="boom"))

    assert second.cursor == b"one"
    assert second.last_status == "ok"
    assert (second.consecutive_errors, second.last_error) == (4, "boom")
    assert second.revision == first.revision + 1 == 2
    assert await store.get("inbox") == second


async def test_update_can_set_a_field_back_to_none(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(pause_reason="quota", breaker_open_until=MOMENT))

    cleared = await store.update("inbox", JobUpdate(pause_reason=None, breaker_open_until=None))

    assert cleared.pause_reason is None
    assert cleared.breaker_open_until is None


@pytest.mark.parametrize(
    "cursor",
    [None, b"", b"\x00", bytes(range(256)), b"\xff" * 4096, "snowman ☃".encode()],
    ids=["none", "empty", "nul", "all-bytes", "4k", "utf8"],
)
async def test_a_cursor_round_trips_byte_for_byte(store: Store, cursor: bytes | None) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=cursor))

    stored = await store.get("inbox")

    assert stored is not None
    assert stored.cursor == cursor
    assert type(stored.cursor) is type(cursor)


async def test_datetimes_round_trip_to_the_microsecond_in_utc(store: Store) -> None:
    paris_winter = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 22, 9, 0, 0, 1, tzinfo=paris_winter)
    await store.ensure("inbox", "dir_watch")
    await store.update(
        "inbox",
        JobUpdate(
            last_run_at=MOMENT,
            last_success_at=local,
            last_scheduled_at=MOMENT + timedelta(microseconds=999999),
            breaker_open_until=MOMENT,
            breaker_cooldown_s=0.1,
        ),
    )

    stored = await store.get("inbox")

    assert stored is not None
    assert stored.last_run_at == MOMENT
    assert stored.last_success_at == local
    assert stored.last_success_at is not None and stored.last_success_at.tzinfo is UTC
    assert stored.last_scheduled_at == MOMENT + timedelta(microseconds=999999)
    assert stored.breaker_cooldown_s == 0.1


async def test_update_returns_the_state_as_stored(store: Store) -> None:
    paris_winter = timezone(timedelta(hours=1))
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=b"c", pause_reason="ops", consecutive_errors=2))

    returned = await store.update(
        "inbox",
        JobUpdate(
            kind="rss",
            last_status="timeout",
            last_error="slow",
            last_run_at=datetime(2026, 11, 22, 9, 0, 0, 7, tzinfo=paris_winter),
            last_success_at=None,
            last_scheduled_at=MOMENT,
            consecutive_errors=3,
            paused=True,
            broken_reason="bad",
            broken_config_hash="h1",
            breaker_open_until=MOMENT,
            breaker_cooldown_s=60.0,
        ),
    )

    assert returned == await store.get("inbox")
    assert returned.cursor == b"c" and returned.pause_reason == "ops"
    assert returned.last_run_at is not None and returned.last_run_at.tzinfo is UTC
    assert returned.revision == 2


@pytest.mark.parametrize(
    ("stored", "expected", "kept"),
    [
        (b"old", b"old", False),
        (None, None, False),
        (b"", b"", False),
        (b"operator", b"old", True),
        (None, b"", True),
        (b"", None, True),
    ],
    ids=["same", "both-none", "both-empty", "changed", "set-from-none", "reset-to-none"],
)
async def test_update_with_expect_cursor_writes_the_cursor_only_if_it_is_unchanged(
    store: Store, stored: bytes | None, expected: bytes | None, kept: bool
) -> None:
    await store.ensure("inbox", "dir_watch")
    before = await store.update("inbox", JobUpdate(cursor=stored, consecutive_errors=2))

    after = await store.update(
        "inbox",
        JobUpdate(cursor=b"plugin", last_status="ok", consecutive_errors=0),
        expect_cursor=expected,
    )

    assert after.cursor == (stored if kept else b"plugin")
    assert (after.last_status, after.consecutive_errors) == ("ok", 0)
    assert after.revision == before.revision + 1
    assert await store.get("inbox") == after


async def test_update_with_expect_cursor_and_no_cursor_in_the_change_writes_the_rest(
    store: Store,
) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=b"operator"))

    after = await store.update("inbox", JobUpdate(last_status="ok"), expect_cursor=b"old")

    assert (after.cursor, after.last_status) == (b"operator", "ok")
    assert await store.get("inbox") == after


async def test_concurrent_updates_are_applied_in_call_order(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")

    first, second, third = await asyncio.gather(
        store.update("inbox", JobUpdate(cursor=b"1", last_status="ok")),
        store.update("inbox", JobUpdate(cursor=b"2")),
        store.update("inbox", JobUpdate(consecutive_errors=3)),
    )

    assert [first.revision, second.revision, third.revision] == [1, 2, 3]
    assert (third.cursor, third.last_status, third.consecutive_errors) == (b"2", "ok", 3)
    assert await store.get("inbox") == third


async def test_expect_cursor_sees_a_cursor_set_just_before_by_a_concurrent_update(
    store: Store,
) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=b"before"))

    operator, tick = await asyncio.gather(
        store.update("inbox", JobUpdate(cursor=b"operator")),
        store.update(
            "inbox", JobUpdate(cursor=b"plugin", last_status="ok"), expect_cursor=b"before"
        ),
    )

    assert operator.cursor == b"operator"
    assert (tick.cursor, tick.last_status) == (b"operator", "ok")
    assert await store.get("inbox") == tick


async def test_an_unknown_job_among_concurrent_updates_fails_only_its_own(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")

    results = await asyncio.gather(
        store.update("inbox", JobUpdate(cursor=b"a")),
        store.update("ghost", JobUpdate(cursor=b"b")),
        store.update("inbox", JobUpdate(cursor=b"c")),
        return_exceptions=True,
    )

    assert isinstance(results[1], KeyError)
    assert [getattr(result, "cursor", None) for result in results] == [b"a", None, b"c"]
    assert await store.get("ghost") is None


async def test_ensure_and_delete_come_after_the_updates_called_before_them(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.ensure("feeds", "rss")

    updated, reset, _, _ = await asyncio.gather(
        store.update("inbox", JobUpdate(cursor=b"c")),
        store.ensure("inbox", "rss"),
        store.update("feeds", JobUpdate(cursor=b"f")),
        store.delete("feeds"),
    )

    assert updated.cursor == b"c"
    assert reset == JobState(
        job_id="inbox", kind="rss", revision=updated.revision + 1, event_space=1
    )
    assert await store.get("inbox") == reset
    assert await store.get("feeds") is None


async def test_a_naive_datetime_is_refused(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")

    with pytest.raises(ValueError) as caught:
        await store.update("inbox", JobUpdate(last_run_at=datetime(2026, 1, 1)))

    assert "last_run_at" in str(caught.value)
    stored = await store.get("inbox")
    assert stored is not None and stored.revision == 0


async def test_update_of_an_unknown_job_raises_key_error(store: Store) -> None:
    version = await store.version()

    with pytest.raises(KeyError) as caught:
        await store.update("ghost", JobUpdate(cursor=b"x"))

    assert caught.value.args == ("ghost",)
    assert await store.get("ghost") is None
    assert await store.version() == version


async def test_delete_forgets_the_job_and_ignores_a_missing_one(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.ensure("feeds", "rss")

    await store.delete("inbox")
    await store.delete("inbox")

    assert await store.get("inbox") is None
    assert [job.job_id for job in await store.all()] == ["feeds"]


async def test_all_returns_every_job_ordered_by_id(store: Store) -> None:
    for job_id in ["zeta", "alpha", "mid.1", "mid-0"]:
        await store.ensure(job_id, "dir_watch")

    jobs = await store.all()

    assert [job.job_id for job in jobs] == ["alpha", "mid-0", "mid.1", "zeta"]


async def test_version_increases_on_every_write_and_only_then(store: Store) -> None:
    seen = [await store.version()]

    await store.ensure("inbox", "dir_watch")
    seen.append(await store.version())
    await store.update("inbox", JobUpdate(cursor=b"c"))
    seen.append(await store.version())
    await store.ensure("inbox", "rss")
    seen.append(await store.version())
    await store.get("inbox")
    await store.all()
    await store.ensure("inbox", "rss")
    await store.delete("ghost")
    seen.append(await store.version())
    await store.delete("inbox")
    seen.append(await store.version())

    assert seen[0] < seen[1] < seen[2] < seen[3] == seen[4] < seen[5]


@pytest.mark.parametrize("name", STORES)
async def test_a_closed_store_refuses_to_work(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = make_store(name, tmp_path, request)
    async with store:
        await store.ensure("inbox", "dir_watch")

    with pytest.raises(StoreError) as caught:
        await store.get("inbox")

    assert "not open" in str(caught.value)


async def test_ping_passes_on_an_open_store(store: Store) -> None:
    await store.ping()

    assert await store.all() == []


def _second_store(name: str, first: Store, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """Another store on the same data, as another process (the CLI, another replica) opens it."""
    if isinstance(first, KvStore):
        url = request.getfixturevalue("kv_server").urls
        return KvStore(lambda: connect(url, name="pytest-kv-2"), bucket=first.bucket)
    return make_store(name, tmp_path, request)


@pytest.mark.parametrize("name", ["sqlite", pytest.param("nats-kv", marks=pytest.mark.nats)])
async def test_an_operator_cursor_written_by_another_process_wins_over_a_tick_commit(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with make_store(name, tmp_path, request) as service:
        await service.ensure("inbox", "dir_watch")
        await service.update("inbox", JobUpdate(cursor=b"before"))
        started = await service.get("inbox")  # the tick starts from this state
        assert started is not None
        async with _second_store(name, service, tmp_path, request) as cli:
            await cli.update("inbox", JobUpdate(cursor=b"operator"))

        committed = await service.update(
            "inbox",
            JobUpdate(cursor=b"plugin", last_status="ok", consecutive_errors=0),
            expect_cursor=started.cursor,
        )

        assert (committed.cursor, committed.last_status) == (b"operator", "ok")
        assert committed.revision == started.revision + 2
        assert await service.get("inbox") == committed


@pytest.mark.parametrize("name", ["sqlite", pytest.param("nats-kv", marks=pytest.mark.nats)])
async def test_another_process_sees_the_version_move_and_the_writes_of_both_are_kept(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with make_store(name, tmp_path, request) as first:
        await first.ensure("inbox", "dir_watch")
        async with _second_store(name, first, tmp_path, request) as second:
            seen = await second.version()
            await second.get("inbox")  # both now remember the same revision

            await first.update("inbox", JobUpdate(consecutive_errors=2))
            moved = await second.version()
            await second.update("inbox", JobUpdate(last_status="timeout"))

            assert moved > seen
            stored = await first.get("inbox")
            assert stored is not None
            assert (stored.consecutive_errors, stored.last_status) == (2, "timeout")
            assert stored.revision == 2


async def test_a_deleted_job_can_be_created_again_from_scratch(store: Store) -> None:
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=b"c"))
    await store.delete("inbox")

    again = await store.ensure("inbox", "dir_watch")

    assert again == JobState(job_id="inbox", kind="dir_watch")
    assert await store.get("inbox") == again


async def test_ensure_many_creates_keeps_and_resets_jobs_in_one_version_step(store: Store) -> None:
    await store.ensure("kept", "dir_watch")
    await store.ensure("reset", "dir_watch")
    await store.update("reset", JobUpdate(cursor=b"old"))
    version = await store.version()

    states = await store.ensure_many(
        [JobSeed("kept", "dir_watch"), JobSeed("reset", "rss"), JobSeed("new", "rss", paused=True)]
    )

    assert set(states) == {"kept", "reset", "new"}
    assert states["kept"] == await store.get("kept")
    assert (states["reset"].kind, states["reset"].cursor) == ("rss", None)
    assert states["new"].paused and states["new"] == await store.get("new")
    assert version < await store.version()
    assert await store.ensure_many([JobSeed("kept", "dir_watch")]) == {"kept": states["kept"]}


async def test_held_returns_only_the_paused_and_broken_jobs_in_id_order(store: Store) -> None:
    for job_id in ("b-paused", "a-broken", "c-active"):
        await store.ensure(job_id, "dir_watch")
    await store.update("b-paused", JobUpdate(paused=True, pause_reason="maintenance"))
    await store.update("a-broken", JobUpdate(broken_reason="bad", broken_config_hash="h"))

    held = await store.held()

    assert [state.job_id for state in held] == ["a-broken", "b-paused"]
    assert held == [await store.get("a-broken"), await store.get("b-paused")]
