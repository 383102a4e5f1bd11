"""The floor of a pre-forked tick: a warmed parent forks, the child answers one frame and exits.

Run as ``python fork_floor.py <plugin program>``: imports the plugin (not running it), then for
each request line on stdin forks a child that answers it through a pipe with the plugin's own
frame handling and exits with ``os._exit``; the parent reads the reply, reaps the child and
writes how long that took, in seconds, as one line on stdout.
"""

import importlib.util
import os
import sys
import time

spec = importlib.util.spec_from_file_location("bench_plugin", sys.argv[1])
assert spec is not None and spec.loader is not None
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
plugin = module.plugin

for frame in sys.stdin.buffer:
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.write(write_fd, plugin._handle_blocking(frame))
        os._exit(0)
    os.close(write_fd)
    reply = b""
    while chunk := os.read(read_fd, 65536):
        reply += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if not reply.startswith(b'{"jsonrpc"'):
        raise SystemExit(f"unexpected reply {reply!r}")
    sys.stdout.write(f"{elapsed}\n")
    sys.stdout.flush()
