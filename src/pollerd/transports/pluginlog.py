"""Plugin output lines in pollerd's log: the level a line carries is kept, and plugin and job are
fields of the record.

A plugin's stderr line may start with a level, as the SDK writes them (``WARNING feeds: ...``)
and as Python's default logging format does (``ERROR:root:...``), or be a JSON object with a
``level`` (and ``message``/``msg``) key, as structured loggers in other languages write them.
Lines that carry no level are logged at INFO.
"""

from __future__ import annotations

import json
import logging
import re

plugin_logger = logging.getLogger("pollerd.plugin")

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}
_PREFIX = re.compile(r"^(DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL|FATAL)(?:[ :]+)(.*)$", re.S)


def parse_plugin_line(text: str) -> tuple[int, str]:
    """The level a plugin's output line carries (INFO when none) and the line without it."""
    if text.startswith("{"):
        try:
            entry = json.loads(text)
        except ValueError:
            return logging.INFO, text
        if isinstance(entry, dict):
            level = _LEVELS.get(str(entry.get("level", "")).upper(), logging.INFO)
            message = entry.get("message", entry.get("msg"))
            return level, message if isinstance(message, str) else text
        return logging.INFO, text
    found = _PREFIX.match(text)
    if found is None:
        return logging.INFO, text
    return _LEVELS[found.group(1)], found.group(2)


def log_plugin_line(text: str, plugin: str, job_id: str | None = None) -> None:
    """Log one output line of ``plugin`` (running a tick of ``job_id``) at the level it carries."""
    level, message = parse_plugin_line(text)
    if not plugin_logger.isEnabledFor(level):
        return
    if job_id is None:
        plugin_logger.log(level, "plugin=%s: %s", plugin, message, extra={"plugin": plugin})
    else:
        plugin_logger.log(
            level,
            "plugin=%s job_id=%s: %s",
            plugin,
            job_id,
            message,
            extra={"plugin": plugin, "job_id": job_id},
        )
