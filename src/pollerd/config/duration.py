"""Durations as operators write them: ``500ms``, ``10s``, ``5m``, ``2h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import functools
import logging
import math
import re

logger = logging.getLogger(__name__)

# Largest unit first: a duration lists its parts in this order, each unit at most once.
UNIT_SECONDS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = list(UNIT_SECONDS)
_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|d|h|m|s)", re.ASCII)
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*", re.ASCII)
_EXAMPLES = "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'"


def parse_duration(text: str | int | float) -> float:
    """Return the duration in seconds. Bare numbers (and numeric strings) are seconds.

    Raises ``ValueError`` with a message an operator can act on.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"expected a duration ({_EXAMPLES}), got {text!r}")
    if not isinstance(text, str):
        return _check_number(float(text), text)
    return _parse_text(text)


@functools.lru_cache(maxsize=1024)  # 10,000 jobs write the same few durations
def _parse_text(text: str) -> float:
    if not text.strip():
        raise ValueError(f"empty duration; write one, {_EXAMPLES}")
    bare = _NUMBER.fullmatch(text)
    if bare:
        return float(bare.group(1))
    return _parse_parts(text)


def _check_number(seconds: float, shown: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"duration {shown!r} is not a finite number")
    if seconds < 0:
        raise ValueError(f"duration {shown!r} must not be negative")
    return seconds


def _parse_parts(text: str) -> float:
    total = 0.0
    position = 0
    last_unit = -1
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        unit = _UNIT_ORDER.index(match.group(2))
        if unit <= last_unit:
            raise ValueError(
                f"invalid duration {text!r}: units must go from largest to smallest "
                f"(d, h, m, s, ms), each at most once"
            )
        last_unit = unit
        total += float(match.group(1)) * UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or text[position:].strip():
        if text.strip().startswith("-"):
            raise ValueError(f"duration {text!r} must not be negative")
        raise ValueError(f"invalid duration {text!r}: expected a number with a unit, {_EXAMPLES}")
    return total


@functools.lru_cache(maxsize=1024, typed=True)  # `pollerd jobs`: 10,000 jobs, a few intervals
def format_duration(seconds: float) -> str:
    """Format seconds the way ``parse_duration`` reads them: 90 → ``1m30s``, 0.5 → ``500ms``."""
    _check_number(float(seconds), seconds)
    millis = round(seconds * 1000)
    if not math.isclose(millis / 1000, seconds, rel_tol=0.0, abs_tol=1e-9):
        # Finer than a millisecond: a plain decimal still parses back.
        return f"{seconds:.9f}".rstrip("0") + "s"
    if millis == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in UNIT_SECONDS.items():
        unit_ms = round(size * 1000)
        count, millis = divmod(millis, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
