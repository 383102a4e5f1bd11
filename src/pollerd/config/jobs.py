"""A job of pollers.yaml once validated (``JobConfig``), or why it cannot run (``BrokenJob``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pollerd.config.schedule import Schedule
from pollerd.config.slotstate import quick_pickle

logger = logging.getLogger(__name__)

# What json.dumps(sort_keys=True, separators=(",", ":"), default=repr) would build on every call.
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)

Overlap = Literal["skip", "buffer_one", "cancel_other"]
Catchup = Literal["skip", "latest", "all"]


@quick_pickle
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    initial_s: float = 1.0
    max_s: float = 30.0


@quick_pickle
@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int = 5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0


@quick_pickle
@dataclass(frozen=True, slots=True)
class JobConfig:
    """One valid job with its defaults applied."""

    id: str
    kind: str
    schedule: Schedule
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    jitter_s: float = 0.0
    align: bool = False  # an every-job fires on multiples of its interval, not at its phase
    tick_timeout_s: float | None = None  # None: the plugin manifest's tick_timeout
    target: str = ""
    paused: bool = False
    enabled: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    overlap: Overlap = "skip"
    catchup: Catchup = "latest"
    max_catchup: int = 10
    history: int = 50  # tick records kept (`pollerd history`)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    # Where the job is written: its line, its position in `jobs`, and the line of each of its keys.
    line: int = field(default=0, compare=False)
    index: int = field(default=0, compare=False)
    field_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    # The line of each key and item under ``config``, by its path there: ("feeds", 0, "url").
    config_lines: Mapping[tuple[str | int, ...], int] = field(
        default_factory=dict, compare=False, repr=False
    )
    config_hash: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_hash", _job_hash(self))

    def line_of(self, name: str) -> int:
        """The line of the job's key ``name`` (the job's own line if the key came from defaults)."""
        return self.field_lines.get(name, self.line)


def _job_hash(job: JobConfig) -> str:
    """A stable hash of everything that defines the job (not where it is written)."""
    definition = {
        "id": job.id,
        "kind": job.kind,
        "schedule": {"type": type(job.schedule).__name__, **_shallow(job.schedule)},
        "timezone": str(job.timezone),
        "jitter_s": job.jitter_s,
        **({"align": True} if job.align else {}),  # absent when false: older hashes still match
        "tick_timeout_s": job.tick_timeout_s,
        "target": job.target,
        "paused": job.paused,
        "enabled": job.enabled,
        "config": job.config,
        "overlap": job.overlap,
        "catchup": job.catchup,
        "max_catchup": job.max_catchup,
        "retry": _shallow(job.retry),
        "breaker": _shallow(job.breaker),
    }
    text = _HASH_ENCODER.encode(definition)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _shallow(value: Any) -> dict[str, Any]:
    """A flat dataclass as a dict (what ``asdict`` gives, without its deep copies)."""
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


@dataclass(frozen=True)
class BrokenJob:
    """A job that cannot run; ``reason`` names ``file:line: field: message`` for each problem."""

    id: str | None
    kind: str | None
    line: int
    reason: str
    problems: tuple[str, ...] = ()
