"""Chaos with real processes: 0 double commits, 0 lost cursor updates, 0 stale-epoch commits.

The short run is part of ``make test``; ``make chaos`` runs the long seeded one
(``POLLERD_CHAOS_ROUNDS``, ``POLLERD_CHAOS_SEED``, ``POLLERD_CHAOS_TTL``) and prints the counts
and failover times.
The negative control runs the first fault with fencing switched off (a test-only switch) and
must fail the same assertions: it shows the checks can catch the bug.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.replicas.chaos import report_text, run_chaos
from natscluster import NatsCluster

pytestmark = [pytest.mark.nats, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=3) as nodes:
        yield nodes


@pytest.mark.timeout(240)
async def test_chaos_leaves_no_double_commit_no_lost_update_no_stale_epoch_commit(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    report = await run_chaos(tmp_path / "run", cluster)

    print(report_text(report))
    assert report.counts.tick_commits > 50
    assert report.counts.failures() == {}, "\n".join(report.counts.details + report.log)


@pytest.mark.timeout(120)
async def test_without_fencing_the_same_checks_fail(tmp_path: Path, cluster: NatsCluster) -> None:
    report = await run_chaos(tmp_path / "run", cluster, fencing=False)

    failures = report.counts.failures()
    assert failures.get("double_commits", 0) > 0
    assert failures.get("older_epoch_commits", 0) > 0
    assert failures.get("chain_breaks", 0) > 0


@pytest.mark.chaos
@pytest.mark.timeout(7200)
async def test_long_seeded_chaos(tmp_path: Path, cluster: NatsCluster) -> None:
    rounds = int(os.environ.get("POLLERD_CHAOS_ROUNDS", "0"))
    if rounds <= 0:
        pytest.skip("the long chaos run is `make chaos` (POLLERD_CHAOS_ROUNDS)")
    seed = int(os.environ.get("POLLERD_CHAOS_SEED", "1"))
    ttl_s = int(os.environ.get("POLLERD_CHAOS_TTL", "3"))

    report = await run_chaos(tmp_path / "run", cluster, rounds=rounds, seed=seed, ttl_s=ttl_s)

    print(f"seed {seed}, {rounds} round(s), lease TTL {ttl_s}s:\n{report_text(report)}")
    assert report.counts.failures() == {}, "\n".join(report.counts.details + report.log)
