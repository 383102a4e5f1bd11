"""The `pollerd` command as an operator runs it: a real process, its output and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port, process_exists, wait_process_gone
from pollerd.stores.base import JobState, JobUpdate
from pollerd.stores.sqlite import SqliteStore

REPO = Path(__file__).parents[1]
CORE = Path(__file__).parent / "fixtures" / "core"
CORE_PLUGINS = CORE / "plugins"
COMMAND_TIMEOUT_S = 30.0
LOG_TIMEOUT_S = 10.0
SAMPLE_LONGEST_INTERVAL_S = 16.0  # pollers.yaml's every-jobs: 5 s, and 15 s with 1 s of jitter
EXIT_TIMEOUT_S = 5.0

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
JOBS_JSON_KEYS = {
    "id",
    "kind",
    "plugin",
    "lifecycle",
    "state",
    "last_status",
    "last_run_at",
    "consecutive_errors",
    "cursor",
    "next_run_at",
}

# Two good jobs and two bad ones, with the bad lines at known places (the tests name them).
MIXED_CONFIG = """\
version: 1
state_dir: state
plugins: [{plugins}]
http: {http}
defaults:
  retry: {{attempts: 1}}
jobs:
  - id: good
    kind: faulty
    schedule: {{every: 1h}}
    config: {{next_cursor: AQ}}
  - id: unknown
    kind: nope
    schedule: {{every: 1h}}
  - id: badcron
    kind: faulty
    schedule: {{cron: "61 * * * *"}}
  - id: failing
    kind: faulty
    schedule: {{every: 1h}}
    config: {{mode: bad_cursor}}
"""
UNKNOWN_KIND_LINE = 13
BAD_CRON_LINE = 17


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def pollerd(*args: str, cwd: Path) -> Result:
    """Run the CLI to completion, in ``cwd``, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "pollerd.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def write_mixed_config(folder: Path, http: str = "off", every: str = "1h") -> Path:
    """MIXED_CONFIG; a short ``every`` makes the good jobs tick soon after start (a job first
    ticks at its phase within one interval, not at start)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pollers.yaml"
    text = MIXED_CONFIG.format(plugins=CORE_PLUGINS, http=http)
    path.write_text(text.replace("{every: 1h}", f"{{every: {every}}}"))
    return path


def row(rows: list[dict[str, Any]], job_id: str) -> dict[str, Any]:
    return next(r for r in rows if r["id"] == job_id)


def state_db(folder: Path) -> SqliteStore:
    """The store the mixed config uses (``state_dir: state`` next to the file)."""
    return SqliteStore(folder / "state" / "state.db")


def store_cursor(folder: Path, job_id: str, cursor: bytes | None) -> None:
    """Write a job's cursor straight into the store, as a previous run would have."""

    async def write() -> None:
        async with state_db(folder) as store:
            await store.ensure(job_id, "faulty")
            await store.update(job_id, JobUpdate(cursor=cursor))

    asyncio.run(write())


def stored_state(folder: Path, job_id: str) -> JobState:
    """Read a job's state straight from the store."""

    async def read() -> JobState | None:
        async with state_db(folder) as store:
            return await store.get(job_id)

    state = asyncio.run(read())
    assert state is not None, f"{job_id} is not in the store"
    return state


def stored_cursor(folder: Path, job_id: str) -> bytes | None:
    return stored_state(folder, job_id).cursor


# -- check ---------------------------------------------------------------------------------------


def test_check_names_the_kind_both_plugins_and_both_manifests_when_two_plugins_share_a_kind(
    tmp_path: Path,
) -> None:
    plugins = CORE / "dup_plugins"
    (tmp_path / "pollers.yaml").write_text(
        f"version: 1\nplugins: [{plugins}]\nhttp: off\njobs: []\n"
    )

    result = pollerd("check", "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode != EXIT_OK
    output = result.stdout + result.stderr
    assert "'shared'" in output
    assert "'alpha'" in output and "'beta'" in output
    assert str(plugins / "alpha" / "plugin.toml") in output
    assert str(plugins / "beta" / "plugin.toml") in output


def test_check_reports_an_unknown_kind_and_a_bad_cron_by_file_line_and_field_and_exits_1(
    tmp_path: Path,
) -> None:
    write_mixed_config(tmp_path)

    result = pollerd("check", "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode == EXIT_FAILED
    problems = [line for line in result.stdout.splitlines() if line.startswith("broken: ")]
    assert len(problems) == 2, result.stdout
    assert problems[0].startswith(
        f"broken: pollers.yaml:{UNKNOWN_KIND_LINE}: jobs[1].kind: unknown kind 'nope'"
    )
    assert problems[1].startswith(f"broken: pollers.yaml:{BAD_CRON_LINE}: jobs[2].schedule.cron: ")
    assert "2 problem(s)" in result.stdout


def test_messages_name_the_config_as_the_operator_gave_it_and_paths_resolve_from_the_file(
    tmp_path: Path,
) -> None:
    write_mixed_config(tmp_path / "conf")

    result = pollerd("check", "-c", "conf/pollers.yaml", cwd=tmp_path)

    problems = [line for line in result.stdout.splitlines() if line.startswith("broken: ")]
    assert [line.split(":")[1] for line in problems] == [" conf/pollers.yaml", " conf/pollers.yaml"]
    assert str(tmp_path) not in "\n".join(problems)
    # The plugins were found (one error is about a kind, not about a missing folder)...
    assert "known kinds: faulty, raw_cursor" in result.stdout
    # ...and the state lives next to the file, not in the working directory.
    assert pollerd("jobs", "-c", "conf/pollers.yaml", cwd=tmp_path).returncode == EXIT_OK
    assert (tmp_path / "conf" / "state").is_dir() and not (tmp_path / "state").exists()


# -- exit codes ----------------------------------------------------------------------------------


def test_a_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = pollerd("check", "-c", "missing.yaml", cwd=tmp_path)

    assert result.returncode == EXIT_USAGE
    assert "missing.yaml" in result.stderr


def test_malformed_yaml_exits_2_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pollers.yaml").write_text("version: 1\njobs:\n  - id: [inbox\n    kind: x\n")

    result = pollerd("jobs", "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode == EXIT_USAGE
    assert re.search(r"pollerd: pollers\.yaml:\d+: malformed YAML", result.stderr), result.stderr


@pytest.mark.parametrize("args", [(), ("tick",), ("jobs", "--bogus")], ids=" ".join)
def test_a_usage_error_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = pollerd(*args, cwd=tmp_path)

    assert result.returncode == EXIT_USAGE
    assert "usage: pollerd" in result.stderr


# -- admin commands on the store (no service running) --------------------------------------------


def test_jobs_json_prints_an_array_with_the_contract_keys_for_every_job(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)

    result = pollerd("jobs", "-c", "pollers.yaml", "--json", cwd=tmp_path)

    assert result.returncode == EXIT_OK
    rows = result.json()
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == ["good", "failing", "unknown", "badcron"]
    for r in rows:
        assert JOBS_JSON_KEYS <= set(r), r["id"]
    good = row(rows, "good")
    assert (good["kind"], good["plugin"], good["lifecycle"]) == ("faulty", "faulty", "ephemeral")
    assert (good["state"], good["last_status"], good["cursor"]) == ("active", None, None)
    assert good["consecutive_errors"] == 0 and good["next_run_at"] is not None
    assert row(rows, "unknown")["state"] == "broken"


def test_cursor_set_get_and_reset_round_trip_in_base64url(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)
    value = "AP_7-_8"  # bytes 00 ff fb fb ff: both URL-safe digits, no padding

    set_result = pollerd("cursor", "set", "good", value, "-c", "pollers.yaml", cwd=tmp_path)
    stored = stored_cursor(tmp_path, "good")
    got = pollerd("cursor", "get", "good", "-c", "pollers.yaml", cwd=tmp_path)
    reset = pollerd("cursor", "reset", "good", cwd=tmp_path)

    assert set_result.returncode == EXIT_OK
    assert stored == b"\x00\xff\xfb\xfb\xff"
    assert (got.returncode, got.stdout) == (EXIT_OK, value + "\n")
    assert reset.returncode == EXIT_OK
    assert stored_cursor(tmp_path, "good") is None


def test_cursor_set_refuses_a_value_that_is_not_base64url_and_keeps_the_cursor(
    tmp_path: Path,
) -> None:
    write_mixed_config(tmp_path)
    store_cursor(tmp_path, "good", b"\x01")

    result = pollerd("cursor", "set", "good", "not base64!", cwd=tmp_path)

    assert result.returncode == EXIT_USAGE
    assert "base64" in result.stderr
    assert stored_cursor(tmp_path, "good") == b"\x01"


def test_pause_and_resume_change_the_state_that_jobs_json_shows(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)

    paused = pollerd("pause", "good", "--reason", "maintenance window", cwd=tmp_path)
    while_paused = row(pollerd("jobs", "--json", cwd=tmp_path).json(), "good")
    resumed = pollerd("resume", "good", cwd=tmp_path)
    after = row(pollerd("jobs", "--json", cwd=tmp_path).json(), "good")

    assert (paused.returncode, resumed.returncode) == (EXIT_OK, EXIT_OK)
    assert (while_paused["state"], while_paused["reason"]) == ("paused", "maintenance window")
    assert while_paused["next_run_at"] is None
    assert (after["state"], after["reason"]) == ("active", None)


def test_tick_dry_run_prints_the_reply_and_leaves_the_cursor(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)
    store_cursor(tmp_path, "good", b"\x00")

    result = pollerd("tick", "good", "--dry-run", cwd=tmp_path)

    assert result.returncode == EXIT_OK, result.stderr
    printed = result.json()
    assert (printed["status"], printed["committed"]) == ("ok", False)
    assert printed["reply"]["next_cursor"] == "AQ"
    state = stored_state(tmp_path, "good")
    assert (state.cursor, state.last_status, state.last_run_at) == (b"\x00", None, None)


def test_tick_commits_the_cursor_and_the_status(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)
    store_cursor(tmp_path, "good", b"\x00")

    result = pollerd("tick", "good", cwd=tmp_path)

    assert result.returncode == EXIT_OK, result.stderr
    assert (result.json()["status"], result.json()["committed"]) == ("ok", True)
    state = stored_state(tmp_path, "good")
    assert (state.cursor, state.last_status) == (b"\x01", "ok")
    assert state.last_run_at is not None


def test_a_failed_tick_exits_1_and_keeps_the_cursor(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)
    store_cursor(tmp_path, "failing", b"\x00")

    result = pollerd("tick", "failing", cwd=tmp_path)

    assert result.returncode == EXIT_FAILED
    assert result.json()["status"] == "protocol"
    state = stored_state(tmp_path, "failing")
    assert (state.cursor, state.last_status, state.consecutive_errors) == (b"\x00", "protocol", 1)


# -- run -----------------------------------------------------------------------------------------


@dataclass
class RunningPollerd:
    """`pollerd run` in a session of its own, its stderr collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self.changed.set()

    async def wait_for_lines(self, *patterns: str, timeout_s: float = LOG_TIMEOUT_S) -> None:
        """Wait until every pattern matches some log line; TimeoutError shows the log."""
        try:
            async with asyncio.timeout(timeout_s):
                while not all(self.matching(p) for p in patterns):
                    if self.process.returncode is not None:
                        raise AssertionError("pollerd exited:\n" + self.log)
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no log line for {patterns} in:\n{self.log}") from None

    def matching(self, pattern: str) -> list[re.Match[str]]:
        found = (re.search(pattern, line) for line in self.lines)
        return [m for m in found if m is not None]

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)


@asynccontextmanager
async def running_pollerd(config: Path, cwd: Path) -> AsyncIterator[RunningPollerd]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pollerd.cli",
        "run",
        "-c",
        str(config),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    running = RunningPollerd(process)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(running.collect())
        try:
            yield running
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, found through the parent pids in /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


async def test_run_marks_bad_jobs_broken_and_runs_the_others(tmp_path: Path) -> None:
    write_mixed_config(tmp_path, http=f"127.0.0.1:{free_port()}", every="1s")

    async with running_pollerd(Path("pollers.yaml"), tmp_path) as running:
        await running.wait_for_lines(
            r"tick job_id=good .*outcome=ok", r"tick job_id=failing .*outcome=protocol"
        )
        listed = await asyncio.to_thread(pollerd, "jobs", "--json", cwd=tmp_path)
        running.interrupt()
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            returncode = await running.process.wait()

    assert returncode == EXIT_OK, running.log
    assert running.matching(r"tick job_id=good .*outcome=ok")
    assert running.matching(
        rf"job unknown is broken and will not run: pollers\.yaml:{UNKNOWN_KIND_LINE}: "
    )
    assert running.matching(
        rf"job badcron is broken and will not run: pollers\.yaml:{BAD_CRON_LINE}: "
    )
    rows = listed.json()
    good, unknown, badcron = (row(rows, job_id) for job_id in ("good", "unknown", "badcron"))
    assert (good["state"], good["last_status"], good["cursor"]) == ("active", "ok", "AQ")
    assert unknown["state"] == badcron["state"] == "broken"
    assert unknown["reason"].startswith(f"pollers.yaml:{UNKNOWN_KIND_LINE}: jobs[1].kind: ")
    assert badcron["reason"].startswith(f"pollers.yaml:{BAD_CRON_LINE}: jobs[2].schedule.cron: ")


async def test_tick_dry_run_while_the_service_runs_asks_it_instead_of_starting_a_second_nats(
    tmp_path: Path,
) -> None:
    write_mixed_config(tmp_path, http=f"127.0.0.1:{free_port()}", every="1s")
    marker = tmp_path / "state" / "nats" / "url"

    async with running_pollerd(Path("pollers.yaml"), tmp_path) as running:
        await running.wait_for_lines(r"tick job_id=good .*outcome=ok", r"admin API on")
        url = marker.read_text()
        dry = await asyncio.to_thread(pollerd, "tick", "good", "--dry-run", cwd=tmp_path)
        url_after = marker.read_text()
        running.interrupt()
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            await running.process.wait()

    assert dry.returncode == EXIT_OK, dry.stderr
    assert (dry.json()["status"], dry.json()["committed"]) == ("ok", False)
    assert "nats-server" not in dry.stderr
    assert url_after == url
    dry_tick_id = re.escape(dry.json()["tick_id"])
    assert running.matching(rf"tick job_id=good .*tick_id={dry_tick_id} ") == []  # not logged


SLOW_CONFIG = """\
version: 1
state_dir: state
plugins: [{plugins}]
http: 127.0.0.1:{port}
jobs:
  - id: slow
    kind: faulty
    schedule: {{cron: "0 0 1 1 *"}}
    tick_timeout: 15s
    config: {{mode: slow, sleep_s: 5.5, next_cursor: AQ}}
"""


@pytest.mark.slow
async def test_tick_waits_for_a_tick_the_service_runs_as_long_as_the_tick_may_take(
    tmp_path: Path,
) -> None:
    # Longer than the admin client's default 5 s timeout, well inside the job's tick_timeout.
    config = tmp_path / "pollers.yaml"
    config.write_text(SLOW_CONFIG.format(plugins=CORE_PLUGINS, port=free_port()))

    async with running_pollerd(Path("pollers.yaml"), tmp_path) as running:
        await running.wait_for_lines(r"admin API on")
        result = await asyncio.to_thread(pollerd, "tick", "slow", cwd=tmp_path)
        running.interrupt()
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            await running.process.wait()

    assert result.returncode == EXIT_OK, result.stderr
    assert (result.json()["status"], result.json()["committed"]) == ("ok", True)
    assert running.matching(r"tick job_id=slow .*outcome=ok")


def copy_of_the_sample(tmp_path: Path) -> Path:
    """The repository's pollers.yaml and samples, with its plugins, state here and a free port."""
    shutil.copytree(REPO / "samples", tmp_path / "samples")
    text = (REPO / "pollers.yaml").read_text()
    assert "state_dir: .pollerd" in text, "the sample keeps its state next to the file"
    for old, new in (
        ("plugins: [plugins]", f"plugins: [{REPO / 'plugins'}]"),
        ("http: 127.0.0.1:9180", f"http: 127.0.0.1:{free_port()}"),
    ):
        assert text.count(old) == 1, f"the sample pollers.yaml no longer says {old!r}"
        text = text.replace(old, new)
    config = tmp_path / "pollers.yaml"
    config.write_text(text)
    return config


@pytest.mark.slow
async def test_the_sample_config_ticks_its_jobs_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    copy_of_the_sample(tmp_path)

    async with running_pollerd(Path("pollers.yaml"), tmp_path) as running:
        await running.wait_for_lines(
            r"tick job_id=inbox kind=dir_watch plugin=files .*outcome=ok",
            r"tick job_id=pollerd-news kind=rss plugin=feeds .*outcome=ok",
            r"embedded nats-server pid \d+ listening",
            r"plugin feeds is running \(pid \d+\)",
            # Each job first ticks at its phase, within its interval (15 s + 1 s of jitter).
            timeout_s=LOG_TIMEOUT_S + SAMPLE_LONGEST_INTERVAL_S,
        )
        children = descendants(running.process.pid)
        running.interrupt()
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            returncode = await running.process.wait()

    logged_pids = {
        int(running.matching(r"embedded nats-server pid (\d+)")[0][1]),
        int(running.matching(r"plugin feeds is running \(pid (\d+)\)")[0][1]),
    }
    assert returncode == EXIT_OK, running.log
    assert logged_pids <= children
    for pid in children:
        await wait_process_gone(pid, EXIT_TIMEOUT_S)
    assert not any(process_exists(pid) for pid in children)
    assert not running.matching(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback"), running.log
    assert running.matching(r"pollerd stopped")
