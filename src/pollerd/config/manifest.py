"""plugin.toml: find and validate plugin manifests (DESIGN §4).

A manifest is ``<plugins folder>/<plugin folder>/plugin.toml``. Every problem is reported as
``path:line: field: message``; tomllib keeps no positions, so lines come from a scan of the text
for the table headers and keys (good enough for hand-written manifests).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pollerd.config.duration import parse_duration
from pollerd.config.jobschema import schema_problem
from pollerd.config.problems import Loc, describe_error, format_loc
from pollerd.errors import ManifestError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "plugin.toml"
PLUGIN_ID_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SUBJECT_PATTERN = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")
DEFAULT_SUBJECT_ROOT = "pollerd.plugins"
# Subjects a plugin's ticks must never be sent under: events (every tick request would be stored
# as an event), the JetStream, KV, object store and system APIs, micro discovery, reply inboxes.
RESERVED_SUBJECT_ROOTS = ("pollerd.events", "$JS", "$KV", "$O", "$SRV", "$SYS", "_INBOX")
DEFAULT_MAX_CONCURRENT_TICKS = 8
MAX_CONCURRENT_TICKS = 256
DEFAULT_TICK_TIMEOUT_S = 30.0

KINDS_KEY = ("plugin", "poller", "kinds")

Lifecycle = Literal["long_lived", "ephemeral"]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_TABLE = re.compile(r"\[\[?\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(
    r"""((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_KEY_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


@dataclass(frozen=True)
class Entrypoint:
    command: str  # "python" means the interpreter running pollerd; else a path or a PATH name
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # the only environment variables passed through
    user: str | None = None  # run as this user / group (pollerd must run as root)
    group: str | None = None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    id: str
    version: str
    path: Path  # the plugin.toml, absolute
    kinds: tuple[str, ...]
    lifecycle: Lifecycle
    description: str = ""
    entrypoint: Entrypoint | None = None
    subject_prefix: str = ""  # empty: pollerd.plugins.<id>
    max_concurrent_ticks: int = DEFAULT_MAX_CONCURRENT_TICKS
    tick_timeout_s: float = DEFAULT_TICK_TIMEOUT_S
    prefork: bool = False  # ephemeral ticks run in children forked by a zygote of the plugin
    # A JSON Schema of the jobs' config (plugin.poller.config_schema); None: not declared.
    config_schema: Mapping[str, Any] | None = field(default=None, hash=False)
    kind_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    id_line: int = field(default=1, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)  # for `check`
    folder: Path = field(init=False)  # the plugin folder: the entrypoint's working directory

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", self.path.parent)
        if not self.subject_prefix:
            object.__setattr__(self, "subject_prefix", f"{DEFAULT_SUBJECT_ROOT}.{self.id}")

    @property
    def tick_subject(self) -> str:
        return f"{self.subject_prefix}.tick"

    @property
    def external(self) -> bool:
        """A long-lived plugin without an entrypoint runs elsewhere; pollerd only sends ticks."""
        return self.lifecycle == "long_lived" and self.entrypoint is None

    def kind_line(self, kind: str) -> int:
        """The line of ``kind`` in the manifest (1 if unknown)."""
        return self.kind_lines.get(kind, 1)


# -- the file as written ----------------------------------------------------------------------


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: must match ^{pattern.pattern}$")
        return value

    return AfterValidator(check)


def _seconds(value: Any) -> float:
    return parse_duration(value)


class _EntrypointModel(BaseModel):
    model_config = _STRICT

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: list[Annotated[str, _matches(ENV_NAME_PATTERN, "variable name")]] = Field(
        default_factory=list
    )
    user: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)


class _PollerModel(BaseModel):
    model_config = _STRICT

    kinds: list[Annotated[str, _matches(KIND_PATTERN, "kind")]] = Field(min_length=1)
    lifecycle: Lifecycle
    subject_prefix: Annotated[str, _matches(SUBJECT_PATTERN, "subject prefix")] | None = None
    max_concurrent_ticks: int = Field(
        default=DEFAULT_MAX_CONCURRENT_TICKS, ge=1, le=MAX_CONCURRENT_TICKS
    )
    tick_timeout: Annotated[float, BeforeValidator(_seconds), Field(gt=0)] = DEFAULT_TICK_TIMEOUT_S
    prefork: bool = False
    config_schema: dict[str, Any] | None = None

    @field_validator("config_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_problem(schema) if schema is not None else None
        if problem:
            raise ValueError(problem)
        return schema

    @field_validator("subject_prefix")
    @classmethod
    def _not_reserved(cls, prefix: str | None) -> str | None:
        for root in RESERVED_SUBJECT_ROOTS:
            if prefix is not None and (prefix == root or prefix.startswith(root + ".")):
                raise ValueError(
                    f"subject prefix {prefix!r} is under {root}, which pollerd and NATS reserve; "
                    f"use one of your own, e.g. {DEFAULT_SUBJECT_ROOT}.<id>"
                )
        return prefix

    @field_validator("kinds")
    @classmethod
    def _unique(cls, kinds: list[str]) -> list[str]:
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            raise ValueError(f"kinds declared twice: {', '.join(repeated)}")
        return kinds


class _PluginModel(BaseModel):
    model_config = _STRICT

    id: Annotated[str, _matches(PLUGIN_ID_PATTERN, "plugin id")]
    version: str = Field(min_length=1)
    description: str = ""
    entrypoint: _EntrypointModel | None = None
    poller: _PollerModel


class _ManifestModel(BaseModel):
    model_config = _STRICT

    plugin: _PluginModel


# -- loading ----------------------------------------------------------------------------------


def load_manifest(path: Path) -> Manifest:
    """Read and validate one plugin.toml. Raises ``ManifestError`` listing every problem."""
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        line = int(found.group(1)) if found else 1
        message = _TOML_LINE.sub("", str(exc)).strip()
        raise ManifestError(f"{path}:{line}: malformed TOML: {message}") from None
    lines = _TomlLines(text)
    try:
        model = _ManifestModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = lines.line_of(loc, error.get("input"))
            message = describe_error(error, _ManifestModel, loc)
            problems.append((line, f"{path}:{line}: {format_loc(loc)}: {message}"))
        raise ManifestError([problem for _, problem in sorted(problems, key=_by_line)]) from None
    plugin = model.plugin
    if plugin.poller.lifecycle == "ephemeral" and plugin.entrypoint is None:
        line = lines.line_of(("plugin", "poller", "lifecycle"))
        raise ManifestError(
            f"{path}:{line}: plugin.entrypoint: required for an ephemeral plugin; "
            "add [plugin.entrypoint] with the command that runs one tick"
        )
    if plugin.poller.prefork and plugin.poller.lifecycle != "ephemeral":
        line = lines.line_of(("plugin", "poller", "prefork"))
        raise ManifestError(
            f"{path}:{line}: plugin.poller.prefork: only an ephemeral plugin can be pre-forked; "
            'remove prefork or set lifecycle = "ephemeral"'
        )
    return _manifest(path, plugin, lines)


def _by_line(item: tuple[int, str]) -> int:
    return item[0]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: the manifest is not UTF-8 text ({exc.reason})") from None


def _manifest(path: Path, plugin: _PluginModel, lines: _TomlLines) -> Manifest:
    entry = plugin.entrypoint
    poller = plugin.poller
    return Manifest(
        id=plugin.id,
        version=plugin.version,
        description=plugin.description,
        path=Path(os.path.normpath(path.absolute())),
        entrypoint=Entrypoint(
            entry.command, tuple(entry.args), tuple(entry.env), entry.user, entry.group
        )
        if entry
        else None,
        kinds=tuple(poller.kinds),
        lifecycle=poller.lifecycle,
        subject_prefix=poller.subject_prefix or "",
        max_concurrent_ticks=poller.max_concurrent_ticks,
        tick_timeout_s=poller.tick_timeout,
        prefork=poller.prefork,
        config_schema=poller.config_schema,
        kind_lines={kind: lines.value_line(KINDS_KEY, kind) for kind in poller.kinds},
        id_line=lines.line_of(("plugin", "id")),
        warnings=_entrypoint_warnings(path, entry, lines),
    )


def _entrypoint_warnings(
    path: Path, entry: _EntrypointModel | None, lines: _TomlLines
) -> tuple[str, ...]:
    """An entrypoint whose program or script lies outside the plugin folder (``../../x.sh``):
    allowed, but `pollerd check` says so. Absolute paths and PATH names are deliberate."""
    if entry is None:
        return ()
    folder = path.absolute().parent.resolve()
    script = next((a for a in entry.args if not a.startswith("-")), None)
    candidates = [("command", entry.command)]
    if entry.command == "python" and script is not None and not entry.args[0].startswith("-m"):
        candidates.append(("args", script))
    found = []
    for key, value in candidates:
        if os.sep not in value or os.path.isabs(value):
            continue
        target = (folder / value).resolve()
        if not target.is_relative_to(folder):
            line = lines.line_of(("plugin", "entrypoint", key))
            found.append(
                f"{path}:{line}: plugin.entrypoint.{key}: {value!r} is outside the plugin "
                f"folder {folder} (it resolves to {target})"
            )
    return tuple(found)


class _TomlLines:
    """The line of each table header and key, found by scanning the text."""

    def __init__(self, text: str) -> None:
        self.text_lines = text.splitlines()
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, raw in enumerate(self.text_lines, start=1):
            stripped = raw.strip()
            header = _TABLE.match(stripped)
            if header:
                table = _key_parts(header.group(1))
                self._record(table, number)
                continue
            key = _KEY.match(stripped)
            if key:
                self._record((*table, *_key_parts(key.group(1))), number)

    def _record(self, key: tuple[str, ...], number: int) -> None:
        for end in range(1, len(key) + 1):
            self.lines.setdefault(key[:end], number)

    def line_of(self, loc: Loc, value: object = None) -> int:
        """The line of the deepest known key in ``loc`` (of the item, for a string in a list)."""
        names = tuple(part for part in loc if isinstance(part, str))
        if isinstance(value, str) and loc and isinstance(loc[-1], int):
            return self.value_line(names, value)
        for end in range(len(names), 0, -1):
            if names[:end] in self.lines:
                return self.lines[names[:end]]
        return 1

    def value_line(self, key: tuple[str, ...], value: str) -> int:
        """The first line at or after ``key`` that holds ``value`` as a quoted string."""
        start = self.lines.get(key)
        if start is None:
            return self.line_of(key[:-1]) if key else 1
        quoted = (f'"{value}"', f"'{value}'")
        for number in range(start, len(self.text_lines) + 1):
            if any(text in self.text_lines[number - 1] for text in quoted):
                return number
        return start


def _key_parts(key: str) -> tuple[str, ...]:
    return tuple(double or single or bare for double, single, bare in _KEY_PART.findall(key))


# -- discovery --------------------------------------------------------------------------------


def discover_manifests(plugin_dirs: Iterable[Path]) -> list[Manifest]:
    """Load ``*/plugin.toml`` one level below each folder, in folder order then sorted by path.

    Raises ``ManifestError`` listing every problem: a missing folder, an invalid manifest, or a
    plugin id used twice (naming both manifests).
    """
    problems: list[str] = []
    manifests: list[Manifest] = []
    seen: set[Path] = set()
    for folder in plugin_dirs:
        for path in _manifest_paths(folder, problems):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                manifests.append(load_manifest(path))
            except ManifestError as exc:
                problems.extend(exc.problems)
    problems.extend(_duplicate_ids(manifests))
    if problems:
        raise ManifestError(problems)
    for manifest in manifests:
        logger.debug("plugin=%s kinds=%s manifest %s", manifest.id, manifest.kinds, manifest.path)
    return manifests


def _manifest_paths(folder: Path, problems: list[str]) -> list[Path]:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        problems.append(
            f"{folder}: plugin folder {what}; create it or fix 'plugins' in pollers.yaml"
        )
        return []
    try:
        found = [
            path
            for path in folder.glob(f"*/{MANIFEST_NAME}")
            if not path.parent.name.startswith(".")
        ]
    except OSError as exc:
        problems.append(f"{folder}: cannot list the plugin folder: {exc.strerror or exc}")
        return []
    return sorted(path for path in found if path.is_file())


def _duplicate_ids(manifests: list[Manifest]) -> list[str]:
    problems: list[str] = []
    first: dict[str, Manifest] = {}
    for manifest in manifests:
        other = first.setdefault(manifest.id, manifest)
        if other is not manifest:
            problems.append(
                f"{manifest.path}:{manifest.id_line}: plugin.id: plugin id {manifest.id!r} "
                f"is already used by {other.path}; plugin ids must be unique"
            )
    return problems
