"""The store contract: per-job cursor and run state, written in one transaction per change."""

from __future__ import annotations

import enum
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Self

SCHEMA_VERSION = 1


class Unset(enum.Enum):
    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class JobState:
    """What pollerd remembers about one job across restarts."""

    job_id: str
    kind: str
    cursor: bytes | None = None
    last_status: str | None = None  # "ok" or the failure reason (timeout, protocol, ...)
    last_error: str | None = None
    last_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_scheduled_at: datetime | None = None  # the last slot that was due (catch-up reads this)
    consecutive_errors: int = 0
    paused: bool = False
    pause_reason: str | None = None
    broken_reason: str | None = None  # set by a config-class plugin error
    broken_config_hash: str | None = None  # the job config that was broken; a new one clears it
    breaker_open_until: datetime | None = None
    breaker_cooldown_s: float | None = None  # the current cooldown; doubles up to max_cooldown
    # Part of every event's Nats-Msg-Id; an operator's cursor change bumps it, so that events
    # re-read from the new cursor are not dropped by JetStream as duplicates of the old ones.
    event_space: int = 0
    revision: int = 0  # bumped by every write


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One finished tick of a job, kept in the job's history (`pollerd history`)."""

    tick_id: str
    slot: datetime  # the scheduled slot (for a manual tick, when it was asked for)
    finished_at: datetime
    status: str  # "ok" or the failure reason (transient, timeout, protocol, publish, ...)
    attempts: int
    duration_s: float  # all attempts and backoff
    events: int  # events published (0 for a failed tick)
    error: str | None = None
    replica: str = ""  # which pollerd ran it (its host name, or its replica name)


DEFAULT_HISTORY = 50  # ticks kept per job unless pollers.yaml says otherwise


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """A partial change of a JobState: fields left UNSET keep their stored value."""

    kind: str | Unset = UNSET
    cursor: bytes | None | Unset = UNSET
    last_status: str | None | Unset = UNSET
    last_error: str | None | Unset = UNSET
    last_run_at: datetime | None | Unset = UNSET
    last_success_at: datetime | None | Unset = UNSET
    last_scheduled_at: datetime | None | Unset = UNSET
    consecutive_errors: int | Unset = UNSET
    paused: bool | Unset = UNSET
    pause_reason: str | None | Unset = UNSET
    broken_reason: str | None | Unset = UNSET
    broken_config_hash: str | None | Unset = UNSET
    breaker_open_until: datetime | None | Unset = UNSET
    breaker_cooldown_s: float | None | Unset = UNSET
    event_space: int | Unset = UNSET
    # Not state fields: a finished tick to add to the job's history in the same write, and how
    # many of the job's newest records to keep (older ones are dropped by that write).
    tick: TickRecord | None = None
    keep_ticks: int = DEFAULT_HISTORY

    def changes(self) -> dict[str, object]:
        """The fields that are set, by name, in the order of the fields."""
        return {
            name: value
            for name, value in zip(UPDATE_FIELDS, _update_values(self), strict=True)
            if value is not UNSET
        }

    def apply(self, state: JobState) -> JobState:
        return replace(state, revision=state.revision + 1, **self.changes())  # type: ignore[arg-type]


# The fields of JobUpdate that change a JobState, in order, and a getter of all their values.
UPDATE_FIELDS = tuple(f.name for f in fields(JobUpdate) if f.name not in ("tick", "keep_ticks"))
_update_values = operator.attrgetter(*UPDATE_FIELDS)


def fresh_state(job_id: str, kind: str, paused: bool, stored: JobState | None) -> JobState:
    """The state of a new job, or of a stored one whose kind changed: it starts over, but its
    revision and its event-id space keep growing (its old message ids must not be reused)."""
    if stored is None:
        return JobState(job_id=job_id, kind=kind, paused=paused)
    return JobState(
        job_id=job_id,
        kind=kind,
        paused=paused,
        revision=stored.revision + 1,
        event_space=stored.event_space + 1,
    )


class JobSeed(NamedTuple):
    """A job to ``ensure``: its id, its kind and whether it starts paused."""

    job_id: str
    kind: str
    paused: bool = False


class Store(ABC):
    """Per-job state. Every method is one transaction; ``update`` is atomic for all its fields.

    Use as ``async with store:``; ``open`` creates or migrates the schema and refuses an unknown
    schema version with a ``StoreError`` naming both versions.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def get(self, job_id: str) -> JobState | None: ...

    @abstractmethod
    async def all(self) -> list[JobState]:
        """Every stored job, ordered by id."""

    @abstractmethod
    async def ensure(self, job_id: str, kind: str, *, paused: bool = False) -> JobState:
        """Create the job if missing (``paused`` is its initial state) and return it.

        A stored job whose kind differs is reset: its cursor and run state start over.
        """

    async def ensure_many(self, seeds: Sequence[JobSeed]) -> dict[str, JobState]:
        """``ensure`` every job, by id; a store writes them in one transaction where it can
        (SQLite and memory do: start-up and reload then cost one commit, not one per job).

        This default calls ``ensure`` once per job.
        """
        return {
            seed.job_id: await self.ensure(seed.job_id, seed.kind, paused=seed.paused)
            for seed in seeds
        }

    async def held(self) -> list[JobState]:
        """The stored jobs that are paused or marked broken, ordered by id.

        The metrics ask for these every half second; a store with many jobs answers without
        reading the others (this default filters ``all``).
        """
        return [s for s in await self.all() if s.paused or s.broken_reason is not None]

    @abstractmethod
    async def update(
        self, job_id: str, change: JobUpdate, *, expect_cursor: bytes | None | Unset = UNSET
    ) -> JobState:
        """Apply ``change`` in one transaction and return the new state. Unknown job: KeyError.

        With ``expect_cursor``, the change's cursor is written only if the stored cursor still
        equals ``expect_cursor``; its other fields are written either way. A tick commits its
        plugin's cursor like this, so that a cursor an operator set during the tick is kept
        (the returned state tells which cursor won).

        Concurrent updates are applied in call order; a store may write those made together in
        one transaction (``SqliteStore`` does). A caller cancelled before its change is written
        withdraws it; a change already written stays written.
        """

    @abstractmethod
    async def delete(self, job_id: str) -> None:
        """Forget the job and its cursor. A missing job is not an error."""

    @abstractmethod
    async def version(self) -> int:
        """A counter of the whole store, increased by every write from any process (by one for
        several updates written in one transaction).

        A running service polls it (it is one cheap read) to notice changes made by the CLI or by
        another process on the same store; an unchanged number means nothing was written since.
        """

    async def ping(self) -> None:
        """Raise ``StoreError`` when the store cannot be used (readiness checks).

        One cheap read (``version``): readiness is checked twice a second, so it must not cost in
        proportion to the number of jobs.
        """
        await self.version()

    #: Whether this store keeps tick history (``update`` writes ``change.tick``, ``history``
    #: reads it). Stores that do set it to True and pass the history contract tests.
    keeps_history: bool = False

    async def history(self, job_id: str, limit: int) -> list[TickRecord]:
        """The job's last ``limit`` tick records, newest first ([] for an unknown job).

        How a store keeps history: ``update`` receives the finished tick as ``change.tick``
        and must write it **in the same transaction (or CAS) as the state change**, so the
        history never shows a tick whose commit was lost, nor misses one that was committed;
        the same write drops the job's records beyond its newest ``change.keep_ticks``. A
        failed or refused write (a lost CAS, a fenced leader) records nothing. ``delete``
        forgets the job's history with its state, and a stored job reset by ``ensure`` with
        another kind starts an empty history. A store without history (this default) keeps
        ``keeps_history = False`` and returns [] here: ticks still run, `pollerd history` and
        ``GET /v1/jobs/{id}/history`` show nothing. A KV store can keep the records in the
        job's own value (bounded by ``keep_ticks``), so one CAS writes both.
        """
        return []
