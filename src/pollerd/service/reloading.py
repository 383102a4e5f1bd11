"""Preparing a reload: the config on disk, read and validated off the event loop, then compared.

Reading a file never runs on the event loop, so a large or hostile ``pollers.yaml`` costs neither
the running jobs' lateness nor ``/healthz``:

- up to ``IN_THREAD_MAX_BYTES`` (a few thousand jobs) it is read in a worker thread: the YAML
  reader's limits (alias expansion, depth, size) bound what such a file can cost, and a thread
  starts at once (a process costs an interpreter start, seconds on a loaded machine);
- a larger file is read by ``python -m pollerd.service.reloading``, a short-lived child: its
  parse does not hold pollerd's GIL, its address space grows by at most ``PREPARE_MEMORY_BYTES``,
  its CPU time is capped by ``PREPARE_CPU_S`` and pollerd kills it after ``PREPARE_TIMEOUT_S``.
  It sends the validated ``Setup`` back pickled on stdout (pollerd's own child, started from its
  own interpreter). A ``SpareReader`` starts the next child ahead of need, so that a reload does
  not wait for an interpreter start and pollerd's imports (half a second beside 1,000 ticks/s).

Any failure refuses the reload and the old config keeps running. Comparing the new setup with
the running one is pure and O(N).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import resource
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pollerd.config.gcpause import collector_paused
from pollerd.config.reload import ReloadPlan, plan_reload, restart_needed
from pollerd.config.setup import Setup, load_setup
from pollerd.errors import PollerdError

logger = logging.getLogger(__name__)

IN_THREAD_MAX_BYTES = 256 * 1024  # larger files are read by a child process
PREPARE_MEMORY_BYTES = 2 * 1024**3  # beyond what the child uses once its modules are imported
PREPARE_CPU_S = 120
PREPARE_TIMEOUT_S = 150.0
STDERR_TAIL_CHARS = 2000
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class ReloadRefusedError(PollerdError):
    """The config on disk is invalid, or would break a running job: the old one keeps running."""


@dataclass(frozen=True, slots=True)
class PreparedReload:
    setup: Setup
    plan: ReloadPlan
    restart_needed: list[str]  # top-level settings that apply only after a restart


class SpareReader:
    """At most one child process started ahead of the next reload of a large file.

    The spare has done its imports and waits on its stdin, using no CPU; each reload takes it and
    starts the next one. ``aclose`` ends the spare (the service's exit).
    """

    def __init__(self) -> None:
        self._spare: asyncio.Task[_Child] | None = None

    def start_for(self, path: Path) -> None:
        """Start a spare if ``path`` is large enough to be read by a child and none waits."""
        if self._spare is None and _file_bytes(path) > IN_THREAD_MAX_BYTES:
            self._spare = asyncio.create_task(_spawn(), name="reload-spare")

    async def take(self, request: bytes) -> _Child:
        """The spare with ``request`` sent to it; a new child if no spare is alive."""
        task, self._spare = self._spare, None
        if task is not None:
            with contextlib.suppress(OSError):
                child = await task
                if await _send(child, request):
                    return child
                await _discard(child)  # it died while it waited
        child = await _spawn()
        await _send(child, request)  # a child that dies at once: its answer says why
        return child

    async def aclose(self) -> None:
        task, self._spare = self._spare, None
        if task is not None:
            with contextlib.suppress(OSError):
                await _discard(await task)


async def prepare_reload(
    current: Setup, environ: Mapping[str, str], spare: SpareReader | None = None
) -> PreparedReload:
    """Load and validate the config on disk; raises ``ReloadRefusedError`` with every reason."""
    config = current.config
    # The path as the operator gave it, so messages name the file as at boot.
    new = await load_setup_off_loop(Path(config.source or config.path), environ, spare=spare)
    return compare(current, new)


def compare(current: Setup, new: Setup) -> PreparedReload:
    """The reload from ``current`` to ``new``; raises ``ReloadRefusedError`` if it would break
    a running job."""
    # A job that runs now and is invalid in the new file (a typo) would stop: refuse the whole
    # edit, as for an invalid file. New invalid jobs are only reported, as at boot.
    running = {job.id for job in current.jobs}
    breaking = [broken.reason for broken in new.broken if broken.id in running]
    if breaking:
        raise ReloadRefusedError("\n".join(breaking))
    return PreparedReload(new, plan_reload(current, new), restart_needed(current, new))


async def load_setup_off_loop(
    path: Path,
    environ: Mapping[str, str],
    *,
    timeout_s: float = PREPARE_TIMEOUT_S,
    spare: SpareReader | None = None,
) -> Setup:
    """``load_setup`` in a worker thread for a small file, in a child process for a large one
    (``spare``'s, which then starts the next); raises ``ReloadRefusedError`` with its reasons."""
    if _file_bytes(path) > IN_THREAD_MAX_BYTES:
        try:
            setup = await _ask(spare or SpareReader(), path, environ, timeout_s)
        finally:
            if spare is not None:
                spare.start_for(path)
        for job in setup.broken:  # load_setup logs these; the child's logging is off
            logger.warning("job_id=%s broken: %s", job.id, job.reason)
        return setup
    try:
        return await asyncio.to_thread(load_setup, path, environ)
    except PollerdError as exc:
        raise ReloadRefusedError(str(exc)) from exc


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # load_setup says what is wrong with the path


@dataclass(frozen=True, slots=True)
class _Child:
    """A reading child and the unnamed file its answer goes to (its stdout).

    Not a pipe: pollerd's event loop, busy with 1,000 ticks/s, drained a pipe 64 KiB at a time,
    and a 10,000-job answer (1 MB) waited a third of a second in it. The file is read in the
    thread that unpickles the answer."""

    process: asyncio.subprocess.Process
    answer: IO[bytes]


async def _spawn() -> _Child:
    answer = tempfile.TemporaryFile()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=answer,
            stderr=asyncio.subprocess.PIPE,
        )
    except BaseException:
        answer.close()
        raise
    return _Child(process, answer)


async def _end(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()


async def _discard(child: _Child) -> None:
    await _end(child.process)
    child.answer.close()


async def _send(child: _Child, request: bytes) -> bool:
    """Write ``request`` to the child and close its stdin; False if the child is gone."""
    stdin = child.process.stdin
    assert stdin is not None
    try:
        stdin.write(request)
        await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


async def _ask(
    spare: SpareReader, path: Path, environ: Mapping[str, str], timeout_s: float
) -> Setup:
    request = json.dumps({"path": str(path), "environ": dict(environ)}).encode()
    child: _Child | None = None
    try:
        async with asyncio.timeout(timeout_s):
            child = await spare.take(request)
            _, err = await child.process.communicate()
        # Reading and unpickling 10,000 jobs takes a tenth of a second: in a thread, it calls
        # back into Python often enough for the event loop to keep its turn.
        return await asyncio.to_thread(_answer, path, child, err)
    except TimeoutError:
        raise ReloadRefusedError(
            f"{path}: reading the config took longer than {timeout_s:g}s: refused"
        ) from None
    finally:
        if child is not None:
            await _discard(child)


def _answer(path: Path, child: _Child, err: bytes) -> Setup:
    returncode = child.process.returncode
    try:
        child.answer.seek(0)
        out = child.answer.read()
        with collector_paused():  # a setup holds no cycles; see pollerd.config.gcpause
            status, value = pickle.loads(out)
    except Exception:  # no answer: the child died (CPU limit, a crash)
        tail = err.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:].strip()
        raise ReloadRefusedError(
            f"{path}: the process reading the config ended without an answer (exit status "
            f"{returncode}; CPU limit {PREPARE_CPU_S}s){': ' + tail if tail else ''}"
        ) from None
    if status != "ok":
        raise ReloadRefusedError(str(value))
    assert isinstance(value, Setup)
    return value


# -- the child ------------------------------------------------------------------------------------


def _limit_resources() -> None:
    with open("/proc/self/statm") as statm:
        virtual_bytes = int(statm.read().split()[0]) * _PAGE_BYTES
    limit = virtual_bytes + PREPARE_MEMORY_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (PREPARE_CPU_S, PREPARE_CPU_S + 5))


def _load(request: dict[str, Any]) -> tuple[str, object]:
    path = Path(request["path"])
    try:
        return "ok", load_setup(path, request["environ"])
    except PollerdError as exc:
        return "error", str(exc)
    except MemoryError:
        return "error", (
            f"{path}: reading the config needed more than {PREPARE_MEMORY_BYTES // 1024**3} GiB "
            "of memory: refused"
        )
    except RecursionError:
        return "error", f"{path}: the config is nested too deeply to be read: refused"


def main() -> None:
    """Read one request on stdin, load the setup it names, write the pickled answer on stdout."""
    logging.disable(logging.CRITICAL)  # the service logs what it needs from the answer
    request = json.loads(sys.stdin.buffer.read())
    with contextlib.suppress(OSError, ValueError):
        _limit_resources()  # best effort: /proc or the limits may be unavailable
    answer = _load(request)
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
    # The answer is out: end without freeing the setup object by object (a tenth of a second at
    # 10,000 jobs, while pollerd waits for this process to end).
    os._exit(0)
