"""Plugins that push the schedule around: a tiny ``next_interval_secs``, a plugin too slow for
its jobs. Real service, real ephemeral plugin processes (the scripted plugin)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import free_port
from fixtures.semantics.kit import (
    job,
    metric,
    read_runs,
    service,
    wait_until,
    write_config,
    write_plugin,
)
from pollerd.service.backend import ServiceBackend

FLOOR_S = 1.0  # policy.MIN_NEXT_INTERVAL_S: the floor of a 2 s job
TOLERANCE_S = 0.05


async def test_a_microsecond_next_interval_is_floored_to_one_second(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "eager.log"
    config = write_config(
        tmp_path / "pollers.yaml",
        [job("eager", log, schedule="2s", config={"next_interval": 1e-6})],
    )

    async with service(config):
        await wait_until(lambda: len(read_runs(log)) >= 3)
        runs = read_runs(log)

    slots = [datetime.fromisoformat(run["scheduled_at"]) for run in runs[:3]]
    gaps_s = [
        (later - earlier).total_seconds() for earlier, later in zip(slots, slots[1:], strict=False)
    ]
    # The hint is honoured (sooner than the 2 s schedule) but never under the floor.
    assert all(FLOOR_S - TOLERANCE_S <= gap < 2.0 for gap in gaps_s), gaps_s


async def test_slots_lost_to_a_plugin_too_slow_for_its_jobs_warn_count_and_show_in_pollerd_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One place for three jobs every 200 ms whose ticks take 300 ms: most slots are lost.
    write_plugin(tmp_path / "plugins", max_concurrent_ticks=1)
    jobs = [
        job(
            f"slow{i}",
            tmp_path / f"slow{i}.log",
            schedule="200ms",
            config={"plan": [{"sleep": 0.3}]},
        )
        for i in range(3)
    ]
    config = write_config(tmp_path / "pollers.yaml", jobs, http=f"127.0.0.1:{free_port()}")
    caplog.set_level(logging.INFO, logger="pollerd.tick")

    async with service(config, http=True) as svc:
        await wait_until(lambda: all(lost_slots(caplog, f"slow{i}") for i in range(3)))
        await wait_until(
            lambda: metric(svc.metrics, SKIPPED, job_id="slow0", reason="overlap") >= 3
        )
        code, out = await pollerd("jobs", "--json", "-c", str(config))
        skipped = metric(svc.metrics, SKIPPED, job_id="slow0", reason="overlap")
        one = await ServiceBackend(svc).job("slow0")  # GET /v1/jobs/slow0

    rows = {row["id"]: row for row in json.loads(out)}
    warnings = lost_slots(caplog, "slow0")
    assert code == 0
    assert len(warnings) == 1  # the first lost slot warns at once, then at most once a minute
    assert "lost 1 slot(s)" in warnings[0]
    assert "its previous tick was still running (overlap: skip)" in warnings[0]
    assert "plugin scripted had all its max_concurrent_ticks places taken" in warnings[0]
    assert skipped >= 3
    assert rows["slow0"]["skipped_slots"] >= 3
    assert rows["slow0"]["last_skip"].startswith("overlap at ")
    assert one is not None and one["skipped_slots"] >= 3
    assert one["last_skip"].startswith("overlap at ")


SKIPPED = "pollerd_slots_skipped_total"


def lost_slots(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.getMessage().startswith(f"job_id={job_id} ")
        and " lost " in r.getMessage()
    ]


async def pollerd(*args: str) -> tuple[int, str]:
    """The real `pollerd` CLI; its exit code and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollerd.cli", *args, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()
