"""The SQLite store's WAL checkpoints on a timer (the service's store), against real files."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from pollerd.stores._sqlite_checkpoint import SAFETY_PAGES
from pollerd.stores.base import JobSeed, JobUpdate
from pollerd.stores.sqlite import SqliteStore

NEVER_S = 3600.0  # a period that does not come during a test: checkpoints are called directly
WAIT_S = 10.0
JOBS = 600  # enough rows for a few dozen pages


def wal_exists(path: Path) -> bool:
    return Path(f"{path}-wal").exists()


def delete_store_files(folder: Path) -> None:
    for leftover in folder.glob("state.db*"):
        leftover.unlink()


def seeds(count: int) -> list[JobSeed]:
    return [JobSeed(f"job{i:04}", "probe") for i in range(count)]


async def test_the_store_connection_leaves_checkpoints_to_the_timer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, checkpoint_every_s=NEVER_S) as store:
        threshold = store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        await store.ensure_many(seeds(JOBS))
        size_before = path.stat().st_size
        assert store._checkpointer is not None
        await asyncio.to_thread(store._checkpointer.checkpoint)
        size_after = path.stat().st_size
        checkpoints = store._checkpointer.checkpoints

    assert threshold == SAFETY_PAGES
    # The rows were in the WAL only, and the checkpoint copied them into the database file.
    assert size_after > size_before
    assert checkpoints == 1


async def test_a_store_without_the_timer_keeps_sqlites_own_checkpoints(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db") as store:
        threshold = store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0]

    assert store._checkpointer is None
    assert threshold == 1000  # SQLite's default: the CLI's stores


async def test_the_timer_checkpoints_while_ticks_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, checkpoint_every_s=0.01) as store:
        await store.ensure_many(seeds(JOBS))
        checkpointer = store._checkpointer
        assert checkpointer is not None
        async with asyncio.timeout(WAIT_S):
            while checkpointer.checkpoints < 3:
                await store.update("job0001", JobUpdate(cursor=b"c", last_status="ok"))
                await asyncio.sleep(0.005)
        size = path.stat().st_size
        state = await store.get("job0001")

    assert state is not None and state.cursor == b"c"
    assert size > 4096 * 4  # the jobs reached the database file, not only the WAL
    assert not wal_exists(path)  # the store's connection closed last, cleanly


async def test_a_file_deleted_while_the_checkpoint_connection_is_open_keeps_its_new_writes(
    tmp_path: Path,
) -> None:
    """The checkpoint's connection to the deleted file is the last one open on it when the next
    checkpoint closes it; SQLite removes a WAL by its name on a last close, but not for a file
    that was unlinked, so the WAL of the file recreated in its place keeps its commits."""
    path = tmp_path / "state.db"
    async with SqliteStore(path, checkpoint_every_s=NEVER_S) as store:
        await store.ensure_many(seeds(3))
        assert store._checkpointer is not None
        await asyncio.to_thread(store._checkpointer.checkpoint)  # its connection is now open
        delete_store_files(tmp_path)
        await store.update("job0001", JobUpdate(cursor=b"after", last_status="ok"))  # recreates
        await store.update("job0002", JobUpdate(cursor=b"after", last_status="ok"))
        await asyncio.to_thread(store._checkpointer.checkpoint)  # follows the new file
        with closing(sqlite3.connect(path)) as conn:  # another process: the CLI
            seen_while_open = conn.execute("SELECT cursor FROM jobs ORDER BY job_id").fetchall()

    async with SqliteStore(path) as reopened:
        states = {seed.job_id: await reopened.get(seed.job_id) for seed in seeds(3)}

    assert seen_while_open == [(None,), (b"after",), (b"after",)]
    assert [state.cursor if state else None for state in states.values()] == [
        None,
        b"after",
        b"after",
    ]
