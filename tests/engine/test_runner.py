"""TickRunner over MemoryStore and MemoryEventPublisher, with real plugin subprocesses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pollerd.config.pollers import JobConfig, RetryPolicy
from pollerd.config.schedule import EverySchedule
from pollerd.engine.events import MemoryEventPublisher
from pollerd.engine.runner import Route, TickRunner
from pollerd.errors import ErrorClass
from pollerd.stores.base import JobState, JobUpdate
from pollerd.stores.memory import MemoryStore
from pollerd.transports.base import Transport
from pollerd.transports.subprocess import SubprocessTransport
from pollerd.wire import TickReply, TickRequest, encode_cursor, make_tick_id

CORE = Path(__file__).parents[1] / "fixtures" / "core"
NOW = datetime(2026, 11, 22, 8, 0, 5, tzinfo=UTC)
SLOT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TICK_TIMEOUT_S = 10.0
JOB_ID = "job-1"


def job(kind: str = "faulty", **config: Any) -> JobConfig:
    return JobConfig(
        id=JOB_ID,
        kind=kind,
        schedule=EverySchedule(60.0),
        config=config,
        retry=RetryPolicy(attempts=1),
    )


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as memory:
        yield memory


@pytest.fixture
def publisher() -> MemoryEventPublisher:
    return MemoryEventPublisher()


@pytest.fixture
def runner(store: MemoryStore, publisher: MemoryEventPublisher) -> TickRunner:
    return TickRunner(store=store, publisher=publisher, clock=lambda: NOW)


@pytest.fixture
async def faulty() -> AsyncIterator[Route]:
    async with route_to("faulty.py") as route:
        yield route


@pytest.fixture
async def raw() -> AsyncIterator[Route]:
    async with route_to("raw_plugin.py") as route:
        yield route


@asynccontextmanager
async def route_to(script: str) -> AsyncIterator[Route]:
    """A Route to one fixture program through a real SubprocessTransport, closed after."""
    plugin_id = Path(script).stem.replace("_", "-")
    transport = SubprocessTransport(
        plugin_id=plugin_id,
        command="python",
        args=[str(CORE / script)],
        cwd=CORE,
        env_allow=[],
        environ={},
    )
    try:
        yield Route(plugin_id, transport, asyncio.Semaphore(4), TICK_TIMEOUT_S)
    finally:
        await transport.aclose()


async def stored(store: MemoryStore, *, cursor: bytes | None, **fields: Any) -> JobState:
    await store.ensure(JOB_ID, "faulty")
    return await store.update(JOB_ID, JobUpdate(cursor=cursor, **fields))


async def test_a_success_commits_the_new_cursor_and_clears_the_errors(
    runner: TickRunner, store: MemoryStore, faulty: Route
) -> None:
    await stored(
        store,
        cursor=b"old",
        consecutive_errors=3,
        last_status="timeout",
        last_error="plugin 'faulty' did not answer",
    )

    outcome = await runner.run(job(next_cursor=encode_cursor(b"\x00\xffnew")), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.ok and outcome.committed and outcome.attempts == 1
    assert state is not None
    assert state.cursor == b"\x00\xffnew"
    assert state.consecutive_errors == 0
    assert (state.last_status, state.last_error) == ("ok", None)
    assert state.last_run_at == state.last_success_at == NOW
    assert state.last_scheduled_at == SLOT


async def test_a_success_publishes_the_events_before_it_commits(
    runner: TickRunner, store: MemoryStore, publisher: MemoryEventPublisher, raw: Route
) -> None:
    first = encode_cursor(b"\x01")

    outcome = await runner.run(job("raw_cursor", cursors=[first]), raw, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.ok
    assert state is not None and state.cursor == b"\x01"
    assert [(e.subject, e.msg_id) for e in publisher.published] == [
        (f"pollerd.events.raw_cursor.{JOB_ID}", f"{JOB_ID}:{make_tick_id(JOB_ID, SLOT)}")
    ]
    assert publisher.published[0].event.data["wire_cursor"] is None


@pytest.mark.parametrize(
    "config",
    [{"next_cursor": None}, {"omit_cursor": True}],
    ids=["next_cursor-null", "next_cursor-absent"],
)
async def test_a_null_or_absent_next_cursor_keeps_the_stored_cursor(
    runner: TickRunner, store: MemoryStore, faulty: Route, config: dict[str, Any]
) -> None:
    await stored(store, cursor=b"\x00keep\xff")

    outcome = await runner.run(job(**config), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.ok and outcome.committed
    assert outcome.reply is not None and outcome.reply.next_cursor is None
    assert state is not None and state.cursor == b"\x00keep\xff"
    assert state.last_status == "ok"


async def test_an_empty_next_cursor_stores_an_empty_cursor_distinct_from_none(
    runner: TickRunner, store: MemoryStore, faulty: Route
) -> None:
    await stored(store, cursor=b"old")

    outcome = await runner.run(job(next_cursor=""), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.ok
    assert state is not None
    assert state.cursor is not None
    assert state.cursor == b""


async def test_an_empty_stored_cursor_reaches_the_plugin_as_an_empty_string_not_null(
    runner: TickRunner, store: MemoryStore, publisher: MemoryEventPublisher, raw: Route
) -> None:
    await stored(store, cursor=b"")

    outcome = await runner.run(job("raw_cursor", cursors=["", "AA"]), raw, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.ok, outcome.error
    assert publisher.published[0].event.data["wire_cursor"] == ""
    assert state is not None and state.cursor == b"\x00"


async def test_a_dry_run_neither_publishes_nor_commits(
    runner: TickRunner, store: MemoryStore, publisher: MemoryEventPublisher, raw: Route
) -> None:
    before = await stored(store, cursor=None)

    outcome = await runner.run(job("raw_cursor", cursors=["AQ"]), raw, SLOT, dry_run=True)

    assert outcome.ok and not outcome.committed
    assert outcome.reply is not None and outcome.reply.next_cursor == b"\x01"
    assert publisher.published == []
    assert await store.get(JOB_ID) == before


async def test_a_failed_tick_counts_an_error_and_keeps_the_cursor(
    runner: TickRunner, store: MemoryStore, faulty: Route
) -> None:
    await stored(store, cursor=b"keep", consecutive_errors=1)

    outcome = await runner.run(job(mode="bad_cursor"), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert (outcome.status, outcome.error_class) == ("protocol", ErrorClass.TRANSIENT)
    assert state is not None
    assert state.cursor == b"keep"
    assert state.consecutive_errors == 2
    assert state.last_status == "protocol"
    assert state.last_success_at is None


async def test_a_permanent_error_pauses_the_job_with_the_reason(
    runner: TickRunner, store: MemoryStore, faulty: Route
) -> None:
    await stored(store, cursor=b"keep")

    outcome = await runner.run(job(mode="permanent"), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.error_class is ErrorClass.PERMANENT
    assert state is not None and state.paused and state.cursor == b"keep"
    assert "permanent failure asked by the config" in (state.pause_reason or "")


async def test_a_paused_job_is_skipped_without_running_the_plugin(
    runner: TickRunner, store: MemoryStore, publisher: MemoryEventPublisher, raw: Route
) -> None:
    await stored(store, cursor=None, paused=True)

    outcome = await runner.run(job("raw_cursor", cursors=["AQ"]), raw, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.skipped == "paused" and outcome.attempts == 0
    assert publisher.published == []
    assert state is not None and state.cursor is None and state.last_run_at is None


async def test_a_slot_inside_an_open_breaker_is_skipped(
    runner: TickRunner, store: MemoryStore, faulty: Route
) -> None:
    await stored(
        store,
        cursor=b"keep",
        consecutive_errors=5,
        breaker_open_until=NOW + timedelta(seconds=30),
        breaker_cooldown_s=30.0,
    )

    outcome = await runner.run(job(next_cursor="AQ"), faulty, SLOT)

    state = await store.get(JOB_ID)
    assert outcome.skipped == "breaker_open"
    assert state is not None and state.cursor == b"keep" and state.consecutive_errors == 5


class _OperatorDuringTick(Transport):
    """Stands for an operator's `pollerd cursor set` landing while the plugin works."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def send(self, request: TickRequest, timeout_s: float) -> TickReply:
        await self._store.update(request.job_id, JobUpdate(cursor=b"operator"))
        return TickReply(next_cursor=b"plugin")


async def test_a_cursor_set_by_an_operator_during_a_tick_is_not_overwritten_by_its_commit(
    store: MemoryStore, runner: TickRunner
) -> None:
    await store.ensure(JOB_ID, "faulty")
    await store.update(JOB_ID, JobUpdate(cursor=b"before"))
    route = Route(
        plugin_id="faulty",
        transport=_OperatorDuringTick(store),
        limit=asyncio.Semaphore(1),
        tick_timeout_s=TICK_TIMEOUT_S,
    )

    outcome = await runner.run(job(), route, SLOT)
    state = await store.get(JOB_ID)

    assert outcome.ok and outcome.committed
    assert state is not None and state.cursor == b"operator" and state.last_status == "ok"
