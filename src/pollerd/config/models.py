"""The pydantic models of pollers.yaml, field names as written in the file (used by config.py)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pollerd.config.duration import parse_duration
from pollerd.config.jobs import DEFAULT_HISTORY
from pollerd.config.schedule_model import ScheduleModel

logger = logging.getLogger(__name__)

SUPPORTED_VERSION = 1
SUPPORTED_STORES = ("sqlite", "nats-kv")
KV_BUCKET_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
REPLICA_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
DEFAULT_LISTEN = "127.0.0.1:9180"
DEFAULT_MAX_CURSOR_BYTES = 256 * 1024
# Job ids and kinds are single tokens of the events subject pollerd.events.<kind>.<job_id>: no
# dots (a dot splits a token, so consumers filtering pollerd.events.<kind>.* would miss events).
JOB_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
NATS_URL_SCHEMES = ("nats://", "tls://")
MAX_PORT = 65535

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


def _seconds(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_seconds)]
PositiveDuration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class RetryModel(BaseModel):
    model_config = _STRICT

    attempts: int = Field(default=3, ge=1)
    initial: Duration = 1.0
    max: Duration = 30.0

    @model_validator(mode="after")
    def _max_covers_initial(self) -> RetryModel:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max:g}s) must not be shorter than initial")
        return self


class BreakerModel(BaseModel):
    model_config = _STRICT

    threshold: int = Field(default=5, ge=1)
    cooldown: PositiveDuration = 30.0
    max_cooldown: PositiveDuration = 600.0

    @model_validator(mode="after")
    def _max_covers_cooldown(self) -> BreakerModel:
        if self.max_cooldown < self.cooldown:
            raise ValueError(
                f"max_cooldown ({self.max_cooldown:g}s) must not be shorter than cooldown"
            )
        return self


def _json_safe(value: Any, where: str) -> Any:
    """Check that a job's config can travel as JSON; dates become ISO strings.

    YAML cycles never get here: the YAML reader rejects an alias that refers to itself.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'value'}: {value!r} cannot be sent to a plugin as JSON")
        return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: _json_safe(item, f"{where}.{key}" if where else str(key))
            for key, item in value.items()
        }
    raise ValueError(
        f"{where or 'value'}: a {type(value).__name__} cannot be sent to a plugin; use strings, "
        "numbers, booleans, null, lists and mappings"
    )


class JobModel(BaseModel):
    model_config = _STRICT

    id: str
    kind: str = Field(min_length=1)
    schedule: ScheduleModel
    timezone: str = "UTC"
    jitter: Duration = 0.0
    align: bool = False
    tick_timeout: PositiveDuration | None = None
    target: str = ""
    paused: bool = False
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "buffer_one", "cancel_other"] = "skip"
    catchup: Literal["skip", "latest", "all"] = "latest"
    max_catchup: int = Field(default=10, ge=1)
    history: int = Field(default=DEFAULT_HISTORY, ge=0, le=10_000)
    retry: RetryModel = RetryModel()
    breaker: BreakerModel = BreakerModel()

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if "." in value:
            raise ValueError(
                f"invalid job id {value!r}: no '.' (the id is one token of the events subject "
                f"pollerd.events.<kind>.<job_id>); write {value.replace('.', '-')!r}"
            )
        if not JOB_ID_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid job id {value!r}: use 1-128 lowercase letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("kind")
    @classmethod
    def _valid_kind(cls, value: str) -> str:
        if not KIND_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid kind {value!r}: kinds are lowercase letters, digits and '_', starting "
                "with a letter (one token of the events subject pollerd.events.<kind>.<job_id>)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from None
        return value

    @field_validator("config")
    @classmethod
    def _plain_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        safe: dict[str, Any] = _json_safe(value, "")
        return safe


class TlsModel(BaseModel):
    model_config = _STRICT

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsModel:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be set together")
        return self


class NatsModel(BaseModel):
    model_config = _STRICT

    url: str = "embedded"
    port: Annotated[int, Field(ge=1, le=MAX_PORT)] | None = None  # embedded server only
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds: str | None = None
    tls: TlsModel | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if value == "embedded":
            return value
        servers = [part.strip() for part in value.split(",")]
        if not all(server.startswith(NATS_URL_SCHEMES) and len(server) > 7 for server in servers):
            raise ValueError(
                f"expected 'embedded' or nats:// / tls:// URLs (comma-separated), got {value!r}"
            )
        return ",".join(servers)

    @model_validator(mode="after")
    def _user_with_password(self) -> NatsModel:
        if bool(self.user) != bool(self.password):
            raise ValueError("user and password must be set together")
        if self.port is not None and self.url != "embedded":
            raise ValueError("port is for the embedded server; put it in the url")
        return self


def parse_listen(value: str) -> tuple[str, int] | None:
    """``host:port`` → (host, port); ``off`` → None. Raises ``ValueError``."""
    if value == "off":
        return None
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise ValueError(_listen_problem(value))
    return host, int(port_text)


def _listen_text(value: Any) -> str:
    if value is False:
        return "off"  # YAML reads a bare `off` as false
    if not isinstance(value, str):
        raise ValueError(_listen_problem(value))
    return value


def _listen_problem(value: object) -> str:
    return f"expected 'host:port' (e.g. {DEFAULT_LISTEN!r}) or 'off', got {value!r}"


class HttpModel(BaseModel):
    model_config = _STRICT

    listen: Annotated[str, BeforeValidator(_listen_text)] = DEFAULT_LISTEN
    token: str | None = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen)


def _nats_form(value: Any) -> Any:
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"url": value}


def _http_form(value: Any) -> Any:
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"listen": value}


def _store_form(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        if value not in SUPPORTED_STORES:
            raise ValueError(
                f"unsupported store {value!r}; supported: {', '.join(SUPPORTED_STORES)}"
            )
        return {"type": value}
    return value


def _whole_seconds(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"must be a whole number of seconds, at least 1s, got {value!r}")
    return seconds


@dataclass(frozen=True)
class StoreConfig:
    """Where job state lives: ``sqlite`` (a file in state_dir) or ``nats-kv`` (replicas)."""

    type: str = "sqlite"
    bucket: str = "POLLERD_STATE"
    replicas: int | None = None  # None: 3 on a cluster of 3 or more servers, else 1
    lease_ttl_s: float = 10.0
    replica_name: str | None = None  # None: <hostname>-<pid>

    @property
    def replicated(self) -> bool:
        return self.type == "nats-kv"


class StoreModel(BaseModel):
    model_config = _STRICT

    type: Literal["sqlite", "nats-kv"] = "sqlite"
    bucket: str = Field(default="POLLERD_STATE", pattern=KV_BUCKET_PATTERN)
    replicas: int | None = Field(default=None, ge=1, le=5)
    lease_ttl: Annotated[float, BeforeValidator(_whole_seconds)] = 10.0
    name: str | None = Field(default=None, pattern=REPLICA_NAME_PATTERN)

    def config(self) -> StoreConfig:
        return StoreConfig(self.type, self.bucket, self.replicas, self.lease_ttl, self.name)


def _list_form(value: Any) -> Any:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _none_to_list(value: Any) -> Any:
    return [] if value is None else value


def _mapping_or_empty(value: Any) -> Any:
    return {} if value is None else value


class FileModel(BaseModel):
    """The top level: ``defaults`` and ``jobs`` are only shaped here; config.py checks each job."""

    model_config = _STRICT

    version: int
    nats: Annotated[NatsModel, BeforeValidator(_nats_form)] = NatsModel()
    store: Annotated[StoreModel, BeforeValidator(_store_form)] = StoreModel()
    state_dir: str = Field(default=".pollerd", min_length=1)
    plugins: Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_list_form)] = [
        "plugins"
    ]
    http: Annotated[HttpModel, BeforeValidator(_http_form)] = HttpModel()
    defaults: Annotated[dict[str, Any], BeforeValidator(_mapping_or_empty)] = Field(
        default_factory=dict
    )
    jobs: Annotated[list[Any], BeforeValidator(_none_to_list)] = Field(default_factory=list)
    shutdown_grace: Duration = 10.0
    max_cursor_bytes: int = Field(default=DEFAULT_MAX_CURSOR_BYTES, ge=1)

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(
                f"unsupported version {value}; this pollerd reads version {SUPPORTED_VERSION}"
            )
        return value

    @model_validator(mode="after")
    def _kv_needs_a_cluster(self) -> FileModel:
        if self.store.type == "nats-kv" and self.nats.url == "embedded":
            raise ValueError(
                "store nats-kv keeps the state in a NATS cluster: set nats.url to its servers "
                "(the embedded nats-server is for a single pollerd with the sqlite store)"
            )
        return self
