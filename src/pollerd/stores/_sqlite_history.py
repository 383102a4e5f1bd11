"""The SQLite store's tick history: a table of each job's newest tick records.

A record is written by the same transaction as the tick's state change (``SqliteStore._apply``),
with a per-job number ``n`` that grows by one; the same write drops the records ``keep`` or
more behind the newest. Times are Unix seconds (REAL, microsecond precision in practice), which
keeps a row small: the cost of a tick's commit is mostly the pages it dirties. The store keeps
each job's last ``n`` once read, so a commit is an insert and a one-row delete on the key.
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


def append(conn: sqlite3.Connection, job_id: str, record: TickRecord, keep: int, last: int) -> int:
    """Add ``record`` after the job's record number ``last``, drop those beyond the newest
    ``keep``, and return the new record's number."""
    if keep <= 0:
        conn.execute(_FORGET, (job_id,))
        return 0
    conn.execute(
        _INSERT,
        (
            job_id,
            last + 1,
            record.tick_id,
            _seconds(record.slot),
            _seconds(record.finished_at),
            record.status,
            record.attempts,
            record.duration_s,
            record.events,
            record.error,
            record.replica,
        ),
    )
    if last + 1 > keep:
        conn.execute(_PRUNE, (job_id, last + 1 - keep))
    return last + 1


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
    if moment.utcoffset() is None:
        raise ValueError(f"a tick record needs aware datetimes, got {moment.isoformat()}")
    return moment.timestamp()


def _time(seconds: float) -> datetime:
    """Back to a datetime, rounded to the microsecond (what a float of Unix seconds holds)."""
    whole = int(seconds // 1)
    micros = round((seconds - whole) * 1_000_000)
    return datetime.fromtimestamp(whole, UTC) + timedelta(microseconds=micros)


class HistoryTable:
    """The history table as one store connection writes it, remembering each job's newest
    record number (valid while no other connection commits: ``clear`` then)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def append(self, conn: sqlite3.Connection, job_id: str, record: TickRecord, keep: int) -> None:
        last = self._last.get(job_id)
        if last is None:
            last = last_number(conn, job_id)
        self._last[job_id] = append(conn, job_id, record, keep, last)

    def forget(self, conn: sqlite3.Connection, job_id: str) -> None:
        forget(conn, job_id)
        self._last.pop(job_id, None)

    def clear(self) -> None:
        """Forget the numbers (another connection committed, or a write was rolled back)."""
        self._last.clear()
