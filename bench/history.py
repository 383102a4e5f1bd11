"""The cost of tick history: a tick's commit with its history record against one without.

Run: ``.venv/bin/python bench/history.py [--jobs N] [--rounds N]``. Each round commits one tick
of every job concurrently (so the SQLite store writes them in one group-commit transaction), as
a busy service does; rounds with and without a history record alternate (A, B, B, A, ...), and
the figures are medians of the per-commit time, measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pollerd.stores.base import JobUpdate, TickRecord
from pollerd.stores.sqlite import SqliteStore

SLOT = datetime(2026, 11, 22, tzinfo=UTC)


def change(n: int, job_id: str, with_history: bool) -> JobUpdate:
    slot = SLOT + timedelta(seconds=n)
    record = TickRecord(f"{job_id}@{n}", slot, slot, "ok", 1, 0.01, 2, None, "bench")
    return JobUpdate(
        cursor=str(n).encode(),
        last_status="ok",
        last_run_at=slot,
        last_success_at=slot,
        last_scheduled_at=slot,
        tick=record if with_history else None,
        keep_ticks=50,
    )


async def round_us(store: SqliteStore, jobs: list[str], n: int, with_history: bool) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(store.update(j, change(n, j, with_history)) for j in jobs))
    return (time.perf_counter() - started) / len(jobs) * 1e6


async def main(jobs_count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "state.db") as store:
            jobs = [f"job-{i}" for i in range(jobs_count)]
            for job in jobs:
                await store.ensure(job, "bench")
            for n in range(60):  # past the bound: every later commit also drops a record
                await round_us(store, jobs, n, True)
            plain: list[float] = []
            history: list[float] = []
            for n in range(rounds):
                order = (False, True) if n % 2 == 0 else (True, False)
                for with_history in order:
                    cost = await round_us(store, jobs, 1000 + 2 * n + with_history, with_history)
                    (history if with_history else plain).append(cost)
    a, b = statistics.median(plain), statistics.median(history)
    print(f"{jobs_count} jobs per group commit, {rounds} rounds each")
    print(f"commit without history: {a:7.1f} µs per tick (baseline)")
    print(f"commit with history:    {b:7.1f} µs per tick ({b / a:.2f}x, +{b - a:.1f} µs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.rounds))
