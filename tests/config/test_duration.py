from __future__ import annotations

import pytest

from pollerd.config.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1m 30s", 90.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("0s", 0.0),
        ("15", 15.0),
        ("2.5", 2.5),
        (" 7s ", 7.0),
        (10, 10.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_units_and_bare_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration; write one, e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'"),
        (
            "5x",
            "invalid duration '5x': expected a number with a unit, "
            "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        (
            "10 seconds",
            "invalid duration '10 seconds': expected a number with a unit, "
            "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        (
            "s",
            "invalid duration 's': expected a number with a unit, "
            "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        (
            "30m1h",
            "invalid duration '30m1h': units must go from largest to smallest "
            "(d, h, m, s, ms), each at most once",
        ),
        (
            "1m1m",
            "invalid duration '1m1m': units must go from largest to smallest "
            "(d, h, m, s, ms), each at most once",
        ),
        ("-5s", "duration '-5s' must not be negative"),
        ("-5", "duration '-5' must not be negative"),
        (-1, "duration -1 must not be negative"),
        (float("inf"), "duration inf is not a finite number"),
        (True, "expected a duration (e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'), got True"),
        (None, "expected a duration (e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'), got None"),
    ],
)
def test_parse_duration_rejects_bad_input_with_a_clear_message(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (1, "1s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400 + 1.25, "1d1s250ms"),
        (0.0001, "0.0001s"),
    ],
)
def test_format_duration_writes_the_shortest_unit_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 0.001, 0.5, 1, 59, 61, 3599, 3601.5, 86399, 123456.789])
def test_format_duration_round_trips_through_parse_duration(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_rejects_negative_seconds() -> None:
    with pytest.raises(ValueError) as caught:
        format_duration(-1)
    assert "must not be negative" in str(caught.value)
