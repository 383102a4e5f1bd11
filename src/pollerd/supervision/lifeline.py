"""Children that end with pollerd, and a pollerd that keeps its memory to itself.

- ``with_parent_death_signal``: the argv of a child run through a tiny Python exec wrapper that
  sets ``PR_SET_PDEATHSIG`` (Linux) on itself and then ``exec``s the real program, keeping its
  pid. The kernel signals the child when pollerd dies, even by SIGKILL, with no system tool
  (``setpriv`` is optional on hosts) and no ``preexec_fn`` (unsafe in a threaded process). The
  wrapper exits at once if pollerd died before the signal was set (its parent pid changed), and
  it runs after a ``user``/``group`` switch, which would have cleared the setting.
- ``kill_stale``: a pid file names a child of a previous pollerd; if that process still runs and
  its command line holds a marker (its data directory), it is stopped before a new one starts.
- ``set_not_dumpable``: ``PR_SET_DUMPABLE`` 0, so processes of the same user (plugins) cannot
  read pollerd's memory or ``/proc/<pid>/environ`` nor attach a debugger to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
STALE_STOP_GRACE_S = 3.0
STALE_POLL_S = 0.02
NO_ID = "-"
# argv: python -I -S -c WRAPPER <signal> <parent pid> <uid|-> <gid|-> <program> <args...>
# The user switch comes first (it would clear the parent-death signal), then the signal, then a
# check that the parent did not die in between, then the program in place of the wrapper.
WRAPPER = (
    "import ctypes,os,sys\n"
    "a=sys.argv\n"
    "if a[4]!='-':os.setgroups([]);os.setgid(int(a[4]))\n"
    "if a[3]!='-':os.setuid(int(a[3]))\n"
    "ctypes.CDLL(None).prctl(1,int(a[1]),0,0,0)\n"
    "if os.getppid()!=int(a[2]):os._exit(70)\n"
    "os.execv(a[5],a[5:])\n"
)


def with_parent_death_signal(
    argv: list[str],
    *,
    python: str = sys.executable,
    signum: signal.Signals = signal.SIGTERM,
    parent_pid: int | None = None,
    identity: tuple[int, int] | None = None,
) -> list[str]:
    """``argv`` wrapped so that the child gets ``signum`` when this process dies (Linux only),
    run as ``identity`` (uid, gid; with no supplementary groups) when given.

    ``argv[0]`` must be a path to an executable (it is ``exec``ed as is, without a PATH search).
    """
    if sys.platform != "linux":
        return argv
    parent = os.getpid() if parent_pid is None else parent_pid
    ids = [NO_ID, NO_ID] if identity is None else [str(identity[0]), str(identity[1])]
    return [python, "-I", "-S", "-c", WRAPPER, str(int(signum)), str(parent), *ids, *argv]


def popen_identity(identity: tuple[int, int] | None) -> dict[str, object]:
    """``Popen`` keyword arguments that run a child as ``identity`` (uid, gid), without the
    supplementary groups of pollerd; none when ``identity`` is None."""
    if identity is None:
        return {}
    return {"user": identity[0], "group": identity[1], "extra_groups": []}


def set_not_dumpable() -> bool:
    """Make this process non-dumpable (Linux); False when that is not possible here."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_DUMPABLE) failed: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        logger.warning("cannot make pollerd non-dumpable: %s", exc)
        return False
    return True


def is_dumpable() -> bool | None:
    """Whether this process is dumpable (None when that cannot be told here)."""
    if sys.platform != "linux":
        return None
    try:
        return bool(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    """Record a child's pid (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{pid}\n")


def remove_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_stale(pid_file: Path, marker: str, *, grace_s: float = STALE_STOP_GRACE_S) -> int | None:
    """Stop the process named by ``pid_file`` if it still runs with ``marker`` in its command
    line (SIGTERM, ``grace_s``, SIGKILL); return its pid, or None when there was none."""
    try:
        pid = int(pid_file.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    command = _command_line(pid) if pid > 0 else None
    if command is None or marker not in command:
        remove_pid_file(pid_file)
        return None
    logger.warning("stopping pid %d left behind by a previous pollerd (%s)", pid, command.strip())
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid) or _is_zombie(pid):
                remove_pid_file(pid_file)
                return pid
            time.sleep(STALE_POLL_S)
    remove_pid_file(pid_file)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] == "Z"
