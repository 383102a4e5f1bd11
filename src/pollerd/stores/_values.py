"""Value rules every store applies the same way: datetimes are aware and kept in UTC."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

TIME_FIELDS = frozenset(
    {
        "last_run_at",
        "last_success_at",
        "last_scheduled_at",
        "breaker_open_until",
    }
)


def to_utc(moment: datetime, name: str) -> datetime:
    """Return ``moment`` in UTC; a naive datetime is a caller bug (``ValueError``)."""
    if moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def normalize_changes(changes: dict[str, object]) -> dict[str, object]:
    """Convert the datetimes of a ``JobUpdate.changes()`` mapping to UTC."""
    return {
        name: to_utc(value, name) if name in TIME_FIELDS and isinstance(value, datetime) else value
        for name, value in changes.items()
    }
