"""A large pollers.yaml is read by a child started with the service and kept from one reload to
the next: it answers what a fresh load of the file gives, and is ended with the service."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fixtures.semantics.kit import job, wait_until, write_config, write_plugin
from pollerd.config.pollers import JobConfig
from pollerd.config.setup import Setup, load_setup
from pollerd.service.reloading import (
    IN_THREAD_MAX_BYTES,
    ReloadRefusedError,
    SpareReader,
    load_setup_off_loop,
)

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


def config_of(tmp_path: Path, jobs: int, *, changed: int | None = None) -> Path:
    """``jobs`` jobs every hour; job number ``changed``, if any, every two hours."""
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "runs.log"
    items = [job(f"j{i}", log, schedule="2h" if i == changed else "1h") for i in range(jobs)]
    return write_config(tmp_path / "pollers.yaml", items)


def where(job: JobConfig) -> tuple[object, ...]:
    return (job.line, job.index, dict(job.field_lines), dict(job.config_lines), job.config_hash)


def assert_as_fresh(setup: Setup, path: Path) -> None:
    fresh = load_setup(path, {})
    assert setup.jobs == fresh.jobs
    assert [where(job) for job in setup.jobs] == [where(job) for job in fresh.jobs]
    assert setup.broken == fresh.broken


async def test_a_large_file_is_read_by_one_child_kept_from_one_reload_to_the_next(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    assert config.stat().st_size > IN_THREAD_MAX_BYTES
    before = children()
    spare.start_for(config, {})
    await wait_until(lambda: len(children() - before) == 1)
    first = children() - before

    setups = [await load_setup_off_loop(config, {}, spare=spare) for _ in range(2)]
    kept = children() - before
    await spare.aclose()
    left = children() - before

    assert [len(setup.jobs) for setup in setups] == [LARGE_JOBS, LARGE_JOBS]
    assert kept == first
    assert left == set()


async def test_the_child_answers_what_a_fresh_load_gives_after_each_edit(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    log = tmp_path / "runs.log"
    spare.start_for(config, {})
    jobs = [job(f"j{i}", log) for i in range(LARGE_JOBS)]
    edits = [
        [*jobs[:5], job("j5", log, schedule="2h"), *jobs[6:]],  # one job changed
        [job("new", log), *jobs],  # every job moved two lines down
        [*jobs[:3], job("j3", log, schedule="nope"), *jobs[4:]],  # one job broken
    ]

    for edit in edits:
        write_config(config, edit)
        assert_as_fresh(await load_setup_off_loop(config, {}, spare=spare), config)


async def test_an_invalid_file_is_refused_by_the_child_which_is_kept(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    valid = config.read_text()
    before = children()
    spare.start_for(config, {})
    await wait_until(lambda: len(children() - before) == 1)
    first = children() - before
    config.write_text(valid + "shutdown_grace: soon\n")

    with pytest.raises(ReloadRefusedError) as caught:
        await load_setup_off_loop(config, {}, spare=spare)
    config.write_text(valid)
    setup = await load_setup_off_loop(config, {}, spare=spare)

    line = valid.count("\n") + 1
    assert str(caught.value).startswith(f"{config}:{line}: shutdown_grace: ")
    assert len(setup.jobs) == LARGE_JOBS
    assert children() - before == first


async def test_a_small_file_starts_no_child(tmp_path: Path, spare: SpareReader) -> None:
    config = config_of(tmp_path, 2)
    before = children()

    spare.start_for(config, {})
    setup = await load_setup_off_loop(config, {}, spare=spare)

    assert [job.id for job in setup.jobs] == ["j0", "j1"]
    assert children() - before == set()


async def test_a_child_that_died_is_replaced_by_a_new_one(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, LARGE_JOBS)
    before = children()
    spare.start_for(config, {})
    await wait_until(lambda: len(children() - before) == 1)
    (dead,) = children() - before
    os.kill(dead, signal.SIGKILL)
    await wait_until(lambda: exited(dead))

    setup = await load_setup_off_loop(config, {}, spare=spare)

    assert len(setup.jobs) == LARGE_JOBS
