"""State files are for pollerd's user only: the state dir 0700, the store and its WAL 0600."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pollerd.stores.sqlite import SqliteStore
from pollerd.stores.statelock import StateLock


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_store_is_private_with_its_wal_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    store = SqliteStore(state_dir / "state.db")
    async with store:
        await store.ensure("job", "kind", paused=False)
        modes = modes_in(state_dir)
    assert mode(state_dir) == 0o700
    assert modes["state.db"] == 0o600
    assert modes["state.db-wal"] == 0o600
    assert modes["state.db-shm"] == 0o600


def modes_in(folder: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in folder.iterdir()}


def leave_readable_files(folder: Path, *names: str) -> None:
    folder.chmod(0o755)
    for name in names:
        (folder / name).touch()
        (folder / name).chmod(0o644)


async def test_files_an_older_pollerd_left_readable_are_tightened(tmp_path: Path) -> None:
    leave_readable_files(tmp_path, "state.db", "pollerd.lock")

    with StateLock(tmp_path):
        async with SqliteStore(tmp_path / "state.db"):
            modes = modes_in(tmp_path)
    assert mode(tmp_path) == 0o700
    assert modes["state.db"] == 0o600
    assert modes["pollerd.lock"] == 0o600


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_DUMPABLE is Linux")
def test_a_process_made_not_dumpable_says_so() -> None:
    code = (
        "from pollerd.supervision.lifeline import is_dumpable, set_not_dumpable\n"
        "before = is_dumpable(); done = set_not_dumpable()\n"
        "print(before, done, is_dumpable())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"]
