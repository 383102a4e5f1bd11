"""Events at the edges (issue: nothing lost in silence): colliding and huge ids, deep replies,
oversized events, duplicates, a cursor reset, a deleted stream.

Each test runs a real ``Service`` with the embedded nats-server and JetStream, the real SQLite
store and real one-shot plugin processes (``fixtures/edges/replies.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from fixtures.semantics.kit import (
    exit_code,
    metric,
    pollerd_run,
    service,
    wait_until,
    write_config,
)
from pollerd.config.setup import load_setup
from pollerd.engine.events import STREAM_NAME, event_subject
from pollerd.natsio.auth import NatsUser
from pollerd.natsio.jetstream import StoredEvent, read_events
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.ops import admin
from pollerd.service.core import Service
from pollerd.wire import MAX_EVENT_ID_BYTES

pytestmark = pytest.mark.nats

REPLIES = Path(__file__).parents[1] / "fixtures" / "edges" / "replies.py"
KIND = "replies"
CANARY_KIND = "canary"
CANARY_EVERY = "200ms"
MAX_LATENESS_S = 1.0
CANARY_TICKS = 5  # canary ticks to see while the bad job fails
CLI_TIMEOUT_S = 30.0


def write_plugins(root: Path) -> None:
    """Two ephemeral plugins running replies.py: one for the job under test, one for the canary."""
    for plugin_id, kind in (("replies", KIND), ("canary", CANARY_KIND)):
        folder = root / "plugins" / plugin_id
        folder.mkdir(parents=True)
        (folder / "plugin.toml").write_text(
            f'[plugin]\nid = "{plugin_id}"\nversion = "0.1.0"\n\n'
            f'[plugin.entrypoint]\ncommand = "python"\nargs = [{json.dumps(str(REPLIES))}]\n\n'
            f'[plugin.poller]\nkinds = ["{kind}"]\nlifecycle = "ephemeral"\ntick_timeout = "10s"\n'
        )


def job(job_id: str, *, every: str = "1h", kind: str = KIND, **config: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": kind,
        "schedule": {"every": every},
        "retry": {"attempts": 1},
        "config": config,
    }


def setup_config(tmp_path: Path, jobs: list[dict[str, Any]]) -> Path:
    write_plugins(tmp_path)
    return write_config(tmp_path / "pollers.yaml", jobs)


def real_service(config: Path, **options: Any) -> Service:
    """The service with its real JetStream publisher (not the kit's in-memory one)."""
    return service(config, publisher=None, **options)


async def stored_events(nc: Client | None, job_id: str) -> list[StoredEvent]:
    assert nc is not None
    return [event async for event in read_events(nc, job_id=job_id)]


async def stored_count(nc: Client | None, subject: str) -> int:
    """Messages stored on ``subject`` (read_events would wait for a job that keeps ticking)."""
    assert nc is not None
    info = await nc.jetstream().stream_info(STREAM_NAME, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


def lateness_s(log: Path) -> list[float]:
    """How late each canary run started after its slot (from the plugin's own log)."""
    text = log.read_text() if log.exists() else ""
    runs = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
    return [run["started_at"] - run["scheduled_at"] for run in runs]


async def canary_keeps_time(svc: Service, log: Path, bad_job: str, failures: int) -> list[float]:
    """Wait for ``failures`` failed ticks of ``bad_job`` and CANARY_TICKS canary ticks after the
    first failure; the canary's lateness over the whole run."""

    async def failed() -> int:
        state = await svc.store.get(bad_job)
        return 0 if state is None or state.last_status == "ok" else state.consecutive_errors

    await wait_until(lambda: _at_least(failed(), 1))
    ticked = len(lateness_s(log))
    await wait_until(lambda: _at_least(failed(), failures))
    await wait_until(lambda: len(lateness_s(log)) >= ticked + CANARY_TICKS)
    return lateness_s(log)


async def _at_least(count: Any, wanted: int) -> bool:
    return bool(await count >= wanted)


async def test_ids_that_differ_only_in_spaces_or_line_breaks_are_stored_as_distinct_events(
    tmp_path: Path,
) -> None:
    ids = ["x", "x ", " x", "a\nb", "a\rb", "a b", "a\r\nb", "é", "a:b", "#x"]
    config = setup_config(tmp_path, [job("colliding", ids=ids)])

    async with real_service(config, schedule=False) as svc:
        outcome = await svc.tick_now("colliding")
        stored = await stored_events(svc.nc, "colliding")

    assert outcome is not None and outcome.ok and outcome.duplicates == 0
    assert sorted(event.id for event in stored) == sorted(ids)
    assert len({event.msg_id for event in stored}) == len(ids)
    assert "colliding:x" in {event.msg_id for event in stored}  # plain ids stay readable


async def test_a_600_kb_event_id_is_one_protocol_failure_and_the_canary_keeps_time(
    tmp_path: Path,
) -> None:
    canary_log = tmp_path / "canary.log"
    config = setup_config(
        tmp_path,
        [
            job("huge", every="300ms", huge_id_bytes=600_000),
            job("canary", every=CANARY_EVERY, kind=CANARY_KIND, log=str(canary_log)),
        ],
    )

    async with real_service(config) as svc:
        lateness = await canary_keeps_time(svc, canary_log, "huge", failures=3)
        # The canary's log line is written before its events are published: wait for them.
        subject = event_subject(CANARY_KIND, "canary")
        await wait_until(lambda: _at_least(stored_count(svc.nc, subject), CANARY_TICKS))
        huge = await svc.store.get("huge")
        canary = await svc.store.get("canary")
        connected = svc.nc is not None and svc.nc.is_connected
        canary_events = await stored_count(svc.nc, event_subject(CANARY_KIND, "canary"))

    assert huge is not None and huge.last_status == "protocol" and huge.cursor is None
    assert f"over the limit of {MAX_EVENT_ID_BYTES}" in (huge.last_error or "")
    assert canary is not None and canary.last_status == "ok"
    assert connected  # pollerd's NATS connection survived: no restart needed
    assert canary_events >= CANARY_TICKS
    assert max(lateness) < MAX_LATENESS_S, lateness


async def test_an_event_over_the_servers_max_payload_with_its_headers_is_refused_unsent(
    tmp_path: Path,
) -> None:
    # Under the reply cap (1 MiB) and under max_payload as a payload, over it with the headers.
    event_id = "i" * (MAX_EVENT_ID_BYTES - 24)
    config = setup_config(tmp_path, [job("big", ids=[event_id], data_bytes=1_047_000)])

    async with real_service(config, schedule=False) as svc:
        outcome = await svc.tick_now("big")
        assert svc.nc is not None
        max_payload = svc.nc.max_payload
        await svc.nc.flush(timeout=5)  # a round trip: a server error would have come first
        connected = svc.nc.is_connected
        state = await svc.store.get("big")

    assert outcome is not None and outcome.status == "protocol"
    assert f"over the NATS server's max_payload of {max_payload} bytes" in (outcome.error or "")
    assert connected and svc.link.fatal_error is None
    assert state is not None and state.cursor is None


async def test_a_reply_nested_10000_deep_is_a_protocol_error_and_the_canary_keeps_time(
    tmp_path: Path,
) -> None:
    canary_log = tmp_path / "canary.log"
    config = setup_config(
        tmp_path,
        [
            job("deep", every="300ms", depth=10_000),
            job("canary", every=CANARY_EVERY, kind=CANARY_KIND, log=str(canary_log)),
        ],
    )

    async with real_service(config) as svc:
        lateness = await canary_keeps_time(svc, canary_log, "deep", failures=3)
        deep = await svc.store.get("deep")
        failed_ticks = metric(svc.metrics, "pollerd_ticks_total", outcome="protocol")

    assert deep is not None and deep.last_status == "protocol"
    assert "nested too deeply" in (deep.last_error or "")
    assert failed_ticks >= 3
    assert max(lateness) < MAX_LATENESS_S, lateness


async def test_pollerd_tick_on_a_deep_reply_prints_a_clean_protocol_error(tmp_path: Path) -> None:
    config = setup_config(tmp_path, [job("deep", depth=10_000)])

    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pollerd.cli", "tick", "deep", "-c", str(config)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT_S):
        out, err = await process.communicate()
    result = json.loads(out)

    assert process.returncode == 1
    assert result["status"] == "protocol" and result["duplicates"] == 0
    assert "nested too deeply" in result["error"]
    assert "Traceback" not in err.decode()


async def test_duplicates_are_counted_and_a_cursor_reset_starts_a_new_id_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = setup_config(tmp_path, [job("again", ids=["same"]), job("counted")])
    caplog.set_level(logging.INFO, logger="pollerd.tick")

    async with real_service(config, schedule=False) as svc:
        first = await svc.tick_now("again")
        second = await svc.tick_now("again")
        for _ in range(2):
            await svc.tick_now("counted")  # item-0, item-1
        await admin.cursor(load_setup(config, {}), "counted", "reset", None)
        await wait_until(lambda: _cursor_is_none(svc, "counted"))
        reread = await svc.tick_now("counted")  # item-0 again, deliberately
        counted = await stored_events(svc.nc, "counted")
        duplicates = metric(svc.metrics, "pollerd_events_duplicate_total", kind=KIND)

    assert first is not None and first.duplicates == 0
    assert second is not None and second.ok and second.duplicates == 1
    assert any("job_id=again" in r.message and "duplicates=1" in r.message for r in caplog.records)
    assert duplicates == 1
    assert reread is not None and reread.ok and reread.duplicates == 0
    assert [event.id for event in counted] == ["item-0", "item-1", "item-0"]
    assert counted[-1].msg_id != counted[0].msg_id


async def _cursor_is_none(svc: Service, job_id: str) -> bool:
    state = await svc.store.get(job_id)
    return state is not None and state.cursor is None


async def test_a_deleted_events_stream_is_recreated_with_a_warning_and_the_tick_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = setup_config(tmp_path, [job("events")])

    async with real_service(config, schedule=False) as svc:
        assert svc.nc is not None
        await svc.tick_now("events")
        await svc.nc.jetstream().delete_stream(STREAM_NAME)
        after = await svc.tick_now("events")
        stored = await stored_events(svc.nc, "events")

    assert after is not None and after.ok, after
    assert [event.id for event in stored] == ["item-1"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"stream {STREAM_NAME} was missing" in r.getMessage() for r in warnings)


async def test_a_connection_closed_for_good_by_a_server_error_stops_the_service_with_the_cause(
    tmp_path: Path,
) -> None:
    config = setup_config(tmp_path, [job("events")])

    async with real_service(config, schedule=False) as svc:
        assert svc.nc is not None
        # nats-py checks a payload's size but not its headers': the server closes the
        # connection ("Maximum Payload Violation") and the client never reconnects.
        await svc.nc.publish("pollerd.test", b"", headers={"Big": "h" * svc.nc.max_payload})
        async with asyncio.timeout(CLI_TIMEOUT_S):
            await svc.wait()

    assert svc.link.fatal_error is not None
    assert "maximum payload" in svc.link.fatal_error.lower()


async def test_pollerd_run_exits_1_naming_the_cause_when_nats_closes_its_connection_for_good(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    write_plugins(tmp_path)
    config = write_config(
        tmp_path / "pollers.yaml", [job("events", every="200ms")], nats=nats_server.url
    )
    output = tmp_path / "pollerd.log"

    async with pollerd_run(config, output=output) as process:
        await wait_until(lambda: "outcome=ok" in output.read_text())
        # Credentials appear on the server (an operator's change): it closes pollerd's
        # connection with "Authorization Violation", after which nats-py never reconnects.
        await nats_server.reconfigure([NatsUser("someone", "else")])
        code = await exit_code(process)
    log = output.read_text()

    assert code == 1
    assert "was closed by the client after a server error" in log
    assert "Traceback" not in log
