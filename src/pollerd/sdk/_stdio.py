"""One-shot mode: read one request line from stdin, write exactly one reply line to stdout.

While the handler runs, both ``sys.stdout`` and file descriptor 1 point at stderr, so a stray
``print()`` in a handler, a C extension or a child process cannot corrupt the reply line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, BinaryIO, TextIO

from pollerd import wire

if TYPE_CHECKING:
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
        with _stdout_to_stderr(stdout):
            reply = plugin._handle_blocking(frame)
    stdout.flush()
    stdout.buffer.write(reply)
    stdout.buffer.flush()


@contextmanager
def _stdout_to_stderr(stdout: TextIO) -> Iterator[None]:
    """Point ``stdout`` (the object and, where there is one, its file descriptor) at stderr."""
    stdout.flush()
    saved: int | None = None
    try:
        stdout_fd = stdout.fileno()
        stderr_fd = sys.stderr.fileno()
        saved = os.dup(stdout_fd)
        os.dup2(stderr_fd, stdout_fd)
    except (OSError, ValueError, AttributeError):  # no real descriptors (embedded, captured)
        saved = None
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        stdout.flush()  # what the handler left in the buffer goes to stderr too
        if saved is not None:
            os.dup2(saved, stdout_fd)
            os.close(saved)
