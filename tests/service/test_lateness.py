"""Lateness is measured up to the moment a tick's request is sent, as the plugin sees it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from pollerd.config.setup import load_setup
from pollerd.engine.events import MemoryEventPublisher
from pollerd.service.core import Service

PLUGINS = Path(__file__).parents[1] / "fixtures" / "lateness"
SLEEP_S = 0.3  # each tick holds the plugin's only concurrency slot this long


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "pollers.yaml"
    jobs = [
        {
            "id": job_id,
            "kind": "waiter",
            "schedule": {"every": "1h"},
            "config": {"sleep_s": SLEEP_S},
        }
        for job_id in ("first", "second")
    ]
    lines = ["version: 1", "state_dir: state", f"plugins: [{PLUGINS}]", "http: off", "jobs:"]
    path.write_text("\n".join([*lines, *(f"  - {json.dumps(job)}" for job in jobs)]) + "\n")
    return path


def lateness_sum(service: Service) -> float:
    value = service.metrics.registry.get_sample_value(
        "pollerd_schedule_lateness_seconds_sum", {"kind": "waiter"}
    )
    return value or 0.0


async def test_a_tick_waiting_for_the_plugins_concurrency_limit_counts_the_wait_as_lateness(
    tmp_path: Path,
) -> None:
    setup = load_setup(write_config(tmp_path), os.environ)
    async with Service(
        setup, environ=os.environ, publisher=MemoryEventPublisher(), schedule=False, http=False
    ) as service:
        outcomes = await asyncio.gather(service.tick_now("first"), service.tick_now("second"))
        metric_sum = lateness_sum(service)

    assert all(o is not None and o.ok for o in outcomes), outcomes
    waited = max((o for o in outcomes if o is not None), key=lambda o: o.lateness_s or 0.0)
    assert waited.reply is not None and waited.lateness_s is not None
    plugin_side = waited.reply.metrics["lateness_s"]
    # The second tick waited for the first one to end: both figures hold that wait, and the
    # plugin, which starts after the request was sent, sees at least what pollerd measured.
    assert waited.lateness_s >= SLEEP_S
    assert plugin_side >= waited.lateness_s - 0.01
    assert metric_sum >= SLEEP_S
