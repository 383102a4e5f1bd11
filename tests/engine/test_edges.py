"""Plugins that push the schedule around: a tiny ``next_interval_secs``, a plugin too slow for
its jobs. Real service, real ephemeral plugin processes (the scripted plugin)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fixtures.semantics.kit import job, read_runs, service, wait_until, write_config, write_plugin

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
