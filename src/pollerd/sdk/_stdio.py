"""One-shot mode: read one request line from stdin, write exactly one reply line to stdout.

While the handler runs, both ``sys.stdout`` and file descriptor 1 point at stderr, so a stray
``print()`` in a handler, a C extension or a child process cannot corrupt the reply line.
"""

from __future__ import annotations

import os
import sys

from pollerd import wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO, TextIO

    from pollerd.sdk._plugin import Plugin

__all__ = ["serve_once"]

# A request holds at most a 256 KiB cursor (about 350 KiB of base64) plus the job's config.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


def serve_once(plugin: Plugin, stdin: BinaryIO, stdout: TextIO) -> None:
    """Answer the single request on ``stdin``; the caller's process then exits 0."""
    frame = stdin.readline(MAX_REQUEST_BYTES + 1)
    if not frame.strip():
        reply = wire.encode_error(
            None,
            wire.CODE_INVALID_REQUEST,
            f"plugin {plugin.plugin_id!r}: no request line on stdin",
        )
    elif len(frame) > MAX_REQUEST_BYTES:
        reply = wire.encode_error(
            None,
            wire.CODE_INVALID_REQUEST,
            f"plugin {plugin.plugin_id!r}: request line over {MAX_REQUEST_BYTES} bytes",
        )
    else:
        with _StdoutToStderr(stdout):
            reply = plugin._handle_blocking(frame)
    stdout.flush()
    stdout.buffer.write(reply)
    stdout.buffer.flush()


class _StdoutToStderr:
    """Points ``stdout`` (the object and, where there is one, its file descriptor) at stderr while
    the block runs. A class rather than ``contextlib`` helpers: a one-shot plugin would load
    ``contextlib`` on every tick for them."""

    _previous: TextIO

    def __init__(self, stdout: TextIO) -> None:
        self._stdout = stdout
        self._fd = -1
        self._saved_fd: int | None = None

    def __enter__(self) -> None:
        self._stdout.flush()
        try:
            self._fd = self._stdout.fileno()
            stderr_fd = sys.stderr.fileno()
            self._saved_fd = os.dup(self._fd)
            os.dup2(stderr_fd, self._fd)
        except (OSError, ValueError, AttributeError):  # no real descriptors (embedded, captured)
            pass
        self._previous = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout = self._previous
        self._stdout.flush()  # what the handler left in the buffer goes to stderr too
        if self._saved_fd is not None:
            os.dup2(self._saved_fd, self._fd)
            os.close(self._saved_fd)
