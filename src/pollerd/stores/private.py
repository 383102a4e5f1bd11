"""State that only pollerd's user may read: directories 0700, files 0600.

The state directory holds job cursors and last errors, the NATS credentials and the server's
config; nothing in it is for other users. ``private_dir`` and ``private_file`` create with those
modes and tighten what an older pollerd left wider (only what this user owns).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if needed; ``path`` itself ends up 0700. ``OSError``."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty if it does not exist; it ends up 0600. ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    _tighten(path, PRIVATE_FILE_MODE)


def private_database(path: Path) -> None:
    """A SQLite file and its folder, private; SQLite gives its -wal and -shm files the database
    file's mode, and side files an older pollerd left are tightened. ``OSError``."""
    private_dir(path.parent)
    private_file(path)
    tighten_if_present(*(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES))


def tighten_if_present(*paths: Path) -> None:
    """0600 for each of ``paths`` that exists (a WAL or SHM file an older pollerd left)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            _tighten(path, PRIVATE_FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o777 != mode:
        path.chmod(mode)
