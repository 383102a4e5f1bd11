"""A large pollers.yaml is read by a child started ahead of the reload: a spare, replaced after
each use, ended with the service."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fixtures.semantics.kit import job, wait_until, write_config, write_plugin
from pollerd.service.reloading import IN_THREAD_MAX_BYTES, SpareReader, load_setup_off_loop

LARGE_JOBS = 3_000  # about 150 bytes per job as write_config writes them: over the thread limit


def children() -> set[int]:
    """The process ids of this process's children (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


def exited(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped, or gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def config_of(tmp_path: Path, jobs: int) -> Path:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "runs.log"
    return write_config(tmp_path / "pollers.yaml", [job(f"j{i}", log) for i in range(jobs)])


@pytest.fixture
async def spare() -> AsyncIterator[SpareReader]:
    reader = SpareReader()
    yield reader
    await reader.aclose()


async def test_a_large_file_is_read_by_the_spare_and_the_next_spare_waits(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    assert config.stat().st_size > IN_THREAD_MAX_BYTES
    before = children()
    spare.start_for(config)
    await wait_until(lambda: len(children() - before) == 1)
    first = children() - before

    setup = await load_setup_off_loop(config, {}, spare=spare)
    await wait_until(lambda: len(children() - before) == 1 and children() - before != first)
    await spare.aclose()
    left = children() - before

    assert len(setup.jobs) == LARGE_JOBS
    assert left == set()


async def test_a_small_file_starts_no_spare(tmp_path: Path, spare: SpareReader) -> None:
    config = config_of(tmp_path, 2)
    before = children()

    spare.start_for(config)
    setup = await load_setup_off_loop(config, {}, spare=spare)

    assert [job.id for job in setup.jobs] == ["j0", "j1"]
    assert children() - before == set()


async def test_a_spare_that_died_is_replaced_by_a_new_child(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    before = children()
    spare.start_for(config)
    await wait_until(lambda: len(children() - before) == 1)
    (dead,) = children() - before
    os.kill(dead, signal.SIGKILL)
    await wait_until(lambda: exited(dead))

    setup = await load_setup_off_loop(config, {}, spare=spare)

    assert len(setup.jobs) == LARGE_JOBS
