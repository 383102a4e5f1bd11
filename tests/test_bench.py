"""The benchmark scripts import and parse their arguments (they are run by hand, not in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    "script",
    [
        "commands.py",
        "config.py",
        "ephemeral.py",
        "nats.py",
        "failover.py",
        "history.py",
        "scale.py",
    ],
)
def test_a_benchmark_script_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_floor_commits_what_a_tick_commits(tmp_path: Path) -> None:
    """bench/scale.py's floor runs a tick's SQL on a plain sqlite3 connection: it must still
    match the store's schema, or the floor would measure failing statements."""
    import asyncio

    from pollerd.stores.sqlite import SqliteStore

    sys.path.insert(0, str(BENCH))
    try:
        import scale
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path / "state.db"
    commits = scale.RawCommits(path, 3)
    commits.add(scale.job_id(1), "job00001@1", 1_800_000_000.0)
    commits.commit()
    commits.close()

    async def read() -> tuple[object, object, int]:
        store = SqliteStore(path)
        await store.open()
        try:
            state = await store.get(scale.job_id(1))
            assert state is not None
            return state.last_status, state.cursor, len(await store.history(scale.job_id(1), 10))
        finally:
            await store.close()

    assert asyncio.run(read()) == ("ok", b"cursor", 1)
