"""Rendering the status page: states, strips, filters and escaping, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pollerd.ops.statuspage import (
    BAR_MAX_PX,
    BAR_MIN_PX,
    bar_heights,
    display_state,
    relative,
    status_page_pieces,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def job(
    job_id: str, state: str = "active", last: str | None = "ok", **extra: Any
) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": "rss",
        "plugin": "feeds",
        "state": state,
        "last_status": last,
        "schedule": "every 1m",
        "next_run_at": "2026-11-22T08:00:30Z",
        **extra,
    }


def tick(status: str, duration_s: float, error: str | None = None) -> dict[str, Any]:
    return {
        "slot": "2026-11-22T07:59:00Z",
        "status": status,
        "duration_s": duration_s,
        "error": error,
    }


@pytest.mark.parametrize(
    ("state", "last", "shown"),
    [
        ("active", "ok", "active"),
        ("active", "timeout", "failing"),
        ("active", None, "active"),
        ("paused", "timeout", "paused"),
        ("broken", None, "broken"),
    ],
)
def test_an_active_job_whose_last_tick_failed_shows_as_failing(
    state: str, last: str | None, shown: str
) -> None:
    assert display_state(job("a", state, last)) == shown


def test_an_active_job_whose_next_run_is_long_past_shows_as_late() -> None:
    late = job("a", next_run_at="2026-11-22T07:58:00Z")
    due = job("b", next_run_at="2026-11-22T07:59:50Z")

    assert display_state(late, NOW) == "late"
    assert display_state(due, NOW) == "active"
    assert display_state(job("c", "paused", next_run_at="2026-11-22T07:00:00Z"), NOW) == "paused"


def test_bars_grow_with_duration_between_the_minimum_and_maximum_height() -> None:
    heights = bar_heights([0.0, 0.01, 0.5, 2.0])

    assert heights[0] == BAR_MIN_PX and heights[-1] == BAR_MAX_PX
    assert heights == sorted(heights)
    assert bar_heights([]) == [] and bar_heights([0.0, 0.0]) == [BAR_MIN_PX, BAR_MIN_PX]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        ("2026-11-22T08:00:30Z", "in 30s"),
        ("2026-11-22T07:48:00Z", "12m ago"),
        ("2026-11-22T10:30:00Z", "in 2h"),
        (None, "-"),
    ],
)
def test_times_are_shown_relative_to_now(moment: str | None, text: str) -> None:
    assert relative(moment, NOW) == text


def test_the_page_filters_by_state_and_escapes_what_it_shows() -> None:
    jobs = [
        job("ok-job"),
        job("bad-job", last="transient", last_error="<script>x</script>"),
        job("held", "paused"),
    ]
    history = {"bad-job": [tick("transient", 0.2, "boom <b>"), tick("ok", 0.1)]}

    page = "".join(
        status_page_pieces(
            jobs=jobs,
            history=history,
            plugins=[],
            readiness={"nats": "down"},
            now=NOW,
            selected="failing",
        )
    )

    assert 'data-job="bad-job" data-state="failing"' in page
    assert 'data-job="ok-job"' not in page and 'data-job="held"' not in page
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    assert 'data-ticks="2"' in page
    assert "not ready: nats" in page
    assert 'http-equiv="refresh"' in page and "url=?state=failing" in page
    assert "failing (1)" in page and "active (2)" in page and "paused (1)" in page
