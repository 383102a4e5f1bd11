"""Preparing a reload: the config on disk, read and validated off the event loop, then compared.

Reading a file never runs on the event loop, so a large or hostile ``pollers.yaml`` costs neither
the running jobs' lateness nor ``/healthz``:

- up to ``IN_THREAD_MAX_BYTES`` (a few thousand jobs) it is read in a worker thread: the YAML
  reader's limits (alias expansion, depth, size) bound what such a file costs, and a thread
  starts at once (a process costs an interpreter start, seconds on a loaded machine);
- a larger file is read by ``python -m pollerd.service.reloading``, a child process: its parse
  does not hold pollerd's GIL, each load may grow its address space by at most
  ``PREPARE_MEMORY_BYTES`` and use at most ``PREPARE_CPU_S`` of CPU, and pollerd kills it after
  ``PREPARE_TIMEOUT_S``. It sends the validated ``Setup`` back pickled (pollerd's own child,
  started from its own interpreter), the jobs of its previous answer as their positions there
  (``pollerd.service.setupdelta``). The child is kept from one reload to the next
  (``SpareReader``): it starts with the service, does its imports and loads the file once, so
  that a reload finds it ready and knowing the jobs; it then validates only the jobs whose text
  changed (``pollerd.config.jobcache``: a third of the time, at 10,000 jobs).

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
from pollerd.config.jobcache import JobCache
from pollerd.config.reload import ReloadPlan, plan_reload, restart_needed
from pollerd.config.setup import Setup, load_setup
from pollerd.errors import PollerdError
from pollerd.service.readerstate import ReaderState
from pollerd.service.setupdelta import DeltaBaseError, SetupDelta, decode_setup

logger = logging.getLogger(__name__)

IN_THREAD_MAX_BYTES = 256 * 1024  # larger files are read by a child process
PREPARE_MEMORY_BYTES = 2 * 1024**3  # per load, beyond what the child uses before it
PREPARE_CPU_S = 120  # per load
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
    """At most one child process that reads a large file, kept from one reload to the next.

    Between reloads it waits on its stdin, using no CPU. A child that failed, timed out or died
    is ended, and the next reload starts another (which reads the whole file, knowing no job).
    ``aclose`` ends it (the service's exit).
    """

    def __init__(self) -> None:
        self._child: asyncio.Future[_Child] | None = None  # a task while the child starts
        self._answered: tuple[int, Setup] | None = None  # its last answer: the next one's base

    def start_for(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        """Start a child if ``path`` is large enough to be read by one and no child is alive.

        With ``environ`` (the service's start), the child loads the file once to know its jobs;
        without (after a child failed), it only does its imports: a file that made one child
        fail is not read again before a reload asks for it."""
        if self._alive() or _file_bytes(path) <= IN_THREAD_MAX_BYTES:
            return
        first = _request(path, environ, answer=False) if environ is not None else b""
        self._child = asyncio.create_task(_spawn(first), name="reload-spare")
        self._answered = None

    async def ask(self, path: Path, environ: Mapping[str, str], timeout_s: float) -> Setup:
        """The setup of ``path`` as the child reads it; raises ``ReloadRefusedError``."""
        child: _Child | None = None
        try:
            async with asyncio.timeout(timeout_s):
                child = await self._take(path, environ)
                assert child.process.stdout is not None
                size = await child.process.stdout.readline()
                if not size:
                    await child.process.wait()  # it ended: its exit status says why
            # Reading and unpickling an answer takes up to a tenth of a second: in a thread, it
            # calls back into Python often enough for the event loop to keep its turn.
            status, value = await asyncio.to_thread(_answer, path, child, size, self._answered)
        except BaseException as exc:
            self._answered = None
            if child is not None:
                await _discard(child)
            if isinstance(exc, TimeoutError):
                raise ReloadRefusedError(
                    f"{path}: reading the config took longer than {timeout_s:g}s: refused"
                ) from None
            raise
        if status == "fatal":  # the child has ended: it may have been left half done
            await _discard(child)
        else:
            self._child = asyncio.get_running_loop().create_future()
            self._child.set_result(child)
        if status != "ok":
            raise ReloadRefusedError(str(value))
        assert isinstance(value, tuple)
        number, setup = value
        assert isinstance(setup, Setup)
        self._answered = (number, setup)
        return setup

    async def aclose(self) -> None:
        future, self._child = self._child, None
        if future is not None:
            with contextlib.suppress(OSError):
                await _discard(await future)

    def _alive(self) -> bool:
        """A child is starting, or started and has not ended."""
        future = self._child
        if future is None or not future.done():
            return future is not None
        if future.cancelled() or future.exception() is not None:
            return False
        return future.result().process.returncode is None

    async def _take(self, path: Path, environ: Mapping[str, str]) -> _Child:
        """The child with the request for ``path`` sent to it; a new child if none is alive."""
        future, self._child = self._child, None
        if future is not None:
            with contextlib.suppress(OSError):
                child = await future
                base = self._answered[0] if self._answered is not None else None
                if await _send(child, _request(path, environ, answer=True, base=base)):
                    return child
                await _discard(child)  # it died while it waited
        self._answered = None
        # A child that dies at once: its answer says why.
        return await _spawn(_request(path, environ, answer=True))


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
    (``spare``'s, kept for the next); raises ``ReloadRefusedError`` with its reasons."""
    if _file_bytes(path) > IN_THREAD_MAX_BYTES:
        reader = spare or SpareReader()
        try:
            setup = await reader.ask(path, environ, timeout_s)
        finally:
            if spare is None:
                await reader.aclose()
            else:
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


def _request(
    path: Path, environ: Mapping[str, str], *, answer: bool, base: int | None = None
) -> bytes:
    """One line for the child; ``answer`` false: load the file to know its jobs, say nothing.
    ``base``: the number of the child's last answer, which pollerd holds (see ``setupdelta``)."""
    request = {"path": str(path), "environ": dict(environ), "answer": answer, "base": base}
    return json.dumps(request).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class _Child:
    """A reading child, the unnamed file its answers go to and the file its stderr goes to.

    Not a pipe for the answer: pollerd's event loop, busy with 1,000 ticks/s, drained a pipe
    64 KiB at a time, and a 10,000-job answer (1 MB) waited a third of a second in it. The file
    is read in the thread that unpickles the answer; the child then writes the answer's size as
    one line on its stdout."""

    process: asyncio.subprocess.Process
    answer: IO[bytes]
    stderr: IO[bytes]


async def _spawn(first: bytes = b"") -> _Child:
    """A new child, ``first`` sent to it."""
    answer = tempfile.TemporaryFile()
    stderr = tempfile.TemporaryFile()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(answer.fileno()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            pass_fds=(answer.fileno(),),
        )
    except BaseException:
        answer.close()
        stderr.close()
        raise
    child = _Child(process, answer, stderr)
    if first:
        await _send(child, first)
    return child


async def _discard(child: _Child) -> None:
    if child.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()
    await child.process.wait()
    child.answer.close()
    child.stderr.close()


async def _send(child: _Child, request: bytes) -> bool:
    """Write ``request`` to the child; False if the child is gone."""
    stdin = child.process.stdin
    assert stdin is not None
    if child.process.returncode is not None:
        return False
    try:
        stdin.write(request)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _answer(
    path: Path, child: _Child, size: bytes, base: tuple[int, Setup] | None
) -> tuple[str, object]:
    """The child's answer of ``size`` bytes (its line on stdout: empty if it ended); a setup
    comes as its number and the setup, decoded with ``base``."""
    try:
        out = os.pread(child.answer.fileno(), int(size), 0)
        with collector_paused():  # a setup holds no cycles; see pollerd.config.gcpause
            status, value = pickle.loads(out)
            if isinstance(value, SetupDelta):
                value = (value.number, decode_setup(value, base))
    except DeltaBaseError as exc:  # not expected: the child and pollerd count the same answers
        raise ReloadRefusedError(f"{path}: the process reading the config: {exc}") from None
    except Exception:  # no answer: the child died (CPU limit, a crash)
        child.stderr.seek(0)
        tail = child.stderr.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:].strip()
        raise ReloadRefusedError(
            f"{path}: the process reading the config ended without an answer (exit status "
            f"{child.process.returncode}; CPU limit {PREPARE_CPU_S}s)"
            f"{': ' + tail if tail else ''}"
        ) from None
    return str(status), value


# -- the child ------------------------------------------------------------------------------------


def _limit_resources() -> None:
    """Bound the next load: its memory above what the child holds now, and its CPU time.

    Soft limits only, set again before each load (a hard limit cannot be raised again)."""
    with open("/proc/self/statm") as statm:
        virtual_bytes = int(statm.read().split()[0]) * _PAGE_BYTES
    _set_soft_limit(resource.RLIMIT_AS, virtual_bytes + PREPARE_MEMORY_BYTES)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft_limit(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime) + 1 + PREPARE_CPU_S)


def _set_soft_limit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _load(request: dict[str, Any], cache: JobCache) -> tuple[str, object]:
    path = Path(request["path"])
    try:
        return "ok", load_setup(path, request["environ"], cache)
    except PollerdError as exc:
        return "error", str(exc)
    except MemoryError:
        return "fatal", (
            f"{path}: reading the config needed more than {PREPARE_MEMORY_BYTES // 1024**3} GiB "
            "of memory: refused"
        )
    except RecursionError:
        return "fatal", f"{path}: the config is nested too deeply to be read: refused"


def _write_answer(answer_fd: int, answer: tuple[str, object]) -> None:
    data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    os.ftruncate(answer_fd, 0)
    written = 0
    while written < len(data):
        written += os.pwrite(answer_fd, data[written:], written)
    sys.stdout.buffer.write(b"%d\n" % len(data))
    sys.stdout.buffer.flush()


def main() -> None:
    """Answer each request line on stdin: load the setup it names, write the pickled answer to
    the file given as argument, its size on stdout. Ends at the end of stdin or after a load
    that ran out of memory or stack (whatever it built may be half done). Between two requests
    it holds its jobs and last answer compacted (``pollerd.service.readerstate``)."""
    logging.disable(logging.CRITICAL)  # the service logs what it needs from the answer
    answer_fd = int(sys.argv[1])
    kept = ReaderState()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        with contextlib.suppress(OSError, ValueError):
            _limit_resources()  # best effort: /proc or the limits may be unavailable
        status, value = _load(request, kept.cache)
        if request["answer"]:
            if isinstance(value, Setup):
                value = kept.encode(value, request["base"])
            _write_answer(answer_fd, (status, value))
        if status == "fatal":
            break
        del value  # the answer's objects: only what ``kept`` holds outlives the load
        kept.compact()  # while pollerd applies the answer, not before it is written


if __name__ == "__main__":
    main()
    # Done: end without freeing the cached jobs object by object (a tenth of a second at 10,000
    # jobs, while pollerd waits for this process to end).
    os._exit(0)
