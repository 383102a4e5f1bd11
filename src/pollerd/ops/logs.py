"""Logging setup for the CLI: text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
QUIET_LOGGERS = ("apscheduler", "nats", "aiohttp.access")
# What every LogRecord has; anything else on a record came from ``extra=`` and is a field.
RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# ``name=value`` pairs that pollerd's messages carry (STYLE: job_id and plugin in every line about
# a tick); in JSON they become fields too, so every line about a job can be filtered by job_id.
MESSAGE_FIELDS = re.compile(r"\b(job_id|plugin|kind|tick_id)=([^\s,;:()]+)")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, then the record's fields.

    Fields are the ``extra=`` values of the record (tick lines carry job_id, kind, plugin,
    tick_id, outcome and duration) and the ``job_id=``/``plugin=``/``kind=``/``tick_id=`` pairs
    written in the message; an exception adds ``exception``.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        for name, value in vars(record).items():
            if name not in RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if "=" in message:
            for name, value in MESSAGE_FIELDS.findall(message):
                entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs a line per run and nats-py a traceback per reconnect try: pollerd logs
    # ticks and connection changes itself.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
