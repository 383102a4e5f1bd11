"""The value of one job's key in the nats-kv store: versioned JSON, plus the writer's epoch."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime
from typing import Any

from pollerd.errors import StoreError
from pollerd.stores._values import TIME_FIELDS
from pollerd.stores.base import JobState, TickRecord

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
JOB_KEY_PREFIX = "job."
ESCAPED_KEY_PREFIX = "job.=x"  # job ids that are not valid KV keys as they are (empty tokens)
SCHEMA_KEY = "meta.schema"
_PLAIN_KEY = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_STATE_FIELDS = tuple(f.name for f in fields(JobState))
_DEFAULTS = {f.name: f.default for f in fields(JobState) if f.default is not MISSING}


@dataclass(frozen=True, slots=True)
class Record:
    """A job's state as stored, the epoch of the leader that last claimed or committed it (0:
    never written by a leader) and the KV revision it was read at (0: not stored yet)."""

    state: JobState
    epoch: int = 0
    kv_revision: int = 0
    ticks: tuple[TickRecord, ...] = ()  # the job's tick history, newest first


def job_key(job_id: str) -> str:
    """``job.<id>``; an id with an empty token (``a..b``, ``a.``) is hex-escaped."""
    if _PLAIN_KEY.fullmatch(job_id):
        return JOB_KEY_PREFIX + job_id
    return ESCAPED_KEY_PREFIX + job_id.encode().hex()


def encode_record(state: JobState, epoch: int, ticks: tuple[TickRecord, ...] = ()) -> bytes:
    body: dict[str, Any] = {"v": RECORD_VERSION, "epoch": epoch}
    if ticks:
        body["ticks"] = [_tick_json(tick) for tick in ticks]
    for name in _STATE_FIELDS:
        value = getattr(state, name)
        if name == "cursor" and value is not None:
            value = base64.urlsafe_b64encode(value).decode("ascii")
        elif isinstance(value, datetime):
            value = value.isoformat()
        body[name] = value
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_record(data: bytes, kv_revision: int, where: str) -> Record:
    """The record in ``data``; ``StoreError`` naming ``where`` when it cannot be read."""
    try:
        body = json.loads(data)
        found = body.get("v") if isinstance(body, dict) else None
        if found != RECORD_VERSION:
            raise StoreError(
                f"{where} has record version {found!r}; this pollerd supports version "
                f"{RECORD_VERSION}. Run the pollerd version that wrote it"
            )
        # A field added to JobState later (event_space) takes its default in older records.
        values = {name: body[name] for name in _STATE_FIELDS if name in body}
        if values["cursor"] is not None:
            values["cursor"] = base64.urlsafe_b64decode(values["cursor"])
        for name in TIME_FIELDS:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        ticks = tuple(_tick(item) for item in body.get("ticks") or ())
        return Record(JobState(**values), int(body["epoch"]), kv_revision, ticks)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise StoreError(f"{where} holds an unreadable value ({exc!r})") from exc


def _tick_json(tick: TickRecord) -> dict[str, Any]:
    found = asdict(tick)
    found["slot"] = tick.slot.isoformat()
    found["finished_at"] = tick.finished_at.isoformat()
    return found


def _tick(item: dict[str, Any]) -> TickRecord:
    return TickRecord(
        **{
            **item,
            "slot": datetime.fromisoformat(item["slot"]),
            "finished_at": datetime.fromisoformat(item["finished_at"]),
        }
    )
