"""What an operator sees of `pollerd run`: health, readiness, metrics, admin commands and logs.

Each test runs the real service as a subprocess on a config in tmp_path (admin HTTP on a free
loopback port, state in tmp_path) and talks to it the way an operator does: HTTP and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES_DIR, free_port, wait_for_condition
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.ops.adminclient import call
from pollerd.wire import decode_cursor, encode_cursor

pytestmark = pytest.mark.slow

OPERATOR_DIR = FIXTURES_DIR / "operator"
BASIC_PLUGINS = OPERATOR_DIR / "basic"  # opcount: ephemeral, kind op_count
SUPERVISED_PLUGINS = OPERATOR_DIR / "supervised"  # flaky: long-lived, kind flaky_echo
FLAKY_READY_FILE = "flaky.ready"
LOOPBACK = "127.0.0.1"
TOKEN_VARIABLE = "POLLERD_ADMIN_TOKEN"
TOKEN = "s3cret-admin-token"
WAIT_S = 15.0
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
CLI_TIMEOUT_S = 30.0
POLL_S = 0.05
PAUSE_EFFECT_S = 1.0  # a paused job's ticks stop within this
FAST_EVERY = "200ms"
TICK_FIELDS = ("job_id", "kind", "plugin", "tick_id", "outcome", "duration")
_METRIC = re.compile(r"^pollerd_ticks_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


# --- a running pollerd -------------------------------------------------------------------------


@dataclass
class Pollerd:
    """`pollerd run` as a subprocess, with its log lines collected as they come."""

    process: asyncio.subprocess.Process
    config: Path
    port: int
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return await call(LOOPBACK, self.port, "GET", path, token=token)

    async def post(self, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        return await call(LOOPBACK, self.port, "POST", path, token=token, json=body)

    async def cli(self, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        """Run `pollerd <args> -c <config>` (the real CLI); exit code, stdout, stderr."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pollerd",
            *args,
            "-c",
            str(self.config),
            env=dict(self.env if env is None else env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    def tick_lines(self, job_id: str, outcome: str = "ok") -> list[str]:
        """The service's log lines about finished ticks of ``job_id`` with ``outcome``."""
        return [
            line
            for line in self.lines
            if f"tick job_id={job_id} " in line and f"outcome={outcome} " in line
        ]

    def skip_lines(self, job_id: str, reason: str) -> list[str]:
        return [
            line
            for line in self.lines
            if f"tick job_id={job_id} " in line and f"skipped: {reason}" in line
        ]

    async def wait_readiness(self, status: int, reason: str | None = None) -> dict[str, Any]:
        """Poll /readyz until it answers ``status`` (and names ``reason``); the last answer."""
        answers: list[tuple[int, Any]] = []

        async def matches() -> bool:
            answer = await self.get("/readyz")
            answers.append(answer)
            code, body = answer
            return code == status and (reason is None or reason in json.dumps(body))

        try:
            await wait_until(matches)
        except TimeoutError:
            message = f"/readyz never answered {status} {reason!r}: {answers[-3:]}"
            raise AssertionError(message) from None
        _, body = answers[-1]
        assert isinstance(body, dict), body
        return body


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Await ``condition`` every few milliseconds until it holds; TimeoutError after timeout_s."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - polling a remote state over HTTP
            await asyncio.sleep(POLL_S)


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip("\n"))


StartPollerd = Callable[..., Awaitable[Pollerd]]


@pytest.fixture
async def start_pollerd() -> AsyncIterator[StartPollerd]:
    """Start `pollerd run` on a config; SIGTERM (then SIGKILL) and reap every one after the test."""
    running: list[tuple[Pollerd, asyncio.Task[None]]] = []

    async def start(
        config: Path, port: int, *, env: Mapping[str, str] | None = None, json_logs: bool = False
    ) -> Pollerd:
        full_env = {**os.environ, **(env or {})}
        log_format = ["--log-format", "json"] if json_logs else []
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pollerd",
            *log_format,
            "run",
            "-c",
            str(config),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        pollerd = Pollerd(process, config, port, full_env)
        assert process.stderr is not None
        running.append((pollerd, asyncio.create_task(_collect(process.stderr, pollerd.lines))))

        async def healthy() -> bool:
            if process.returncode is not None:
                log = "\n".join(pollerd.lines)
                raise AssertionError(f"pollerd exited with {process.returncode}:\n{log}")
            try:
                code, _ = await pollerd.get("/healthz")
            except Exception:
                return False
            return code == 200

        await wait_until(healthy, START_TIMEOUT_S)
        return pollerd

    yield start
    for pollerd, reader in running:
        process = pollerd.process
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


def write_config(
    folder: Path,
    port: int,
    jobs: list[dict[str, Any]],
    *,
    plugins: Path = BASIC_PLUGINS,
    nats: str | None = None,
    token: bool = False,
) -> Path:
    """pollers.yaml in ``folder`` (JSON is YAML); state in folder/state."""
    listen = f"{LOOPBACK}:{port}"
    config: dict[str, Any] = {
        "version": 1,
        "state_dir": "state",
        "plugins": [str(plugins)],
        "http": {"listen": listen, "token": "${" + TOKEN_VARIABLE + "}"} if token else listen,
        "shutdown_grace": "1s",
        "defaults": {"retry": {"attempts": 1}, "breaker": {"threshold": 1000}},
        "jobs": jobs,
    }
    if nats is not None:
        config["nats"] = {"url": nats}
    path = folder / "pollers.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def count_job(job_id: str, every: str = FAST_EVERY) -> dict[str, Any]:
    return {"id": job_id, "kind": "op_count", "schedule": {"every": every}}


def ticks_total(metrics_text: str, job_id: str, outcome: str = "ok") -> float:
    """The value of ``pollerd_ticks_total`` for one job and outcome (0 when not exported yet)."""
    for found in _METRIC.finditer(metrics_text):
        labels = found.group("labels")
        if f'job_id="{job_id}"' in labels and f'outcome="{outcome}"' in labels:
            return float(found.group("value"))
    return 0.0


# --- health and metrics ------------------------------------------------------------------------


async def test_healthz_answers_and_the_tick_counters_move_between_scrapes(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    pollerd = await start_pollerd(write_config(tmp_path, port, [count_job("fast")]), port)

    health = await pollerd.get("/healthz")
    _, first = await pollerd.get("/metrics")
    before = ticks_total(first, "fast")
    scrapes: list[str] = []

    async def counter_moved() -> bool:
        _, text = await pollerd.get("/metrics")
        scrapes.append(text)
        return ticks_total(text, "fast") > before

    await wait_until(counter_moved)

    assert health == (200, {"status": "ok"})
    assert "# TYPE pollerd_ticks_total counter" in first
    assert ticks_total(scrapes[-1], "fast") > before


# --- readiness ---------------------------------------------------------------------------------


async def test_readyz_names_a_plugin_in_backoff_and_is_ready_again_once_it_recovers(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    jobs = [{"id": "echo", "kind": "flaky_echo", "schedule": {"every": "1h"}}]
    config = write_config(tmp_path, port, jobs, plugins=SUPERVISED_PLUGINS)
    pollerd = await start_pollerd(config, port)

    backoff = await pollerd.wait_readiness(503, "flaky is backoff")
    health = await pollerd.get("/healthz")
    (tmp_path / FLAKY_READY_FILE).touch()
    ready = await pollerd.wait_readiness(200)
    _, plugins = await pollerd.get("/v1/plugins")

    assert "exit code 3" in backoff["reasons"]["plugins"]
    assert backoff["reasons"]["service"] == "starting"  # the supervisor waits for the plugin
    assert health[0] == 200
    assert ready["status"] == "ready"
    [flaky] = plugins
    assert flaky["state"] == "running" and flaky["restarts"] >= 1


async def test_a_state_db_deleted_while_running_is_recreated_with_every_cursor_kept(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("fast")])
    pollerd = await start_pollerd(config, port)
    await pollerd.wait_readiness(200)
    db = tmp_path / "state" / "state.db"
    await wait_for_condition(lambda: len(pollerd.tick_lines("fast")) >= 2, WAIT_S)

    for leftover in db.parent.glob("state.db*"):
        leftover.unlink()
    await wait_for_condition(lambda: db.exists(), WAIT_S)
    deleted_at = len(pollerd.tick_lines("fast"))
    await wait_for_condition(lambda: len(pollerd.tick_lines("fast")) >= deleted_at + 3, WAIT_S)
    ready = await pollerd.wait_readiness(200)
    code, _, _ = await pollerd.cli("cursor", "get", "fast")  # the CLI reads the new file
    pollerd.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(STOP_TIMEOUT_S):
        await pollerd.process.wait()
    _, cursor, _ = await pollerd.cli("cursor", "get", "fast")

    assert any("was deleted while pollerd runs: recreated it" in line for line in pollerd.lines)
    assert ready["status"] == "ready"
    assert code == 0
    # The count went on from before the deletion: nothing was reset to zero.
    assert int(decode_cursor(cursor.strip())) >= deleted_at + 3


async def test_a_state_db_replaced_while_running_is_not_written_and_readyz_names_the_store(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    pollerd = await start_pollerd(write_config(tmp_path, port, [count_job("fast")]), port)
    await pollerd.wait_readiness(200)
    db = tmp_path / "state" / "state.db"

    copy = db.with_name("copy.db")
    shutil.copyfile(db, copy)
    copy.replace(db)  # a new file (another inode) at the same path
    not_ready = await pollerd.wait_readiness(503, "store")
    await wait_for_condition(lambda: bool(pollerd.tick_lines("fast", "store")), WAIT_S)
    health = await pollerd.get("/healthz")
    metrics = await pollerd.get("/metrics")

    assert "replaced by another file" in not_ready["reasons"]["store"]
    assert "replaced by another file" in pollerd.tick_lines("fast", "store")[0]
    assert ticks_total(metrics[1], "fast", "store") >= 1
    assert health[0] == 200


@pytest.mark.nats
async def test_losing_an_external_nats_makes_readyz_name_nats_without_a_500(
    tmp_path: Path, start_pollerd: StartPollerd, nats_server: EmbeddedNatsServer
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("fast")], nats=nats_server.url)
    pollerd = await start_pollerd(config, port)
    await pollerd.wait_readiness(200)

    await nats_server.stop()
    not_ready = await pollerd.wait_readiness(503, "nats")
    health = await pollerd.get("/healthz")
    metrics = await pollerd.get("/metrics")

    assert nats_server.url.removeprefix("nats://") in not_ready["reasons"]["nats"]
    assert health[0] == 200
    assert metrics[0] == 200


# --- admin commands against the running service ------------------------------------------------


async def test_pause_stops_a_jobs_ticks_within_a_second_and_resume_restarts_them(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    jobs = [count_job("fast"), count_job("other")]
    pollerd = await start_pollerd(write_config(tmp_path, port, jobs), port)
    await wait_for_condition(lambda: len(pollerd.tick_lines("fast")) >= 1, WAIT_S)

    paused = await pollerd.cli("pause", "fast", "--reason", "maintenance")
    paused_at = asyncio.get_running_loop().time()
    await wait_for_condition(lambda: len(pollerd.skip_lines("fast", "paused")) >= 1, WAIT_S)
    first_skip_after_s = asyncio.get_running_loop().time() - paused_at
    ok_while_paused = len(pollerd.tick_lines("fast"))
    others_while_paused = len(pollerd.tick_lines("other"))
    # Three more slots come and go while the job stays paused.
    await wait_for_condition(lambda: len(pollerd.skip_lines("fast", "paused")) >= 4, WAIT_S)
    ok_after_slots = len(pollerd.tick_lines("fast"))
    _, row = await pollerd.get("/v1/jobs/fast")
    _, metrics = await pollerd.get("/metrics")

    resumed = await pollerd.cli("resume", "fast")
    await wait_for_condition(lambda: len(pollerd.tick_lines("fast")) > ok_after_slots, WAIT_S)

    assert paused[0] == 0 and "applied by the running service" in paused[1]
    assert first_skip_after_s < PAUSE_EFFECT_S
    assert ok_after_slots == ok_while_paused
    assert ticks_total(metrics, "fast") == ok_while_paused
    assert len(pollerd.tick_lines("other")) > others_while_paused  # the other job kept ticking
    assert (row["state"], row["reason"]) == ("paused", "maintenance")
    assert resumed[0] == 0 and "applied by the running service" in resumed[1]


async def test_cursor_set_is_what_the_plugin_sees_on_a_tick_run_through_the_service(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    # Every day: the job is stored at start and does not tick on its own during the test (its
    # first slot is at its phase within the day); the one tick is the one the test asks for.
    pollerd = await start_pollerd(write_config(tmp_path, port, [count_job("slow", "1d")]), port)
    chosen = encode_cursor(b"set by the operator")

    set_code, set_out, _ = await pollerd.cli("cursor", "set", "slow", chosen)
    tick_code, tick_out, _ = await pollerd.cli("tick", "slow")
    outcome = json.loads(tick_out)
    await wait_for_condition(lambda: len(pollerd.tick_lines("slow")) == 1, WAIT_S)
    _, row = await pollerd.get("/v1/jobs/slow")

    assert (set_code, set_out.strip()) == (0, chosen)
    assert tick_code == 0
    assert (outcome["status"], outcome["committed"]) == ("ok", True)
    [event] = outcome["reply"]["events"]
    assert event["data"]["seen_cursor"] == chosen
    assert outcome["tick_id"] in pollerd.tick_lines("slow")[-1]  # the service ran it
    assert decode_cursor(row["cursor"]) == b"1"  # what the plugin returned, committed


async def test_an_admin_token_guards_every_post_and_the_cli_sends_it_from_the_config(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("slow", "1h")], token=True)
    pollerd = await start_pollerd(config, port, env={TOKEN_VARIABLE: TOKEN})

    missing = await pollerd.post("/v1/jobs/slow/pause")
    wrong = await pollerd.post("/v1/jobs/slow/pause", token="not-the-token")
    reads = await pollerd.get("/v1/jobs/slow")
    allowed = await pollerd.post("/v1/jobs/slow/pause", token=TOKEN)
    cli_resume = await pollerd.cli("resume", "slow")
    bad_env = {**pollerd.env, TOKEN_VARIABLE: "not-the-token"}
    cli_refused = await pollerd.cli("pause", "slow", env=bad_env)
    _, row = await pollerd.get("/v1/jobs/slow")

    assert missing[0] == 401 and "token" in missing[1]["error"]
    assert wrong[0] == 401
    assert reads[0] == 200
    assert allowed[0] == 200 and allowed[1]["state"] == "paused"
    assert cli_resume[0] == 0 and "applied by the running service" in cli_resume[1]
    assert cli_refused[0] == 1 and "401" in cli_refused[2]
    assert row["state"] == "active"


# --- logs --------------------------------------------------------------------------------------


async def test_json_logs_are_one_object_per_line_and_tick_lines_carry_the_tick_fields(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [count_job("fast")])
    pollerd = await start_pollerd(config, port, json_logs=True)
    await wait_for_condition(lambda: len(pollerd.tick_lines("fast")) >= 2, WAIT_S)

    entries = [json.loads(line) for line in list(pollerd.lines)]
    ticks = [entry for entry in entries if entry["logger"] == "pollerd.tick"]
    finished = [entry for entry in ticks if entry["outcome"] != "skipped"]

    assert all(isinstance(entry, dict) and entry["message"] for entry in entries)
    assert len(finished) >= 2
    assert {entry["outcome"] for entry in finished} == {"ok"}
    for entry in ticks:
        assert all(entry.get(name) is not None for name in TICK_FIELDS), entry
        assert (entry["job_id"], entry["kind"], entry["plugin"]) == ("fast", "op_count", "opcount")
        assert entry["tick_id"].startswith("fast@")
        assert isinstance(entry["duration"], float)
