"""A Store on a NATS JetStream key-value bucket: one key per job, every write a compare-and-set.

Each job is the key ``job.<id>``; its value holds every ``JobState`` field and the ``epoch`` of
the leader that last claimed or committed it (see ``Record``). A write reads the key (or takes
the revision this store last saw), applies the change and publishes it with
``Nats-Expected-Last-Subject-Sequence`` set to that revision. When another process wrote in
between, JetStream refuses it (10071, or 10164 on a clustered stream, which may also mean
"another check on this key is in flight"): the store reads the key again and applies the change
to what is there now, as SQLite would apply it in its transaction. So ``expect_cursor`` keeps an
operator's cursor exactly as on SQLite, and nothing written by another process is overwritten.

Fencing: a write made with a ``fence`` (a callable returning the writer's epoch, or raising
``StoreFencedError`` once it no longer leads) is refused with ``StoreFencedError`` when the key
holds a newer epoch; it then writes its own epoch. ``claim`` writes an epoch into every key
before a new leader starts ticking. Writes without a fence (the CLI, admin commands) keep the
stored epoch. A tick's commit to a key whose ``last_scheduled_at`` already reaches its slot is
dropped with ``SlotCommittedError`` (unless the key holds that very commit: it landed), checked
on every try and not only after a lost CAS: ``_kvslot`` says why.

In one process, writes to one key are applied in call order (a lock per key). A write whose
acknowledgement is lost (timeout) is read back: if the key holds exactly what was sent, it
landed. Unreachable NATS (a stream electing a leader after a node died takes 4-5 s) is retried
for ``retry_for_s`` before a ``StoreError``. ``version`` is the bucket stream's last sequence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import TypeVar

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from pollerd.errors import StoreError, StoreFencedError
from pollerd.stores._kvio import RETRY_PAUSE_S, latest_values, retry, translate
from pollerd.stores._kvrecord import (
    JOB_KEY_PREFIX,
    SCHEMA_KEY,
    Record,
    decode_record,
    encode_record,
    job_key,
)
from pollerd.stores._kvslot import already_landed
from pollerd.stores._values import normalize_changes
from pollerd.stores.base import (
    SCHEMA_VERSION,
    UNSET,
    JobState,
    JobUpdate,
    Store,
    TickRecord,
    Unset,
    fresh_state,
)

logger = logging.getLogger(__name__)

DEFAULT_BUCKET = "POLLERD_STATE"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRY_FOR_S = 15.0
CONFLICT_LIMIT = 1000  # refused CAS writes of one change before giving up (a hot key)
CLAIM_CONCURRENCY = 64
WRONG_LAST_SEQUENCE = 10071
CHECK_IN_FLIGHT = 10164  # clustered: lost race, or another check on the key is in flight
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
KV_OPERATION = "KV-Operation"

Connect = Callable[[], Awaitable[Client]]
Fence = Callable[[], int]
T = TypeVar("T")


class _ConflictError(Exception):
    """The key changed since the revision the write expected."""


class KvStore(Store):
    """Job state in the JetStream KV bucket ``bucket`` reached through ``connect()``.

    ``replicas`` None: 3 when the client knows 3 or more servers (a cluster), else 1.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        bucket: str = DEFAULT_BUCKET,
        replicas: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_for_s: float = DEFAULT_RETRY_FOR_S,
    ) -> None:
        self.bucket = bucket
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self._connect = connect
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._known: dict[str, Record] = {}  # the last record read or written, by key
        self._locks: dict[str, asyncio.Lock] = {}
        self._deleted: dict[str, int] = {}  # key -> revision of its delete marker

    def __repr__(self) -> str:
        return f"KvStore(bucket={self.bucket!r})"

    @property
    def client(self) -> Client:
        """The store's NATS connection (the leader lease uses it too)."""
        if self._nc is None:
            raise self._not_open()
        return self._nc

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._kv is not None:
            return
        try:
            nc = await self._connect()
        except Exception as exc:
            raise StoreError(f"state store nats-kv {self.bucket}: {exc}") from exc
        try:
            self._kv = await self._bucket(nc)
            await self._check_schema(self._kv)
        except BaseException:
            self._kv = None
            await nc.close()
            raise
        self._nc = nc
        self._known.clear()

    async def _bucket(self, nc: Client) -> KeyValue:
        """Open or create the bucket (retried: a new R3 stream may take seconds to be ready)."""
        js = nc.jetstream(timeout=self.timeout_s)

        async def open_or_create() -> KeyValue:
            try:
                return await js.key_value(self.bucket)
            except BucketNotFoundError:
                replicas = self.replicas or (3 if len(nc.servers) >= 3 else 1)
                logger.info("creating KV bucket %s with %d replica(s)", self.bucket, replicas)
                config = KeyValueConfig(bucket=self.bucket, history=1, replicas=replicas)
                return await js.create_key_value(config=config)

        return await self._retry("open the bucket", open_or_create)

    async def _check_schema(self, kv: KeyValue) -> None:
        """A new bucket's stream may still elect its leader: reads are retried (``_retry``)."""
        version = SCHEMA_VERSION
        try:
            entry = await self._retry("read the schema version", lambda: kv.get(SCHEMA_KEY))
            version = int(entry.value or b"0")
        except KeyNotFoundError:
            try:
                await self._retry(
                    "write the schema version",
                    lambda: kv.create(SCHEMA_KEY, str(SCHEMA_VERSION).encode()),
                )
            except StoreError as exc:  # created by another process at the same time
                if not isinstance(exc.__cause__, APIError):
                    raise
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"state store nats-kv {self.bucket} has schema version {version}; this pollerd "
                f"supports version {SCHEMA_VERSION}. Run the pollerd version that wrote it"
            )

    async def close(self) -> None:
        nc, self._nc, self._kv = self._nc, None, None
        self._known.clear()
        if nc is not None:
            await nc.close()

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobState | None:
        record = await self._read(job_key(job_id))
        return None if record is None else record.state

    async def all(self) -> list[JobState]:
        return [record.state for record in await self._records()]

    async def _records(self) -> list[Record]:
        """Read through a watch of ``job.>`` (one consumer)."""
        kv = self._bucket_or_raise()
        async with self._translate("read the jobs"):
            values = await latest_values(kv, JOB_KEY_PREFIX + ">", self.timeout_s)
        found = [self._decode(key, value, revision) for key, value, revision in values]
        for record in found:
            self._known[job_key(record.state.job_id)] = record
        return sorted(found, key=lambda record: record.state.job_id)

    async def version(self) -> int:
        kv = self._bucket_or_raise()
        async with self._translate("read the store version"):
            status = await kv.status()
        return int(status.stream_info.state.last_seq)

    async def ping(self) -> None:
        await self.version()

    keeps_history = True  # in the job's own value: one CAS writes the state and its tick

    async def history(self, job_id: str, limit: int) -> list[TickRecord]:
        record = await self._read(job_key(job_id))
        return [] if record is None else list(record.ticks[: max(limit, 0)])

    # -- writes --------------------------------------------------------------------------------

    async def ensure(
        self, job_id: str, kind: str, *, paused: bool = False, fence: Fence | None = None
    ) -> JobState:
        def compute(current: Record | None) -> Record | None:
            epoch = _check_fence(job_id, current, fence)
            if current is not None and current.state.kind == kind:
                return None
            state = fresh_state(job_id, kind, paused, None if current is None else current.state)
            return Record(state, epoch)

        return (await self._change(job_id, compute)).state

    async def update(
        self,
        job_id: str,
        change: JobUpdate,
        *,
        expect_cursor: bytes | None | Unset = UNSET,
        fence: Fence | None = None,
        blind: bool = False,
    ) -> JobState:
        changes = normalize_changes(change.changes())
        tick, keep = change.tick, max(change.keep_ticks, 0)

        def compute(current: Record | None) -> Record | None:
            if current is None:
                raise KeyError(job_id)
            epoch = _check_fence(job_id, current, fence, blind=blind)
            if not blind and already_landed(job_id, current, tick, changes):
                return None
            applied = changes
            if expect_cursor is not UNSET and current.state.cursor != expect_cursor:
                applied = {name: value for name, value in changes.items() if name != "cursor"}
            state = replace(current.state, revision=current.state.revision + 1, **applied)  # type: ignore[arg-type]
            ticks = current.ticks if tick is None else (tick, *current.ticks)[:keep]
            return Record(state, epoch, ticks=ticks)

        return (await self._change(job_id, compute, blind=blind)).state

    async def delete(self, job_id: str) -> None:
        key = job_key(job_id)
        async with self._lock(key):
            for _ in range(CONFLICT_LIMIT):
                current = await self._read(key)
                if current is None:
                    return
                try:
                    marker = await self._publish(
                        key, b"", current.kv_revision, {KV_OPERATION: "DEL"}
                    )
                except _ConflictError:
                    continue
                self._known.pop(key, None)
                self._deleted[key] = marker
                return
        raise self._hot(job_id)

    async def claim(self, epoch: int) -> int:
        """Write ``epoch`` into every job's key (the claim pass of a new leader); return how
        many keys it wrote. ``StoreFencedError`` when a key holds a newer epoch."""
        limit = asyncio.Semaphore(CLAIM_CONCURRENCY)

        def compute(current: Record | None) -> Record | None:
            if current is None or current.epoch == epoch:
                return None
            if current.epoch > epoch:
                raise StoreFencedError(current.state.job_id, epoch, current.epoch)
            return Record(current.state, epoch, ticks=current.ticks)

        async def claim_one(job_id: str) -> bool:
            async with limit:
                before = self._known.get(job_key(job_id))
                written = await self._change(job_id, compute)
                return before is None or written.kv_revision != before.kv_revision

        self._known.clear()  # a new term reads everything afresh, its catch-up too
        records = await self._records()
        results = await asyncio.gather(*(claim_one(r.state.job_id) for r in records))
        return sum(results)

    async def _change(
        self, job_id: str, compute: Callable[[Record | None], Record | None], *, blind: bool = False
    ) -> Record:
        """Read-modify-CAS until the write lands; ``compute`` returns None for no write.
        ``blind`` (test-only, see ``FencedView``) writes without the revision check."""
        key = job_key(job_id)
        async with self._lock(key):
            current = self._known.get(key) or await self._read(key)
            for _ in range(CONFLICT_LIMIT):
                target = compute(current)
                if target is None:
                    assert current is not None
                    return current
                data = encode_record(target.state, target.epoch, target.ticks)
                last = current.kv_revision if current else self._deleted.get(key, 0)
                try:
                    revision = await self._publish(key, data, None if blind else last)
                except _ConflictError:
                    current = await self._read(key)
                    continue
                except StoreError:
                    landed = await self._read(key)
                    if landed is None or _encoded(landed) != data:
                        raise
                    revision = landed.kv_revision
                written = self._known[key] = replace(target, kv_revision=revision)
                return written
        raise self._hot(job_id)

    async def _read(self, key: str) -> Record | None:
        kv = self._bucket_or_raise()
        try:
            entry = await self._retry(f"read {key}", lambda: kv.get(key))
        except KeyNotFoundError as exc:
            self._known.pop(key, None)
            marker = getattr(exc, "entry", None)  # a deleted key: CAS on its delete marker
            self._deleted[key] = (marker.revision or 0) if marker is not None else 0
            return None
        self._deleted.pop(key, None)
        record = self._known[key] = self._decode(key, entry.value or b"", entry.revision or 0)
        return record

    async def _publish(
        self, key: str, data: bytes, last: int | None, headers: dict[str, str] | None = None
    ) -> int:
        """Publish to ``key`` if its last revision is ``last`` (0: absent); the new revision.

        ``_ConflictError`` when the key moved on. A lost acknowledgement raises ``StoreError``
        after the retries: the caller reads the key to learn whether it landed.
        """
        kv = self._bucket_or_raise()
        js = kv._js  # the context the bucket was opened with
        subject = f"$KV.{self.bucket}.{key}"
        sent = dict(headers or {})
        if last is not None:
            sent[EXPECTED_LAST] = str(last)
        try:
            ack = await self._retry(f"write {key}", lambda: js.publish(subject, data, headers=sent))
        except StoreError as exc:
            code = getattr(exc.__cause__, "err_code", None)
            if code == CHECK_IN_FLIGHT:
                await asyncio.sleep(RETRY_PAUSE_S / 10)
            if code in (CHECK_IN_FLIGHT, WRONG_LAST_SEQUENCE):
                raise _ConflictError() from exc
            raise
        return int(ack.seq)

    # -- helpers -------------------------------------------------------------------------------

    def _decode(self, key: str, data: bytes, revision: int) -> Record:
        return decode_record(data, revision, f"state store nats-kv {self.bucket} key {key}")

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _bucket_or_raise(self) -> KeyValue:
        if self._kv is None:
            raise self._not_open()
        return self._kv

    def _not_open(self) -> StoreError:
        return StoreError(
            f"state store nats-kv {self.bucket} is not open: use it inside 'async with store:'"
        )

    def _hot(self, job_id: str) -> StoreError:
        return StoreError(
            f"state store nats-kv {self.bucket}: job {job_id!r} changed under {CONFLICT_LIMIT} "
            "writes in a row; another process writes it without pause"
        )

    def _translate(self, what: str) -> AbstractAsyncContextManager[None]:
        return translate(f"state store nats-kv {self.bucket}: could not {what}")

    async def _retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await retry(
            f"state store nats-kv {self.bucket}: could not {what}", operation, self.retry_for_s
        )


def _check_fence(
    job_id: str, current: Record | None, fence: Fence | None, *, blind: bool = False
) -> int:
    """The epoch to write: the fence's, else the stored one; refused when the key is newer.
    ``blind`` (the negative control) writes the fence's epoch unchecked."""
    stored = 0 if current is None else current.epoch
    if fence is None:
        return stored
    epoch = fence()
    if blind:
        return epoch
    if epoch <= 0 or stored > epoch:
        raise StoreFencedError(job_id, epoch, stored)
    return epoch


def _encoded(record: Record) -> bytes:
    return encode_record(record.state, record.epoch, record.ticks)
