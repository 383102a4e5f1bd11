"""State store write failures while pollerd runs: a full disk.

The state directory is a small tmpfs mounted for the test, so that the real SQLite store really
runs out of space (or becomes read-only) under a real service with real plugin processes and a
real nats-server (outside the tmpfs). Mounting needs root: elsewhere the test is skipped.
A read-only file system cannot be simulated here: a tmpfs with a file open for writing refuses
``remount,ro`` (EBUSY), and root ignores file modes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.semantics.kit import job, metric, service, wait_until, write_config, write_plugin
from pollerd.natsio import jetstream
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.service.core import Service

pytestmark = pytest.mark.nats

TMPFS_SIZE = "2m"
FILL_CHUNK_BYTES = 64 * 1024


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


Mount = Callable[[Path], Path]


@pytest.fixture
def small_tmpfs() -> Iterator[Mount]:
    """Mounts a 2 MiB tmpfs on a new folder; every one is unmounted after the test."""
    mounted: list[Path] = []

    def mount(folder: Path) -> Path:
        folder.mkdir(parents=True)
        if os.geteuid() != 0 or not _run(
            "mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)
        ):
            pytest.skip("needs root and mount(8) to put the state directory on a small tmpfs")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        _run("umount", "-l", str(folder))


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


class TickOutcomes:
    """The outcomes of the tick log so far, in order (from its structured ``outcome`` field)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __call__(self) -> list[str]:
        records = self._caplog.records
        return [r.outcome for r in records if r.name == "pollerd.tick" and hasattr(r, "outcome")]


async def last_status(svc: Service, job_id: str, status: str) -> bool:
    states = {state.job_id: state for state in await svc.store.all()}
    state = states.get(job_id)
    return state is not None and state.last_status == status


async def test_a_full_disk_is_a_store_outcome_shown_in_readiness_and_recovers_by_itself(
    tmp_path: Path,
    small_tmpfs: Mount,
    nats_server: EmbeddedNatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state_dir = small_tmpfs(tmp_path / "state")
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "runs.log"  # outside the tmpfs
    config = write_config(
        tmp_path / "pollers.yaml",
        [job("fill", log, schedule="100ms", config={"events": 1})],
        nats=nats_server.url,
    )
    caplog.set_level(logging.INFO, logger="pollerd.tick")
    outcomes = TickOutcomes(caplog)

    async with service(config, publisher=None) as svc:
        await wait_until(lambda: "ok" in outcomes())
        filler = fill(state_dir)
        await wait_until(lambda: outcomes()[-3:] == ["store"] * 3)
        await svc.check_store()  # what the service's watcher does every second
        full = svc.readiness()
        store_ticks = metric(svc.metrics, "pollerd_ticks_total", outcome="store")
        filler.unlink()
        failed_until = len(outcomes())
        await wait_until(lambda: "ok" in outcomes()[failed_until:])
        await svc.check_store()
        recovered = svc.readiness()
        await wait_until(lambda: last_status(svc, "fill", "ok"))

    assert "full" in (full["store"] or ""), full
    assert store_ticks >= 3
    assert recovered["store"] is None, recovered


async def test_jetstream_on_a_full_disk_recovers_without_a_restart_of_pollerd(
    tmp_path: Path,
    small_tmpfs: Mount,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Here the tmpfs holds JetStream's data only (state/nats); the SQLite store has room.
    nats_dir = small_tmpfs(tmp_path / "state" / "nats")
    monkeypatch.setattr(jetstream, "STALL_S", 1.0)
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "runs.log"
    config = write_config(
        tmp_path / "pollers.yaml", [job("events", log, schedule="500ms", config={"events": 30})]
    )
    caplog.set_level(logging.INFO, logger="pollerd.tick")
    outcomes = TickOutcomes(caplog)

    async with service(config, publisher=None) as svc:
        await wait_until(lambda: "ok" in outcomes())
        filler = fill(nats_dir)
        await wait_until(lambda: "publish" in outcomes(), timeout_s=30)
        filler.unlink()
        failed_at = outcomes().index("publish")
        await wait_until(lambda: outcomes()[-3:] == ["ok"] * 3, timeout_s=40)
        nats_up = svc.nc is not None and svc.nc.is_connected
        restarts = [r for r in caplog.records if "restarting the embedded nats-server" in r.message]

    assert "ok" in outcomes()[failed_at:]
    assert nats_up and svc.link.fatal_error is None
    assert restarts
