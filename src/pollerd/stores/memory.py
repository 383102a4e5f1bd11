"""A Store kept in process memory: for tests, dry runs and embedding."""

from __future__ import annotations

import logging
from dataclasses import replace

from pollerd.errors import StoreError
from pollerd.stores._values import normalize_changes
from pollerd.stores.base import UNSET, JobState, JobUpdate, Store, Unset

logger = logging.getLogger(__name__)


class MemoryStore(Store):
    """Job state in a dict. Nothing survives the process; the data survives ``close``/``open``.

    It follows the same rules as the SQLite store (datetimes in UTC, naive ones refused, a
    ``version`` bumped by every write) so the contract suite runs unchanged over both.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, JobState] = {}
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
        stored = self._jobs.get(job_id)
        if stored is not None and stored.kind == kind:
            return stored
        revision = 0 if stored is None else stored.revision + 1
        state = JobState(job_id=job_id, kind=kind, paused=paused, revision=revision)
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
        self._write(state)
        return state

    async def delete(self, job_id: str) -> None:
        self._check_open()
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
