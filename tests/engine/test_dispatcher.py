"""Slots that come while a tick still runs (overlap), and slots missed while pollerd was down."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_process_gone
from fixtures.semantics.kit import (
    FakeClock,
    job,
    metric,
    read_runs,
    service,
    wait_until,
    write_config,
    write_plugin,
)
from pollerd.service.core import Service
from pollerd.stores.base import JobUpdate
from pollerd.wire import format_time, parse_time

INTERVAL_S = 0.4
INTERVAL = f"{int(INTERVAL_S * 1000)}ms"
SKIPPED_BEFORE_RELEASE = 2
CURSOR_AFTER_ONE = "MQ"  # base64url of b"1": the cursor after one committed tick


def slots(runs: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(run["scheduled_at"]) for run in runs]


def skipped_slots(caplog: pytest.LogCaptureFixture, job_id: str, reason: str) -> list[datetime]:
    """Slots the tick log reports as skipped for ``reason`` (from the fields of its records)."""
    return [
        parse_time(str(record.tick_id).rpartition("@")[2])
        for record in caplog.records
        if record.name == "pollerd.tick"
        and getattr(record, "job_id", None) == job_id
        and getattr(record, "skipped", None) == reason
    ]


def overlap_skips(svc: Service, job_id: str) -> float:
    return metric(svc.metrics, "pollerd_slots_skipped_total", job_id=job_id, reason="overlap")


def blocking_job(tmp_path: Path, overlap: str) -> tuple[Path, Path, Path]:
    """A job every INTERVAL whose first tick waits for the gate file; the others return at once."""
    write_plugin(tmp_path / "plugins")
    log, gate = tmp_path / "slow.log", tmp_path / "gate"
    config = write_config(
        tmp_path / "pollers.yaml",
        [
            job(
                "slow",
                log,
                schedule=INTERVAL,
                overlap=overlap,
                config={"plan": ["block", "ok"], "gate": str(gate)},
            )
        ],
    )
    return config, log, gate


@pytest.fixture(autouse=True)
def tick_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pollerd")


async def test_overlap_skip_drops_and_counts_every_slot_that_comes_while_the_tick_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, log, gate = blocking_job(tmp_path, "skip")

    async with service(config) as svc:
        await wait_until(lambda: overlap_skips(svc, "slow") >= SKIPPED_BEFORE_RELEASE)
        gate.touch()
        await wait_until(lambda: len(read_runs(log)) >= 2)
        skipped = skipped_slots(caplog, "slow", "overlap")

    runs = read_runs(log)
    first, second = slots(runs)[:2]
    interval = timedelta(seconds=INTERVAL_S)
    between = [s for s in skipped if first < s < second]
    assert len(between) >= SKIPPED_BEFORE_RELEASE
    assert between == [first + k * interval for k in range(1, len(between) + 1)]
    assert second == first + (len(between) + 1) * interval  # the next slot after the skipped ones
    assert not set(skipped) & set(slots(runs))
    assert runs[1]["cursor"] == CURSOR_AFTER_ONE  # the long tick was committed


async def test_overlap_buffer_one_runs_the_first_waiting_slot_after_the_tick_and_skips_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, log, gate = blocking_job(tmp_path, "buffer_one")

    async with service(config) as svc:
        await wait_until(lambda: overlap_skips(svc, "slow") >= SKIPPED_BEFORE_RELEASE)
        skipped = skipped_slots(caplog, "slow", "overlap")
        gate.touch()
        await wait_until(lambda: len(read_runs(log)) >= 2)

    runs = read_runs(log)
    first, second = slots(runs)[:2]
    interval = timedelta(seconds=INTERVAL_S)
    assert second == first + interval  # the buffered slot, with its own tick_id
    assert runs[1]["tick_id"] != runs[0]["tick_id"]
    assert skipped[:SKIPPED_BEFORE_RELEASE] == [first + 2 * interval, first + 3 * interval]
    assert not set(skipped) & set(slots(runs))
    assert runs[1]["cursor"] == CURSOR_AFTER_ONE


async def test_overlap_cancel_other_cancels_the_running_tick_without_commit_and_runs_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, log, _ = blocking_job(tmp_path, "cancel_other")  # the gate never opens

    async with service(config) as svc:
        await wait_until(lambda: len(read_runs(log)) >= 2)

        async def committed() -> bool:
            state = await svc.store.get("slow")
            return state is not None and state.cursor is not None

        await wait_until(committed)
        await wait_process_gone(read_runs(log)[0]["pid"])

    runs = read_runs(log)
    first, second = slots(runs)[:2]
    assert second == first + timedelta(seconds=INTERVAL_S)
    assert runs[1]["cursor"] is None  # the cancelled tick committed nothing
    assert any("tick cancelled, nothing committed" in r.getMessage() for r in caplog.records)


async def test_a_manual_tick_cancelled_by_a_newer_slot_reports_it_was_cancelled(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    log, gate = tmp_path / "manual.log", tmp_path / "gate"
    plan = {"plan": ["block", "ok"], "gate": str(gate)}
    config = write_config(
        tmp_path / "pollers.yaml", [job("manual", log, overlap="cancel_other", config=plan)]
    )
    clock = FakeClock()

    async with service(config, schedule=False, clock=clock) as svc:
        first = asyncio.create_task(svc.tick_now("manual"))
        await wait_until(lambda: len(read_runs(log)) == 1)
        clock.advance(1)
        second = await svc.tick_now("manual")
        cancelled = await first

    assert cancelled is not None
    assert (cancelled.status, cancelled.committed) == ("cancelled", False)
    assert cancelled.tick_id == read_runs(log)[0]["tick_id"]
    assert second is not None and second.ok and second.committed


# --- catch-up ----------------------------------------------------------------------------------

HOUR = timedelta(hours=1)
DOWNTIME = timedelta(hours=3, minutes=30)  # three slots of an hourly job are missed


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "hours_run", "dropped"),
    [
        ("skip", 10, [], 3),
        ("latest", 10, [3], 2),
        ("all", 10, [1, 2, 3], 0),
        ("all", 2, [2, 3], 1),
    ],
)
async def test_after_downtime_the_missed_slots_run_by_the_catchup_policy(
    tmp_path: Path, catchup: str, max_catchup: int, hours_run: list[int], dropped: int
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "hourly.log"
    config = write_config(
        tmp_path / "pollers.yaml",
        [job("hourly", log, schedule="1h", catchup=catchup, max_catchup=max_catchup, align=True)],
    )
    clock = FakeClock(datetime(2026, 11, 22, 8, 0, tzinfo=UTC))
    started = clock.now
    async with service(config, clock=clock, schedule=False) as svc:
        # As if the 08:00 slot had run and committed, then pollerd stopped.
        await svc.store.ensure("hourly", "scripted")
        await svc.store.update("hourly", JobUpdate(cursor=b"1", last_scheduled_at=started))

    clock.advance(DOWNTIME.total_seconds())
    expected = [started + h * HOUR for h in hours_run]
    async with service(config, clock=clock) as svc:

        async def caught_up() -> bool:
            state = await svc.store.get("hourly")
            return state is not None and state.last_scheduled_at == (expected or [started])[-1]

        await wait_until(caught_up)
        await wait_until(lambda: len(read_runs(log)) == len(hours_run))
        drops = metric(
            svc.metrics, "pollerd_slots_skipped_total", job_id="hourly", reason="catchup_dropped"
        )
        next_run = svc.next_run_at("hourly")

    runs = read_runs(log)
    assert slots(runs) == expected  # oldest first, each with the slot's own tick_id
    assert [run["tick_id"] for run in runs] == [f"hourly@{format_time(slot)}" for slot in expected]
    assert [run["cursor"] for run in runs] == [_b64(str(n)) for n in range(1, len(expected) + 1)]
    assert drops == dropped
    assert next_run == started + 4 * HOUR  # aligned: on the hour, whatever the downtime


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
