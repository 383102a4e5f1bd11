"""The JSON log format: one object per line with structured fields."""

from __future__ import annotations

import json
import logging
import os

from pollerd.ops.logs import JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "pollerd.x", "levelname": "INFO", "levelno": 20, "msg": message, "args": args}
    )
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_line_has_time_level_logger_message_and_pid() -> None:
    entry = json.loads(JsonFormatter().format(record("hello %s", "there")))

    assert entry["message"] == "hello there"
    assert (entry["level"], entry["logger"], entry["pid"]) == ("info", "pollerd.x", os.getpid())
    assert entry["time"].endswith("+00:00")


def test_name_value_pairs_in_the_message_become_fields() -> None:
    line = record(
        "job_id=%s kind=%s plugin=%s scheduled every 1s, first slot %s", "a.b", "rss", "feeds", "x"
    )

    entry = json.loads(JsonFormatter().format(line))

    assert (entry["job_id"], entry["kind"], entry["plugin"]) == ("a.b", "rss", "feeds")


def test_extra_fields_win_over_pairs_in_the_message() -> None:
    line = record("plugin=feeds job_id=x: hi", plugin="feeds", job_id="real", duration=0.5)

    entry = json.loads(JsonFormatter().format(line))

    assert (entry["job_id"], entry["duration"]) == ("real", 0.5)
