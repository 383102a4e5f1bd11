"""JSON Schemas of pollers.yaml and plugin.toml that accept what pollerd accepts.

They start from the pydantic models that validate the files and fix what pydantic cannot know:
durations are strings such as ``10s`` or ``1h30m`` (or numbers of seconds), and several
top-level keys have a short form (``nats: embedded``, ``store: sqlite``, ``http: off``,
``plugins: folder``). ``${VAR}`` references are accepted wherever a duration or a string is.
Semantic checks (cron syntax, kind ownership, time zones) stay pollerd's: `pollerd check`.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
# Units from the largest to the smallest, each at most once (as parse_duration reads them).
DURATION_PATTERN = (
    rf"^\s*(?:{_NUMBER}|(?=[\d.])(?:{_NUMBER}\s*d\s*)?(?:{_NUMBER}\s*h\s*)?"
    rf"(?:{_NUMBER}\s*m\s*)?(?:{_NUMBER}\s*s\s*)?(?:{_NUMBER}\s*ms\s*)?)\s*$"
)
ENV_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}"
DURATION_FUNCTIONS = frozenset({"_seconds", "_whole_seconds"})
NOT_IN_DEFAULTS = ("id", "kind", "schedule", "config")


def duration_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": DURATION_PATTERN},
            {"type": "string", "pattern": ENV_PATTERN},
            {"type": "number", "minimum": 0},
        ],
        "description": "a duration: 500ms, 10s, 5m, 2h, 1d, 1h30m, or a number of seconds",
    }


def _parses_duration(metadata: typing.Iterable[Any]) -> bool:
    return any(
        isinstance(m, BeforeValidator) and getattr(m.func, "__name__", "") in DURATION_FUNCTIONS
        for m in metadata
    )


def _is_duration(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _parses_duration(annotation.__metadata__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_duration(arg) for arg in typing.get_args(annotation))
    return False


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model its fields use, directly or inside Annotated/Union/list."""
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
                    for item in field.metadata:
                        visit(item)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return found


def _fix_durations(schema: dict[str, Any], root: type[BaseModel]) -> None:
    for model in _models(root):
        target = schema if model is root else schema.get("$defs", {}).get(model.__name__)
        if target is None:
            continue
        for name, field in model.model_fields.items():
            key = field.alias or name
            prop = target.get("properties", {}).get(key)
            duration = _parses_duration(field.metadata) or _is_duration(field.annotation)
            if prop is None or not duration:
                continue
            fixed = duration_schema()
            if "default" in prop:
                fixed["default"] = prop["default"]
            if not field.is_required() and field.default is None:
                fixed["anyOf"].append({"type": "null"})
            target["properties"][key] = fixed


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    _fix_durations(schema, model)
    return schema


def pollers_schema() -> dict[str, Any]:
    """The schema of pollers.yaml."""
    from pollerd.config.models import SUPPORTED_STORES, FileModel, JobModel

    schema = _model_schema(FileModel)
    defs = schema.setdefault("$defs", {})
    job = _model_schema(JobModel)
    defs.update(job.pop("$defs", {}))
    defs["JobModel"] = job
    defaults = copy.deepcopy(job)
    for name in NOT_IN_DEFAULTS:
        defaults["properties"].pop(name, None)
    defaults.pop("required", None)
    defaults["title"] = "Defaults"
    defs["Defaults"] = defaults
    props = schema["properties"]
    nullable = {"type": "null"}
    props["nats"] = {
        "anyOf": [
            {"type": "string", "description": "embedded, or nats://host:4222"},
            {"$ref": "#/$defs/NatsModel"},
            nullable,
        ]
    }
    props["store"] = {
        "anyOf": [{"enum": list(SUPPORTED_STORES)}, {"$ref": "#/$defs/StoreModel"}, nullable]
    }
    props["http"] = {
        "anyOf": [
            {"type": "string", "description": "host:port, or off"},
            {"const": False},
            {"$ref": "#/$defs/HttpModel"},
            nullable,
        ]
    }
    props["plugins"] = {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}},
            nullable,
        ]
    }
    props["defaults"] = {"anyOf": [{"$ref": "#/$defs/Defaults"}, nullable]}
    props["jobs"] = {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/JobModel"}}, nullable]}
    http = defs.get("HttpModel", {}).get("properties", {})
    if "listen" in http:
        http["listen"] = {"anyOf": [{"type": "string"}, {"const": False}]}
    _fix_at(defs)
    return {**schema, "$schema": DRAFT, "title": "pollerd pollers.yaml"}


def _fix_at(defs: dict[str, Any]) -> None:
    """``at`` is an RFC 3339 time; YAML may read it as a timestamp, which a YAML-aware editor
    shows as a string."""
    schedule = defs.get("ScheduleModel", {}).get("properties", {})
    if "at" in schedule:
        schedule["at"] = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}


def plugin_schema() -> dict[str, Any]:
    """The schema of plugin.toml."""
    from pollerd.config.manifest import _ManifestModel

    schema = _model_schema(_ManifestModel)
    return {**schema, "$schema": DRAFT, "title": "pollerd plugin.toml"}


SCHEMAS = {"pollers": pollers_schema, "plugin": plugin_schema}
