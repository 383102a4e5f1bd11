"""How validation problems are worded for operators: ``file:line: field.path: message``."""

from __future__ import annotations

import difflib
import logging
from typing import Any, get_args

from pydantic import BaseModel

logger = logging.getLogger(__name__)

Loc = tuple[str | int, ...]

PREVIEW_CHARS = 60
_QUOTE_HINT = "quote it (unquoted yes/no/on/off are booleans in YAML)"
_MAPPING_TYPES = ("model_type", "model_attributes_type", "dict_type")
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def format_loc(loc: Loc) -> str:
    """``("jobs", 2, "schedule", "cron")`` → ``jobs[2].schedule.cron``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


def preview(value: object) -> str:
    """``repr`` of a value, cut to a length that fits in one message."""
    shown = repr(value)
    return shown if len(shown) <= PREVIEW_CHARS else shown[: PREVIEW_CHARS - 3] + "..."


def describe_error(
    error: Any, model: type[BaseModel], inner: Loc, hidden: tuple[str, ...] = ()
) -> str:
    """One pydantic error as a message; ``inner`` is its loc within ``model``.

    ``hidden`` names top-level keys of ``model`` left out of the "known keys" hint.
    """
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return unknown_key(model, inner, hidden if len(inner) == 1 else ())
    message = str(error["msg"])
    if kind in ("value_error", "assertion_error"):
        for prefix in _PYDANTIC_PREFIXES:
            message = message.removeprefix(prefix)
        return message
    if kind in _MAPPING_TYPES:
        return f"must be a mapping, got {preview(error.get('input'))}"
    if kind == "string_type" and isinstance(error.get("input"), bool):
        return f"must be a string, got {error['input']}; {_QUOTE_HINT}"
    if message.startswith("Input should"):
        message = "must" + message.removeprefix("Input should")
    return f"{message}, got {preview(error.get('input'))}"


def unknown_key(model: type[BaseModel], inner: Loc, hidden: tuple[str, ...] = ()) -> str:
    """The message for an unknown key: the close match if there is one, else the known keys."""
    owner = _model_at(model, inner[:-1])
    if owner is None:
        return "unknown key"
    known = sorted(name for name in owner.model_fields if name not in hidden)
    close = difflib.get_close_matches(str(inner[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(known)}"


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        info = current.model_fields.get(part)
        current = _model_in(info.annotation) if info is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
