"""One pollerd per state directory: an exclusive lock file held for the service's lifetime."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from pollerd.errors import PollerdError
from pollerd.stores.private import private_dir, private_file

LOCK_NAME = "pollerd.lock"


class StateLockedError(PollerdError):
    """Another pollerd process holds the state directory."""


class StateLock:
    """``with StateLock(state_dir):`` — refuses a second pollerd on the same store and NATS data.

    Two services on one state directory would tick every job twice and share one JetStream
    store; the CLI's one-off `pollerd tick` takes the lock too while it runs.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> Self:
        try:
            private_dir(self.path.parent)
            private_file(self.path)
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise PollerdError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            raise StateLockedError(
                f"another pollerd (pid {holder or '?'}) is using the state directory "
                f"{self.path.parent}; stop it, or reach it through its admin API"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def read_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None
