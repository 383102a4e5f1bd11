"""The SQLite store's tick history: a table of each job's newest tick records.

A record is written by the same transaction as the tick's state change (``SqliteStore._apply``),
with a per-job number ``n`` that grows by one; the same write drops the records ``keep`` or
more behind the newest. Times are Unix seconds (REAL, microsecond precision in practice), which
keeps a row small: the cost of a tick's commit is mostly the pages it dirties. The store keeps
each job's last ``n`` once read, so a commit is an insert and a one-row delete on the key, run
for the whole group-commit batch by one ``executemany`` each.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from pollerd.stores.base import TickRecord

HISTORY_TABLE = "tick_history"
Records = list[TickRecord]
_COLUMNS = (
    "tick_id",
    "slot",
    "finished_at",
    "status",
    "attempts",
    "duration_s",
    "events",
    "error",
    "replica",
)
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    tick_id TEXT NOT NULL,
    slot REAL NOT NULL,
    finished_at REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    events INTEGER NOT NULL,
    error TEXT,
    replica TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID"""
_LAST = f"SELECT MAX(n) FROM {HISTORY_TABLE} WHERE job_id = ?"
_INSERT = (
    f"INSERT INTO {HISTORY_TABLE} (job_id, n, {', '.join(_COLUMNS)}) "
    f"VALUES (?, ?, {', '.join('?' for _ in _COLUMNS)})"
)
_PRUNE = f"DELETE FROM {HISTORY_TABLE} WHERE job_id = ? AND n <= ?"
_SELECT = (
    f"SELECT {', '.join(_COLUMNS)} FROM {HISTORY_TABLE} WHERE job_id = ? ORDER BY n DESC LIMIT ?"
)
_FORGET = f"DELETE FROM {HISTORY_TABLE} WHERE job_id = ?"


def last_number(conn: sqlite3.Connection, job_id: str) -> int:
    """The ``n`` of the job's newest record (0 when it has none)."""
    return int(conn.execute(_LAST, (job_id,)).fetchone()[0] or 0)


def read(conn: sqlite3.Connection, job_id: str, limit: int) -> Records:
    rows = conn.execute(_SELECT, (job_id, max(limit, 0))).fetchall()
    return [
        TickRecord(
            tick_id=row[0],
            slot=_time(row[1]),
            finished_at=_time(row[2]),
            status=row[3],
            attempts=int(row[4]),
            duration_s=float(row[5]),
            events=int(row[6]),
            error=row[7],
            replica=row[8],
        )
        for row in rows
    ]


def forget(conn: sqlite3.Connection, job_id: str) -> None:
    conn.execute(_FORGET, (job_id,))


def _seconds(moment: datetime) -> float:
    if moment.tzinfo is not UTC and moment.utcoffset() is None:
        raise ValueError(f"a tick record needs aware datetimes, got {moment.isoformat()}")
    return moment.timestamp()


def _time(seconds: float) -> datetime:
    """Back to a datetime, rounded to the microsecond (what a float of Unix seconds holds)."""
    whole = int(seconds // 1)
    micros = round((seconds - whole) * 1_000_000)
    return datetime.fromtimestamp(whole, UTC) + timedelta(microseconds=micros)


class Pending:
    """The history statements of a batch of ticks, run together (``executemany``) by ``write``:
    the inserts, then the prunes. A prune drops only records older than those kept, so running
    it after the batch's other inserts leaves the same rows as running it after its own."""

    def __init__(self) -> None:
        self._inserts: list[tuple[object, ...]] = []
        self._prunes: list[tuple[str, int]] = []

    def append(
        self, conn: sqlite3.Connection, job_id: str, record: TickRecord, keep: int, last: int
    ) -> int:
        """Queue ``record`` after the job's record number ``last`` and the prune beyond the
        newest ``keep``; return the new record's number."""
        if keep <= 0:
            self.write(conn)  # a queued insert of this job must not outlive the forget
            conn.execute(_FORGET, (job_id,))
            return 0
        number = last + 1
        self._inserts.append(
            (
                job_id,
                number,
                record.tick_id,
                _seconds(record.slot),
                _seconds(record.finished_at),
                record.status,
                record.attempts,
                record.duration_s,
                record.events,
                record.error,
                record.replica,
            )
        )
        if number > keep:
            self._prunes.append((job_id, number - keep))
        return number

    def write(self, conn: sqlite3.Connection) -> None:
        if self._inserts:
            conn.executemany(_INSERT, self._inserts)
            self._inserts = []
        if self._prunes:
            conn.executemany(_PRUNE, self._prunes)
            self._prunes = []

    def clear(self) -> None:
        self._inserts.clear()
        self._prunes.clear()


class HistoryTable:
    """The history table as one store connection writes it, remembering each job's newest
    record number (valid while no other connection commits: ``clear`` then). ``append`` queues
    its statements until ``write``, which the batch's transaction calls before it commits."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._pending = Pending()

    def append(self, conn: sqlite3.Connection, job_id: str, record: TickRecord, keep: int) -> None:
        last = self._last.get(job_id)
        if last is None:
            last = last_number(conn, job_id)
        self._last[job_id] = self._pending.append(conn, job_id, record, keep, last)

    def write(self, conn: sqlite3.Connection) -> None:
        """Run the queued statements (in the transaction of the appends)."""
        self._pending.write(conn)

    def forget(self, conn: sqlite3.Connection, job_id: str) -> None:
        self._pending.write(conn)
        forget(conn, job_id)
        self._last.pop(job_id, None)

    def clear(self) -> None:
        """Forget the numbers and the queued statements (another connection committed, or a
        write was rolled back)."""
        self._last.clear()
        self._pending.clear()
