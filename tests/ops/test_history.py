"""Tick history of a running `pollerd run`: `pollerd history` and GET /v1/jobs/{id}/history."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from ops.test_operator import StartPollerd, start_pollerd, wait_until, write_config
from ops.test_service_logs import MOODS, mood_job

pytestmark = pytest.mark.slow

__all__ = ["start_pollerd"]  # the fixture, used by name


async def test_history_shows_each_jobs_recent_ticks_bounded_per_job_live_and_from_the_store(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    jobs = [
        {**mood_job("healthy", events=2), "history": 3},
        mood_job("failing", outcome="transient"),
    ]
    pollerd = await start_pollerd(write_config(tmp_path, port, jobs, plugins=MOODS), port)
    seen: dict[str, list[dict[str, Any]]] = {}

    async def enough_ticks() -> bool:
        for job_id in ("healthy", "failing"):
            status, body = await pollerd.get(f"/v1/jobs/{job_id}/history?limit=10")
            assert status == 200, body
            seen[job_id] = body
        return len(seen["healthy"]) == 3 and len(seen["failing"]) >= 4

    await wait_until(enough_ticks, 30.0)
    code, out, err = await pollerd.cli("history", "failing", "-n", "2", "--json")
    text_code, text, _ = await pollerd.cli("history", "failing")
    unknown = await pollerd.get("/v1/jobs/nope/history")
    bad_limit = await pollerd.get("/v1/jobs/healthy/history?limit=0")

    healthy, failing = seen["healthy"], seen["failing"]
    assert [t["status"] for t in healthy] == ["ok"] * 3
    assert all(t["events"] == 2 and t["attempts"] == 1 and t["error"] is None for t in healthy)
    assert [t["slot"] for t in healthy] == sorted((t["slot"] for t in healthy), reverse=True)
    assert {t["replica"] for t in healthy} == {socket.gethostname()}
    assert {t["status"] for t in failing} == {"transient"}
    assert all("upstream answered 503" in t["error"] and t["events"] == 0 for t in failing)
    assert code == 0, err
    latest = json.loads(out)
    assert [t["status"] for t in latest] == ["transient", "transient"]
    assert latest[0]["slot"] > latest[1]["slot"] >= failing[1]["slot"]
    assert text_code == 0 and "STATUS" in text and "upstream answered 503" in text
    assert unknown[0] == 404
    assert bad_limit[0] == 400 and "limit" in bad_limit[1]["error"]

    pollerd.process.send_signal(signal.SIGTERM)
    assert await pollerd.process.wait() == 0
    code, out, err = await pollerd.cli("history", "healthy", "--json")
    stored = json.loads(out)

    assert code == 0, err
    assert len(stored) == 3
    assert stored[-1]["tick_id"] >= healthy[-1]["tick_id"]  # the newest three, still
