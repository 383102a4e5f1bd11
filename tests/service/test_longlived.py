"""Long-lived plugins over NATS through the whole service and the `pollerd` CLI.

The supervisor, the NATS transport, the SDK service and the embedded server have component tests
of their own; these run a real ``Service`` (or the real CLI) against real plugin processes and a
real nats-server, and check what an operator sees: tick outcomes, cursors, plugin states.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    FIXTURES_DIR,
    NATS_PLUGINS_DIR,
    Spawn,
    free_port,
    long_lived_env,
    wait_for_condition,
)
from pollerd.config.setup import load_setup
from pollerd.engine.runner import TickOutcome
from pollerd.errors import ErrorClass
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.ops.adminclient import call
from pollerd.service.core import Service
from pollerd.stores.base import JobState, JobUpdate
from pollerd.supervision.status import PluginState, PluginStatus
from pollerd.wire import encode_cursor

pytestmark = pytest.mark.nats

LONGLIVED_DIR = FIXTURES_DIR / "longlived"
SDK_PLUGIN = LONGLIVED_DIR / "sdk_plugin.py"
RAW_PLUGIN = NATS_PLUGINS_DIR / "raw_plugin.py"
CRASH_PLUGIN = LONGLIVED_DIR / "crash_at_start.py"
ENTERED_SUFFIX = ".entered"  # what sdk_plugin.py renames its arm file to inside the handler

WAIT_S = 15.0
POLL_S = 0.02
CLI_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"
TRANSIENT_STATUSES = {"transient", "timeout", "unavailable", "protocol"}
MAX_RESTARTS = 2
DOWN_SLOTS = 3  # failed slots to see while nats-server is down
FAST_SUPERVISOR: Mapping[str, float] = {
    "start_timeout_s": 15.0,
    "ping_interval_s": 1.0,
    "ping_failures": 3,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "max_restarts": MAX_RESTARTS,
    "stop_grace_s": 1.0,
}
# One attempt per slot and a breaker that never opens: each outcome is one plain request.
PLAIN_DEFAULTS = {"retry": {"attempts": 1}, "breaker": {"threshold": 1000}}


# --- helpers -----------------------------------------------------------------------------------


def write_plugin(
    root: Path, plugin_id: str, kind: str, *, script: Path | None, tick_timeout: str = "5s"
) -> None:
    """A long-lived plugin folder; without ``script`` the plugin is external (no entrypoint)."""
    folder = root / "plugins" / plugin_id
    folder.mkdir(parents=True)
    entrypoint = ""
    if script is not None:
        entrypoint = (
            f'[plugin.entrypoint]\ncommand = "python"\nargs = [{json.dumps(str(script))}]\n'
        )
    (folder / "plugin.toml").write_text(
        f'[plugin]\nid = "{plugin_id}"\nversion = "1.0.0"\n\n{entrypoint}\n'
        f'[plugin.poller]\nkinds = ["{kind}"]\nlifecycle = "long_lived"\n'
        f'tick_timeout = "{tick_timeout}"\n'
    )


def write_config(
    root: Path, jobs: list[dict[str, Any]], *, nats_url: str = "embedded", http: str = "off"
) -> Path:
    """A pollers.yaml (JSON is YAML) with its state and plugins under ``root``."""
    config = {
        "version": 1,
        "nats": {"url": nats_url},
        "state_dir": str(root / "state"),
        "plugins": [str(root / "plugins")],
        "http": http,
        "defaults": PLAIN_DEFAULTS,
        "jobs": jobs,
    }
    path = root / "pollers.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def job(job_id: str, kind: str, *, every: str = "1h", **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "kind": kind, "schedule": {"every": every}, **fields}


def open_service(config: Path, *, schedule: bool = False, http: bool = False) -> Service:
    return Service(
        load_setup(config, os.environ),
        environ=os.environ,
        schedule=schedule,
        http=http,
        supervisor_options=FAST_SUPERVISOR,
    )


def plugin_status(service: Service, plugin_id: str) -> PluginStatus:
    assert service.supervisor is not None
    status = service.supervisor.status(plugin_id)
    assert status is not None, f"the supervisor does not know plugin {plugin_id!r}"
    return status


def is_running(service: Service, plugin_id: str, restarts: int) -> bool:
    status = plugin_status(service, plugin_id)
    return status.state is PluginState.RUNNING and status.restarts == restarts


async def tick(service: Service, job_id: str) -> TickOutcome:
    outcome = await service.tick_now(job_id)
    assert outcome is not None, f"the tick of {job_id} was skipped by its overlap policy"
    return outcome


async def stored(service: Service, job_id: str) -> JobState:
    state = await service.store.get(job_id)
    assert state is not None
    return state


async def wait_for_last_status(
    service: Service, job_id: str, status: str, *, errors: int = 0, timeout_s: float = WAIT_S
) -> JobState:
    """Poll the store until the job's last committed status is ``status``, after at least
    ``errors`` failed slots in a row."""
    async with asyncio.timeout(timeout_s):
        while True:
            state = await service.store.get(job_id)
            if (
                state is not None
                and state.last_status == status
                and state.consecutive_errors >= errors
            ):
                return state
            await asyncio.sleep(POLL_S)


async def read_line(process: asyncio.subprocess.Process, timeout_s: float = WAIT_S) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        return (await process.stdout.readline()).decode().strip()


async def start_raw_plugin(
    spawn: Spawn, nats_url: str, plugin_id: str
) -> asyncio.subprocess.Process:
    """The plain nats-py plugin, started by hand as an external plugin; returns once it serves."""
    env = long_lived_env(
        nats_url, plugin_id=plugin_id, subject_prefix=f"pollerd.plugins.{plugin_id}"
    )
    process = await spawn(RAW_PLUGIN, env=env)
    assert await read_line(process) == "ready"
    return process


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``pollerd <args>`` as a real process; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pollerd.cli",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


# --- tests -------------------------------------------------------------------------------------


async def test_a_plugin_killed_mid_tick_fails_that_tick_and_resumes_from_the_committed_cursor(
    tmp_path: Path,
) -> None:
    # A long tick timeout: the killed tick must fail as soon as the process is gone, not at 30 s.
    write_plugin(tmp_path, "counter", "count", script=SDK_PLUGIN, tick_timeout="30s")
    arm = tmp_path / "arm"
    config = write_config(tmp_path, [job("counted", "count", config={"arm": str(arm)})])

    async with open_service(config) as service:
        first = await tick(service, "counted")
        committed = (await stored(service, "counted")).cursor
        before = plugin_status(service, "counter")
        assert before.pid is not None
        arm.touch()
        killed_tick = asyncio.create_task(tick(service, "counted"))
        await wait_for_condition(lambda: Path(f"{arm}{ENTERED_SUFFIX}").exists(), WAIT_S)
        os.kill(before.pid, signal.SIGKILL)
        killed = await killed_tick
        after_kill = await stored(service, "counted")
        await wait_for_condition(lambda: is_running(service, "counter", restarts=1), WAIT_S)
        resumed = await tick(service, "counted")
        final = await stored(service, "counted")
        restarted = plugin_status(service, "counter")

    assert first.ok and committed == b"+"
    assert not killed.ok and killed.status == "unavailable"
    assert "exited during the tick (killed by SIGKILL)" in (killed.error or "")
    assert killed.error_class is ErrorClass.TRANSIENT
    assert after_kill.cursor == committed and after_kill.last_status == killed.status
    assert not after_kill.paused and after_kill.broken_reason is None
    assert restarted.state is PluginState.RUNNING and restarted.restarts == 1
    assert restarted.pid not in (None, before.pid)
    assert restarted.last_exit == "killed by SIGKILL"
    assert resumed.ok and resumed.reply is not None
    assert [event.data for event in resumed.reply.events] == [{"cursor_in": encode_cursor(b"+")}]
    assert final.cursor == b"++"


async def test_a_plain_nats_external_plugin_gets_ticks_and_its_cursors_round_trip_byte_for_byte(
    tmp_path: Path, nats_server: EmbeddedNatsServer, spawn: Spawn
) -> None:
    write_plugin(tmp_path, "raw", "raw_count", script=None)
    config = write_config(tmp_path, [job("rawjob", "raw_count")], nats_url=nats_server.url)
    await start_raw_plugin(spawn, nats_server.url, "raw")
    start = b"\xfb\xff\xbf\x00\xfe\n"  # base64url "-_-_AP4K": both URL-safe characters
    expected = [start]
    for _ in range(4):
        expected.append(expected[-1] + bytes([len(expected[-1]) % 256]))

    async with open_service(config) as service:
        await service.store.update("rawjob", JobUpdate(cursor=start))
        outcomes = [await tick(service, "rawjob") for _ in range(4)]
        final = await stored(service, "rawjob")
        status = plugin_status(service, "raw")

    assert encode_cursor(start) == "-_-_AP4K"
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert [o.reply.next_cursor if o.reply else None for o in outcomes] == expected[1:]
    assert final.cursor == expected[-1]
    assert status.state is PluginState.EXTERNAL


async def wait_for_failed_slots(service: Service, job_id: str, status: str, slots: int) -> JobState:
    """Poll the store until ``slots`` more failures with ``status`` were committed in a row."""
    first = await wait_for_last_status(service, job_id, status)
    async with asyncio.timeout(WAIT_S):
        while True:
            state = await service.store.get(job_id)
            assert state is not None
            if state.last_status == status and state.revision >= first.revision + slots:
                return state
            await asyncio.sleep(POLL_S)


async def test_ticks_fail_as_unavailable_while_nats_is_down_and_resume_when_it_is_back(
    tmp_path: Path, nats_server: EmbeddedNatsServer, spawn: Spawn
) -> None:
    write_plugin(tmp_path, "raw", "raw_count", script=None, tick_timeout="1s")
    write_plugin(tmp_path, "counter", "count", script=SDK_PLUGIN, tick_timeout="1s")
    # A breaker that opens after 2 failed slots (for a 30 s cooldown): pollerd's own NATS
    # outage must not open it, or the jobs would stay silent long after NATS is back.
    breaker = {"threshold": 2, "cooldown": "30s"}
    jobs = [
        job("rawjob", "raw_count", every="200ms", breaker=breaker),
        job("counted", "count", every="200ms", breaker=breaker),
    ]
    config = write_config(tmp_path, jobs, nats_url=nats_server.url)
    raw = await start_raw_plugin(spawn, nats_server.url, "raw")

    async with open_service(config, schedule=True) as service:
        supervised = plugin_status(service, "counter")
        for job_id in ("rawjob", "counted"):
            await wait_for_last_status(service, job_id, "ok")
        await nats_server.stop()
        down = {
            job_id: await wait_for_failed_slots(service, job_id, "unavailable", DOWN_SLOTS)
            for job_id in ("rawjob", "counted")
        }
        await nats_server.start()
        back = {
            job_id: await wait_for_last_status(service, job_id, "ok")
            for job_id in ("rawjob", "counted")
        }
        raw_said = await read_line(raw)
        after = plugin_status(service, "counter")

    for state in down.values():
        assert state.consecutive_errors == 0  # not the plugins' failures: not counted
        assert state.breaker_open_until is None
        assert "NATS connection" in (state.last_error or "")
        assert not state.paused and state.broken_reason is None
    for job_id, state in back.items():
        assert state.consecutive_errors == 0, job_id
        assert state.cursor is not None and state.cursor != down[job_id].cursor, job_id
    assert raw_said == "reconnected"
    # The supervised plugin reconnected by itself: it was neither killed nor restarted.
    assert after.state is PluginState.RUNNING
    assert after.restarts == 0 and after.pid == supervised.pid


async def test_a_tick_to_an_external_plugin_that_is_not_running_fails_fast_as_unavailable(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    write_plugin(tmp_path, "absent", "absent_kind", script=None, tick_timeout="30s")
    config = write_config(tmp_path, [job("orphan", "absent_kind")], nats_url=nats_server.url)

    code, out, _err = await run_cli("tick", "orphan", "-c", str(config), cwd=tmp_path)
    async with open_service(config) as service:
        state = await stored(service, "orphan")

    result = json.loads(out)
    assert code == 1
    assert result["status"] == "unavailable" and result["committed"] is True
    assert "no plugin serves pollerd.plugins.absent.tick" in result["error"]
    assert result["duration_s"] < 1.0  # the tick timeout is 30 s
    assert state.last_status == "unavailable" and state.consecutive_errors == 1
    assert state.cursor is None


async def test_pollerd_plugins_shows_the_running_services_states_restarts_and_last_exit(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "counter", "count", script=SDK_PLUGIN)
    write_plugin(tmp_path, "raw", "raw_count", script=None)
    http = f"{LOOPBACK}:{free_port()}"
    config = write_config(tmp_path, [job("counted", "count")], http=http)
    cli = ("-c", str(config))

    offline_code, offline_out, _ = await run_cli("plugins", "--json", *cli, cwd=tmp_path)
    async with open_service(config, http=True) as service:
        first = plugin_status(service, "counter")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await wait_for_condition(lambda: is_running(service, "counter", restarts=1), WAIT_S)
        live_code, live_out, _ = await run_cli("plugins", "--json", *cli, cwd=tmp_path)
        table_code, table, _ = await run_cli("plugins", *cli, cwd=tmp_path)
        restarted = plugin_status(service, "counter")

    offline, live = by_id(json.loads(offline_out)), by_id(json.loads(live_out))
    assert offline_code == live_code == table_code == 0
    assert offline["counter"]["state"] == "stopped" and offline["counter"]["restarts"] == 0
    assert offline["raw"]["state"] == "external"
    assert live["counter"]["state"] == "running" and live["counter"]["restarts"] == 1
    assert live["counter"]["last_exit"] == "killed by SIGKILL"
    assert live["counter"]["pid"] == restarted.pid
    assert live["raw"]["state"] == "external" and live["raw"]["restarts"] == 0
    counter_line = next(line for line in table.splitlines() if line.startswith("counter "))
    assert counter_line.split()[3:] == ["running", "1", "killed", "by", "SIGKILL"]


async def test_a_plugin_that_exits_at_start_up_is_failed_with_its_stderr_and_its_jobs_fail_fast(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "doomed", "doom", script=CRASH_PLUGIN, tick_timeout="30s")
    port = free_port()
    config = write_config(tmp_path, [job("doomjob", "doom")], http=f"{LOOPBACK}:{port}")

    async with open_service(config, http=True) as service:
        status = plugin_status(service, "doomed")
        readiness = service.readiness()
        _, rows = await call(LOOPBACK, port, "GET", "/v1/plugins")
        ready_code, ready = await call(LOOPBACK, port, "GET", "/readyz")
        outcome = await tick(service, "doomjob")
        _, table, _ = await run_cli("plugins", "-c", str(config), cwd=tmp_path)

    row = by_id(rows)["doomed"]
    assert status.state is PluginState.FAILED and status.restarts == MAX_RESTARTS
    assert status.reason is not None
    assert f"gave up after {MAX_RESTARTS} restarts" in status.reason
    assert "cannot start: line 12" in status.reason and "cannot start: line 3" in status.reason
    assert row["state"] == "failed" and row["restarts"] == MAX_RESTARTS
    assert row["last_exit"] == "exit code 3" and row["reason"] == status.reason
    doomed_line = next(line for line in table.splitlines() if line.startswith("doomed "))
    assert doomed_line.split()[3:] == ["failed", str(MAX_RESTARTS), "exit", "code", "3"]
    assert "  doomed: gave up after" in table and "    cannot start: line 12" in table
    assert readiness["plugins"] is not None
    assert "doomed is failed" in readiness["plugins"] and "line 12" in readiness["plugins"]
    assert ready_code == 503 and "doomed is failed" in json.dumps(ready)
    assert outcome.status == "unavailable" and outcome.error_class is ErrorClass.TRANSIENT
    assert outcome.duration_s < 1.0  # the tick timeout is 30 s
    assert "failed" in (outcome.error or "")
