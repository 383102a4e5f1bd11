"""One pollerd per state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pollerd.stores.statelock import StateLock, StateLockedError

HOLD = """
import sys, time
from pathlib import Path
from pollerd.stores.statelock import StateLock
with StateLock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StateLockedError) as refused:
            StateLock(tmp_path).__enter__()
    finally:
        holder.communicate("\n", timeout=10)
    assert f"pid {holder.pid}" in str(refused.value)
    assert str(tmp_path) in str(refused.value)


def test_the_lock_is_free_again_after_the_holder_leaves(tmp_path: Path) -> None:
    with StateLock(tmp_path) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    with StateLock(tmp_path) as again:
        assert again.path.exists()
