"""Hot reload of a running `pollerd run`: file edits, SIGHUP and `pollerd reload`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from fixtures.semantics.kit import (
    job,
    pollerd_run,
    read_runs,
    wait_until,
    write_config,
    write_plugin,
)
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.ops.adminclient import call

INTERVAL = "300ms"
RELOAD_WITHIN_S = 2.0
CLI_TIMEOUT_S = 20.0
KEPT_TICKS = 2  # a history shorter than the ticks the test waits for


@dataclass
class Running:
    """A `pollerd run` subprocess on a config with the scripted jobs ``a`` and ``b``."""

    tmp_path: Path
    config: Path
    port: int
    nats_url: str
    process: asyncio.subprocess.Process | None = None

    @property
    def output(self) -> str:
        return self.config.with_suffix(".log").read_text()

    def log(self, job_id: str) -> Path:
        return self.tmp_path / f"{job_id}.log"

    def write(self, jobs: list[dict[str, Any]], **top: Any) -> None:
        write_config(
            self.config,
            jobs,
            http=f"127.0.0.1:{self.port}",
            nats=self.nats_url,
            **top,
        )

    def job(self, job_id: str, schedule: str = INTERVAL) -> dict[str, Any]:
        return job(job_id, self.log(job_id), schedule=schedule)

    async def jobs(self) -> dict[str, dict[str, Any]]:
        status, rows = await call("127.0.0.1", self.port, "GET", "/v1/jobs")
        assert status == 200
        return {row["id"]: row for row in rows}

    async def readiness(self) -> dict[str, Any]:
        _, answer = await call("127.0.0.1", self.port, "GET", "/readyz")
        assert isinstance(answer, dict)
        return answer

    async def keeps_ticking(self, job_id: str, more: int = 2) -> None:
        before = len(read_runs(self.log(job_id)))
        await wait_until(lambda: len(read_runs(self.log(job_id))) >= before + more)


@pytest.fixture
async def running(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[Running]:
    """pollerd running jobs ``a`` and ``b`` (every 300ms), both ticked at least once."""
    write_plugin(tmp_path / "plugins")
    handle = Running(tmp_path, tmp_path / "pollers.yaml", free_port(), nats_server.url)
    handle.write([handle.job("a"), handle.job("b")])
    async with pollerd_run(handle.config) as process:
        handle.process = process
        await wait_until(lambda: all(read_runs(handle.log(j)) for j in ("a", "b")))
        yield handle


async def pollerd_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pollerd.cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def rewrite_unnoticed(path: Path, write: Callable[[], None]) -> None:
    """Change a file so that its size and mtime stay the same: only an explicit reload sees it."""
    before = path.stat()
    backup = path.with_suffix(".orig")
    os.replace(path, backup)
    write()
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    backup.unlink()


async def test_adding_removing_and_changing_jobs_in_the_file_applies_within_2s(
    running: Running,
) -> None:
    running.write([running.job("a", schedule="250ms"), running.job("c")])
    loop = asyncio.get_running_loop()
    edited_at = loop.time()

    async def applied() -> bool:
        jobs = await running.jobs()
        return set(jobs) == {"a", "c"} and jobs["a"]["schedule"] == "every 250ms"

    await wait_until(applied, timeout_s=RELOAD_WITHIN_S)
    applied_after_s = loop.time() - edited_at
    await wait_until(lambda: len(read_runs(running.log("c"))) >= 1)
    b_runs = len(read_runs(running.log("b")))
    a_before = len(read_runs(running.log("a")))
    await running.keeps_ticking("a")
    a_runs = read_runs(running.log("a"))

    assert applied_after_s < RELOAD_WITHIN_S
    assert len(read_runs(running.log("b"))) == b_runs  # removed: no more ticks
    assert a_runs[a_before]["cursor"] is not None  # a changed job keeps its cursor
    assert "config reloaded" in running.output


BROKEN_LINE = "  - {id: c, kind: [unclosed\n"  # the rest of the file is as before


@pytest.mark.parametrize("edit", ["bad_yaml", "unknown_key", "duplicate_kind"])
async def test_an_invalid_edit_keeps_the_old_jobs_running_and_reports_the_error(
    running: Running, edit: str
) -> None:
    if edit == "bad_yaml":
        running.config.write_text(running.config.read_text() + BROKEN_LINE)
        expected = "pollers.yaml"
    elif edit == "unknown_key":
        running.write([running.job("a"), running.job("c")], shedule_grace="5s")
        expected = "shedule_grace"
    else:
        write_plugin(running.tmp_path / "plugins", plugin_id="copycat")
        expected = "copycat"

    async def refused() -> bool:
        reasons = (await running.readiness()).get("reasons", {})
        return expected in str(reasons.get("config", ""))

    await wait_until(refused, timeout_s=RELOAD_WITHIN_S + 1)
    await running.keeps_ticking("a")
    await running.keeps_ticking("b")
    jobs = await running.jobs()
    code, out, err = await pollerd_cli("jobs", "-c", str(running.config))

    assert set(jobs) == {"a", "b"}
    assert not read_runs(running.log("c"))
    assert "config reload refused, still running the previous config" in running.output
    assert code == 2
    assert expected in err
    assert "keeps running the previous config" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["a", "b"]


async def test_a_typo_in_a_running_job_refuses_the_whole_reload_and_the_job_keeps_running(
    running: Running,
) -> None:
    running.write([{**running.job("a"), "overlapp": "skip"}, running.job("b"), running.job("c")])

    async def refused() -> bool:
        reasons = (await running.readiness()).get("reasons", {})
        return "overlapp" in str(reasons.get("config", ""))

    await wait_until(refused, timeout_s=RELOAD_WITHIN_S + 1)
    await running.keeps_ticking("a")
    jobs = await running.jobs()
    code, out, _ = await pollerd_cli("jobs", "-c", str(running.config))

    assert set(jobs) == {"a", "b"}  # c, valid, waits for the typo to be fixed
    assert jobs["a"]["state"] == "active"
    assert not read_runs(running.log("c"))
    assert code == 0  # the file itself loads: `pollerd jobs` shows the job broken, and why
    assert "jobs[0]" in out and "overlapp" in out


async def test_sighup_reloads_a_change_the_file_watcher_cannot_see(running: Running) -> None:
    rewrite_unnoticed(
        running.config, lambda: running.write([running.job("a", "400ms"), running.job("b")])
    )
    assert running.process is not None
    running.process.send_signal(signal.SIGHUP)

    async def applied() -> bool:
        return (await running.jobs())["a"]["schedule"] == "every 400ms"

    await wait_until(applied, timeout_s=RELOAD_WITHIN_S)

    assert "reload requested (SIGHUP)" in running.output


async def test_pollerd_reload_makes_the_running_service_reload(running: Running) -> None:
    rewrite_unnoticed(
        running.config, lambda: running.write([running.job("a", "400ms"), running.job("b")])
    )

    code, out, _ = await pollerd_cli("reload", "-c", str(running.config))
    jobs = await running.jobs()

    assert code == 0
    assert json.loads(out)["changed"] == ["a"]
    assert jobs["a"]["schedule"] == "every 400ms"


async def test_a_reload_that_changes_only_history_applies_it(running: Running) -> None:
    # The job hash left `history` out: such an edit was "no change" and the job kept writing
    # 50 records until a restart.
    running.write([{**running.job("a"), "history": KEPT_TICKS}, running.job("b")])

    await wait_until(lambda: "'changed': ['a']" in running.output, timeout_s=RELOAD_WITHIN_S)
    await running.keeps_ticking("a", more=KEPT_TICKS + 1)
    code, shown, _ = await pollerd_cli("history", "a", "--json", "-c", str(running.config))

    assert code == 0
    assert len(json.loads(shown)) == KEPT_TICKS
