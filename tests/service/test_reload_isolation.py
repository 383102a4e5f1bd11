"""A reload reads the new config in a child process: the running jobs stay on time whatever the
file holds (an alias bomb, a large file), and /healthz keeps answering."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

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

CANARY_EVERY = "200ms"
MAX_LATENESS_S = 1.0
HEALTH_POLL_S = 0.05
RELOAD_TIMEOUT_S = 90.0
TICKS_AFTER = 3


@dataclass
class Canary:
    """pollerd running one job every 200 ms, with /healthz timed while something happens."""

    config: Path
    port: int
    nats_url: str
    log: Path
    health_s: list[float] = field(default_factory=list)

    def write(self, extra: str = "") -> None:
        """The canary's config, plus ``extra`` jobs (YAML list items), replaced at once."""
        draft = self.config.with_suffix(".draft")
        write_config(
            draft,
            [job("canary", self.log, schedule=CANARY_EVERY)],
            http=f"127.0.0.1:{self.port}",
            nats=self.nats_url,
        )
        draft.write_text(draft.read_text() + extra)
        os.replace(draft, self.config)

    async def config_reason(self) -> str:
        _, answer = await call("127.0.0.1", self.port, "GET", "/readyz")
        return str(answer.get("reasons", {}).get("config", "")) if isinstance(answer, dict) else ""

    async def job_ids(self) -> set[str]:
        _, rows = await call("127.0.0.1", self.port, "GET", "/v1/jobs")
        return {row["id"] for row in rows}

    async def time_health(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, _ = await call("127.0.0.1", self.port, "GET", "/healthz", timeout_s=30.0)
            assert status == 200
            self.health_s.append(time.monotonic() - started)
            await asyncio.sleep(HEALTH_POLL_S)


@pytest.fixture
async def canary(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[Canary]:
    write_plugin(tmp_path / "plugins")
    handle = Canary(tmp_path / "pollers.yaml", free_port(), nats_server.url, tmp_path / "c.log")
    handle.write()
    async with pollerd_run(handle.config):
        await wait_until(lambda: len(read_runs(handle.log)) >= 2)
        yield handle


def alias_bomb_job() -> str:
    """A job whose config is ~300 bytes of YAML aliases expanding to 9**6 values."""
    lines = ["- id: laughs", "  kind: scripted", "  schedule: {every: 1h}", "  config:"]
    lines.append("    l0: &l0 [" + ", ".join(['"lol"'] * 9) + "]")
    for level in range(1, 6):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def large_job() -> str:
    """A disabled job whose config lists 100,000 values (a 1.3 MB file): slow to parse."""
    config = {"log": "/dev/null", "items": [f"item-{index}" for index in range(100_000)]}
    entry = {"id": "large", "kind": "scripted", "schedule": {"every": "1h"}, "enabled": False}
    return yaml.safe_dump([{**entry, "config": config}], default_flow_style=False)


def lateness_s(runs: list[dict[str, Any]], since: float) -> list[float]:
    return [
        run["started_at"] - datetime.fromisoformat(run["scheduled_at"]).timestamp()
        for run in runs
        if run["started_at"] >= since
    ]


@pytest.mark.timeout(120)  # a loaded machine takes tens of seconds over the large file
@pytest.mark.parametrize("edit", ["alias_bomb", "large_file"])
async def test_a_reload_never_delays_the_running_jobs_or_healthz(canary: Canary, edit: str) -> None:
    stop = asyncio.Event()
    health = asyncio.create_task(canary.time_health(stop))
    since = time.time()
    before = len(read_runs(canary.log))
    canary.write(alias_bomb_job() if edit == "alias_bomb" else large_job())

    if edit == "alias_bomb":

        async def refused() -> bool:
            return "alias bomb" in await canary.config_reason()

        await wait_until(refused, timeout_s=RELOAD_TIMEOUT_S)
    else:

        async def applied() -> bool:
            return "large" in await canary.job_ids()

        await wait_until(applied, timeout_s=RELOAD_TIMEOUT_S)
    settled = len(read_runs(canary.log))
    await wait_until(lambda: len(read_runs(canary.log)) >= settled + TICKS_AFTER)
    stop.set()
    await health
    # A slot that comes while the previous tick still runs is skipped (overlap: skip); a frozen
    # event loop shows as the lateness of the first tick after it.
    late = lateness_s(read_runs(canary.log)[before:], since)

    assert len(late) >= TICKS_AFTER and max(late) < MAX_LATENESS_S, late
    assert canary.health_s and max(canary.health_s) < MAX_LATENESS_S, canary.health_s


SCHEMA = """
[plugin.poller.config_schema]
type = "object"
required = ["log"]

[plugin.poller.config_schema.properties.log]
type = "string"
"""


async def test_a_reload_that_breaks_a_running_jobs_config_schema_is_refused(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    manifest = write_plugin(tmp_path / "plugins") / "scripted" / "plugin.toml"
    manifest.write_text(manifest.read_text() + SCHEMA)
    handle = Canary(tmp_path / "pollers.yaml", free_port(), nats_server.url, tmp_path / "c.log")
    handle.write()
    async with pollerd_run(handle.config):
        await wait_until(lambda: len(read_runs(handle.log)) >= 2)
        text = handle.config.read_text().replace("    log: ", "    lgo: ")
        handle.config.with_suffix(".draft").write_text(text)
        os.replace(handle.config.with_suffix(".draft"), handle.config)

        async def refused() -> bool:
            return "jobs[0].config.log: required" in await handle.config_reason()

        await wait_until(refused, timeout_s=RELOAD_TIMEOUT_S)
        settled = len(read_runs(handle.log))
        await wait_until(lambda: len(read_runs(handle.log)) >= settled + TICKS_AFTER)

    log = handle.config.with_suffix(".log").read_text()
    assert "config reload refused, still running the previous config" in log
    assert "pollers.yaml:13: jobs[0].config.log: required" in log
