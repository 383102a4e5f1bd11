"""The tick wire protocol, identical over NATS and stdio (DESIGN §5). Standard library only.

One-shot plugins import this module (through ``pollerd.sdk``) on every tick, so it stays cheap to
import: no ``dataclasses`` (it pulls in ``inspect``, about 8 ms), no ``typing`` at run time,
``binascii`` rather than ``base64`` (which loads ``struct`` as well), and the C ``datetime``
directly.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from json.encoder import encode_basestring_ascii as _json_str

from pollerd.errors import ErrorClass, PluginReplyError, ProtocolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy takes it as True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import UTC, datetime
    from typing import Any, Self
else:
    try:  # the C datetime: on 3.11, datetime.py first builds its pure-Python twin (about 1 ms)
        from _datetime import UTC, datetime
    except ImportError:  # pragma: no cover - not CPython
        from datetime import UTC, datetime

PROTOCOL = 1
METHOD = "poll_tick"
MAX_CURSOR_BYTES = 256 * 1024
MAX_REPLY_BYTES = 1024 * 1024
MAX_INTERVAL_SECS = 366 * 24 * 3600  # a next_interval_secs hint longer than a year is a bug
MAX_EVENT_ID_BYTES = 1024  # UTF-8; the id goes into a NATS header (Nats-Msg-Id)

CODE_PARSE_ERROR = -32700
CODE_INVALID_REQUEST = -32600
CODE_TRANSIENT = -32001
CODE_PERMANENT = -32002
CODE_CONFIG = -32602

_BAD_FRAME_CODES = {CODE_PARSE_ERROR, CODE_INVALID_REQUEST}
_NOT_A_NAME_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


# Names on NATS: a long-lived plugin serves <subject_prefix>.tick in this queue group, as a
# nats.micro service named after its plugin id.
TICK_ENDPOINT = "tick"
QUEUE_GROUP = "pollerd"


def tick_subject(prefix: str) -> str:
    """The subject a plugin serves its ticks on."""
    return f"{prefix}.{TICK_ENDPOINT}"


def service_name(plugin_id: str) -> str:
    """A micro service name (``[A-Za-z0-9_-]+``) for a plugin id."""
    return _NOT_A_NAME_CHAR.sub("_", plugin_id) or "plugin"


def encode_cursor(cursor: bytes) -> str:
    """URL-safe base64 without padding."""
    encoded = binascii.b2a_base64(cursor, newline=False).translate(_TO_URLSAFE)
    return encoded.rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> bytes:
    """Decode URL-safe base64, with or without padding. Raises ``ValueError`` on anything else."""
    if not isinstance(text, str):
        raise ValueError(f"a cursor must be a base64url string, got {type(text).__name__}")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1 or not _is_base64url(stripped):
        raise ValueError(f"not URL-safe base64: {_preview(text)}")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return binascii.a2b_base64(padded.encode("ascii").translate(_FROM_URLSAFE))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - guarded by the checks above
        raise ValueError(f"not URL-safe base64: {_preview(text)}") from exc


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _is_base64url(text: str) -> bool:
    return all(ch in _B64URL for ch in text)


def _preview(text: object, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# One encoder for every frame: ``json.dumps`` with options builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _json_scalar(value: object) -> str:
    """A number or null as the encoder writes it, without building an encoder."""
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _COMPACT.encode(value)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z``."""
    if moment.tzinfo is None or moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is about twice as fast as strftime; four times per tick, it shows.
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """An RFC 3339 time; one without an offset is taken as UTC. Raises ``ValueError``."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def make_tick_id(job_id: str, scheduled_at: datetime) -> str:
    """Stable across the retries of one scheduled slot."""
    return f"{job_id}@{format_time(scheduled_at)}"


def classify_code(code: object) -> ErrorClass:
    """The error class of a JSON-RPC error code: unknown codes are transient."""
    if code == CODE_PERMANENT:
        return ErrorClass.PERMANENT
    if code == CODE_CONFIG:
        return ErrorClass.CONFIG
    return ErrorClass.TRANSIENT


class Record:
    """Base of the value types of the wire and the SDK, for what ``@dataclass(slots=True)`` would
    give without importing ``dataclasses``: equal to an instance of the same class with equal
    fields, a repr that shows them, copy and pickle; unhashable, as it is mutable.

    A subclass lists its fields in ``__slots__`` in the order of its ``__init__`` parameters, and
    sets them with ``_set_fields`` (which ``FrozenRecord`` needs).
    """

    __slots__: tuple[str, ...] = ()

    def _set_fields(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _field_values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._field_values() == other._field_values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (self.__class__, self._field_values())


class FrozenRecord(Record):
    """A ``Record`` whose fields cannot be assigned or deleted; hashable when its fields are."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self.__class__.__name__} is frozen: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self.__class__.__name__} is frozen: cannot delete {name!r}")

    def __hash__(self) -> int:
        return hash(self._field_values())


class TickRequest(FrozenRecord):
    """One tick as pollerd sends it to a plugin."""

    __slots__ = __match_args__ = (
        "kind",
        "job_id",
        "tick_id",
        "attempt",
        "agent_id",
        "cursor",
        "config",
        "now",
        "scheduled_at",
        "deadline",
        "interval_hint_secs",
        "epoch",
    )
    kind: str
    job_id: str
    tick_id: str
    attempt: int
    agent_id: str
    cursor: bytes | None
    config: Mapping[str, Any]
    now: datetime
    scheduled_at: datetime
    deadline: datetime
    interval_hint_secs: float | None
    epoch: int | None  # the sending leader's fencing token (replicas); None on a single pollerd

    def __init__(
        self,
        kind: str,
        job_id: str,
        tick_id: str,
        attempt: int,
        agent_id: str,
        cursor: bytes | None,
        config: Mapping[str, Any],
        now: datetime,
        scheduled_at: datetime,
        deadline: datetime,
        interval_hint_secs: float | None = None,
        epoch: int | None = None,
    ) -> None:
        self._set_fields(
            kind=kind,
            job_id=job_id,
            tick_id=tick_id,
            attempt=attempt,
            agent_id=agent_id,
            cursor=cursor,
            config=config,
            now=now,
            scheduled_at=scheduled_at,
            deadline=deadline,
            interval_hint_secs=interval_hint_secs,
            epoch=epoch,
        )

    def encode(self) -> bytes:
        """One JSON line, newline-terminated; written out field by field, as the generic
        encoder costs twice as much (tests pin it to ``json.dumps`` of the same object)."""
        cursor = "null" if self.cursor is None else f'"{encode_cursor(self.cursor)}"'
        config = _COMPACT.encode(dict(self.config)) if self.config else "{}"
        epoch = "" if self.epoch is None else f',"epoch":{_json_scalar(self.epoch)}'
        return (
            f'{{"jsonrpc":"2.0","id":{_json_str(self.tick_id)},"method":"{METHOD}","params":'
            f'{{"protocol":{PROTOCOL},"kind":{_json_str(self.kind)},"job_id":'
            f'{_json_str(self.job_id)},"tick_id":{_json_str(self.tick_id)},"attempt":'
            f'{_json_scalar(self.attempt)},"agent_id":{_json_str(self.agent_id)},"cursor":'
            f'{cursor},"config":{config},"now":"{format_time(self.now)}","scheduled_at":'
            f'"{format_time(self.scheduled_at)}","deadline":"{format_time(self.deadline)}",'
            f'"interval_hint_secs":{_json_scalar(self.interval_hint_secs)}{epoch}}}}}\n'
        ).encode()


class Event(FrozenRecord):
    """One event of a tick: ``id`` a non-empty string, unique within the job; ``data`` any JSON."""

    __slots__ = __match_args__ = ("id", "data")
    id: str
    data: Any

    def __init__(self, id: str, data: Any) -> None:
        self._set_fields(id=id, data=data)


class TickReply(FrozenRecord):
    """A successful reply. ``next_cursor`` None means: keep the stored cursor."""

    __slots__ = __match_args__ = ("next_cursor", "next_interval_secs", "metrics", "events")
    next_cursor: bytes | None
    next_interval_secs: float | None
    metrics: Mapping[str, float]
    events: tuple[Event, ...]

    def __init__(
        self,
        next_cursor: bytes | None = None,
        next_interval_secs: float | None = None,
        metrics: Mapping[str, float] | None = None,
        events: tuple[Event, ...] = (),
    ) -> None:
        self._set_fields(
            next_cursor=next_cursor,
            next_interval_secs=next_interval_secs,
            metrics={} if metrics is None else metrics,
            events=events,
        )


def decode_reply(
    frame: bytes | str,
    *,
    tick_id: str | None = None,
    plugin: str = "",
    job_id: str = "",
    max_cursor_bytes: int = MAX_CURSOR_BYTES,
) -> TickReply:
    """Decode a reply frame; raises ``ProtocolError`` or ``PluginReplyError``, nothing else."""

    def bad(what: str) -> ProtocolError:
        return ProtocolError(
            f"plugin {plugin!r} broke the protocol: {what}", plugin=plugin, job_id=job_id
        )

    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise bad(f"reply is not JSON: {_preview(_as_text(frame))}") from None
    except RecursionError:  # about 1,000 levels deep; nothing else in the reply is read
        raise bad("reply is nested too deeply to decode (JSON arrays/objects)") from None
    if not isinstance(message, dict):
        raise bad(f"reply is not a JSON object: {_preview(_as_text(frame))}")
    if tick_id is not None and message.get("id") != tick_id:
        raise bad(f"reply id {message.get('id')!r} does not match tick {tick_id!r}")
    if "error" in message:
        raise _reply_error(message["error"], bad, plugin=plugin, job_id=job_id)
    result = message.get("result")
    if not isinstance(result, dict):
        raise bad("reply has neither a 'result' object nor an 'error' object")
    return _decode_result(result, bad, max_cursor_bytes)


def _as_text(frame: bytes | str) -> str:
    return frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame


def _reply_error(error: Any, bad: Any, *, plugin: str, job_id: str) -> Exception:
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return bad(f"malformed error object: {_preview(error)}")  # type: ignore[no-any-return]
    code = error["code"]
    message = str(error.get("message", ""))
    if code in _BAD_FRAME_CODES:
        return bad(f"plugin rejected the request frame ({code}): {message}")  # type: ignore[no-any-return]
    return PluginReplyError(code, message, classify_code(code), plugin=plugin, job_id=job_id)


def _decode_result(result: dict[str, Any], bad: Any, max_cursor_bytes: int) -> TickReply:
    next_cursor: bytes | None = None
    raw_cursor = result.get("next_cursor")
    if raw_cursor is not None:
        try:
            next_cursor = decode_cursor(raw_cursor)
        except ValueError as exc:
            raise bad(f"next_cursor: {exc}") from None
        if len(next_cursor) > max_cursor_bytes:
            raise bad(f"next_cursor is {len(next_cursor)} bytes, over the {max_cursor_bytes} cap")
    interval = result.get("next_interval_secs")
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise bad(f"next_interval_secs must be a number or null, got {_preview(interval)}")
        if not 0 < _as_finite(interval) <= MAX_INTERVAL_SECS:
            raise bad(
                f"next_interval_secs must be > 0 and <= {MAX_INTERVAL_SECS}, "
                f"got {_preview(interval)}"
            )
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(_as_finite(v))
        for v in metrics.values()
    ):
        raise bad(f"metrics must map names to finite numbers, got {_preview(metrics)}")
    return TickReply(
        next_cursor=next_cursor,
        next_interval_secs=None if interval is None else float(interval),
        metrics={str(k): float(v) for k, v in metrics.items()},
        events=_decode_events(result.get("events") or [], bad),
    )


def _as_finite(value: float) -> float:
    """``value`` as a float; NaN for what is not a finite float (huge integers included)."""
    try:
        number = float(value)
    except OverflowError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _decode_events(raw: Any, bad: Any) -> tuple[Event, ...]:
    if not isinstance(raw, list):
        raise bad(f"events must be a list, got {_preview(raw)}")
    events = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise bad(f"events[{index}] needs a non-empty string 'id', got {_preview(item)}")
        if len(item["id"]) * 4 > MAX_EVENT_ID_BYTES and _utf8_size(item["id"]) > MAX_EVENT_ID_BYTES:
            raise bad(
                f"events[{index}].id is {_utf8_size(item['id'])} bytes, over the limit of "
                f"{MAX_EVENT_ID_BYTES} (MAX_EVENT_ID_BYTES): {_preview(item['id'])}"
            )
        events.append(Event(id=item["id"], data=item.get("data")))
    return tuple(events)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def encode_result(tick_id: str, reply: TickReply) -> bytes:
    """The reply frame for a successful tick (used by the SDK and by tests)."""
    result: dict[str, Any] = {
        "next_cursor": None if reply.next_cursor is None else encode_cursor(reply.next_cursor),
        "next_interval_secs": reply.next_interval_secs,
        "metrics": dict(reply.metrics),
        "events": [{"id": e.id, "data": e.data} for e in reply.events],
    }
    return _frame({"jsonrpc": "2.0", "id": tick_id, "result": result})


def encode_error(tick_id: str | None, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _frame({"jsonrpc": "2.0", "id": tick_id, "error": error})


def _frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
