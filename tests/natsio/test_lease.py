"""The leader lease on a real nats-server: one leader, standbys that see it, release, lapse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from cancelrace import lost_cancellations
from natscluster import NatsCluster
from pollerd.natsio.connection import connect
from pollerd.natsio.lease import (
    LEASE_KEY,
    Leader,
    LeaderLease,
    parse_leader,
    poll_interval_s,
    read_leader,
)
from pollerd.natsio.lease import renew_interval_s as renew_every

pytestmark = pytest.mark.nats

TTL_S = 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=1) as node:
        yield node


@pytest.fixture
async def nc(server: NatsCluster) -> AsyncIterator[Client]:
    client = await connect(server.urls, name="pytest-lease")
    yield client
    await client.close()


def lease(nc: Client, name: str, events: list[str], **kw: object) -> LeaderLease:
    async def elected(epoch: int) -> None:
        events.append(f"{name} elected {epoch}")

    async def lost(reason: str) -> None:
        events.append(f"{name} lost: {reason}")

    return LeaderLease(
        nc,
        bucket="T",
        name=name,
        ttl_s=TTL_S,
        on_elected=elected,
        on_lost=lost,
        **kw,  # type: ignore[arg-type]
    )


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def test_standbys_poll_at_an_eighth_and_the_leader_renews_at_a_third_of_the_ttl() -> None:
    assert (poll_interval_s(8), renew_every(9)) == (1.0, 3.0)


@pytest.mark.parametrize(
    ("data", "revision", "expected"),
    [
        (b'{"name": "a", "since": "2026-11-22T08:00:00+00:00"}', 7, 7),
        (b'{"name": "a", "epoch": 5, "since": "2026-11-22T08:00:00+00:00"}', 9, 5),
        (b"not json", 3, None),
    ],
    ids=["created-not-renewed", "renewed", "unreadable"],
)
def test_a_lease_value_names_its_epoch(data: bytes, revision: int, expected: int | None) -> None:
    found = parse_leader(data, revision)

    assert (found.epoch if isinstance(found, Leader) else None) == expected


async def test_one_of_two_replicas_leads_and_the_other_sees_it(nc: Client) -> None:
    events: list[str] = []
    async with lease(nc, "a", events) as first:
        await until(first.leading)
        async with lease(nc, "b", events) as second:
            await until(lambda: second.leader is not None)

            assert not second.leading() and second.fence() == 0
            assert second.leader is not None and second.leader.name == "a"
            assert second.leader.epoch == first.epoch == first.fence() > 0
            assert (await read_leader(nc, "T")) == first.leader
            assert events == [f"a elected {first.epoch}"]


async def test_a_released_lease_is_taken_by_the_standby_with_a_newer_epoch(nc: Client) -> None:
    events: list[str] = []
    leader = lease(nc, "a", events)
    async with leader:
        await until(leader.leading)
        old_epoch = leader.epoch
        standby = lease(nc, "b", events)
        await standby.__aenter__()
    try:
        await until(standby.leading, timeout_s=TTL_S)  # released: no need to wait for the TTL

        assert standby.epoch > old_epoch
        assert events == [f"a elected {old_epoch}", f"b elected {standby.epoch}"]
    finally:
        await standby.__aexit__(None, None, None)


async def test_a_leader_frozen_past_its_ttl_stops_leading_before_its_loop_runs(
    nc: Client,
) -> None:
    clock = Clock()
    events: list[str] = []
    async with lease(nc, "a", events, clock=clock) as leader:
        await until(leader.leading)

        clock.now += TTL_S  # as if the process had been stopped for the whole TTL

        assert not leader.leading()
        assert leader.fence() == 0


async def test_a_standby_stops_competing_when_cancelled_even_as_an_answer_lands(
    nc: Client,
) -> None:
    # A cancellation lost in nats-py's request (Python 3.11's wait_for) kept the loop competing:
    # during a shutdown it could take the lease and start a claim pass.
    events: list[str] = []
    async with lease(nc, "a", events) as leader:
        await until(leader.leading)
        standby = lease(nc, "b", events)
        standby._kv = await standby._bucket()

        lost = await lost_cancellations(standby._run)

        assert lost == []
        assert events == [f"a elected {leader.epoch}"]


async def test_a_leader_stops_renewing_when_cancelled_even_as_an_acknowledgement_lands(
    nc: Client,
) -> None:
    events: list[str] = []
    leader = lease(nc, "a", events)
    kv = leader._kv = await leader._bucket()
    await leader._try_take()
    epoch, held = leader.epoch, leader.leader
    assert epoch > 0

    async def lead_again() -> None:
        """A renewal cancelled in flight may land unseen (then the next one is refused and the
        lease steps down): start each round from the key as it is, leading."""
        leader._revision = (await kv.get(LEASE_KEY)).revision or 0
        leader._epoch, leader.leader = epoch, held
        leader._valid_until = time.monotonic() + TTL_S

    lost = await lost_cancellations(leader._run, before_each=lead_again)

    await leader._release()
    assert lost == []


async def test_a_replica_cancelled_as_it_takes_the_lease_does_not_start_leading(
    nc: Client,
) -> None:
    # Else a replica shutting down could run a claim pass and start scheduling. A lease taken
    # as the cancellation came is released on exit (``free_lease``), as before.
    events: list[str] = []
    taker = lease(nc, "b", events)
    kv = taker._kv = await taker._bucket()

    async def free_lease() -> None:
        """As the lease's exit does, then whatever a create cancelled in flight left."""
        if taker._epoch:
            await taker._release()
        await kv.purge(LEASE_KEY)

    lost = await lost_cancellations(taker._try_take, before_each=free_lease)
    await free_lease()

    assert lost == []
