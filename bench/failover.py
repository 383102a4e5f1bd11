"""Replicas: failover time against the lease TTL, and the KV store's commit cost against SQLite.

Run: ``.venv/bin/python bench/failover.py [--ttls 2,4,8] [--trials 3] [--seconds 5]``.

Failover: for each lease TTL T, three ``pollerd run`` replicas of four ``chain`` jobs (every
250 ms) on a 3-node nats-server cluster on loopback (the test fixtures of tests/replication).
Each trial SIGKILLs the leader, or SIGSTOPs it for 3 T and then SIGCONTs it, and measures the
time from the signal to the first tick commit of the next leader, as the state bucket
republishes it. The floor is T itself (the lease must lapse); the goal is ≤ 1.2 T for SIGKILL.
After each SIGCONT it counts the commits that still carry the frozen leader's epoch: the fencing
must refuse them all (0 accepted).

Store cost: 64 jobs, 64 workers each reading its job and committing a new cursor in a loop (what
a tick does to the store), for S seconds: commits/s of the nats-kv store (R1 on one node, and R3
on the cluster, fenced as a leader writes) against SQLite in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import benchlib  # noqa: F401 - first: it keeps bench/nats.py from shadowing the nats package

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from fixtures.replicas import audit  # noqa: E402 - the replication tests' fixtures
from fixtures.replicas.chaos import CommitWatch  # noqa: E402
from fixtures.replicas.kit import BUCKET, ReplicaSet  # noqa: E402
from natscluster import NatsCluster  # noqa: E402
from pollerd.natsio.connection import connect  # noqa: E402
from pollerd.stores.base import JobUpdate, Store  # noqa: E402
from pollerd.stores.fenced import FencedView  # noqa: E402
from pollerd.stores.kv import KvStore  # noqa: E402
from pollerd.stores.sqlite import SqliteStore  # noqa: E402

JOBS = {f"j{i}": 0.25 for i in range(1, 5)}
IN_FLIGHT = 64
FROZEN_TTLS = 3


async def failover(root: Path, ttl_s: int, trials: int) -> dict[str, list[float]]:
    cluster = NatsCluster(root / "nats", size=3)
    cluster.start()
    found: dict[str, list[float]] = {"sigkill": [], "sigstop": [], "stale_accepted": []}
    replicas = ReplicaSet(
        root / "replicas", cluster.urls, JOBS, root / "calls.jsonl", lease_ttl_s=ttl_s
    )
    nc = await connect(cluster.node(audit.AUDIT_NODE).url, name="bench-failover")
    watch = CommitWatch()
    try:
        await audit.prepare(nc, BUCKET, replicas=3)
        await watch.start(nc)
        for _ in range(trials):
            for kind in ("sigkill", "sigstop"):
                leader = await _settle(replicas, watch)
                epoch = watch.newest_epoch()
                hit = time.monotonic()
                if kind == "sigkill":
                    await replicas.kill(leader)
                else:
                    replicas.signal(leader, signal.SIGSTOP)
                took = await watch.first_commit_after(hit, epoch, 20 * ttl_s)
                found[kind].append(took)
                if kind == "sigstop":
                    await asyncio.sleep(max(0.0, hit + FROZEN_TTLS * ttl_s - time.monotonic()))
                    resumed = time.monotonic()
                    replicas.signal(leader, signal.SIGCONT)
                    await asyncio.sleep(ttl_s)
                    stale = [1 for at, e in watch.commits if at >= resumed and e == epoch]
                    found["stale_accepted"].append(float(len(stale)))
                else:
                    await replicas.start(leader)
    finally:
        await replicas.close()
        await nc.close()
        cluster.stop()
    return found


async def _settle(replicas: ReplicaSet, watch: CommitWatch) -> str:
    for name, replica in replicas.replicas.items():
        if not replica.running:
            await replicas.start(name)
    for name in replicas.replicas:
        await replicas.wait_ready(name, timeout_s=60)
    leader = await replicas.wait_leader(60)
    await watch.first_commit_after(time.monotonic(), 0, 60)
    return leader


async def commits_per_s(store: Store, seconds: float) -> float:
    jobs = [f"job{i}" for i in range(IN_FLIGHT)]
    for job in jobs:
        await store.ensure(job, "bench")
    done = [0]
    stop_at = time.monotonic() + seconds

    async def worker(job: str) -> None:
        while time.monotonic() < stop_at:
            state = await store.get(job)
            cursor = (state.cursor if state else None) or b""
            await store.update(job, JobUpdate(cursor=cursor[-16:] + b"+"), expect_cursor=cursor)
            done[0] += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(job) for job in jobs))
    return done[0] / (time.monotonic() - started)


async def store_cost(root: Path, seconds: float) -> dict[str, float]:
    single = NatsCluster(root / "single", size=1)
    cluster = NatsCluster(root / "cluster", size=3)
    single.start()
    cluster.start()
    try:
        results: dict[str, float] = {}
        variants: dict[str, Callable[[], Store]] = {
            "sqlite": lambda: SqliteStore(root / "state.db"),
            "nats-kv R1": lambda: _kv(single.urls, 1),
            "nats-kv R3 fenced": lambda: _kv(cluster.urls, 3),
        }
        for name, make in variants.items():
            opened = make()
            async with opened:
                measured: Store = opened
                if isinstance(opened, KvStore) and "fenced" in name:
                    await opened.claim(1)
                    measured = FencedView(opened, lambda: 1)
                results[name] = await commits_per_s(measured, seconds)
        return results
    finally:
        single.stop()
        cluster.stop()


def _kv(urls: str, replicas: int) -> KvStore:
    factory: Callable[[], Awaitable[object]] = lambda: connect(urls, name="bench-kv")  # noqa: E731
    return KvStore(factory, bucket="BENCH", replicas=replicas)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttls", default="2,4,8", help="lease TTLs in whole seconds")
    parser.add_argument("--trials", type=int, default=3, help="kills and stops per TTL")
    parser.add_argument("--seconds", type=float, default=5.0, help="store measurement window")
    parser.add_argument("--skip-failover", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pollerd-failover-") as tmp:
        root = Path(tmp)
        if not args.skip_failover:
            print("failover: signal to the next leader's first commit, over the lease TTL")
            for ttl_s in (int(t) for t in args.ttls.split(",")):
                found = asyncio.run(failover(root / f"ttl{ttl_s}", ttl_s, args.trials))
                for kind in ("sigkill", "sigstop"):
                    times = found[kind]
                    median = statistics.median(times)
                    print(
                        f"  T={ttl_s}s {kind:7}: median {median:5.2f}s = {median / ttl_s:.2f} T "
                        f"(runs: {', '.join(f'{t:.2f}' for t in times)})"
                    )
                stale = int(sum(found["stale_accepted"]))
                print(f"  T={ttl_s}s commits accepted from a resumed old leader: {stale}")
        print(f"store commits/s, {IN_FLIGHT} in flight (read + CAS per commit)")
        cost = asyncio.run(store_cost(root / "store", args.seconds))
        base = cost["sqlite"]
        for name, rate in cost.items():
            print(f"  {name:18} {rate:9.0f}/s  = {rate / base:.2f} x sqlite")


if __name__ == "__main__":
    main()
