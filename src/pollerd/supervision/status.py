"""What the supervisor says about a plugin: its state, restarts, pid and why."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


class PluginState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"
    EXTERNAL = "external"


UNAVAILABLE_STATES = frozenset({PluginState.FAILED, PluginState.STOPPED})


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """What the supervisor knows about one plugin; ``since``: when its state last changed."""

    plugin_id: str
    state: PluginState
    restarts: int
    pid: int | None
    last_exit: str | None  # "exit code 3", "killed by SIGKILL"
    reason: str | None  # why it is failed or in backoff
    since: datetime
