"""One-shot mode: a real plugin process reads one request line and writes exactly one reply line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pollerd import wire
from pollerd.sdk import Plugin, Tick, TickResult
from pollerd.sdk._stdio import serve_once

FIXTURES = Path(__file__).parents[1] / "fixtures" / "plugins"
SCHEDULED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TICK_ID = wire.make_tick_id("job-1", SCHEDULED)
PROCESS_TIMEOUT_S = 30
EPHEMERAL_ENV = {"POLLERD_MODE": "ephemeral", "POLLERD_PLUGIN_ID": "demo", "POLLERD_PROTOCOL": "1"}


def request(kind: str, cursor: bytes | None = None) -> bytes:
    return wire.TickRequest(
        kind=kind,
        job_id="job-1",
        tick_id=TICK_ID,
        attempt=3,
        agent_id="",
        cursor=cursor,
        config={},
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=20),
    ).encode()


def run_plugin(
    stdin: bytes, env: dict[str, str] = EPHEMERAL_ENV
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "sdk_demo.py"],
        input=stdin,
        cwd=FIXTURES,
        env=env,
        capture_output=True,
        timeout=PROCESS_TIMEOUT_S,
    )


def test_a_tick_over_stdio_writes_exactly_one_reply_line_and_exits_0() -> None:
    done = run_plugin(request("noisy", cursor=b"\x00"))

    assert done.returncode == 0
    assert done.stdout.count(b"\n") == 1 and done.stdout.endswith(b"\n")
    reply = wire.decode_reply(done.stdout, tick_id=TICK_ID)
    assert reply.next_cursor == b"\x00!"
    assert reply.events == (wire.Event(id="e1", data={"kind": "noisy"}),)


def test_stray_output_from_a_handler_goes_to_stderr_and_never_into_the_reply() -> None:
    done = run_plugin(request("noisy"))

    assert b"stray" not in done.stdout
    assert b"stray print from the handler" in done.stderr
    assert b"unflushed stray write" in done.stderr
    assert b"stray output from a child process" in done.stderr


def test_an_async_handler_runs_over_stdio() -> None:
    done = run_plugin(request("async_kind"))

    assert wire.decode_reply(done.stdout, tick_id=TICK_ID).metrics == {"attempt": 3.0}


def test_an_unknown_kind_is_a_config_error_naming_the_plugin_id_from_the_environment() -> None:
    done = run_plugin(request("rss"))

    error = json.loads(done.stdout)["error"]
    assert error["code"] == wire.CODE_CONFIG
    assert "plugin 'demo' does not serve kind 'rss'" in error["message"]


def test_empty_stdin_gets_an_invalid_request_reply() -> None:
    done = run_plugin(b"")

    assert done.returncode == 0
    assert json.loads(done.stdout)["error"]["code"] == wire.CODE_INVALID_REQUEST


def test_the_mode_defaults_to_ephemeral_without_pollerd_variables() -> None:
    done = run_plugin(request("noisy"), env={})

    assert wire.decode_reply(done.stdout, tick_id=TICK_ID).next_cursor == b"!"


def test_an_unknown_mode_exits_non_zero_with_a_message() -> None:
    done = run_plugin(request("noisy"), env={"POLLERD_MODE": "batch"})

    assert done.returncode == 1
    assert done.stdout == b""
    assert b"unknown POLLERD_MODE 'batch'" in done.stderr


def test_without_real_descriptors_stray_prints_still_stay_out_of_the_reply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = Plugin("demo")
    threads: list[int] = []

    @plugin.poller("noisy")
    def noisy(tick: Tick) -> TickResult:
        threads.append(threading.get_ident())
        print("stray")
        return TickResult(next_cursor=b"x")

    stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    serve_once(plugin, io.BytesIO(request("noisy")), stdout)

    reply = stdout.buffer.getvalue()  # type: ignore[attr-defined]
    assert wire.decode_reply(reply, tick_id=TICK_ID).next_cursor == b"x"
    assert capsys.readouterr().err == "stray\n"
    assert threads == [threading.get_ident()]  # one-shot mode runs a sync handler inline


def test_one_shot_mode_runs_an_async_handler_in_an_event_loop() -> None:
    plugin = Plugin("demo")

    @plugin.poller("async_kind")
    async def async_kind(tick: Tick) -> TickResult:
        return TickResult(next_interval_secs=5)

    stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    serve_once(plugin, io.BytesIO(request("async_kind")), stdout)

    reply = stdout.buffer.getvalue()  # type: ignore[attr-defined]
    assert wire.decode_reply(reply, tick_id=TICK_ID).next_interval_secs == 5.0
