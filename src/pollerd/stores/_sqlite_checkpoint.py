"""The SQLite store's WAL checkpoints: on a timer, in a worker thread, on a connection of their own.

SQLite checkpoints by itself when a commit leaves the WAL over ``wal_autocheckpoint`` pages
(1,000 by default), on the committing connection: in the service, on the event loop's thread.
At 1,000 ticks a second every tick dirties two pages (its job's row and its history), so that
came twice a second, each time copying about a thousand pages back into the database and
fsyncing twice, with the loop blocked. A job's row page is rewritten many times a second, and
a checkpoint copies only the newest copy of a page: checkpointing less often copies less.

So the service's store raises its own connection's threshold to ``SAFETY_PAGES`` (a bound for
when these checkpoints fall behind) and checkpoints every ``every_s`` seconds here instead:
``PASSIVE``, which never waits for readers or writers, from a worker thread (the sqlite3 module
lets go of the GIL while SQLite works), so ticks go on committing meanwhile. A small service
still keeps a small WAL: what it wrote in the last ``every_s`` seconds.

Measured at 10,000 jobs every 10 s (20 ms scheduler grid), the two run in turn eight times on
one tree: pollerd's CPU per tick 279 against 285 µs (means; within the noise of the machine),
its voluntary context switches 109–120 against 127–138 a second, and the plugin-side p99
25.6–33.6 ms against 25.2–75.8 ms (two runs of eight with SQLite's own checkpoints over 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

from pollerd.errors import StoreError
from pollerd.stores._sqlite_file import file_id

logger = logging.getLogger(__name__)

SAFETY_PAGES = 25_000  # ≈ 100 MB of WAL: SQLite checkpoints on the committing connection past it
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"


class Checkpointer:
    """Checkpoints ``path``'s WAL every ``every_s`` seconds while started.

    Its connection is opened and used in the worker thread, one checkpoint at a time, and
    closed there or once no checkpoint runs. ``file_id`` is that of the file the store writes:
    a checkpoint never opens another file (one that replaced it, or none when it was deleted;
    when the store recreates a deleted file it says so with ``follow``, and the connection to
    the old one is closed at the next checkpoint). A failed checkpoint is logged and retried at
    the next period: the WAL only grows meanwhile, and the store's own writes report what is
    wrong with the file.
    """

    def __init__(self, path: Path, every_s: float, busy_timeout_s: float) -> None:
        self.path = path
        self.every_s = every_s
        self.busy_timeout_s = busy_timeout_s
        self.file_id: tuple[int, int] | None = None
        self.checkpoints = 0  # done since start: tests wait on it
        self._conn: sqlite3.Connection | None = None
        self._conn_file: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[None] | None = None
        self._failing = False

    def start(self, file: tuple[int, int] | None) -> None:
        self.file_id = file
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"checkpoint:{self.path.name}")

    def follow(self, file: tuple[int, int] | None) -> None:
        """The store now writes this file (it recreated a deleted one)."""
        self.file_id = file

    async def stop(self) -> None:
        """Stop the timer, let a checkpoint in progress end, close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running, self._running = self._running, None
        if running is not None:
            await asyncio.wait([running])
        self._close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.every_s)
            self._running = loop.run_in_executor(None, self.checkpoint)
            await asyncio.shield(self._running)  # on cancel, ``stop`` waits for it
            self._running = None

    def checkpoint(self) -> None:
        """One ``PASSIVE`` checkpoint (in the worker thread)."""
        try:
            conn = self._connection()
            if conn is not None:
                conn.execute(CHECKPOINT).fetchone()
                self.checkpoints += 1
            self._failing = False
        except (sqlite3.Error, StoreError) as exc:  # StoreError: the file could not be looked at
            if not self._failing:
                logger.warning("state store %s: WAL checkpoint failed: %s", self.path, exc)
            self._failing = True
            self._close()

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is not None and self._conn_file == self.file_id:
            return self._conn
        self._close()
        if self.file_id is None or file_id(self.path) != self.file_id:
            return None  # not the store's file (any more): nothing of ours to checkpoint
        self._conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn_file = self.file_id
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
