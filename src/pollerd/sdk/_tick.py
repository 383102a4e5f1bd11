"""What a handler sees and returns, and the checks between them and the wire frames.

Standard library and ``pollerd.wire`` only, and neither ``dataclasses``, ``inspect`` nor ``typing``
at run time: see ``pollerd.wire``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping

from pollerd import wire
from pollerd.wire import Event, FrozenRecord, Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

__all__ = [
    "BadRequestError",
    "ConfigError",
    "Event",
    "PermanentError",
    "Tick",
    "TickError",
    "TickResult",
    "TransientError",
    "check_result",
    "parse_request",
]


class TickError(Exception):
    """Base of the errors a handler raises to fail a tick; ``code`` is the JSON-RPC code."""

    code: int = wire.CODE_TRANSIENT


class TransientError(TickError):
    """The tick failed but may succeed later: pollerd retries it and counts it for the breaker."""

    code = wire.CODE_TRANSIENT


class PermanentError(TickError):
    """The job cannot succeed as it is: pollerd pauses it with this message as the reason."""

    code = wire.CODE_PERMANENT


class ConfigError(TickError):
    """The job's config is wrong: pollerd marks the job broken until its config changes."""

    code = wire.CODE_CONFIG


class Tick(FrozenRecord):
    """One scheduled run of a job, as the handler sees it."""

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
    config: dict[str, Any]
    now: datetime
    scheduled_at: datetime
    deadline: datetime
    interval_hint_secs: float | None
    # The fencing token of the pollerd leader that sent the tick (several replicas), None from a
    # single pollerd. Epochs only grow: a plugin with side effects outside pollerd may refuse a
    # tick whose epoch is older than one it has already seen.
    epoch: int | None

    def __init__(
        self,
        kind: str,
        job_id: str,
        tick_id: str,
        attempt: int,
        agent_id: str,
        cursor: bytes | None,
        config: dict[str, Any],
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


class TickResult(Record):
    """What a handler returns. ``next_cursor`` None keeps the stored cursor; ``b""`` empties it."""

    __slots__ = __match_args__ = ("next_cursor", "next_interval_secs", "metrics", "events")
    next_cursor: bytes | None
    next_interval_secs: float | None
    metrics: dict[str, float]
    events: list[Event]

    def __init__(
        self,
        next_cursor: bytes | None = None,
        next_interval_secs: float | None = None,
        metrics: dict[str, float] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        self.next_cursor = next_cursor
        self.next_interval_secs = next_interval_secs
        self.metrics = {} if metrics is None else metrics
        self.events = [] if events is None else events


class BadRequestError(Exception):
    """A request frame pollerd should not have sent; ``code`` is -32600 or -32700."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def parse_request(message: Any) -> Tick:
    """The tick in a decoded request. Raises ``BadRequestError`` naming what is wrong."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise BadRequestError(wire.CODE_INVALID_REQUEST, "request is not a JSON-RPC 2.0 object")
    if message.get("method") != wire.METHOD:
        raise BadRequestError(
            wire.CODE_INVALID_REQUEST,
            f"unknown method {message.get('method')!r}; expected {wire.METHOD!r}",
        )
    params = message.get("params")
    if not isinstance(params, dict):
        raise BadRequestError(wire.CODE_INVALID_REQUEST, "request has no 'params' object")
    protocol = params.get("protocol")
    if protocol != wire.PROTOCOL or isinstance(protocol, bool):
        raise BadRequestError(
            wire.CODE_INVALID_REQUEST,
            f"protocol version {protocol!r} is not supported (supported: {wire.PROTOCOL})",
        )
    return Tick(
        kind=_text(params, "kind", required=True),
        job_id=_text(params, "job_id", required=True),
        tick_id=_text(params, "tick_id", required=True),
        attempt=_attempt(params),
        agent_id=_text(params, "agent_id", required=False),
        cursor=_cursor(params),
        config=_config(params),
        now=_time(params, "now"),
        scheduled_at=_time(params, "scheduled_at"),
        deadline=_time(params, "deadline"),
        interval_hint_secs=_interval_hint(params),
        epoch=_epoch(params),
    )


def _invalid(name: str, expected: str, found: object) -> BadRequestError:
    return BadRequestError(
        wire.CODE_INVALID_REQUEST, f"params.{name} must be {expected}, got {found!r:.60}"
    )


def _text(params: dict[str, Any], name: str, *, required: bool) -> str:
    value = params.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise _invalid(name, "a non-empty string" if required else "a string", value)
    return value


def _attempt(params: dict[str, Any]) -> int:
    value = params.get("attempt", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid("attempt", "a positive integer", value)
    return value


def _cursor(params: dict[str, Any]) -> bytes | None:
    value = params.get("cursor")
    if value is None:
        return None
    try:
        return wire.decode_cursor(value)
    except ValueError as exc:
        raise BadRequestError(wire.CODE_INVALID_REQUEST, f"params.cursor: {exc}") from None


def _config(params: dict[str, Any]) -> dict[str, Any]:
    value = params.get("config")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid("config", "an object", value)
    return value


def _time(params: dict[str, Any], name: str) -> datetime:
    value = params.get(name)
    if not isinstance(value, str):
        raise _invalid(name, "an RFC 3339 time", value)
    try:
        return wire.parse_time(value)
    except ValueError:
        raise _invalid(name, "an RFC 3339 time", value) from None


def _interval_hint(params: dict[str, Any]) -> float | None:
    value = params.get("interval_hint_secs")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("interval_hint_secs", "a number or null", value)
    return float(value)


def _epoch(params: dict[str, Any]) -> int | None:
    value = params.get("epoch")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid("epoch", "a positive integer or null", value)
    return value


def check_result(result: object) -> wire.TickReply:
    """Check what a handler returned; ``TypeError``/``ValueError`` say what is wrong."""
    if result is None:
        return wire.TickReply()
    if not isinstance(result, TickResult):
        hint = "; declare the handler with 'async def'" if isinstance(result, Awaitable) else ""
        raise TypeError(f"expected a TickResult or None, got {type(result).__name__}{hint}")
    cursor = result.next_cursor
    if cursor is not None and not isinstance(cursor, bytes | bytearray | memoryview):
        raise TypeError(f"next_cursor must be bytes or None, got {type(cursor).__name__}")
    interval = result.next_interval_secs
    if interval is not None and (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise ValueError(f"next_interval_secs must be a positive number or None, got {interval!r}")
    for name, value in result.metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
    return wire.TickReply(
        next_cursor=None if cursor is None else bytes(cursor),
        next_interval_secs=None if interval is None else float(interval),
        metrics={str(k): float(v) for k, v in result.metrics.items()},
        events=tuple(_to_event(index, item) for index, item in enumerate(result.events)),
    )


def _to_event(index: int, item: object) -> Event:
    """An ``Event``, or a mapping with ``id`` and ``data``."""
    event_id: object
    data: object
    if isinstance(item, Event):
        event_id, data = item.id, item.data
    elif isinstance(item, Mapping):
        event_id, data = item.get("id"), item.get("data")
    else:
        raise TypeError(f"events[{index}] must be an Event, got {type(item).__name__}")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError(f"events[{index}] needs a non-empty string id, got {event_id!r}")
    return item if isinstance(item, Event) else Event(id=event_id, data=data)
