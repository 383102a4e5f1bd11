"""The SQLite store's schema, statements and row conversions (no connection handling here)."""

from __future__ import annotations

import functools
import logging
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import NamedTuple

from pollerd.stores import _sqlite_history
from pollerd.stores._values import TIME_FIELDS, to_utc
from pollerd.stores.base import UNSET, UPDATE_FIELDS, JobSeed, JobState, JobUpdate, fresh_state

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
SCHEMA_KEY = "schema_version"
VERSION_KEY = "version"
META_TABLE = "meta"
JOBS_TABLE = "jobs"

COLUMNS = tuple(f.name for f in fields(JobState))  # also the order of JobState's fields
INDEX = {name: index for index, name in enumerate(COLUMNS)}
TIME_INDEXES = tuple(INDEX[name] for name in COLUMNS if name in TIME_FIELDS)
CURSOR = INDEX["cursor"]
PAUSED = INDEX["paused"]
REVISION = INDEX["revision"]
SELECT = f"SELECT {', '.join(COLUMNS)} FROM {JOBS_TABLE}"
SELECT_ONE = f"{SELECT} WHERE job_id = ?"
# Store.held: the paused and broken jobs (a partial index keeps it from reading every row).
SELECT_HELD = f"{SELECT} WHERE paused != 0 OR broken_reason IS NOT NULL ORDER BY job_id"
DATA_VERSION = "PRAGMA data_version"  # changes when another connection commits
state_values = operator.attrgetter(*COLUMNS)
INSERT = (
    f"INSERT OR REPLACE INTO {JOBS_TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

SCHEMA_STATEMENTS = (
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {JOBS_TABLE} (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        cursor BLOB,
        last_status TEXT,
        last_error TEXT,
        last_run_at TEXT,
        last_success_at TEXT,
        last_scheduled_at TEXT,
        consecutive_errors INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        pause_reason TEXT,
        broken_reason TEXT,
        broken_config_hash TEXT,
        breaker_open_until TEXT,
        breaker_cooldown_s REAL,
        event_space INTEGER NOT NULL DEFAULT 0,
        revision INTEGER NOT NULL DEFAULT 0
    )""",
    # Added without a schema version change: an older pollerd ignores the table.
    _sqlite_history.SCHEMA,
    # For SELECT_HELD (the job gauges, every 0.5 s); a tick's commit writes neither column.
    f"CREATE INDEX IF NOT EXISTS jobs_held ON {JOBS_TABLE} (job_id) "
    "WHERE paused != 0 OR broken_reason IS NOT NULL",
)
# Columns added after schema version 1 was released, with their definition: added in place to an
# older file (a version-1 pollerd reads such a file unchanged, as it names its columns).
ADDED_COLUMNS = (("event_space", "INTEGER NOT NULL DEFAULT 0"),)

# sqlite3 messages → what the operator should do about them.
HINTS = (
    ("locked", "another process kept the store locked too long; retry, or stop the other writer"),
    ("busy", "another process kept the store locked too long; retry, or stop the other writer"),
    ("not a database", "the file is not a pollerd state store or is corrupt; move it away"),
    ("malformed", "the file is corrupt; move it away (pollerd starts a new one, cursors reset)"),
    ("unable to open", "check that the directory exists and is writable by pollerd"),
    ("readonly", "check that the file and its directory are writable by pollerd"),
    ("disk i/o", "check the disk and the file's permissions"),
    ("full", "the disk is full; free some space"),
)


def describe_error(path: object, what: str, exc: sqlite3.Error) -> str:
    """What went wrong with the store at ``path`` while doing ``what``, and what to do about it."""
    text = str(exc)
    lowered = text.lower()
    hint = next((hint for needle, hint in HINTS if needle in lowered), "")
    return f"state store {path}: could not {what}: {text}" + (f"; {hint}" if hint else "")


def meta(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def bump_version(conn: sqlite3.Connection) -> None:
    conn.execute(f"UPDATE {META_TABLE} SET value = value + 1 WHERE key = ?", (VERSION_KEY,))


@functools.lru_cache(maxsize=64)
def update_statement(names: tuple[str, ...]) -> str:
    """``UPDATE`` of these columns (names of JobUpdate fields) and the revision, by job id."""
    assignments = [f"{name} = ?" for name in names]
    assignments.append("revision = revision + 1")
    return f"UPDATE {JOBS_TABLE} SET {', '.join(assignments)} WHERE job_id = ?"


def iso_text(moment: datetime) -> str:
    """ISO 8601 with microseconds, always (``isoformat()`` omits them when they are 0; its
    ``timespec`` argument costs a third of the call)."""
    return moment.isoformat() if moment.microsecond else moment.isoformat(timespec="microseconds")


def to_column(name: str, value: object) -> object:
    if name in TIME_FIELDS and isinstance(value, datetime):
        return iso_text(to_utc(value, name))
    return value


class Change(NamedTuple):
    """A JobUpdate's set fields: their names, their values as JobState holds them (times in
    UTC) and as the jobs table stores them."""

    names: tuple[str, ...]
    values: tuple[object, ...]
    columns: tuple[object, ...]

    def without(self, name: str) -> Change:
        if name not in self.names:
            return self
        i = self.names.index(name)
        names, values, columns = self
        return Change(
            names[:i] + names[i + 1 :], values[:i] + values[i + 1 :], columns[:i] + columns[i + 1 :]
        )


_update_values = operator.attrgetter(*UPDATE_FIELDS)


def change_of(update: JobUpdate) -> Change:
    """The set fields of ``update`` in one pass (what ``normalize_changes`` and ``to_column`` do
    to ``update.changes()``): a tick sets three times, two of them the same object, and each
    time's text costs about a microsecond, so one conversion serves both."""
    names: list[str] = []
    values: list[object] = []
    columns: list[object] = []
    last: tuple[datetime, datetime, str] | None = None  # the last time, in UTC and as text
    for name, value in zip(UPDATE_FIELDS, _update_values(update), strict=True):
        if value is UNSET:
            continue
        names.append(name)
        if name in TIME_FIELDS and isinstance(value, datetime):
            if last is None or last[0] is not value:
                utc = value if value.tzinfo is UTC else to_utc(value, name)
                last = (value, utc, iso_text(utc))
            values.append(last[1])
            columns.append(last[2])
        else:
            values.append(value)
            columns.append(value)
    return Change(tuple(names), tuple(values), tuple(columns))


def row_from_state(state: JobState) -> tuple[object, ...]:
    return tuple(to_column(name, getattr(state, name)) for name in COLUMNS)


def values_from_row(row: tuple[object, ...]) -> list[object]:
    """Times from ISO 8601 text to UTC datetimes, ``paused`` to a bool; the rest as stored."""
    if len(row) != len(COLUMNS):
        raise ValueError(f"{len(row)} columns, expected {len(COLUMNS)}")
    values = list(row)
    for index in TIME_INDEXES:
        value = values[index]
        if isinstance(value, str):
            values[index] = datetime.fromisoformat(value).astimezone(UTC)
    values[PAUSED] = bool(values[PAUSED])
    return values


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any; a failure here is only logged at DEBUG."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # the original error is the one worth reporting
            logger.debug("rollback failed", exc_info=True)


def ensure_rows(
    conn: sqlite3.Connection,
    seeds: Sequence[JobSeed],
    known_states: Callable[[sqlite3.Connection], dict[str, JobState]],
    parse: Callable[[tuple[object, ...]], JobState],
    forget_history: Callable[[sqlite3.Connection, str], None],
) -> dict[str, JobState]:
    """Every seed's state (known, read, or fresh), by id: inserts the fresh ones and bumps the
    version once, in the caller's transaction. A stored job of another kind starts over, its
    history too. One transaction for 10,000 jobs takes tens of milliseconds, not seconds."""
    known = known_states(conn)
    states: dict[str, JobState] = {}
    created: list[JobState] = []
    for job_id, kind, paused in seeds:
        stored = known.get(job_id)
        if stored is None:
            row = conn.execute(SELECT_ONE, (job_id,)).fetchone()
            stored = None if row is None else parse(row)
        if stored is not None and stored.kind == kind:
            states[job_id] = stored
            continue
        states[job_id] = state = fresh_state(job_id, kind, paused, stored)
        created.append(state)
        if stored is not None:
            forget_history(conn, job_id)
    if created:
        conn.executemany(INSERT, [row_from_state(state) for state in created])
        bump_version(conn)
    return states
