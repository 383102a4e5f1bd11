"""nats-kv: a tick's commit whose slot another commit already holds is dropped (DESIGN §10).

Two replicas (two stores on one bucket, each its own connection) commit the same slot of one
job, as a new leader's catch-up re-running a slot the old leader committed would.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from natscluster import NatsCluster
from pollerd.config.pollers import JobConfig, RetryPolicy
from pollerd.config.schedule import EverySchedule
from pollerd.engine.events import MemoryEventPublisher
from pollerd.engine.runner import SKIP_COMMITTED, Route, TickRunner
from pollerd.errors import SlotCommittedError, StoreFencedError
from pollerd.natsio.connection import connect
from pollerd.stores.base import JobUpdate, TickRecord
from pollerd.stores.kv import Fence, KvStore
from pollerd.transports.base import Transport
from pollerd.wire import TickReply, TickRequest, make_tick_id

pytestmark = pytest.mark.nats

JOB = "inbox"
SLOT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
_buckets = itertools.count()


@pytest.fixture
async def replicas(kv_server: NatsCluster) -> AsyncIterator[tuple[KvStore, KvStore]]:
    """Two stores on one new bucket, as two pollerd replicas open it; the job exists."""
    bucket = f"S{next(_buckets)}"
    first = KvStore(lambda: connect(kv_server.urls, name="pytest-a"), bucket=bucket)
    second = KvStore(lambda: connect(kv_server.urls, name="pytest-b"), bucket=bucket)
    async with first, second:
        await first.ensure(JOB, "dir_watch")
        yield first, second


def commit(slot: datetime, replica: str, ran_at: datetime, cursor: bytes) -> JobUpdate:
    """What ``TickRunner`` commits for a successful tick of ``slot``."""
    record = TickRecord(make_tick_id(JOB, slot), slot, ran_at, "ok", 1, 0.25, 1, None, replica)
    return JobUpdate(
        cursor=cursor,
        last_status="ok",
        last_run_at=ran_at,
        last_success_at=ran_at,
        last_scheduled_at=slot,
        consecutive_errors=0,
        tick=record,
    )


def failure(slot: datetime, replica: str, ran_at: datetime) -> JobUpdate:
    """What ``TickRunner`` commits for a failed tick of ``slot``."""
    record = TickRecord(make_tick_id(JOB, slot), slot, ran_at, "timeout", 3, 9.0, 0, "t", replica)
    return JobUpdate(
        last_status="timeout",
        last_run_at=ran_at,
        last_scheduled_at=slot,
        consecutive_errors=1,
        tick=record,
    )


def epoch(number: int) -> Fence:
    return lambda: number


async def test_a_slot_committed_by_another_replica_is_dropped_on_a_fresh_read(
    replicas: tuple[KvStore, KvStore],
) -> None:
    old, new = replicas
    kept = await old.update(JOB, commit(SLOT, "a", SLOT + STEP / 2, b"a"), fence=epoch(1))
    await new.get(JOB)  # the new leader's tick reads the job: the slot is committed already

    with pytest.raises(SlotCommittedError) as dropped:
        await new.update(JOB, commit(SLOT, "b", SLOT + STEP, b"b"), fence=epoch(2))

    assert (dropped.value.job_id, dropped.value.slot) == (JOB, SLOT)
    assert dropped.value.committed_by == make_tick_id(JOB, SLOT)
    assert not isinstance(dropped.value, StoreFencedError)  # no reason to step down
    assert await new.get(JOB) == kept
    assert [tick.replica for tick in await old.history(JOB, 10)] == ["a"]


async def test_a_slot_committed_since_the_tick_read_the_job_is_dropped_on_the_lost_cas(
    replicas: tuple[KvStore, KvStore],
) -> None:
    first, second = replicas
    await second.get(JOB)  # the tick starts: the revision it will write against
    kept = await first.update(JOB, failure(SLOT, "a", SLOT + STEP / 2), fence=epoch(1))

    with pytest.raises(SlotCommittedError):
        await second.update(JOB, commit(SLOT, "b", SLOT + STEP, b"b"), fence=epoch(1))

    assert await first.get(JOB) == kept
    assert [tick.replica for tick in await first.history(JOB, 10)] == ["a"]


async def test_a_later_slot_still_commits_after_a_dropped_one(
    replicas: tuple[KvStore, KvStore],
) -> None:
    old, new = replicas
    await old.update(JOB, commit(SLOT, "a", SLOT + STEP / 2, b"a"), fence=epoch(1))
    with pytest.raises(SlotCommittedError):
        await new.update(JOB, commit(SLOT, "b", SLOT + STEP, b"b"), fence=epoch(2))

    later = await new.update(JOB, commit(SLOT + STEP, "b", SLOT + STEP * 2, b"c"), fence=epoch(2))

    assert (later.cursor, later.last_scheduled_at) == (b"c", SLOT + STEP)
    history = await old.history(JOB, 10)
    assert [(tick.slot, tick.replica) for tick in history] == [(SLOT + STEP, "b"), (SLOT, "a")]


async def test_an_older_slot_after_a_newer_one_is_dropped(
    replicas: tuple[KvStore, KvStore],
) -> None:
    first, second = replicas
    await first.update(JOB, commit(SLOT + STEP, "a", SLOT + STEP * 2, b"a"), fence=epoch(1))

    with pytest.raises(SlotCommittedError) as dropped:
        await second.update(JOB, failure(SLOT, "b", SLOT + STEP * 2), fence=epoch(1))

    assert dropped.value.committed_by == make_tick_id(JOB, SLOT + STEP)
    assert dropped.value.stored_slot == SLOT + STEP


async def test_a_newer_epoch_in_the_key_is_still_fencing_not_a_dropped_slot(
    replicas: tuple[KvStore, KvStore],
) -> None:
    new, old = replicas
    await new.update(JOB, commit(SLOT, "a", SLOT + STEP / 2, b"a"), fence=epoch(2))

    with pytest.raises(StoreFencedError) as refused:
        await old.update(JOB, commit(SLOT, "b", SLOT + STEP, b"b"), fence=epoch(1))

    assert not isinstance(refused.value, SlotCommittedError)


async def test_the_same_commit_sent_again_is_its_own_landed_write_not_a_second_one(
    replicas: tuple[KvStore, KvStore],
) -> None:
    store, _ = replicas
    change = commit(SLOT, "a", SLOT + STEP / 2, b"a")
    written = await store.update(JOB, change, fence=epoch(1))

    again = await store.update(JOB, change, fence=epoch(1))

    assert again == written
    assert len(await store.history(JOB, 10)) == 1


async def test_without_history_the_commit_time_tells_a_landed_write_from_another_one(
    replicas: tuple[KvStore, KvStore],
) -> None:
    first, second = replicas
    change = replace(commit(SLOT, "a", SLOT + STEP / 2, b"a"), keep_ticks=0)
    written = await first.update(JOB, change, fence=epoch(1))

    again = await first.update(JOB, change, fence=epoch(1))
    other = replace(commit(SLOT, "b", SLOT + STEP, b"b"), keep_ticks=0)
    with pytest.raises(SlotCommittedError) as dropped:
        await second.update(JOB, other, fence=epoch(1))

    assert again == written == await second.get(JOB)
    assert dropped.value.committed_by is None


async def test_catch_up_slots_in_order_then_a_manual_tick_all_commit(
    replicas: tuple[KvStore, KvStore],
) -> None:
    store, _ = replicas
    slots = [SLOT + STEP * n for n in range(3)]
    for n, slot in enumerate(slots):
        await store.update(JOB, commit(slot, "a", slots[-1] + STEP, bytes([n])), fence=epoch(1))
    manual = slots[-1] + STEP * 1.5  # `pollerd tick`: its slot is the moment it was asked for

    state = await store.update(JOB, commit(manual, "a", manual, b"m"), fence=epoch(1))

    assert state.last_scheduled_at == manual
    assert len(await store.history(JOB, 10)) == 4


async def test_writes_without_a_tick_are_not_checked(replicas: tuple[KvStore, KvStore]) -> None:
    first, second = replicas
    await first.update(JOB, commit(SLOT, "a", SLOT + STEP, b"a"), fence=epoch(1))

    state = await second.update(JOB, JobUpdate(cursor=b"operator", last_scheduled_at=SLOT))

    assert state.cursor == b"operator"


class _OtherReplicaCommits(Transport):
    """While this replica's plugin works, the other replica commits the same slot."""

    def __init__(self, other: KvStore) -> None:
        self._other = other

    async def send(self, request: TickRequest, timeout_s: float) -> TickReply:
        slot = request.scheduled_at
        await self._other.update(JOB, commit(slot, "a", slot + STEP / 2, b"a"), fence=epoch(1))
        return TickReply(next_cursor=b"b")


async def test_the_runner_drops_the_slot_with_one_warning_and_counts_no_success(
    replicas: tuple[KvStore, KvStore], caplog: pytest.LogCaptureFixture
) -> None:
    other, mine = replicas
    runner = TickRunner(
        store=mine, publisher=MemoryEventPublisher(), clock=lambda: SLOT + STEP, replica="b"
    )
    job = JobConfig(id=JOB, kind="dir_watch", schedule=EverySchedule(60.0), retry=RetryPolicy())
    route = Route("dir-watch", _OtherReplicaCommits(other), asyncio.Semaphore(1), 10.0)

    with caplog.at_level(logging.WARNING, logger="pollerd.engine.runner"):
        outcome = await runner.run(job, route, SLOT)

    assert (outcome.status, outcome.skipped, outcome.committed) == (
        "skipped",
        SKIP_COMMITTED,
        False,
    )
    assert not outcome.ok
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert JOB in warnings[0] and make_tick_id(JOB, SLOT) in warnings[0]
    assert [tick.replica for tick in await mine.history(JOB, 10)] == ["a"]
