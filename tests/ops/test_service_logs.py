"""The JSON log of a running `pollerd run`: fields on every line, plugin lines at their level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES_DIR, free_port, wait_for_condition
from ops.test_operator import StartPollerd, start_pollerd, write_config

pytestmark = pytest.mark.slow

MOODS = FIXTURES_DIR / "opskit"
WAIT_S = 20.0

__all__ = ["start_pollerd"]  # the fixture, used by name


def mood_job(job_id: str, **config: Any) -> dict[str, Any]:
    return {"id": job_id, "kind": "mood", "schedule": {"every": "300ms"}, "config": config}


async def test_plugin_lines_keep_their_level_and_every_line_about_a_job_carries_job_id(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [mood_job("grumpy", warn="grumpy")], plugins=MOODS)
    pollerd = await start_pollerd(config, port, json_logs=True)

    def entries() -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(pollerd.lines)]

    def plugin_entries() -> list[dict[str, Any]]:
        return [e for e in entries() if e["logger"] == "pollerd.plugin"]

    def tick_entries() -> list[dict[str, Any]]:
        return [e for e in entries() if e["logger"] == "pollerd.tick"]

    # The plugin's line comes while the tick runs, the tick's own line once it has ended.
    await wait_for_condition(lambda: bool(plugin_entries() and tick_entries()), WAIT_S)
    everything = entries()
    about_the_job = [e for e in everything if "job_id=grumpy" in e["message"]]
    plugin_line = plugin_entries()[0]

    assert all({"time", "level", "logger", "message", "pid"} <= set(e) for e in everything)
    assert (plugin_line["level"], plugin_line["plugin"], plugin_line["job_id"]) == (
        "warning",
        "moods",
        "grumpy",
    )
    assert plugin_line["message"].endswith("moods: grumpy is feeling grumpy")
    assert len(about_the_job) >= 2  # the tick, the plugin line
    assert {e["job_id"] for e in about_the_job} == {"grumpy"}
