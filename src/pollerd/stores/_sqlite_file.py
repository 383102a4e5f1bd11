"""The SQLite store's file: its identity on disk, and a copy of a deleted file into a new one."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from pollerd.errors import StoreError
from pollerd.stores._sqlite_schema import INSERT, META_TABLE, SELECT, VERSION_KEY, meta

logger = logging.getLogger(__name__)

FileId = tuple[int, int]  # (device, inode)
RECREATED = (
    "state store %s was deleted while pollerd runs: recreated it with the %d job state(s) of "
    "the deleted file, still open (the tick history starts over)"
)


def file_id(path: Path) -> FileId | None:
    """The identity of the file at ``path``; None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"state store {path}: {exc.strerror or exc}") from exc
    return found.st_dev, found.st_ino


def read_all(conn: sqlite3.Connection) -> tuple[list[tuple[object, ...]], int]:
    """Every job row and the store version, as committed in ``conn``'s file."""
    return conn.execute(SELECT).fetchall(), meta(conn, VERSION_KEY) or 0


def prepare_new_file(path: Path) -> None:
    """Make room for a new file at ``path``: its folder exists, and a WAL left without its
    database is removed (it must not be replayed into the new file)."""
    try:
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"state store {path}: cannot recreate it: {exc}") from exc


def write_all(conn: sqlite3.Connection, rows: list[tuple[object, ...]], version: int) -> None:
    """Insert ``rows`` into a new, empty store; its version moves past the old one's."""
    conn.executemany(INSERT, rows)
    conn.execute(f"UPDATE {META_TABLE} SET value = ? WHERE key = ?", (version + 1, VERSION_KEY))
