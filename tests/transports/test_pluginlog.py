"""Plugin output lines keep the level they carry when pollerd logs them."""

from __future__ import annotations

import logging

import pytest

from pollerd.transports.pluginlog import log_plugin_line, parse_plugin_line

SDK_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("WARNING feeds: slow answer", logging.WARNING, "feeds: slow answer"),
        ("ERROR feeds: gone", logging.ERROR, "feeds: gone"),
        ("DEBUG x: detail", logging.DEBUG, "x: detail"),
        ("CRITICAL x: down", logging.CRITICAL, "x: down"),
        ("ERROR:root:bare logging", logging.ERROR, "root:bare logging"),
        ("WARN x", logging.WARNING, "x"),
        ('{"level": "error", "msg": "from go"}', logging.ERROR, "from go"),
        ('{"level": "warn", "message": "from node", "x": 1}', logging.WARNING, "from node"),
        ('{"message": "no level"}', logging.INFO, "no level"),
        ("{not json", logging.INFO, "{not json"),
        ("[1, 2]", logging.INFO, "[1, 2]"),
        ("Traceback (most recent call last):", logging.INFO, "Traceback (most recent call last):"),
        ("WARNINGS are words too", logging.INFO, "WARNINGS are words too"),
        ("plain text", logging.INFO, "plain text"),
    ],
)
def test_a_line_keeps_its_level_and_loses_the_prefix(line: str, level: int, message: str) -> None:
    assert parse_plugin_line(line) == (level, message)


def test_the_sdk_log_format_is_understood() -> None:
    from pollerd.sdk._service import LOG_FORMAT

    record = logging.makeLogRecord(
        {"levelname": "WARNING", "name": "feeds", "msg": "retrying", "levelno": logging.WARNING}
    )
    line = logging.Formatter(LOG_FORMAT).format(record)

    assert LOG_FORMAT == SDK_LOG_FORMAT
    assert parse_plugin_line(line) == (logging.WARNING, "feeds: retrying")


def test_a_line_is_logged_with_plugin_and_job_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pollerd.plugin")

    log_plugin_line("ERROR feeds: gone", "feeds", "news")
    log_plugin_line("hello", "feeds")

    first, second = caplog.records
    assert (first.levelno, first.getMessage()) == (
        logging.ERROR,
        "plugin=feeds job_id=news: feeds: gone",
    )
    assert (first.plugin, first.job_id) == ("feeds", "news")  # type: ignore[attr-defined]
    assert (second.levelno, second.getMessage()) == (logging.INFO, "plugin=feeds: hello")
