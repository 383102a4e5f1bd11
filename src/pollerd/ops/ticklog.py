"""The tick log: one line per finished or skipped slot, with the fields as structured extras."""

from __future__ import annotations

import logging
from datetime import datetime

from pollerd.engine.runner import TickOutcome
from pollerd.wire import make_tick_id

tick_logger = logging.getLogger("pollerd.tick")


def log_outcome(level: int, outcome: TickOutcome) -> None:
    reply = outcome.reply
    tick_logger.log(
        level,
        "tick job_id=%s kind=%s plugin=%s tick_id=%s outcome=%s attempts=%d duration=%.3fs%s",
        outcome.job_id,
        outcome.kind,
        outcome.plugin,
        outcome.tick_id,
        outcome.status,
        outcome.attempts,
        outcome.duration_s,
        _result(outcome),
        extra={
            "job_id": outcome.job_id,
            "kind": outcome.kind,
            "plugin": outcome.plugin,
            "tick_id": outcome.tick_id,
            "outcome": outcome.status,
            "attempts": outcome.attempts,
            "duration": round(outcome.duration_s, 6),
            "events": len(reply.events) if reply else None,
            "duplicates": outcome.duplicates if reply else None,
            "error": outcome.error,
        },
    )


def _result(outcome: TickOutcome) -> str:
    if outcome.reply is None:
        return f" error={outcome.error}"
    events = len(outcome.reply.events)
    if outcome.duplicates:  # already in the stream: consumers do not get them again
        return f" events={events} duplicates={outcome.duplicates}"
    return f" events={events}"


def log_skip(job_id: str, kind: str, plugin: str | None, slot: datetime, reason: str) -> None:
    tick_logger.info(
        "tick job_id=%s kind=%s slot=%s skipped: %s",
        job_id,
        kind,
        slot.isoformat(),
        reason,
        extra={
            "job_id": job_id,
            "kind": kind,
            "plugin": plugin,
            "tick_id": make_tick_id(job_id, slot),
            "outcome": "skipped",
            "skipped": reason,
            "duration": 0.0,
        },
    )
