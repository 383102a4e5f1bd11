"""A Store in one SQLite file, shared by the running service and the CLI's admin commands."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pollerd.errors import StoreError
from pollerd.stores import _sqlite_history
from pollerd.stores._batch import WriteQueue
from pollerd.stores._sqlite_batch import Write, WriteBatch
from pollerd.stores._sqlite_checkpoint import SAFETY_PAGES, Checkpointer
from pollerd.stores._sqlite_file import RECREATED, file_id, prepare_new_file, read_all, write_all
from pollerd.stores._sqlite_schema import (
    ADDED_COLUMNS,
    BUSY_TIMEOUT_S,
    DATA_VERSION,
    JOBS_TABLE,
    META_TABLE,
    REVISION,
    SCHEMA_KEY,
    SCHEMA_STATEMENTS,
    SELECT,
    SELECT_HELD,
    SELECT_ONE,
    VERSION_KEY,
    bump_version,
    change_of,
    describe_error,
    ensure_rows,
    meta,
    rollback,
    values_from_row,
)
from pollerd.stores.base import (
    SCHEMA_VERSION,
    UNSET,
    JobSeed,
    JobState,
    JobUpdate,
    Store,
    Unset,
)
from pollerd.stores.private import private_database

logger = logging.getLogger(__name__)


class SqliteStore(Store):
    """Job state in a SQLite file (WAL mode), one connection per store.

    Concurrency: the service and CLI admin commands open the same file. Every write is one short
    ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two writers never deadlock
    on a lock upgrade) and a writer waits up to ``busy_timeout_s`` for the other one. WAL lets
    readers run while someone writes.

    Group commit: the ``update`` calls made during one event loop turn (the commits of the ticks
    whose replies came together) are written in one transaction, in call order, at the end of
    that turn; each caller awaits its own result. A commit costs ≈ 22 µs and ``BEGIN`` ≈ 5 µs on
    the reference machine, against ≈ 8 µs for one job's read and write: with 64 ticks in flight
    this took the store's share of a tick from ≈ 55 µs to ≈ 20 µs. ``ensure`` and ``delete``
    write the waiting updates first, so the order of writes is the order of calls.
    ``commit_window_s`` (the service uses 5 ms): a batch that starts less than that after the
    previous one was written waits until then, so that a steady stream of tick commits shares
    transactions too (``WriteQueue``, ``flush_delay``); ``ensure``, ``delete``, ``history`` and
    ``close`` write what waits at once. The statements of a batch run together
    (``WriteBatch``).

    Threading: the calls are local and take microseconds, so they run directly on the event loop
    thread instead of a worker thread; no transaction spans an ``await``. The cost is that a writer
    blocked by another process's lock blocks the loop for up to ``busy_timeout_s``; admin commands
    hold the lock for well under a millisecond. An ``update`` whose caller is cancelled before its
    batch is written is withdrawn; once written, it stays written.

    Reads: the store keeps the states it read and wrote, valid as long as no other connection has
    committed (``PRAGMA data_version`` tells, ≈ 3 µs); a write by the CLI or another process
    empties them. ``get`` and ``update`` then skip their ``SELECT`` and the parsing of the row.

    Checkpoints: with ``checkpoint_every_s`` (the service), on that timer in a worker thread
    rather than on the committing connection (``_sqlite_checkpoint``).

    Durability: ``synchronous=NORMAL`` by default. In WAL mode a committed transaction survives a
    crash of pollerd, but an OS crash or power loss may roll back the last commits (the file stays
    consistent). Such a rollback moves a cursor back and re-publishes the events since, which the
    at-least-once event contract (``Nats-Msg-Id`` dedup, idempotent consumers) already covers.
    ``full_sync=True`` fsyncs every commit: measured ≈ 250 µs per commit against ≈ 17 µs, which
    would cap a tick-heavy service at a few thousand commits per second of loop time.

    Datetimes are stored as ISO 8601 UTC text with microseconds; the cursor is a BLOB, so ``None``
    and ``b""`` stay distinct.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        full_sync: bool = False,
        commit_window_s: float = 0.0,
        checkpoint_every_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.full_sync = full_sync
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._writes: WriteQueue[Write, JobState] = WriteQueue(
            self._write_batch, window_s=commit_window_s
        )
        self._known: dict[str, JobState] = {}  # exact while data_version is _known_at
        self._history = _sqlite_history.HistoryTable()
        self._known_at: int | None = None
        self._version_reader: sqlite3.Cursor | None = None  # reads DATA_VERSION
        self._write_error: str | None = None  # the last write failed (disk full, read-only…)
        self._checkpointer = (
            Checkpointer(self.path, checkpoint_every_s, busy_timeout_s)
            if checkpoint_every_s > 0
            else None
        )

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            private_database(self.path)
        except OSError as exc:
            raise StoreError(
                f"state store {self.path}: cannot create its directory {self.path.parent}: "
                f"{exc.strerror or exc}; check the state_dir setting and its permissions"
            ) from exc
        self._conn = self._open_connection()
        self._forget_known()
        if self._checkpointer is not None:
            self._checkpointer.start(self._file_id)
        logger.debug("opened state store %s (schema version %d)", self.path, SCHEMA_VERSION)

    def _open_connection(self) -> sqlite3.Connection:
        with self._translate("open"):
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            self._setup(conn)
            self._file_id = file_id(self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        with self._translate("open"):
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning(
                    "state store %s: journal mode is %s, not WAL: the CLI and the service may "
                    "block each other",
                    self.path,
                    mode,
                )
            conn.execute(f"PRAGMA synchronous={'FULL' if self.full_sync else 'NORMAL'}")
            if self._checkpointer is not None:  # it checkpoints on its timer instead
                conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_PAGES}")
        with self._transaction(conn, "create the schema"):
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if tables and META_TABLE not in tables:
                raise StoreError(
                    f"state store {self.path}: the file is a SQLite database but not a pollerd "
                    f"state store (tables: {', '.join(sorted(tables))}); point state_dir elsewhere"
                )
            for statement in SCHEMA_STATEMENTS:
                conn.execute(statement)
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({JOBS_TABLE})")}
            for name, definition in ADDED_COLUMNS:
                if name not in present:
                    conn.execute(f"ALTER TABLE {JOBS_TABLE} ADD COLUMN {name} {definition}")
            found = meta(conn, SCHEMA_KEY)
            if found is None:
                conn.executemany(
                    f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)",
                    [(SCHEMA_KEY, SCHEMA_VERSION), (VERSION_KEY, 0)],
                )
            elif found != SCHEMA_VERSION:
                raise StoreError(
                    f"state store {self.path} has schema version {found}; this pollerd supports "
                    f"version {SCHEMA_VERSION}. Run the pollerd version that wrote it, or move the "
                    "file away to start with empty state"
                )

    async def close(self) -> None:
        if self._conn is not None:
            self._writes.flush()
        if self._checkpointer is not None:
            await self._checkpointer.stop()  # the store's connection is then the last to close
        conn, self._conn = self._conn, None
        self._forget_known()
        if conn is not None:
            with self._translate("close"):
                conn.close()

    async def get(self, job_id: str) -> JobState | None:
        """Every tick starts with one: a plain ``try`` costs less than ``_translate``."""
        conn = self._connection()
        try:
            known = self._known_states(conn)
            state = known.get(job_id)
            if state is not None:
                return state
            row = conn.execute(SELECT_ONE, (job_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(f"read job {job_id!r}", exc) from exc
        if row is None:
            return None
        state = known[job_id] = self._state(row)
        return state

    async def all(self) -> list[JobState]:
        """Every job's state. A row this connection has read or written since (the same
        revision, no other connection's commit in between) is not parsed again: a listing of
        10,000 jobs on a running service reads them in 23–43 ms instead of 62."""
        conn = self._connection()
        with self._translate("read the jobs"):
            known = self._known_states(conn)
            rows = conn.execute(f"{SELECT} ORDER BY job_id").fetchall()
        states = []
        for row in rows:
            state = known.get(row[0])
            if state is None or state.revision != row[REVISION]:
                state = self._state(row)
            states.append(state)
        return states

    async def held(self) -> list[JobState]:
        with self._translate("read the paused and broken jobs"):
            rows = self._connection().execute(SELECT_HELD).fetchall()
        return [self._state(row) for row in rows]

    async def ensure(self, job_id: str, kind: str, *, paused: bool = False) -> JobState:
        return (await self.ensure_many([JobSeed(job_id, kind, paused)]))[job_id]

    async def ensure_many(self, seeds: Sequence[JobSeed]) -> dict[str, JobState]:
        conn = self._file_connection()
        self._writes.flush()  # updates that came first are written first
        what = f"create job {seeds[0].job_id!r}" if len(seeds) == 1 else "create the jobs"
        with self._transaction(conn, what):
            states = ensure_rows(conn, seeds, self._known_states, self._state, self._history.forget)
        self._known.update(states)
        return states

    async def update(
        self, job_id: str, change: JobUpdate, *, expect_cursor: bytes | None | Unset = UNSET
    ) -> JobState:
        """Group commit: the updates that come during one event loop turn are written in one
        transaction, in the order they came (see ``WriteQueue``)."""
        self._connection()
        write = Write(job_id, change_of(change), expect_cursor, change.tick, change.keep_ticks)
        return await self._writes.submit(write)

    def _write_batch(self, writes: Sequence[Write]) -> list[JobState | Exception]:
        """One transaction for every write: all are committed, or none (each caller then gets
        the StoreError). An unknown job fails only its own write."""
        if self._conn is None:
            return [self._not_open() for _ in writes]
        try:
            conn = self._file_connection()
        except StoreError as exc:
            return [exc for _ in writes]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                batch = WriteBatch(conn, self._known_states(conn), self._history, self._values)
                results = [batch.apply(write) for write in writes]
                batch.finish()
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                self._history.clear()  # the numbers taken by this batch were not written
                raise
        except sqlite3.Error as exc:
            self._write_error = describe_error(self.path, "write job states", exc)
            return [self._error(f"update job {write.job_id!r}", exc) for write in writes]
        if self._write_error is not None:
            logger.warning("state store %s: writes succeed again", self.path)
            self._write_error = None
        self._known.update(batch.written)
        return results

    async def delete(self, job_id: str) -> None:
        conn = self._file_connection()
        self._writes.flush()  # updates that came first are written first
        self._known.pop(job_id, None)
        with self._transaction(conn, f"delete job {job_id!r}"):
            deleted = conn.execute(f"DELETE FROM {JOBS_TABLE} WHERE job_id = ?", (job_id,))
            self._history.forget(conn, job_id)
            if deleted.rowcount:
                bump_version(conn)

    keeps_history = True

    async def history(self, job_id: str, limit: int) -> _sqlite_history.Records:
        conn = self._connection()
        self._writes.flush()  # a tick committed just before is in it
        with self._translate(f"read the history of job {job_id!r}"):
            return _sqlite_history.read(conn, job_id, limit)

    async def version(self) -> int:
        conn = self._connection()
        with self._translate("read the store version"):
            found = meta(conn, VERSION_KEY)
        return found or 0

    async def ping(self) -> None:
        """Fails while writes fail (disk full, read-only file) and when the file was replaced;
        recreates a deleted file (``_file_connection``)."""
        self._file_connection()
        if self._write_error is not None:
            raise StoreError(self._write_error)
        await super().ping()

    def _file_connection(self) -> sqlite3.Connection:
        """The connection, once its file is known to be the one at ``path`` (one stat a batch).

        SQLite keeps using a deleted file through its open descriptor, so every write would
        succeed and be lost at the next start. A deleted file is recreated at once from the
        open one (every row as committed). A file replaced by another is not written to:
        pollerd cannot tell whose it is (a restored backup?), so it refuses every write,
        loudly, until it is restarted.
        """
        conn = self._connection()
        found = file_id(self.path)
        if found is None:
            return self._recreate(conn)
        if found != self._file_id:
            raise StoreError(
                f"state store {self.path} was replaced by another file while pollerd runs: "
                "nothing is committed any more; restart pollerd to use the new file, or move "
                "it away (pollerd then recreates the store from its open copy)"
            )
        return conn

    def _recreate(self, old: sqlite3.Connection) -> sqlite3.Connection:
        with self._translate("read the deleted file's jobs"):
            rows, version = read_all(old)
        self._conn = None
        old.close()  # checkpoints into the unlinked file and removes its WAL when it can
        prepare_new_file(self.path)
        conn = self._open_connection()
        try:
            with self._transaction(conn, "copy the jobs into the new file"):
                write_all(conn, rows, version)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._forget_known()
        if self._checkpointer is not None:
            self._checkpointer.follow(self._file_id)
        logger.warning(RECREATED, self.path, len(rows))
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self._not_open()
        return self._conn

    def _known_states(self, conn: sqlite3.Connection) -> dict[str, JobState]:
        """The states this connection read or wrote, emptied first if another connection has
        committed since they were read."""
        reader = self._version_reader  # a cursor of its own: ≈ 1 µs less than conn.execute
        if reader is None or reader.connection is not conn:
            reader = self._version_reader = conn.cursor()
        data_version = reader.execute(DATA_VERSION).fetchone()[0]
        if data_version != self._known_at:
            self._known.clear()
            self._history.clear()
            self._known_at = data_version
        return self._known

    def _forget_known(self) -> None:
        self._known.clear()
        self._known_at = None
        self._version_reader = None

    def _not_open(self) -> StoreError:
        return StoreError(f"state store {self.path} is not open: use it inside 'async with store:'")

    def _state(self, row: tuple[object, ...]) -> JobState:
        return JobState(*self._values(row))  # type: ignore[arg-type]

    def _values(self, row: tuple[object, ...]) -> list[object]:
        """The row's values as JobState holds them, in the order of its fields."""
        try:
            return values_from_row(row)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"state store {self.path}: job {row[0]!r} holds an unreadable value ({exc}); "
                "move the file away to start with empty state"
            ) from exc

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, what: str) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block ends, else rolled back."""
        with self._translate(what):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                rollback(conn)
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        error = StoreError(describe_error(self.path, what, exc))
        error.__cause__ = exc
        return error
