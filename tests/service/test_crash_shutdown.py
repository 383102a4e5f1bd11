"""pollerd killed between publish and commit, and stopped by SIGTERM in the middle of a tick."""

from __future__ import annotations

import signal
from pathlib import Path

from nats.aio.client import Client

from conftest import process_exists
from fixtures.semantics.kit import (
    descendants,
    exit_code,
    job,
    pollerd_run,
    read_runs,
    stored_state,
    wait_until,
    write_config,
    write_plugin,
)
from pollerd.natsio.jetstream import read_events
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.service.faults import FAULT_EXIT_AFTER_PUBLISH, FAULT_EXIT_CODE

EVENTS_PER_TICK = 2


async def test_a_crash_between_publish_and_commit_reruns_the_tick_and_each_event_is_kept_once(
    tmp_path: Path, nats_server: EmbeddedNatsServer, nats_client: Client
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "crashy.log"
    config = write_config(
        tmp_path / "pollers.yaml",
        # Its first slot comes within the interval (at the job's phase), not at start.
        [job("crashy", log, schedule="2s", config={"events": EVENTS_PER_TICK})],
        nats=nats_server.url,
    )

    async with pollerd_run(config, env={FAULT_EXIT_AFTER_PUBLISH: "crashy"}) as crashing:
        crash_code = await exit_code(crashing)
    after_crash = await stored_state(config, "crashy")
    async with pollerd_run(config) as restarted:
        await wait_until(lambda: len(read_runs(log)) == 2)
        restarted.send_signal(signal.SIGTERM)  # the re-run is in flight: it is committed first
        stop_code = await exit_code(restarted)
    final = await stored_state(config, "crashy")
    events = [event async for event in read_events(nats_client, job_id="crashy")]

    assert crash_code == FAULT_EXIT_CODE
    assert after_crash is not None and after_crash.cursor is None  # published, not committed
    assert stop_code == 0
    assert [run["cursor"] for run in read_runs(log)] == [None, None]  # the tick ran again
    assert sorted(event.id for event in events) == ["item-0-0", "item-0-1"]
    assert sorted(event.msg_id for event in events) == ["crashy:item-0-0", "crashy:item-0-1"]
    assert final is not None and final.cursor == b"1"  # advanced once
    assert final.last_status == "ok"


async def test_sigterm_during_a_tick_waits_for_it_commits_it_exits_0_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path / "plugins")
    log = tmp_path / "slow.log"
    config = write_config(
        tmp_path / "pollers.yaml",
        # Its first slot comes within 5 s (the job's phase); the embedded nats-server.
        [job("slow", log, schedule="5s", config={"plan": [{"sleep": 2}]})],
    )

    async with pollerd_run(config) as pollerd:
        await wait_until(lambda: len(read_runs(log)) == 1)
        children = descendants(pollerd.pid)
        pollerd.send_signal(signal.SIGTERM)
        code = await exit_code(pollerd)
    state = await stored_state(config, "slow")

    assert code == 0
    assert read_runs(log)[0]["pid"] in children
    assert len(children) >= 2  # the plugin and the embedded nats-server
    assert [pid for pid in children if process_exists(pid)] == []
    assert state is not None
    assert (state.cursor, state.last_status) == (b"1", "ok")
