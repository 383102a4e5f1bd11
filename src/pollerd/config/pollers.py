"""pollers.yaml: load, validate and resolve the service configuration (DESIGN §3).

Every problem is reported as ``file:line: field.path: message``. Problems with the file as a whole
(malformed YAML, version, top-level keys, ``defaults``) are fatal and raised together as one
``ConfigError``; a problem inside one job only turns that job into a ``BrokenJob``.

Forms accepted beyond the sample file:

- ``nats: embedded`` or ``nats: nats://host:4222`` (a string is the ``url``); the mapping form takes
  ``url``, ``token``, ``user`` + ``password``, ``creds`` (a path) and ``tls: {ca, cert, key}``.
- ``http: 127.0.0.1:9180`` / ``http: off``, or ``http: {listen: 127.0.0.1:9180, token: ...}`` when a
  token should guard the admin API. An empty token (``${POLLERD_ADMIN_TOKEN:-}``) means no token.
- ``shutdown_grace`` (default 10s) and ``max_cursor_bytes`` (default 262144) at the top level.
- ``defaults`` may set any job field except ``id``, ``kind``, ``schedule`` and ``config``; a job's
  own value wins, and ``retry`` / ``breaker`` merge key by key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pollerd.config.jobcache import JobCache
from pollerd.config.jobs import (
    BreakerPolicy,
    BrokenJob,
    Catchup,
    JobConfig,
    Overlap,
    RetryPolicy,
    build_job,
)
from pollerd.config.models import SUPPORTED_VERSION, FileModel, JobModel, StoreConfig
from pollerd.config.problems import describe_error, format_loc, preview
from pollerd.config.yamlfile import REUSED, Loc, YamlDocument, parse_yaml, read_text
from pollerd.errors import ConfigError

logger = logging.getLogger(__name__)

# The job types live in config/jobs.py; they are imported from here too.
__all__ = [
    "BreakerPolicy",
    "BrokenJob",
    "Catchup",
    "HttpConfig",
    "JobConfig",
    "NatsConfig",
    "Overlap",
    "RetryPolicy",
    "ServiceConfig",
    "load_config",
]

NOT_IN_DEFAULTS = ("id", "kind", "schedule", "config")
MERGED_PER_KEY = ("retry", "breaker")


@dataclass(frozen=True)
class NatsConfig:
    url: str = "embedded"  # "embedded", or nats:// / tls:// URLs (comma-separated for a cluster)
    port: int = 0  # the embedded server's port; 0: the last one when free, else any
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9180
    token: str | None = None  # required on every POST when set


@dataclass(frozen=True)
class ServiceConfig:
    path: Path  # absolute
    version: int
    nats: NatsConfig
    store: StoreConfig
    state_dir: Path
    plugin_dirs: tuple[Path, ...]
    http: HttpConfig
    jobs: tuple[JobConfig, ...]
    broken: tuple[BrokenJob, ...]
    shutdown_grace_s: float = 10.0
    max_cursor_bytes: int = 262144
    source: str = ""  # the path as given: how messages name the file

    def where(self, line: int, loc: str) -> str:
        """``file:line: loc`` for a message about this file."""
        return f"{self.source or self.path}:{line}: {loc}"


def load_config(
    path: Path, environ: Mapping[str, str], cache: JobCache | None = None
) -> ServiceConfig:
    """Load ``path``. Raises ``ConfigError`` listing every fatal problem (and every job problem).

    A reader's ``cache`` holds the jobs of its last load: those written as then are reused."""
    source = str(path)
    text, line_map = read_text(path, environ, source)
    document = parse_yaml(text, source, line_map, cache.known if cache is not None else None)
    if cache is not None and document.reused and not cache.fits(document.data):
        document = parse_yaml(text, source, line_map)  # other defaults: every job is read anew
    config = _ConfigReader(path, source, document, cache).load()
    if cache is not None:
        cache.keep(document, config.jobs)
    return config


class _ConfigReader:
    """One load of one file: collects fatal problems and broken jobs, then builds the config."""

    def __init__(
        self, path: Path, source: str, document: YamlDocument, cache: JobCache | None = None
    ) -> None:
        self.path = Path(os.path.normpath(path.absolute()))
        self.source = source
        self.document = document
        self.cache = cache
        self.fatal: list[tuple[int, str]] = []
        # Lines and problems grouped by job once: looking them up per job scanned the whole
        # file for each job (quadratic: a minute for 10,000 jobs).
        self.job_key_lines: dict[int, dict[str, int]] = {}
        self.job_config_lines: dict[int, dict[Loc, int]] = {}  # under each job's config
        self.job_problems: dict[int, list[tuple[Loc, int, str]]] = {}
        # Equal policies and schedules, one object each: less memory per job, and a reload's
        # child pickles each of them once.
        self.shared: dict[tuple[type, tuple[str, ...]], Any] = {}
        for key, key_line in document.lines.items():
            if len(key) < 3 or key[0] != "jobs" or not isinstance(key[1], int):
                continue
            if len(key) == 3:
                self.job_key_lines.setdefault(key[1], {})[sys.intern(str(key[2]))] = key_line
            elif key[2] == "config":
                self.job_config_lines.setdefault(key[1], {})[key[3:]] = key_line
        for problem in document.problems:
            where = problem[0]
            if len(where) > 2 and where[0] == "jobs" and isinstance(where[1], int):
                self.job_problems.setdefault(where[1], []).append(problem)

    def load(self) -> ServiceConfig:
        data = self.document.data
        if not isinstance(data, dict):
            shown = "the file is empty" if data is None else f"got {type(data).__name__}"
            raise ConfigError(
                f"{self.source}:1: expected a mapping with 'version: {SUPPORTED_VERSION}' "
                f"and 'jobs'; {shown}"
            )
        for loc, line, message in self.document.problems:
            if not (len(loc) > 2 and loc[0] == "jobs" and isinstance(loc[1], int)):
                self.fatal.append((line, self._problem(line, loc, message)))
        top = self._validate_top(data)
        defaults = self._validate_defaults(data.get("defaults"))
        raw_jobs = data.get("jobs")
        jobs, broken = self._load_jobs(raw_jobs if isinstance(raw_jobs, list) else [], defaults)
        if self.fatal or top is None:
            job_problems = [(job.line, problem) for job in broken for problem in job.problems]
            problems = sorted(self.fatal + job_problems, key=lambda item: item[0])
            raise ConfigError([problem for _, problem in problems])
        return self._build(top, jobs, broken)

    # -- validation ---------------------------------------------------------------------------

    def _validate_top(self, data: dict[str, Any]) -> FileModel | None:
        try:
            return FileModel.model_validate(data)
        except ValidationError as exc:
            self.fatal.extend(self._errors(exc, (), FileModel, self.document.line_of))
            return None

    def _validate_defaults(self, raw: object) -> dict[str, Any]:
        """Check ``defaults`` on its own (as a job would see it); return it, or {} if invalid."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            return {}  # FileModel reports the type
        valid = True
        for name in NOT_IN_DEFAULTS:
            if name in raw:
                line = self.document.line_of(("defaults", name))
                message = "cannot be set in defaults; set it on each job"
                self.fatal.append((line, self._problem(line, ("defaults", name), message)))
                valid = False
        probe = {**raw, "id": "defaults", "kind": "defaults", "schedule": {"every": 1}}
        try:
            JobModel.model_validate({k: v for k, v in probe.items() if k != "config"})
        except ValidationError as exc:
            self.fatal.extend(
                self._errors(
                    exc, ("defaults",), JobModel, self.document.line_of, skip=NOT_IN_DEFAULTS
                )
            )
            valid = False
        return raw if valid else {}

    def _load_jobs(
        self, raw_jobs: list[Any], defaults: dict[str, Any]
    ) -> tuple[list[JobConfig], list[BrokenJob]]:
        jobs: list[JobConfig] = []
        broken: list[BrokenJob] = []
        first_line: dict[str, int] = {}
        for index, raw in enumerate(raw_jobs):
            result = self._load_job(index, raw, defaults, first_line)
            if isinstance(result, JobConfig):
                jobs.append(result)
            else:
                broken.append(result)
        return jobs, broken

    def _load_job(
        self, index: int, raw: object, defaults: dict[str, Any], first_line: dict[str, int]
    ) -> JobConfig | BrokenJob:
        loc: Loc = ("jobs", index)
        line = self.document.line_of(loc)
        if raw is REUSED:
            return self._reused_job(index, line, first_line)
        if not isinstance(raw, dict):
            message = f"a job must be a mapping with id, kind and schedule, got {preview(raw)}"
            return _broken(None, None, line, [self._problem(line, loc, message)])
        problems = [
            (where_line, self._problem(where_line, where, message))
            for where, where_line, message in self.job_problems.get(index, ())
        ]
        job_id = raw.get("id")
        id_line = self.document.line_of((*loc, "id"))
        problems.extend(self._duplicate_id(job_id, index, line, id_line, first_line))
        model: JobModel | None = None
        try:
            model = JobModel.model_validate(_merge(defaults, raw))
        except ValidationError as exc:
            problems.extend(self._errors(exc, loc, JobModel, self._job_line(index)))
        if problems or model is None:
            kind = raw.get("kind")
            ordered = [problem for _, problem in sorted(problems, key=lambda item: item[0])]
            return _broken(job_id, kind, line, ordered)
        lines = self.job_key_lines.get(index, {})
        return build_job(
            model, line, index, lines, self.job_config_lines.get(index, {}), self.shared
        )

    def _reused_job(
        self, index: int, line: int, first_line: dict[str, int]
    ) -> JobConfig | BrokenJob:
        """The cache's job for item ``index``, written as in the last load (see ``jobcache``)."""
        assert self.cache is not None  # nothing is REUSED without one
        job = self.cache.job(self.document.sources[index], line, index)
        duplicate = self._duplicate_id(job.id, index, line, job.line_of("id"), first_line)
        if duplicate:
            return _broken(job.id, job.kind, line, [problem for _, problem in duplicate])
        return job

    def _duplicate_id(
        self, job_id: object, index: int, line: int, id_line: int, first_line: dict[str, int]
    ) -> list[tuple[int, str]]:
        """The problem of a job whose id an earlier job has; else notes where the id is first."""
        if not isinstance(job_id, str):
            return []
        if job_id not in first_line:
            first_line[job_id] = line
            return []
        message = f"duplicate job id {job_id!r} (first defined at line {first_line[job_id]})"
        return [(id_line, self._problem(id_line, ("jobs", index, "id"), message))]

    def _job_line(self, index: int) -> Callable[[Loc], int]:
        """Find the line of a job field: the job's own key, else the defaults key it came from."""
        lines = self.document.lines

        def locate(loc: Loc) -> int:
            inner = loc[2:]
            for end in range(len(inner), 0, -1):
                for candidate in (("jobs", index, *inner[:end]), ("defaults", *inner[:end])):
                    if candidate in lines:
                        return lines[candidate]
            return self.document.line_of(("jobs", index))

        return locate

    # -- messages -----------------------------------------------------------------------------

    def _problem(self, line: int, loc: Loc, message: str) -> str:
        return f"{self.source}:{line}: {format_loc(loc)}: {message}"

    def _errors(
        self,
        exc: ValidationError,
        prefix: Loc,
        model: type[BaseModel],
        locate: Callable[[Loc], int],
        skip: tuple[str, ...] = (),
    ) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for error in exc.errors():
            inner = tuple(error["loc"])
            if inner and inner[0] in skip:
                continue
            loc = (*prefix, *inner)
            line = locate(loc)
            message = describe_error(error, model, inner, hidden=skip)
            found.append((line, self._problem(line, loc, message)))
        return found

    # -- building -----------------------------------------------------------------------------

    def _build(
        self, top: FileModel, jobs: list[JobConfig], broken: list[BrokenJob]
    ) -> ServiceConfig:
        base = self.path.parent
        return ServiceConfig(
            path=self.path,
            version=top.version,
            nats=_nats_config(top, base),
            store=top.store.config(),
            state_dir=_resolve(base, top.state_dir),
            plugin_dirs=tuple(_resolve(base, folder) for folder in top.plugins),
            http=_http_config(top),
            jobs=tuple(jobs),
            broken=tuple(broken),
            shutdown_grace_s=top.shutdown_grace,
            max_cursor_bytes=top.max_cursor_bytes,
            source=self.source,
        )


def _merge(defaults: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **job}
    for name in MERGED_PER_KEY:
        base, own = defaults.get(name), job.get(name)
        if isinstance(base, dict) and isinstance(own, dict):
            merged[name] = {**base, **own}
    return merged


def _broken(job_id: object, kind: object, line: int, problems: list[str]) -> BrokenJob:
    return BrokenJob(
        id=job_id if isinstance(job_id, str) else None,
        kind=kind if isinstance(kind, str) else None,
        line=line,
        reason="; ".join(problems),
        problems=tuple(problems),
    )


def _resolve(base: Path, text: str) -> Path:
    return Path(os.path.normpath(base / Path(text).expanduser()))


def _optional_path(base: Path, text: str | None) -> Path | None:
    return _resolve(base, text) if text else None


def _nats_config(top: FileModel, base: Path) -> NatsConfig:
    nats = top.nats
    tls = nats.tls
    return NatsConfig(
        url=nats.url,
        port=nats.port or 0,
        token=nats.token or None,
        user=nats.user or None,
        password=nats.password or None,
        creds=_optional_path(base, nats.creds),
        tls_ca=_optional_path(base, tls.ca if tls else None),
        tls_cert=_optional_path(base, tls.cert if tls else None),
        tls_key=_optional_path(base, tls.key if tls else None),
    )


def _http_config(top: FileModel) -> HttpConfig:
    http = top.http
    if http.address is None:
        return HttpConfig(enabled=False, token=http.token or None)
    host, port = http.address
    return HttpConfig(enabled=True, host=host, port=port, token=http.token or None)
