"""SubprocessTransport against real plugin processes (tests/fixtures/plugins)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pollerd import wire
from pollerd.errors import (
    ManifestError,
    PluginUnavailableError,
    ProtocolError,
    TickTimeoutError,
    TransportError,
)
from pollerd.transports.subprocess import SubprocessTransport, pidfd_child_watcher

FIXTURES = Path(__file__).parents[1] / "fixtures" / "plugins"
SCHEDULED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TIMEOUT_S = 10.0
GONE_WITHIN_S = 5.0
POLL_S = 0.01

MakeTransport = Callable[..., SubprocessTransport]


def tick(cursor: bytes | None = None, **config: Any) -> wire.TickRequest:
    return wire.TickRequest(
        kind="fixture",
        job_id="job-1",
        tick_id=wire.make_tick_id("job-1", SCHEDULED),
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config,
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=TIMEOUT_S),
    )


@pytest.fixture
def make_transport() -> MakeTransport:
    def make(script: str, **kw: Any) -> SubprocessTransport:
        options: dict[str, Any] = {
            "plugin_id": "fixture",
            "command": "python",
            "args": [script],
            "cwd": FIXTURES,
            "env_allow": [],
            "environ": {},
        }
        options.update(kw)
        return SubprocessTransport(**options)

    return make


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_until(condition: Callable[[], bool], within_s: float = GONE_WITHIN_S) -> bool:
    """Poll a condition no event announces (a process leaving /proc); False if it never holds."""
    for _ in range(int(within_s / POLL_S)):
        if condition():
            return True
        await asyncio.sleep(POLL_S)
    return condition()


def read_pids(pidfile: Path) -> tuple[int, int]:
    plugin_pid, grandchild_pid = pidfile.read_text().split()
    return int(plugin_pid), int(grandchild_pid)


async def test_a_raw_plugin_round_trips_a_binary_cursor_byte_for_byte(
    make_transport: MakeTransport,
) -> None:
    transport = make_transport("echo.py")
    cursor = bytes(range(256)) + b"\x00\xff="
    expected = cursor
    for _ in range(3):
        reply = await transport.send(tick(cursor), TIMEOUT_S)
        expected += bytes([len(expected) % 256])
        assert reply.next_cursor is not None
        cursor = reply.next_cursor

    assert cursor == expected


async def test_the_plugin_sees_only_allow_listed_variables_and_its_own(
    make_transport: MakeTransport,
) -> None:
    environ = {"SECRET_TOKEN": "hunter2", "HTTPS_PROXY": "http://proxy:3128", "PATH": "/usr/bin"}
    transport = make_transport("echo.py", env_allow=["HTTPS_PROXY", "UNSET_NAME"], environ=environ)

    reply = await transport.send(tick(), TIMEOUT_S)

    env = reply.events[0].data
    assert "SECRET_TOKEN" not in env and "PATH" not in env and "UNSET_NAME" not in env
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["POLLERD_PROTOCOL"] == "1"
    assert env["POLLERD_MODE"] == "ephemeral"
    assert env["POLLERD_PLUGIN_ID"] == "fixture"


async def test_the_plugins_stderr_lines_reach_pollerds_log_tagged_with_plugin_and_job(
    make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")

    await make_transport("echo.py").send(tick(b"abc"), TIMEOUT_S)

    lines = [r.getMessage() for r in caplog.records if r.name == "pollerd.plugin"]
    assert lines == ["plugin=fixture job_id=job-1: echo: got 3 cursor bytes"]


async def test_stdout_after_the_reply_line_is_ignored(make_transport: MakeTransport) -> None:
    reply = await make_transport("echo.py").send(tick(b"", trailing=True), TIMEOUT_S)

    assert reply.next_cursor == b"\x00"


@pytest.mark.parametrize("pidfds", [False, True], ids=["default-watcher", "pidfd-watcher"])
async def test_a_hung_plugin_times_out_and_its_whole_process_group_is_killed(
    make_transport: MakeTransport, tmp_path: Path, pidfds: bool
) -> None:
    pidfile = tmp_path / "pids"
    transport = make_transport("hang.py")
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(TickTimeoutError) as caught:
        if pidfds:
            with pidfd_child_watcher(loop):
                await transport.send(tick(pidfile=str(pidfile)), 1.5)
        else:
            await transport.send(tick(pidfile=str(pidfile)), 1.5)

    elapsed = loop.time() - started
    assert caught.value.plugin == "fixture" and caught.value.job_id == "job-1"
    assert 1.5 <= elapsed < 1.5 + transport.kill_grace_s
    plugin_pid, grandchild_pid = read_pids(pidfile)
    assert await wait_until(lambda: not is_running(plugin_pid) and not is_running(grandchild_pid))


async def test_a_plugin_that_ignores_sigterm_is_killed_after_the_grace_period(
    make_transport: MakeTransport, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    transport = make_transport("hang.py", kill_grace_s=0.2)

    with pytest.raises(TickTimeoutError):
        await transport.send(tick(pidfile=str(pidfile), ignore_term=True), 1.5)

    plugin_pid, grandchild_pid = read_pids(pidfile)
    assert await wait_until(lambda: not is_running(plugin_pid) and not is_running(grandchild_pid))


async def test_cancelling_a_send_kills_the_process_group(
    make_transport: MakeTransport, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    sending = asyncio.create_task(make_transport("hang.py").send(tick(pidfile=str(pidfile)), 30))
    await wait_until(pidfile.exists)

    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    plugin_pid, grandchild_pid = read_pids(pidfile)
    assert await wait_until(lambda: not is_running(plugin_pid) and not is_running(grandchild_pid))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio uses pidfds from 3.12 on")
async def test_the_pidfd_child_watcher_is_used_inside_its_block_and_restored_after(
    make_transport: MakeTransport,
) -> None:
    before = asyncio.get_child_watcher()
    with pidfd_child_watcher(asyncio.get_running_loop()) as used:
        reply = await make_transport("echo.py").send(tick(b""), TIMEOUT_S)
        inside = asyncio.get_child_watcher()

    assert used is True and isinstance(inside, asyncio.PidfdChildWatcher)
    assert asyncio.get_child_watcher() is before
    assert reply.next_cursor == b"\x00"


async def test_a_reply_that_is_not_json_is_a_protocol_error_naming_the_plugin(
    make_transport: MakeTransport,
) -> None:
    with pytest.raises(ProtocolError) as caught:
        await make_transport("garbage.py").send(tick(), TIMEOUT_S)

    assert "'fixture'" in str(caught.value)
    assert "hello, this is not a reply" in str(caught.value)


async def test_an_exit_without_a_reply_carries_the_exit_code_and_the_tail_of_stderr(
    make_transport: MakeTransport,
) -> None:
    with pytest.raises(TransportError) as caught:
        await make_transport("crash.py").send(tick(), TIMEOUT_S)

    error = caught.value
    assert type(error) is TransportError
    message = str(error)
    assert "'fixture' exited with code 3 without a reply" in message
    assert "crash line 12" in message and "crash line 3" in message
    assert "crash line 2\n" not in message


async def test_an_exit_by_signal_names_the_signal(make_transport: MakeTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await make_transport("crash.py").send(tick(signal="SIGKILL"), TIMEOUT_S)

    assert "'fixture' was killed by SIGKILL without a reply" in str(caught.value)


async def test_a_reply_over_the_size_cap_is_refused(make_transport: MakeTransport) -> None:
    transport = make_transport("huge.py", max_reply_bytes=64 * 1024)

    with pytest.raises(ProtocolError) as caught:
        await transport.send(tick(), TIMEOUT_S)

    assert "reply over 65536 bytes" in str(caught.value)


async def test_a_next_cursor_that_is_not_base64url_is_a_protocol_error(
    make_transport: MakeTransport,
) -> None:
    with pytest.raises(ProtocolError) as caught:
        await make_transport("bad_cursor.py").send(tick(), TIMEOUT_S)

    assert "next_cursor" in str(caught.value)


async def test_a_next_cursor_over_the_cursor_cap_is_a_protocol_error(
    make_transport: MakeTransport,
) -> None:
    transport = make_transport("echo.py", max_cursor_bytes=8)

    with pytest.raises(ProtocolError) as caught:
        await transport.send(tick(b"12345678"), TIMEOUT_S)

    assert "over the 8 cap" in str(caught.value)


async def test_a_plugin_that_lingers_after_replying_keeps_its_reply_and_is_killed(
    make_transport: MakeTransport,
) -> None:
    reply = await make_transport("lingering.py", kill_grace_s=0.2).send(tick(), 1.0)

    assert reply == wire.TickReply()


async def test_a_command_missing_from_path_makes_the_plugin_unavailable(
    make_transport: MakeTransport,
) -> None:
    transport = make_transport("x", command="no-such-plugin-cmd", environ={"PATH": "/usr/bin"})

    with pytest.raises(PluginUnavailableError) as caught:
        await transport.send(tick(), TIMEOUT_S)

    assert "'no-such-plugin-cmd' is not on PATH" in str(caught.value)
    assert "'fixture'" in str(caught.value)


async def test_a_command_that_is_not_executable_makes_the_plugin_unavailable(
    make_transport: MakeTransport, tmp_path: Path
) -> None:
    (tmp_path / "plugin.sh").write_text("#!/bin/sh\necho hi\n")
    transport = make_transport("x", command="./plugin.sh", args=[], cwd=tmp_path)

    with pytest.raises(PluginUnavailableError) as caught:
        await transport.send(tick(), TIMEOUT_S)

    assert "cannot run command './plugin.sh'" in str(caught.value)
    assert "Permission denied" in str(caught.value)


async def test_a_missing_plugin_folder_makes_the_plugin_unavailable(
    make_transport: MakeTransport, tmp_path: Path
) -> None:
    transport = make_transport("echo.py", cwd=tmp_path / "gone")

    with pytest.raises(PluginUnavailableError) as caught:
        await transport.send(tick(), TIMEOUT_S)

    assert str(tmp_path / "gone") in str(caught.value)
    assert "No such file or directory" in str(caught.value)


async def test_a_relative_command_runs_from_the_plugin_folder(
    make_transport: MakeTransport, tmp_path: Path
) -> None:
    script = tmp_path / "plugin"
    script.write_text(f"#!{sys.executable}\n" + (FIXTURES / "echo.py").read_text())
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    transport = make_transport("x", command="./plugin", args=[], cwd=tmp_path)

    reply = await transport.send(tick(b"\x01"), TIMEOUT_S)

    assert reply.next_cursor == b"\x01\x01"


@dataclass(frozen=True)
class Entrypoint:
    command: str
    args: tuple[str, ...]
    env: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    id: str
    folder: Path
    entrypoint: Entrypoint | None


async def test_a_transport_built_from_a_manifest_runs_its_entrypoint() -> None:
    manifest = Manifest("echo", FIXTURES, Entrypoint("python", ("echo.py",), ("GREETING",)))
    environ = {"GREETING": "hi", "OTHER": "no"}
    transport = SubprocessTransport.from_manifest(manifest, environ, kill_grace_s=0.5)

    reply = await transport.send(tick(), TIMEOUT_S)

    env = reply.events[0].data
    assert (env["GREETING"], env["POLLERD_PLUGIN_ID"], "OTHER" in env) == ("hi", "echo", False)
    assert transport.kill_grace_s == 0.5


def test_a_manifest_without_an_entrypoint_cannot_make_a_transport() -> None:
    with pytest.raises(ManifestError) as caught:
        SubprocessTransport.from_manifest(Manifest("echo", FIXTURES, None), os.environ)

    assert "needs [plugin.entrypoint]" in str(caught.value)
