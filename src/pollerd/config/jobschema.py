"""A plugin's declared schema of its job config, and the jobs whose config it refuses.

A manifest may declare ``[plugin.poller.config_schema]``: a JSON Schema (draft 2020-12) written
as a TOML table. `pollerd check`, boot and reload validate every job of the plugin's kinds
against it, so a typo (``ulr:`` for ``url:``) or a missing key is a ``file:line:
jobs[N].config.field`` error before any tick, not a config-class failure at the first one.
jsonschema is imported only when a manifest declares a schema.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pollerd.config.jobs import JobConfig
from pollerd.config.problems import Loc, format_loc, preview

logger = logging.getLogger(__name__)

MAX_ERRORS_PER_JOB = 10


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What is wrong with ``schema`` as a JSON Schema, or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if schema.get("type", "object") != "object":
        return "a job's config is a mapping: the schema's type must be 'object'"
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        where = format_loc(tuple(exc.absolute_path)) if exc.absolute_path else "the schema"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


class ConfigSchema:
    """One plugin's validator of job configs (built once, used for each of its jobs)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator(dict(schema))

    def problems(self, config: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        """Each problem of ``config`` as (location inside the config, message), sorted."""
        found: list[tuple[Loc, str]] = []
        for error in self._validator.iter_errors(dict(config)):
            found.extend(_describe(error))
            if len(found) >= MAX_ERRORS_PER_JOB:
                break
        return sorted(found, key=lambda item: [str(part) for part in item[0]])


def _describe(error: Any) -> Iterator[tuple[Loc, str]]:
    where: Loc = tuple(error.absolute_path)
    instance, schema = error.instance, error.schema
    if error.validator == "required" and isinstance(instance, Mapping):
        for name in error.validator_value:
            if name not in instance:
                yield (*where, name), "required"
        return
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = sorted(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        for name in sorted(_extra_keys(instance, known, patterns)):
            yield (*where, name), _unknown_key(name, known)
        return
    yield where, f"{error.message.replace(repr(instance), preview(instance))}"


def _extra_keys(
    instance: Mapping[str, Any], known: list[str], patterns: Iterable[str]
) -> list[str]:
    compiled = [re.compile(pattern) for pattern in patterns]
    return [
        name
        for name in instance
        if name not in known and not any(pattern.search(name) for pattern in compiled)
    ]


def _unknown_key(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(known) or '(none)'}"


def config_line(job: JobConfig, inner: Loc) -> int:
    """The line of ``config.<inner>`` in the job (its nearest written ancestor's)."""
    for end in range(len(inner), 0, -1):
        line = job.config_lines.get(inner[:end])
        if line is not None:
            return line
    return job.line_of("config")
