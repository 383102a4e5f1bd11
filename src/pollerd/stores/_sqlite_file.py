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


def remove_orphan_wal(path: Path) -> None:
    """A WAL left without its database must not be replayed into a new file at ``path``."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def write_all(conn: sqlite3.Connection, rows: list[tuple[object, ...]], version: int) -> None:
    """Insert ``rows`` into a new, empty store; its version moves past the old one's."""
    conn.executemany(INSERT, rows)
    conn.execute(f"UPDATE {META_TABLE} SET value = ? WHERE key = ?", (version + 1, VERSION_KEY))
