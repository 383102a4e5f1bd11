"""The pydantic model of a job's ``schedule`` in pollers.yaml: every, cron (+ seconds) or at."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pollerd.config.duration import parse_duration
from pollerd.config.schedule import (
    AtSchedule,
    CronSchedule,
    EverySchedule,
    Schedule,
    ambiguous_cron,
    validate_cron,
)

logger = logging.getLogger(__name__)

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


def _seconds(value: Any) -> float:
    return parse_duration(value)


PositiveDuration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


def _seconds_text(value: Any) -> Any:
    """``seconds: 0`` (a YAML integer) is the cron field ``"0"``."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _moment(value: Any) -> Any:
    """An RFC 3339 time with an offset, as a YAML timestamp or a string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"invalid time {value!r}: expected RFC 3339 such as '2025-06-01T09:00:00+02:00'"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise ValueError(
            f"{value.isoformat()!r} is a date; give a time with an offset, "
            f"e.g. '{value.isoformat()}T09:00:00Z'"
        )
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise ValueError(
            f"time {value.isoformat()!r} has no UTC offset; add one, e.g. 'Z' or '+02:00'"
        )
    return value


class ScheduleModel(BaseModel):
    model_config = _STRICT

    every: PositiveDuration | None = None
    cron: str | None = None
    at: Annotated[datetime, BeforeValidator(_moment)] | None = None
    seconds: Annotated[str, BeforeValidator(_seconds_text)] | None = None  # with cron only

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        problem = (ambiguous_cron(value) or validate_cron(value)) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("seconds")
    @classmethod
    def _valid_seconds(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 1 or validate_cron(f"{value} * * * * *")):
            raise ValueError(
                f"invalid seconds {value!r}: one cron field of seconds 0-59, such as '0', '*/15' "
                "or '0,30'"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleModel:
        chosen = [name for name in ("every", "cron", "at") if getattr(self, name) is not None]
        if len(chosen) != 1:
            found = f" (found {', '.join(chosen)})" if chosen else ""
            raise ValueError(f"set exactly one of every, cron or at{found}")
        if self.seconds is not None and self.cron is None:
            raise ValueError("seconds goes with cron only")
        self.to_schedule()  # the schedule types have their own checks (ValueError)
        return self

    def to_schedule(self) -> Schedule:
        if self.every is not None:
            return EverySchedule(interval_s=self.every)
        if self.cron is not None:
            if self.seconds is not None:
                return CronSchedule(expression=f"{self.seconds} {self.cron}")
            return CronSchedule(expression=self.cron)
        assert self.at is not None  # _exactly_one guarantees one of the three
        return AtSchedule(at=self.at)
