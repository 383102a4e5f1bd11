"""State store write failures while pollerd runs: a full disk.

The state directory is a small tmpfs mounted for the test, so that the real SQLite store really
runs out of space (or becomes read-only) under a real service with real plugin processes and a
real nats-server (outside the tmpfs). Mounting needs root: elsewhere the test is skipped.
A read-only file system cannot be simulated here: a tmpfs with a file open for writing refuses
``remount,ro`` (EBUSY), and root ignores file modes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.semantics.kit import job, metric, service, wait_until, write_config, write_plugin
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.service.core import Service

pytestmark = pytest.mark.nats

TMPFS_SIZE = "2m"
FILL_CHUNK_BYTES = 64 * 1024


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at tmp_path/state, unmounted after the test."""
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    if os.geteuid() != 0 or not _run(
        "mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)
    ):
        pytest.skip("needs root and mount(8) to put the state directory on a small tmpfs")
    try:
        yield mount_point
    finally:
        _run("umount", "-l", str(mount_point))


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full; the file."""
    filler = folder / "filler"
    chunk = b"\0" * FILL_CHUNK_BYTES
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
    with filler.open("ab", buffering=0) as out, contextlib.suppress(OSError):
        while True:  # the last bytes, one at a time
            out.write(b"\0")
    return filler


async def last_status(svc: Service, job_id: str, status: str) -> bool:
    states = {state.job_id: state for state in await svc.store.all()}
    state = states.get(job_id)
    return state is not None and state.last_status == status


async def test_a_full_disk_is_a_store_outcome_shown_in_readiness_and_recovers_by_itself(
    tmp_path: Path, small_tmpfs: Path, nats_server: EmbeddedNatsServer
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "runs.log"  # outside the tmpfs
    config = write_config(
        tmp_path / "pollers.yaml",
        [job("fill", log, schedule="100ms", config={"events": 1})],
        nats=nats_server.url,
    )
    outcomes: list[str] = []

    async with service(config, publisher=None) as svc:
        recorder = svc._recorder.outcome

        def record(job_config: object, outcome: object) -> None:
            outcomes.append(outcome.status)  # type: ignore[attr-defined]
            recorder(job_config, outcome)  # type: ignore[arg-type]

        svc._recorder.outcome = record  # type: ignore[method-assign]
        await wait_until(lambda: "ok" in outcomes)
        filler = fill(small_tmpfs)
        await wait_until(lambda: outcomes[-3:] == ["store"] * 3)
        await svc.check_store()  # what the service's watcher does every second
        full = svc.readiness()
        store_ticks = metric(svc.metrics, "pollerd_ticks_total", outcome="store")
        filler.unlink()
        failed_until = len(outcomes)
        await wait_until(lambda: "ok" in outcomes[failed_until:])
        await svc.check_store()
        recovered = svc.readiness()
        await wait_until(lambda: last_status(svc, "fill", "ok"))

    assert "full" in (full["store"] or ""), full
    assert store_ticks >= 3
    assert recovered["store"] is None, recovered
