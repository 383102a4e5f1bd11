"""A Store kept in process memory: for tests, dry runs and embedding."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from pollerd.errors import StoreError
from pollerd.stores._values import normalize_changes
from pollerd.stores.base import (
    UNSET,
    JobSeed,
    JobState,
    JobUpdate,
    Store,
    TickRecord,
    Unset,
    fresh_state,
)

logger = logging.getLogger(__name__)


class MemoryStore(Store):
    """Job state in a dict. Nothing survives the process; the data survives ``close``/``open``.

    It follows the same rules as the SQLite store (datetimes in UTC, naive ones refused, a
    ``version`` bumped by every write) so the contract suite runs unchanged over both.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, JobState] = {}
        self._history: dict[str, deque[TickRecord]] = {}  # newest last
        self._version = 0
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def get(self, job_id: str) -> JobState | None:
        self._check_open()
        return self._jobs.get(job_id)

    async def all(self) -> list[JobState]:
        self._check_open()
        return [self._jobs[job_id] for job_id in sorted(self._jobs)]

    async def ensure(self, job_id: str, kind: str, *, paused: bool = False) -> JobState:
        self._check_open()
        return self._ensure(job_id, kind, paused)

    async def ensure_many(self, seeds: Sequence[JobSeed]) -> dict[str, JobState]:
        self._check_open()
        version = self._version
        states = {seed.job_id: self._ensure(*seed) for seed in seeds}
        self._version = min(self._version, version + 1)  # one transaction: one version step
        return states

    def _ensure(self, job_id: str, kind: str, paused: bool) -> JobState:
        stored = self._jobs.get(job_id)
        if stored is not None and stored.kind == kind:
            return stored
        state = fresh_state(job_id, kind, paused, stored)
        self._history.pop(job_id, None)
        self._write(state)
        return state

    async def update(
        self, job_id: str, change: JobUpdate, *, expect_cursor: bytes | None | Unset = UNSET
    ) -> JobState:
        self._check_open()
        stored = self._jobs.get(job_id)
        if stored is None:
            raise KeyError(job_id)
        changes = normalize_changes(change.changes())
        if expect_cursor is not UNSET and stored.cursor != expect_cursor:
            changes.pop("cursor", None)
        state = replace(stored, revision=stored.revision + 1, **changes)  # type: ignore[arg-type]
        if change.tick is not None:
            kept = self._history.get(job_id)
            if kept is None or kept.maxlen != change.keep_ticks:
                kept = self._history[job_id] = deque(kept or (), maxlen=max(change.keep_ticks, 0))
            kept.append(change.tick)
        self._write(state)
        return state

    keeps_history = True

    async def history(self, job_id: str, limit: int) -> list[TickRecord]:
        self._check_open()
        kept = self._history.get(job_id, ())
        return list(reversed(kept))[: max(limit, 0)]

    async def delete(self, job_id: str) -> None:
        self._check_open()
        self._history.pop(job_id, None)
        if self._jobs.pop(job_id, None) is not None:
            self._version += 1

    async def version(self) -> int:
        self._check_open()
        return self._version

    def _write(self, state: JobState) -> None:
        self._jobs[state.job_id] = state
        self._version += 1

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the in-memory store is not open: use it inside 'async with store:'")
