"""A job of pollers.yaml once validated (``JobConfig``), or why it cannot run (``BrokenJob``)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pollerd.config.schedule import Schedule
from pollerd.config.slotstate import quick_pickle

if TYPE_CHECKING:
    from pollerd.config.models import JobModel

logger = logging.getLogger(__name__)

DEFAULT_HISTORY = 50  # tick records kept per job when pollers.yaml does not say
# What json.dumps(sort_keys=True, separators=(",", ":"), default=repr) would build on every call.
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)

T = TypeVar("T")

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
    history: int = DEFAULT_HISTORY  # tick records kept (`pollerd history`)
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

    def moved(self, line: int, index: int) -> JobConfig:
        """This job, its text unchanged, written at ``line`` as item ``index`` of ``jobs``.

        The definition and its hash are kept (not computed again); every line moves with it."""
        if line == self.line and index == self.index:
            return self
        shift = line - self.line
        moved: JobConfig = object.__new__(JobConfig)
        moved.__setstate__(self.__getstate__())  # type: ignore[attr-defined] # see slotstate
        object.__setattr__(moved, "line", line)
        object.__setattr__(moved, "index", index)
        field_lines = {name: at + shift for name, at in self.field_lines.items()}
        object.__setattr__(moved, "field_lines", field_lines)
        config_lines = {where: at + shift for where, at in self.config_lines.items()}
        object.__setattr__(moved, "config_lines", config_lines)
        return moved


def build_job(
    model: JobModel,
    line: int,
    index: int,
    lines: dict[str, int],
    config_lines: dict[tuple[str | int, ...], int],
    shared: dict[tuple[type, tuple[str, ...]], Any],
) -> JobConfig:
    """The job of a validated ``model`` written at ``line``; its schedule and policies are the
    objects of ``shared`` when equal ones are there (less memory, and pickled once)."""
    retry = RetryPolicy(model.retry.attempts, model.retry.initial, model.retry.max)
    breaker = BreakerPolicy(
        model.breaker.threshold, model.breaker.cooldown, model.breaker.max_cooldown
    )
    return JobConfig(
        id=model.id,
        kind=sys.intern(model.kind),
        schedule=_shared(shared, model.schedule.to_schedule()),
        timezone=ZoneInfo(model.timezone),
        jitter_s=model.jitter,
        align=model.align,
        tick_timeout_s=model.tick_timeout,
        target=model.target,
        paused=model.paused,
        enabled=model.enabled,
        config=dict(model.config),
        overlap=model.overlap,
        catchup=model.catchup,
        max_catchup=model.max_catchup,
        history=model.history,
        retry=_shared(shared, retry),
        breaker=_shared(shared, breaker),
        line=line,
        index=index,
        field_lines=lines,
        config_lines=config_lines,
    )


def _shared(pool: dict[tuple[type, tuple[str, ...]], Any], value: T) -> T:
    """The object of ``pool`` that is ``value`` to the last detail, else ``value``.

    Keyed by the repr of each field, not by equality: two ``at`` schedules at the same instant in
    other zones are equal, yet each job keeps its own (10 and 10.0, 0.0 and -0.0 likewise)."""
    state: tuple[Any, ...] = value.__getstate__()  # type: ignore[assignment] # see slotstate
    fields = tuple(map(repr, state))
    shared: T = pool.setdefault((type(value), fields), value)
    return shared


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
        # Absent at the default: the hashes of jobs that do not set it stay as they were.
        **({"history": job.history} if job.history != DEFAULT_HISTORY else {}),
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
