"""The leader lease of replicated pollerd: one KV key with a per-message TTL (DESIGN §10).

A standby tries ``create(leader, ttl=T)`` every T/8; the winner's revision is its **epoch**, the
fencing token it writes into every job's key (the claim pass, ``on_elected``) before its first
tick. The leader renews every T/3 with a compare-and-set on the key's current revision carrying
``Nats-TTL: T``. A refused renewal means someone else took the key: step down at once. A leader
that could not renew counts as lost once ``T`` has passed since it sent its last good renewal
(the server counts its TTL from a later moment, so the old leader gives up first). On exit the
key is deleted with its revision, so a standby takes over within T/8.

``leading()`` answers from the monotonic clock, not from the loop: a process frozen (SIGSTOP, a
VM pause) past its lease stops starting ticks and committing the moment it runs again, before
its loop has noticed anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

from nats.aio.client import Client
from nats.errors import Error as NatsClientError
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from pollerd.errors import NatsError, PollerdError, StoreFencedError
from pollerd.natsio.connection import cancel_until_done
from pollerd.transports.natscancel import no_swallowed_cancel

logger = logging.getLogger(__name__)

LEASE_KEY = "leader"
LEASE_BUCKET_SUFFIX = "_LEADER"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
REFUSED_CODES = (10071, 10164)  # wrong last sequence (10164: also "check in flight")
REQUEST_TIMEOUT_FRACTION = 0.25
OPEN_TIMEOUT_S = 30.0
OPEN_REQUEST_TIMEOUT_S = 5.0
OPEN_RETRY_S = 0.2  # a NATS call of the lease loop waits at most T/4


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads, as a replica last saw it."""

    name: str
    epoch: int
    since: datetime

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "epoch": self.epoch, "since": self.since.isoformat()}


def poll_interval_s(ttl_s: float) -> float:
    """How often a standby tries to take the lease."""
    return ttl_s / 8


def renew_interval_s(ttl_s: float) -> float:
    """How often the leader renews its lease."""
    return ttl_s / 3


def parse_leader(data: bytes, revision: int) -> Leader | None:
    """The lease value; a lease not renewed yet carries no epoch: its revision is the epoch."""
    try:
        body = json.loads(data)
        return Leader(
            str(body["name"]),
            int(body.get("epoch") or revision),
            datetime.fromisoformat(body["since"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


async def read_leader(nc: Client, bucket: str) -> Leader | None:
    """Who holds the lease of the store bucket ``bucket`` now (None: nobody), for the CLI."""
    try:
        kv = await nc.jetstream().key_value(bucket + LEASE_BUCKET_SUFFIX)
        entry = await kv.get(LEASE_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    except (NatsClientError, OSError) as exc:
        raise NatsError(f"cannot read the leader lease of {bucket}: {exc!r}") from exc
    return parse_leader(entry.value or b"", entry.revision or 0)


Elected = Callable[[int], Awaitable[None]]
Lost = Callable[[str], Awaitable[None]]


class LeaderLease:
    """``async with LeaderLease(nc, ...)``: competes for the lease until the block ends.

    ``on_elected(epoch)`` runs when this replica takes the lease (the claim pass: it must end
    before the first tick); ``on_lost(reason)`` when it loses or gives it up. Both run in the
    lease's task, one at a time.
    """

    def __init__(
        self,
        nc: Client,
        *,
        bucket: str,
        name: str,
        ttl_s: float,
        on_elected: Elected,
        on_lost: Lost,
        replicas: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.bucket = bucket + LEASE_BUCKET_SUFFIX
        self.name = name
        self.ttl_s = ttl_s
        self.leader: Leader | None = None  # the current leader as last seen (maybe this one)
        self._nc = nc
        self._replicas = replicas
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._clock = clock
        self._wall_clock = wall_clock or _utc_now
        self._kv: KeyValue | None = None
        self._epoch = 0
        self._revision = 0  # the lease key's revision after our last create or renewal
        self._valid_until = 0.0  # monotonic
        self._task: asyncio.Task[None] | None = None
        # A renewal must fail fast: it waits at most T/4 (the bucket's own calls wait longer).
        self._renewals = nc.jetstream(timeout=ttl_s * REQUEST_TIMEOUT_FRACTION)

    # -- queries -------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """This replica's epoch while it leads, else 0."""
        return self._epoch

    def leading(self) -> bool:
        return self._epoch > 0 and self._clock() < self._valid_until

    def fence(self) -> int:
        """The epoch to write with; 0 (refused by the store) once the lease is lost or lapsed."""
        return self._epoch if self.leading() else 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._kv = await self._bucket()
        self._task = asyncio.create_task(self._run(), name="leader-lease")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        await cancel_until_done(task)
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.warning("leader lease task failed: %r", task.exception())
        if self._epoch:
            await self._release()

    async def _bucket(self) -> KeyValue:
        """Open (or create) the lease bucket; retried for ``OPEN_TIMEOUT_S``: a new R3 stream
        may take seconds to elect its leader on a busy cluster."""
        js = self._nc.jetstream(timeout=OPEN_REQUEST_TIMEOUT_S)
        give_up_at = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            try:
                with no_swallowed_cancel():
                    return await self._open_or_create(js)
            except (NatsClientError, OSError) as exc:
                if time.monotonic() > give_up_at:
                    raise NatsError(
                        f"cannot open the leader lease bucket {self.bucket}: {exc!r}"
                    ) from exc
                logger.debug("leader lease bucket %s not ready: %r", self.bucket, exc)
            await asyncio.sleep(OPEN_RETRY_S)

    async def _open_or_create(self, js: JetStreamContext) -> KeyValue:
        """The lease bucket, created when missing."""
        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            replicas = self._replicas or (3 if len(self._nc.servers) >= 3 else 1)
            # history 1: with more, an expiring lease would bring the previous one back.
            config = KeyValueConfig(bucket=self.bucket, history=1, replicas=replicas)
            return await js.create_key_value(config=config)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._step()
            except Exception:  # a bug must not end the competition for the lease
                logger.exception("leader lease: unexpected error; going on")
                wait = poll_interval_s(self.ttl_s)
            if wait:
                await asyncio.sleep(wait)

    async def _step(self) -> float:
        """Renew or try to take the lease; returns how long to wait before the next step."""
        if self._epoch:
            await self._renew()
            wait = renew_interval_s(self.ttl_s)
            if self._epoch:  # wake up when the lease would lapse, to say so on time
                wait = max(0.0, min(wait, self._valid_until - self._clock()))
            return wait
        await self._try_take()
        return 0 if self._epoch else poll_interval_s(self.ttl_s)

    async def _try_take(self) -> None:
        kv = self._kv
        assert kv is not None
        since = self._wall_clock()
        body = json.dumps({"name": self.name, "since": since.isoformat()}).encode()
        sent = self._clock()
        try:
            # A lease taken as a cancellation comes is not led (no claim pass, not ``leading``)
            # but released on exit: its epoch is kept before the cancellation is raised.
            with no_swallowed_cancel():
                revision = await kv.create(LEASE_KEY, body, msg_ttl=self.ttl_s)
                self._epoch = self._revision = revision
        except APIError:  # the key exists: someone leads
            await self._look()
            return
        except (NatsClientError, OSError) as exc:
            logger.debug("leader lease: cannot reach NATS: %r", exc)
            return
        self._valid_until = sent + self.ttl_s
        self.leader = Leader(self.name, revision, since)
        try:
            await self._on_elected(revision)
        except StoreFencedError as exc:
            await self._step_down(f"the claim pass found a newer leader ({exc})")
            await self._release()
        except PollerdError as exc:  # the store failed during the claim pass or the start
            await self._step_down(f"could not start leading: {exc}")
            await self._release()

    async def _look(self) -> None:
        """Read who leads now (a standby shows it)."""
        assert self._kv is not None
        try:
            with no_swallowed_cancel():
                entry = await self._kv.get(LEASE_KEY)
        except KeyNotFoundError:
            self.leader = None
            return
        except (NatsClientError, OSError):
            return
        self.leader = parse_leader(entry.value or b"", entry.revision or 0)

    async def _renew(self) -> None:
        assert self._kv is not None and self.leader is not None
        if self._clock() >= self._valid_until:
            # Ticks stopped and commits were refused meanwhile: lead again only through a new
            # election, whose claim pass and catch-up run the slots lost in the gap.
            await self._step_down(f"no renewal for {self.ttl_s:g}s (lease lapsed)")
            await self._release()
            return
        body = json.dumps(self.leader.to_json()).encode()
        sent = self._clock()
        try:
            with no_swallowed_cancel():  # or a cancelled lease would go on renewing
                ack = await self._renewals.publish(
                    f"$KV.{self.bucket}.{LEASE_KEY}",
                    body,
                    headers={EXPECTED_LAST: str(self._revision)},
                    msg_ttl=self.ttl_s,
                )
                self._revision = int(ack.seq)  # known to the release on exit, even if cancelled
        except APIError as exc:
            if exc.err_code in REFUSED_CODES:
                await self._step_down("another replica took the lease")
                return
            logger.warning("leader lease: renewal refused: %r", exc)
        except (NatsClientError, OSError) as exc:
            logger.debug("leader lease: renewal failed: %r", exc)
        else:
            if self._clock() < self._valid_until:
                self._valid_until = sent + self.ttl_s

    async def _step_down(self, reason: str) -> None:
        self._epoch = 0
        self._valid_until = 0.0
        self.leader = None
        await self._on_lost(reason)

    async def _release(self) -> None:
        """Delete our lease (only if it is still ours) so that a standby takes over at once."""
        assert self._kv is not None
        epoch, self._epoch = self._epoch or self._revision, 0
        try:
            with no_swallowed_cancel():
                await self._kv.delete(LEASE_KEY, last=self._revision)
        except (NatsClientError, OSError) as exc:
            logger.debug("leader lease: release failed (it will lapse): %r", exc)
            return
        logger.info("released the leader lease (epoch %d)", epoch)


def _utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
