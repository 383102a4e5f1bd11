"""The embedded nats-server dies or is left behind: pollerd recovers on its own (issue 9, 3/4/18).

Real `pollerd run` processes and real nats-servers: a canary job that publishes an event at every
tick shows when NATS works again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from conftest import free_port, process_exists, wait_process_gone
from ops import test_operator as operator
from ops.test_operator import STOP_TIMEOUT_S, StartPollerd, count_job, wait_until, write_config

pytestmark = pytest.mark.nats

RECOVERED_TICKS = 3
start_pollerd = operator.start_pollerd  # the fixture: `pollerd run`, stopped after the test


def nats_server_pid(store_dir: Path) -> int:
    """The nats-server running on ``store_dir`` (found by its command line, Linux /proc)."""
    marker = str(store_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"nats-server") for part in command[:1]) and marker in command:
            return int(entry.name)
    raise AssertionError(f"no nats-server runs on {store_dir}")


async def test_a_killed_embedded_nats_server_is_restarted_and_the_canary_ticks_again(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("canary")])
    pollerd = await start_pollerd(config, port)
    await wait_until(lambda: _true(len(pollerd.tick_lines("canary")) >= 2))
    url_before = (tmp_path / "state" / "nats" / "url").read_text()
    killed = nats_server_pid(tmp_path / "state" / "nats")

    os.kill(killed, signal.SIGKILL)
    await wait_process_gone(killed)
    seen = len(pollerd.lines)
    await wait_until(
        lambda: _true(
            sum(
                "tick job_id=canary " in line and "outcome=ok " in line
                for line in pollerd.lines[seen:]
            )
            >= RECOVERED_TICKS
        ),
        timeout_s=30.0,
    )
    restarted = nats_server_pid(tmp_path / "state" / "nats")
    pollerd.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(STOP_TIMEOUT_S):
        code = await pollerd.process.wait()

    assert restarted != killed
    assert (tmp_path / "state" / "nats" / "url").read_text() == url_before
    assert code == 0
    assert not any("Traceback" in line for line in pollerd.lines), "\n".join(pollerd.lines)
    assert not process_exists(restarted)


async def _true(value: bool) -> bool:
    return value
