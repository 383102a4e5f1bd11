"""Pre-fork mode: a zygote that imported the plugin once forks one child per tick.

pollerd starts the plugin with ``POLLERD_MODE=prefork`` and one end of a Unix socketpair
(``SOCK_SEQPACKET``, one JSON message per datagram) on the descriptor named by
``POLLERD_ZYGOTE_FD``. The zygote says ``ready`` with its kinds, then for each ``fork`` message,
which carries the tick's stdin, stdout and stderr as three descriptors (``SCM_RIGHTS``), forks a
child and answers ``forked`` with its pid; once it has reaped the child it reports ``exited`` with
the return code (negative: killed by that signal, as ``subprocess`` says it).

The child puts its own process group around itself, gets SIGKILL when the zygote dies, moves the
three descriptors onto 0, 1 and 2, adds the message's ``env`` (pollerd's mark of the tick, which
the processes it starts inherit) to its environment and serves exactly one tick, as a one-shot
process does; then it exits without the interpreter's clean-up (what ``atexit`` holds still runs).
The zygote gets SIGTERM when pollerd dies; it then kills every child's process group and exits, as
it does when pollerd closes the socket.

Fork safety: the zygote runs no thread and no event loop, holds no socket but its end of the pair,
and closes that end and its wake-up pipe in every child. Standard library only.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import select
import signal
import socket
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["MAX_MESSAGE_BYTES", "PREFORK_FD_ENV", "ZYGOTE_FDS", "run_child", "serve_zygote"]

PREFORK_FD_ENV = "POLLERD_ZYGOTE_FD"
PARENT_PID_ENV = "POLLERD_PARENT_PID"
ZYGOTE_FDS = 3  # the tick's stdin, stdout, stderr
MAX_MESSAGE_BYTES = 4096
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_ORPHANED = 70


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False elsewhere."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


_PRCTL: list[Callable[..., int] | None] = []


def _prctl() -> Callable[..., int] | None:
    if not _PRCTL:  # loaded once, in the zygote: children reuse it
        found = None
        if sys.platform == "linux":
            try:
                import ctypes

                found = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                found = None
        _PRCTL.append(found)
    return _PRCTL[0]


class _Zygote:
    """The fork loop; ``run()`` returns only in a forked child (True) or at the end (False)."""

    def __init__(self, sock: socket.socket, kinds: Sequence[str]) -> None:
        self.sock = sock
        self.kinds = list(kinds)
        self.children: set[int] = set()
        self.stopping = False  # set when pollerd closed the socket
        self.pid = os.getpid()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> bool:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.signal(signal.SIGTERM, self._on_term)
        threads = _other_threads()
        if threads:
            self._send(op="unfit", error=f"the plugin runs {threads} other thread(s) at import")
            return False
        self._send(op="ready", pid=os.getpid(), kinds=self.kinds, protocol=1)
        gc.freeze()  # children then do not touch the zygote's objects' pages (copy-on-write)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while not self.stopping:
            for fd, _events in poller.poll():
                if fd == self.wake_r:
                    self._drain_wakeups()
                elif self._serve_request():
                    return True
        self._stop()
        return False

    def _serve_request(self) -> bool:
        """Handle one message; True in the forked child."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE_BYTES, ZYGOTE_FDS)
        except InterruptedError:  # pragma: no cover - retried by Python itself
            return False
        except OSError:
            self.stopping = True
            return False
        if not data:  # pollerd closed its end
            self.stopping = True
            _close_all(fds)
            return False
        try:
            message = json.loads(data)
        except ValueError:
            message = {}
        op = message.get("op") if isinstance(message, dict) else None
        if op == "ping":
            self._send(op="pong")
        elif op == "fork":
            return self._fork(message.get("id"), fds, message.get("env"))
        _close_all(fds)
        return False

    def _fork(self, request_id: object, fds: list[int], env: object) -> bool:
        if len(fds) != ZYGOTE_FDS:
            _close_all(fds)
            self._send(op="refused", id=request_id, error=f"got {len(fds)} descriptors, not 3")
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _close_all(fds)
            self._send(op="refused", id=request_id, error=f"fork failed: {exc}")
            return False
        if pid == 0:
            self._become_child(fds, env if isinstance(env, dict) else {})
            return True
        _close_all(fds)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first, no race
        except OSError:
            pass
        self.children.add(pid)
        self._send(op="forked", id=request_id, pid=pid)
        return False

    def _become_child(self, fds: list[int], env: dict[str, object]) -> None:
        zygote_pid = os.getppid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.sock.close()
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != zygote_pid:  # the zygote died before the signal was armed
            os._exit(EXIT_ORPHANED)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        _close_all([fd for fd in fds if fd > 2])
        os.environ.pop(PREFORK_FD_ENV, None)
        os.environ.update({str(name): str(value) for name, value in env.items()})

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.children.discard(pid)
            self._send(op="exited", pid=pid, code=os.waitstatus_to_exitcode(status))

    def _on_term(self, signum: int, frame: object) -> None:
        """SIGTERM (from pollerd, or pollerd's death): end the children and exit at once."""
        if os.getpid() != self.pid:  # a child, before it restored the default handler
            os._exit(128 + signum)
        self._stop()
        os._exit(0)

    def _stop(self) -> None:
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.sock.close()

    def _send(self, **message: object) -> None:
        try:
            self.sock.send(json.dumps(message, separators=(",", ":")).encode())
        except OSError:  # pollerd is gone: the loop ends on the next read
            self.stopping = True


def _ignore_signal(signum: int, frame: object) -> None:
    """A Python-level handler, so that SIGCHLD reaches the wake-up pipe."""


def _other_threads() -> int:
    threading = sys.modules.get("threading")
    return threading.active_count() - 1 if threading is not None else 0


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def serve_zygote(kinds: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Run the zygote until pollerd stops it (False), or return True in a child for one tick."""
    try:
        fd = int(environ[PREFORK_FD_ENV])
    except (KeyError, ValueError):
        raise SystemExit(
            f"POLLERD_MODE=prefork needs the zygote socket's descriptor in {PREFORK_FD_ENV}; "
            "pollerd sets it when plugin.toml says prefork = true"
        ) from None
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    set_parent_death_signal(signal.SIGTERM)
    parent = environ.get(PARENT_PID_ENV, "")
    if parent.isdigit() and os.getppid() != int(parent):  # pollerd died before the signal was armed
        return False
    return _Zygote(sock, kinds).run()


def run_child(serve: Callable[[], None]) -> None:
    """Serve the child's one tick, then exit at once: no interpreter clean-up to wait for."""
    code = 0
    try:
        serve()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
