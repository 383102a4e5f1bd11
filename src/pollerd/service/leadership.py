"""Leadership of a replicated pollerd (store nats-kv): schedule jobs only while holding the lease.

A replica starts as a standby: plugins supervised, HTTP up, jobs known but not scheduled. When
its lease wins, the claim pass writes the new epoch into every job's key, then the jobs are
scheduled (catch-up from each job's stored last slot). When the lease is lost or lapses, the
dispatcher starts nothing more and the jobs leave the scheduler; ticks still running finish
but their commits are refused by the fenced store. One log line per change of role.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pollerd.config.models import StoreConfig
from pollerd.natsio.lease import LeaderLease
from pollerd.ops.metrics import Metrics
from pollerd.stores.base import Store
from pollerd.stores.fenced import FencedView
from pollerd.stores.kv import KvStore

if TYPE_CHECKING:
    from pollerd.service.core import Service

logger = logging.getLogger(__name__)

# Test-only: "1" writes blind (no CAS, no epoch check); the chaos tests' negative control.
UNFENCED_SWITCH = "POLLERD_TEST_UNFENCED"
ROLE_LEADER = "leader"
ROLE_STANDBY = "standby"


def replica_name(options: StoreConfig, environ: Mapping[str, str]) -> str:
    """The store's ``name``, else ``POLLERD_REPLICA``, else ``<hostname>-<pid>``."""
    found = options.replica_name or environ.get("POLLERD_REPLICA")
    return found or f"{socket.gethostname()}-{os.getpid()}"


class Leadership:
    """This replica's role. ``start_leading`` and ``stop_leading`` are the service's hooks."""

    def __init__(
        self,
        store: KvStore,
        options: StoreConfig,
        metrics: Metrics,
        *,
        environ: Mapping[str, str],
        clock: Callable[[], datetime],
        start_leading: Callable[[], Awaitable[None]],
        stop_leading: Callable[[], None],
    ) -> None:
        self.name = replica_name(options, environ)
        self.store = store
        self.metrics = metrics
        self.fencing = environ.get(UNFENCED_SWITCH) != "1"
        self.since = clock()  # when this replica took its current role
        self._clock = clock
        self._start_leading = start_leading
        self._stop_leading = stop_leading
        self.lease = LeaderLease(
            store.client,
            bucket=options.bucket,
            name=self.name,
            ttl_s=options.lease_ttl_s,
            replicas=options.replicas,
            on_elected=self._elected,
            on_lost=self._lost,
        )
        if not self.fencing:
            logger.critical("%s=1: commits are NOT fenced (test-only switch)", UNFENCED_SWITCH)

    def tick_store(self) -> Store:
        """The store the tick runner commits through: fenced by this replica's epoch."""
        if not self.fencing:  # whatever epoch it last had, lapsed or not
            return FencedView(self.store, lambda: self.lease.epoch, fencing=False)
        return FencedView(self.store, self.lease.fence)

    def leading(self) -> bool:
        return self.lease.leading() or (not self.fencing and self.lease.epoch > 0)

    def standby_message(self) -> str:
        leader = self.lease.leader
        who = "unknown" if leader is None else f"{leader.name}, epoch {leader.epoch}"
        return f"replica {self.name} is a standby; ask the leader ({who})"

    def describe(self) -> dict[str, Any]:
        """What /readyz, the jobs listing and status show."""
        leader = self.lease.leader
        return {
            "replica": self.name,
            "role": ROLE_LEADER if self.leading() else ROLE_STANDBY,
            "since": self.since.isoformat(),
            "leader": None if leader is None else leader.to_json(),
        }

    async def _elected(self, epoch: int) -> None:
        started = time.perf_counter()
        claimed = await self.store.claim(epoch)
        self.since = self._clock()
        self.metrics.leadership(True)
        logger.warning(
            "replica %s leads with epoch %d (claimed %d job(s) in %.0f ms)",
            self.name,
            epoch,
            claimed,
            (time.perf_counter() - started) * 1000,
        )
        await self._start_leading()

    async def _lost(self, reason: str) -> None:
        self.since = self._clock()
        self.metrics.leadership(False)
        self._stop_leading()
        logger.warning("replica %s stepped down, now a standby: %s", self.name, reason)


def make_leadership(service: Service) -> Leadership | None:
    """The leadership of a scheduling service on the nats-kv store, else None (one process)."""
    store = service.store
    if not (service._schedule and isinstance(store, KvStore)):
        service.metrics.leadership(True, change=False)  # one process leads alone
        return None

    async def lead() -> None:
        assert service._dispatcher is not None
        service._dispatcher.resume()
        await service._add_jobs(service.setup.jobs)  # after the claim pass: catch-up from there

    def follow() -> None:
        assert service._dispatcher is not None and service._scheduler is not None
        service._dispatcher.hold()
        for job in service.setup.jobs:
            service._scheduler.remove(job.id)

    leadership = Leadership(
        store,
        service.config.store,
        service.metrics,
        environ=service.environ,
        clock=service.clock,
        start_leading=lead,
        stop_leading=follow,
    )
    service.replica = leadership.name  # tick records say which replica ran the tick
    return leadership
