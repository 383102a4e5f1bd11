"""How `pollerd jobs` shows what a job lost to skipped slots (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from pollerd.ops.views import JobRow, format_jobs, with_skips

AT = datetime(2026, 12, 2, 1, 20, 3, tzinfo=UTC)


def row(job_id: str) -> JobRow:
    return JobRow(
        id=job_id,
        kind="feed",
        plugin="feeds",
        lifecycle="ephemeral",
        state="active",
        schedule="every 1s",
        timezone="UTC",
        next_runs=[],
        last_status="ok",
        last_error=None,
        last_run_at=AT,
        last_success_at=AT,
        consecutive_errors=0,
        cursor=None,
        reason=None,
        breaker_open_until=None,
    )


def test_skipped_slots_counted_by_the_service_are_listed_under_the_table_and_in_json() -> None:
    rows = with_skips([row("busy"), row("calm")], {"busy": (12, "overlap at 2026-12-02T01:20:03Z")})

    text = format_jobs(rows)
    busy, calm = (r.to_json() for r in rows)

    assert "  busy: 12 slot(s) skipped since start, last: overlap at 2026-12-02T01:20:03Z" in text
    assert "calm:" not in text
    assert (busy["skipped_slots"], busy["last_skip"]) == (12, "overlap at 2026-12-02T01:20:03Z")
    assert (calm["skipped_slots"], calm["last_skip"]) == (0, None)
