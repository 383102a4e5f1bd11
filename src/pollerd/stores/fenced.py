"""The store a leader's tick runner writes through: every write fenced by the leader's epoch."""

from __future__ import annotations

import logging

from pollerd.stores.base import UNSET, JobState, JobUpdate, Store, Unset
from pollerd.stores.kv import Fence, KvStore

logger = logging.getLogger(__name__)


class FencedView(Store):
    """What a leader's tick runner writes through: the ``KvStore`` with every write fenced.

    ``fence()`` returns the leader's epoch, or raises ``StoreFencedError`` once the lease is
    lost. ``fencing=False`` is the test-only negative control: blind writes, no epoch check.
    Opening and closing are the underlying store's business.
    """

    def __init__(self, store: KvStore, fence: Fence, *, fencing: bool = True) -> None:
        self.store = store
        self.fence = fence
        self.fencing = fencing
        self._read_at: dict[str, int] = {}  # the epoch when each job's state was last read

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get(self, job_id: str) -> JobState | None:
        """A tick starts by reading its job: the epoch it runs under is noted here."""
        self._read_at[job_id] = self.fence()
        return await self.store.get(job_id)

    def _fence_of(self, job_id: str) -> Fence:
        """The fence of a write: refused (0) when the lead was lost since the job was read,
        even if this replica leads again (another term, whose catch-up runs the slot)."""
        read_at = self._read_at.get(job_id)

        def fence() -> int:
            epoch = self.fence()
            return epoch if read_at is None or read_at == epoch else 0

        return fence

    async def all(self) -> list[JobState]:
        return await self.store.all()

    async def ensure(self, job_id: str, kind: str, *, paused: bool = False) -> JobState:
        fence = self.fence if self.fencing else None
        return await self.store.ensure(
            job_id, kind, paused=paused, fence=fence and self._fence_of(job_id)
        )

    async def update(
        self, job_id: str, change: JobUpdate, *, expect_cursor: bytes | None | Unset = UNSET
    ) -> JobState:
        if not self.fencing:
            return await self.store.update(
                job_id, change, expect_cursor=expect_cursor, fence=self.fence, blind=True
            )
        return await self.store.update(
            job_id, change, expect_cursor=expect_cursor, fence=self._fence_of(job_id)
        )

    async def delete(self, job_id: str) -> None:
        await self.store.delete(job_id)

    async def version(self) -> int:
        return await self.store.version()
