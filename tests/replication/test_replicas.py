"""Replicas on a 3-node NATS cluster: one leads, a standby takes over, cursors are kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fixtures.replicas.kit import ReplicaSet
from natscluster import NatsCluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]

TTL_S = 2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=3) as nodes:
        yield nodes


@pytest.fixture
async def replicas(tmp_path: Path, cluster: NatsCluster) -> AsyncIterator[ReplicaSet]:
    found = ReplicaSet(
        tmp_path / "replicas",
        cluster.urls,
        {"j1": 0.5, "j2": 1.0},
        tmp_path / "calls.jsonl",
        lease_ttl_s=TTL_S,
        names=("a", "b"),
    )
    yield found
    await found.close()


async def jobs_of(replicas: ReplicaSet, name: str) -> tuple[list[dict[str, object]], str]:
    code, out, err = await replicas.cli(name, "jobs", "--json")
    assert code == 0, err
    return json.loads(out), err


@pytest.mark.timeout(120)
async def test_kill_9_of_the_leader_moves_the_lead_within_the_lease_and_keeps_every_cursor(
    replicas: ReplicaSet,
) -> None:
    for name in ("a", "b"):
        await replicas.start(name)
    for name in ("a", "b"):
        await replicas.wait_ready(name)
    leader = await replicas.wait_leader()
    standby = "b" if leader == "a" else "a"
    assert await replicas[standby].role() == "standby"
    async with asyncio.timeout(TTL_S):  # a standby reads the lease every TTL/8
        while (ready := await replicas[standby].readiness()) is None or not (  # noqa: ASYNC110
            ready["leadership"]["leader"]  # type: ignore[index]
        ):
            await asyncio.sleep(0.05)
    assert ready["status"] == "ready"
    assert ready["leadership"]["leader"]["name"] == leader  # type: ignore[index]
    await asyncio.sleep(2)  # a few ticks commit
    before, leader_line = await jobs_of(replicas, standby)

    killed = time.monotonic()
    await replicas.kill(leader)
    assert await replicas.wait_leader(timeout_s=TTL_S + 2) == standby
    took_s = time.monotonic() - killed

    after, _ = await jobs_of(replicas, standby)
    assert took_s < TTL_S + 2
    assert f"leader: {leader} " in leader_line
    cursors = {row["id"]: row["cursor"] for row in before}
    assert all(cursors.values())
    await asyncio.sleep(1.5)
    moved, _ = await jobs_of(replicas, standby)
    assert all(row["cursor"] != cursors[row["id"]] for row in moved)  # the new leader ticks on
    await replicas.start(leader)
    await replicas.wait_ready(leader)
    on_old, _ = await jobs_of(replicas, leader)
    on_new, _ = await jobs_of(replicas, standby)
    assert [row["id"] for row in on_old] == [row["id"] for row in on_new] == ["j1", "j2"]
    assert await replicas[leader].role() == "standby"
