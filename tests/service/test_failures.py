"""How a job reacts to its plugin's failures: pause, broken, retries within a slot, the breaker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from pollerd.service.backend import ServiceBackend
from pollerd.service.core import Service

PERMANENT = -32002
CONFIG = -32602
TRANSIENT = -32001
FAST_RETRY = {"attempts": 3, "initial": "10ms", "max": "50ms"}
NO_RETRY = {"attempts": 1}


async def job_row(svc: Service, job_id: str) -> dict[str, Any]:
    row = await ServiceBackend(svc).job(job_id)
    assert row is not None
    return row


async def test_a_permanent_error_pauses_the_job_with_its_message_and_other_jobs_keep_ticking(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    gone, steady = tmp_path / "gone.log", tmp_path / "steady.log"
    failure = {"error": PERMANENT, "message": "the feed was deleted"}
    config = write_config(
        tmp_path / "pollers.yaml",
        [
            job("gone", gone, schedule="200ms", config={"plan": [failure]}),
            job("steady", steady, schedule="200ms"),
        ],
    )

    async with service(config) as svc:

        async def paused() -> bool:
            state = await svc.store.get("gone")
            return state is not None and state.paused

        await wait_until(paused)
        ticked_before = len(read_runs(steady))
        await wait_until(lambda: len(read_runs(steady)) >= ticked_before + 2)
        state = await svc.store.get("gone")
        row = await job_row(svc, "gone")
        steady_row = await job_row(svc, "steady")

    assert state is not None and state.pause_reason is not None
    assert "the feed was deleted" in state.pause_reason
    assert state.last_status == "permanent"
    assert row["state"] == "paused"
    assert "the feed was deleted" in row["reason"]
    assert len(read_runs(gone)) == 1  # never retried, never run again while paused
    assert steady_row["state"] == "active"
    assert steady_row["last_status"] == "ok"
    assert steady_row["consecutive_errors"] == 0


async def test_a_config_error_breaks_the_job_across_restarts_until_its_config_changes(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "bad.log"
    failure = {"error": CONFIG, "message": "config.url is missing"}
    path = tmp_path / "pollers.yaml"
    write_config(path, [job("bad", log, config={"plan": [failure]})])

    async with service(path, schedule=False) as svc:
        first = await svc.tick_now("bad")
        broken_row = await job_row(svc, "bad")
    async with service(path, schedule=False) as svc:
        after_restart = await svc.tick_now("bad")
        still_broken_row = await job_row(svc, "bad")
    write_config(path, [job("bad", log, config={"plan": ["ok"], "url": "file:feed.xml"})])
    async with service(path, schedule=False) as svc:
        fixed = await svc.tick_now("bad")
        fixed_row = await job_row(svc, "bad")
        state = await svc.store.get("bad")

    assert first is not None and first.status == "config"
    assert broken_row["state"] == "broken"
    assert "config.url is missing" in broken_row["reason"]
    assert after_restart is not None and after_restart.skipped == "broken"
    assert still_broken_row["state"] == "broken"
    assert fixed is not None and fixed.ok and fixed.committed
    assert fixed_row["state"] == "active"
    assert state is not None and state.broken_reason is None and state.cursor == b"1"
    assert len(read_runs(log)) == 2  # the broken restart never reached the plugin


async def test_transient_failures_are_retried_within_one_slot_with_the_same_tick_id(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "retry.log"
    failure = {"error": TRANSIENT, "message": "upstream 503"}
    config = write_config(
        tmp_path / "pollers.yaml",
        [job("retry", log, retry=FAST_RETRY, config={"plan": [failure, failure, "ok"]})],
    )

    async with service(config, schedule=False) as svc:
        outcome = await svc.tick_now("retry")
        state = await svc.store.get("retry")
        ok_ticks = metric(svc.metrics, "pollerd_ticks_total", job_id="retry", outcome="ok")
        failed_ticks = metric(
            svc.metrics, "pollerd_ticks_total", job_id="retry", outcome="transient"
        )

    runs = read_runs(log)
    assert outcome is not None and outcome.ok and outcome.attempts == 3
    assert [run["attempt"] for run in runs] == [1, 2, 3]
    assert {run["tick_id"] for run in runs} == {outcome.tick_id}
    assert (ok_ticks, failed_ticks) == (1.0, 0.0)
    assert state is not None
    assert (state.last_status, state.consecutive_errors, state.cursor) == ("ok", 0, b"1")


async def test_the_breaker_opens_after_threshold_failed_slots_and_a_half_open_success_closes_it(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "flaky.log"
    failure = {"error": TRANSIENT, "message": "connection refused"}
    config = write_config(
        tmp_path / "pollers.yaml",
        [
            job(
                "flaky",
                log,
                retry=NO_RETRY,
                breaker={"threshold": 5, "cooldown": "30s"},
                config={"plan": [failure] * 5 + ["ok"]},
            )
        ],
    )
    clock = FakeClock()

    async with service(config, schedule=False, clock=clock) as svc:
        failed = []
        for _ in range(5):
            clock.advance(10)
            failed.append(await svc.tick_now("flaky"))
        opened = await svc.store.get("flaky")
        opened_at = clock.now
        skipped = []
        for _ in range(2):  # 10 s and 20 s into the 30 s cooldown
            clock.advance(10)
            skipped.append(await svc.tick_now("flaky"))
        skip_count = metric(
            svc.metrics, "pollerd_slots_skipped_total", job_id="flaky", reason="breaker_open"
        )
        clock.advance(15)  # the cooldown is over: one half-open trial
        trial = await svc.tick_now("flaky")
        closed = await svc.store.get("flaky")

    assert [o.status for o in failed if o is not None] == ["transient"] * 5
    assert opened is not None and opened.consecutive_errors == 5
    assert opened.breaker_open_until is not None
    assert (opened.breaker_open_until - opened_at).total_seconds() == 30
    assert [o.skipped for o in skipped if o is not None] == ["breaker_open"] * 2
    assert skip_count == 2
    assert trial is not None and trial.ok
    assert closed is not None
    assert (closed.consecutive_errors, closed.breaker_open_until) == (0, None)
    assert len(read_runs(log)) == 6  # the skipped slots never reached the plugin
