"""The reading child keeps its jobs and last answer compact between reloads: rebuilt after each
load, they are still one set of objects (the next answer names them by position), and the child
holds little more than its imports."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.semantics.kit import wait_until
from pollerd.config.setup import load_setup
from pollerd.service.readerstate import ReaderState
from pollerd.service.reloading import SpareReader, load_setup_off_loop
from pollerd.service.setupdelta import decode_setup
from service.test_spare_reader import assert_as_fresh, children, config_of

JOBS = 200
MEMORY_JOBS = 10_000
# Per job, what the child may hold beyond its imports (these jobs): about 1.9 KiB compacted, 6.8
# KiB when the load's memory stayed pinned.
CHILD_KIB_PER_JOB = 3.5
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}  # /proc/<pid>/syscall names a system call by number


def test_compacting_keeps_the_cached_jobs_the_very_objects_of_the_last_answer(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path, JOBS)
    state = ReaderState()
    first = state.encode(load_setup(config, {}, state.cache), None)
    held = (1, decode_setup(first, None))

    state.compact()
    again = state.encode(load_setup(config, {}, state.cache), base=1)

    assert again.config_jobs == list(range(JOBS))  # every job named by its position in answer 1
    assert decode_setup(again, held).jobs == load_setup(config, {}).jobs


def test_after_compacting_the_next_answer_sends_only_the_changed_job(tmp_path: Path) -> None:
    config = config_of(tmp_path, JOBS)
    state = ReaderState()
    first = state.encode(load_setup(config, {}, state.cache), None)
    held = (1, decode_setup(first, None))  # what pollerd holds: its own copy of answer 1
    state.compact()
    config_of(tmp_path, JOBS, changed=7)

    second = state.encode(load_setup(config, {}, state.cache), base=1)
    state.compact()

    sent = [entry for entry in second.config_jobs if not isinstance(entry, int)]
    assert (second.number, second.base) == (2, 1)
    assert [job.id for job in sent] == ["j7"]
    decoded = decode_setup(second, held)
    assert decoded.jobs == load_setup(config, {}).jobs


def test_an_answer_relative_to_another_base_sends_every_job(tmp_path: Path) -> None:
    config = config_of(tmp_path, JOBS)
    state = ReaderState()
    state.encode(load_setup(config, {}, state.cache), None)
    state.compact()

    again = state.encode(load_setup(config, {}, state.cache), base=None)

    assert (again.number, again.base) == (2, None)
    assert not any(isinstance(entry, int) for entry in again.config_jobs)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def imports_rss_kib() -> int:
    """The RSS of a process that did only the reading child's imports."""
    code = (
        "import pathlib, pollerd.service.reloading; "
        "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines() "
        "if l.startswith('VmRSS:')][0].split()[1])"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True).stdout)


def waits_for_a_request(pid: int) -> bool:
    """The child is blocked reading its stdin: done with its last request, compacting included."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return fields[:2] == [str(READ_SYSCALL[platform.machine()]), "0x0"]


@pytest.mark.skipif(platform.machine() not in READ_SYSCALL, reason="read's number unknown here")
async def test_the_child_holds_little_more_than_its_imports_after_reloads(
    tmp_path: Path, spare: SpareReader
) -> None:
    config = config_of(tmp_path, MEMORY_JOBS)
    before = children()
    spare.start_for(config, {})
    await load_setup_off_loop(config, {}, spare=spare)
    config_of(tmp_path, MEMORY_JOBS, changed=7)
    setup = await load_setup_off_loop(config, {}, spare=spare)
    (child,) = children() - before
    await wait_until(lambda: waits_for_a_request(child))

    held = rss_kib(child) - imports_rss_kib()

    assert_as_fresh(setup, config)
    assert held < MEMORY_JOBS * CHILD_KIB_PER_JOB, f"{held} KiB over the imports"
