"""The CPU cost of a tick's store work (``get`` then ``update`` with a history record).

Run: ``.venv/bin/python bench/store_commit.py [--jobs N] [--writes N] [--batch N ...]
[--rate N] [--window-ms N] [--repeat N] [--profile]``. The store holds ``--jobs`` jobs whose
history is already full (``keep_ticks`` records each), so every commit also drops the oldest
record, as in a long-running service.

``--batch``: the ticks are committed in rounds of that many concurrent ticks (one group-commit
batch each). ``--rate``: the ticks arrive one at a time at that many per second of wall time
(the pattern of a service with 10,000 jobs every 10 s), so the batches are what the store's
group commit gathers. The figure is process CPU time per tick, which a busy machine disturbs
less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pollerd.stores.base import JobSeed, JobUpdate, Store, TickRecord
from pollerd.stores.sqlite import SqliteStore

KEEP = 50
SLOT = datetime(2026, 11, 22, tzinfo=UTC)


def job_ids(jobs: int) -> list[str]:
    return [f"job{i:05d}" for i in range(jobs)]


def change(n: int) -> JobUpdate:
    """A successful tick's change, as the runner makes it (no cursor from the plugin)."""
    now = SLOT + timedelta(microseconds=n * 1013)
    record = TickRecord(f"t{n}", now, now, "ok", 1, 0.001, 0, None, "bench")
    return JobUpdate(
        last_status="ok",
        last_error=None,
        last_run_at=now,
        last_success_at=now,
        last_scheduled_at=now,
        consecutive_errors=0,
        breaker_open_until=None,
        breaker_cooldown_s=None,
        tick=record,
        keep_ticks=KEEP,
    )


async def seed(path: Path, jobs: int) -> None:
    """Create the jobs, then give each a full history (written directly: much faster)."""
    async with SqliteStore(path) as store:
        await store.ensure_many([JobSeed(job_id, "probe") for job_id in job_ids(jobs)])
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tick_history VALUES (?, ?, 't', 0.0, 0.0, 'ok', 1, 0.0, 0, NULL, '')",
            ((job_id, n) for job_id in job_ids(jobs) for n in range(1, KEEP + 1)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def tick(store: Store, job_id: str, n: int) -> None:
    await store.get(job_id)
    await store.update(job_id, change(n))


async def by_batch(store: Store, ids: list[str], writes: int, batch: int) -> float:
    started = time.process_time()
    for start in range(0, writes, batch):
        await asyncio.gather(
            *(tick(store, ids[(start + j) % len(ids)], start + j) for j in range(batch))
        )
    return (time.process_time() - started) / writes * 1e6


async def by_rate(store: Store, ids: list[str], writes: int, rate: float) -> float:
    """Ticks started by timers, ``rate`` a second, as a scheduler starts them."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    began = loop.time() + 0.01

    def start(n: int) -> None:
        tasks.append(asyncio.create_task(tick(store, ids[n % len(ids)], n)))

    started = time.process_time()
    for n in range(writes):
        loop.call_at(began + n / rate, start, n)
    await asyncio.sleep(writes / rate + 0.02)
    await asyncio.gather(*tasks)
    return (time.process_time() - started) / writes * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 5, 20, 100])
    parser.add_argument("--rate", type=float, default=0.0, help="ticks per second (not batches)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the least is shown")
    parser.add_argument("--window-ms", type=float, default=0.0, help="the group-commit window")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        await seed(path, args.jobs)
        ids = job_ids(args.jobs)
        window = {"commit_window_s": args.window_ms / 1000} if args.window_ms else {}
        async with SqliteStore(path, **window) as store:
            await by_batch(store, ids, args.jobs, 100)  # every job read once: warm caches
            runs = range(args.repeat)
            profile = cProfile.Profile() if args.profile else None
            if profile is not None:
                profile.enable()
            if args.rate:
                us = min([await by_rate(store, ids, args.writes, args.rate) for _ in runs])
                print(
                    f"{args.rate:g} ticks/s, window {args.window_ms:g} ms: {us:.1f} µs CPU per tick"
                )
            else:
                for batch in args.batch:
                    us = min([await by_batch(store, ids, args.writes, batch) for _ in runs])
                    print(f"batch {batch}: {us:.1f} µs CPU per tick")
            if profile is not None:
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
