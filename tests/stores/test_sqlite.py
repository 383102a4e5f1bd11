"""What the SQLite store adds to the contract: persistence, sharing a file, refusing bad files."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pollerd.errors import StoreError
from pollerd.stores.base import SCHEMA_VERSION, JobUpdate
from pollerd.stores.sqlite import SqliteStore


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


async def test_the_store_creates_its_directory_and_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"

    async with SqliteStore(path):
        pass

    with raw(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        schema = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert mode == "wal"
    assert schema == SCHEMA_VERSION


async def test_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.ensure("inbox", "dir_watch", paused=True)
        written = await store.update("inbox", JobUpdate(cursor=b"", pause_reason="ops"))
        version = await store.version()

    async with SqliteStore(path) as store:
        assert await store.get("inbox") == written
        assert await store.version() == version


async def test_times_are_stored_as_utc_iso_text_with_microseconds_even_when_zero(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    whole = datetime(2026, 11, 22, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    async with SqliteStore(path) as store:
        await store.ensure("inbox", "dir_watch")
        await store.update(
            "inbox",
            JobUpdate(last_run_at=whole, last_success_at=whole + timedelta(microseconds=7)),
        )

    with raw(path) as conn:
        texts = conn.execute("SELECT last_run_at, last_success_at FROM jobs").fetchone()
    assert texts == ("2026-11-22T08:30:00.000000+00:00", "2026-11-22T08:30:00.000007+00:00")


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as service, SqliteStore(path) as cli:
        await service.ensure("inbox", "dir_watch")
        seen_by_service = await service.version()

        paused = await cli.update("inbox", JobUpdate(paused=True, pause_reason="maintenance"))

        assert await service.version() > seen_by_service
        assert await service.get("inbox") == paused
        await service.update("inbox", JobUpdate(cursor=b"\x01"))
        from_cli = await cli.get("inbox")
        assert from_cli is not None
        assert (from_cli.cursor, from_cli.paused, from_cli.revision) == (b"\x01", True, 2)


async def test_a_newer_schema_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path):
        pass
    with raw(path) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")

    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).open()

    message = str(caught.value)
    assert "99" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert str(path) in message


async def test_an_unusable_location_is_reported_with_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    path = blocker / "state.db"

    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).open()

    assert str(path) in str(caught.value)
    assert "directory" in str(caught.value)


async def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).open()

    assert str(path) in str(caught.value)
    assert "not a database" in str(caught.value)


async def test_a_database_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")

    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).open()

    assert "not a pollerd state store" in str(caught.value)
    assert "invoices" in str(caught.value)


async def test_a_write_blocked_by_another_writer_fails_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, busy_timeout_s=0.05) as store:
        await store.ensure("inbox", "dir_watch")
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")

            with pytest.raises(StoreError) as caught:
                await store.update("inbox", JobUpdate(cursor=b"x"))

            other.execute("ROLLBACK")
        unchanged = await store.get("inbox")

    assert "locked" in str(caught.value)
    assert str(path) in str(caught.value)
    assert unchanged is not None and unchanged.cursor is None


async def test_reads_go_on_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, busy_timeout_s=0.05) as store:
        await store.ensure("inbox", "dir_watch")
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE jobs SET kind = 'rss'")

            during = await store.get("inbox")

            other.execute("COMMIT")
        after = await store.get("inbox")

    assert during is not None and during.kind == "dir_watch"
    assert after is not None and after.kind == "rss"


async def test_an_unreadable_stored_value_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.ensure("inbox", "dir_watch")
        with raw(path) as other:
            other.execute("UPDATE jobs SET last_run_at = 'yesterday-ish'")

        with pytest.raises(StoreError) as caught:
            await store.get("inbox")

    assert "'inbox'" in str(caught.value)
    assert str(path) in str(caught.value)


async def test_a_failed_read_is_a_store_error_naming_the_job(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.ensure("inbox", "dir_watch")
        with raw(path) as other:
            other.execute("DROP TABLE jobs")

        with pytest.raises(StoreError) as caught:
            await store.get("inbox")

    assert "could not read job 'inbox'" in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_updates_made_together_are_written_in_one_transaction(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db") as store:
        for index in range(10):
            await store.ensure(f"job-{index}", "rss")
        before = await store.version()

        written = await asyncio.gather(
            *(store.update(f"job-{index}", JobUpdate(cursor=b"%d" % index)) for index in range(10))
        )

        assert await store.version() == before + 1
        assert [state.cursor for state in written] == [b"%d" % index for index in range(10)]
        assert await store.all() == written


async def test_updates_of_one_job_setting_other_columns_are_stored_in_call_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.ensure("inbox", "dir_watch")
        await store.ensure("feeds", "rss")

        written = await asyncio.gather(
            store.update("inbox", JobUpdate(cursor=b"1", last_status="ok")),
            store.update("feeds", JobUpdate(cursor=b"f", last_status="ok")),
            store.update("inbox", JobUpdate(last_status="timeout")),
            store.update("inbox", JobUpdate(cursor=b"2", last_status="ok")),
            store.update("inbox", JobUpdate(cursor=b"3")),
        )

    async with SqliteStore(path) as reopened:
        stored = await reopened.all()
    assert stored == [written[1], written[4]]
    assert (stored[1].cursor, stored[1].last_status, stored[1].revision) == (b"3", "ok", 4)


async def test_a_locked_store_fails_every_update_of_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, busy_timeout_s=0.05) as store:
        await store.ensure("inbox", "dir_watch")
        await store.ensure("feeds", "rss")
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")

            results = await asyncio.gather(
                store.update("inbox", JobUpdate(cursor=b"x")),
                store.update("feeds", JobUpdate(cursor=b"y")),
                return_exceptions=True,
            )

            other.execute("ROLLBACK")
        unchanged = await store.all()

    assert all(isinstance(result, StoreError) for result in results)
    assert "'inbox'" in str(results[0]) and "'feeds'" in str(results[1])
    assert all("locked" in str(result) for result in results)
    assert [state.cursor for state in unchanged] == [None, None]


async def test_an_update_cancelled_before_its_batch_is_written_is_withdrawn(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path / "state.db") as store:
        await store.ensure("inbox", "dir_watch")
        await store.ensure("feeds", "rss")
        kept = asyncio.create_task(store.update("inbox", JobUpdate(cursor=b"kept")))
        withdrawn = asyncio.create_task(store.update("feeds", JobUpdate(cursor=b"gone")))
        await asyncio.sleep(0)  # both wait for the batch, written on the next loop turn
        withdrawn.cancel()

        written = await kept
        feeds = await store.get("feeds")

    assert written.cursor == b"kept"
    assert withdrawn.cancelled()
    assert feeds is not None and feeds.cursor is None and feeds.revision == 0


async def test_closing_the_store_writes_the_waiting_updates_first(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.open()
    await store.ensure("inbox", "dir_watch")

    written, _ = await asyncio.gather(
        store.update("inbox", JobUpdate(cursor=b"last")), store.close()
    )

    async with SqliteStore(path) as reopened:
        assert await reopened.get("inbox") == written
    assert written.cursor == b"last"


async def test_updates_waiting_in_the_commit_window_are_written_before_later_calls(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, commit_window_s=3600)
    await store.open()
    await store.ensure("inbox", "dir_watch")
    await store.update("inbox", JobUpdate(cursor=b"first"))  # at once: nothing came just before
    waiting = [
        asyncio.create_task(store.update("inbox", JobUpdate(cursor=b"deleted"))),
        asyncio.create_task(store.update("inbox", JobUpdate(cursor=b"last"))),
    ]
    await asyncio.sleep(0)

    held = all(not task.done() for task in waiting)
    await store.delete("inbox")
    await store.ensure("inbox", "dir_watch")
    closing_with = asyncio.create_task(store.update("inbox", JobUpdate(cursor=b"closed")))
    await asyncio.sleep(0)
    await store.close()

    assert held
    assert [(await task).cursor for task in waiting] == [b"deleted", b"last"]
    assert (await closing_with).cursor == b"closed"
    async with SqliteStore(path) as reopened:
        stored = await reopened.get("inbox")
    assert stored is not None and stored.cursor == b"closed"


async def test_an_update_builds_on_a_write_made_meanwhile_by_another_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as service, SqliteStore(path) as cli:
        await service.ensure("inbox", "dir_watch")
        read = await service.get("inbox")
        await cli.update("inbox", JobUpdate(paused=True, pause_reason="maintenance"))

        updated = await service.update("inbox", JobUpdate(consecutive_errors=1))

        assert read is not None and not read.paused
        assert (updated.paused, updated.pause_reason, updated.revision) == (True, "maintenance", 2)
        assert await cli.get("inbox") == updated


async def test_a_cursor_set_by_another_connection_during_a_tick_wins_over_its_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as service, SqliteStore(path) as cli:
        await service.ensure("inbox", "dir_watch")
        before = await service.update("inbox", JobUpdate(cursor=b"before"))
        await cli.update("inbox", JobUpdate(cursor=b"operator"))

        committed = await service.update(
            "inbox", JobUpdate(cursor=b"plugin", last_status="ok"), expect_cursor=before.cursor
        )

        assert (committed.cursor, committed.last_status) == (b"operator", "ok")
        assert await cli.get("inbox") == committed


async def test_a_reopened_store_reads_what_was_written_while_it_was_closed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    async with store:
        await store.ensure("inbox", "dir_watch")
        assert await store.get("inbox") is not None
    with raw(path) as other:
        other.execute("UPDATE jobs SET cursor = x'01', revision = 7")

    async with store:
        reread = await store.get("inbox")

    assert reread is not None and (reread.cursor, reread.revision) == (b"\x01", 7)


async def test_all_reuses_the_states_it_knows_and_reads_what_another_process_wrote(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as service, SqliteStore(path) as cli:
        await service.ensure("inbox", "dir_watch")
        await service.ensure("feeds", "rss")
        ticked = await service.update("inbox", JobUpdate(cursor=b"1"))
        assert (await service.all())[1] is ticked  # known and unchanged: not parsed again

        await cli.update("feeds", JobUpdate(cursor=b"set by an operator"))
        after = await service.all()

    assert [(state.job_id, state.cursor) for state in after] == [
        ("feeds", b"set by an operator"),
        ("inbox", b"1"),
    ]
    assert after[1] == ticked
