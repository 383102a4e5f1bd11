"""How jobs and plugins are shown: rows for `pollerd jobs` / `plugins` and the admin API."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pollerd.config.jobs import BrokenJob
from pollerd.config.manifest import Manifest
from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import jitter_offset_s, next_slots, slots_between
from pollerd.config.setup import Setup
from pollerd.engine.phase import first_slot_bounds
from pollerd.engine.runner import TickOutcome
from pollerd.ops import slices
from pollerd.stores.base import JobState, Store, TickRecord
from pollerd.wire import encode_cursor, format_time

if TYPE_CHECKING:
    from pollerd.supervision.supervisor import Supervisor

NEXT_RUNS = 3
NextRunAt = Callable[[str], datetime | None]


@dataclass(frozen=True, slots=True)
class JobRow:
    """One line of `pollerd jobs`."""

    id: str
    kind: str | None
    plugin: str | None
    lifecycle: str | None
    state: str  # active | paused | broken | disabled
    schedule: str
    timezone: str
    next_runs: list[datetime]
    last_status: str | None
    last_error: str | None
    last_run_at: datetime | None
    last_success_at: datetime | None
    consecutive_errors: int
    cursor: bytes | None
    reason: str | None  # why paused or broken
    breaker_open_until: datetime | None
    # Slots skipped since the running service started (known only while one runs).
    skipped_slots: int = 0
    last_skip: str | None = None  # "overlap at 2026-12-02T01:20:03Z"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "plugin": self.plugin,
            "lifecycle": self.lifecycle,
            "state": self.state,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "next_run_at": _time(self.next_runs[0]) if self.next_runs else None,
            "next_runs": [_time(t) for t in self.next_runs],
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_run_at": _time(self.last_run_at),
            "last_success_at": _time(self.last_success_at),
            "consecutive_errors": self.consecutive_errors,
            "cursor": None if self.cursor is None else encode_cursor(self.cursor),
            "reason": self.reason,
            "breaker_open_until": _time(self.breaker_open_until),
            "skipped_slots": self.skipped_slots,
            "last_skip": self.last_skip,
        }


def with_skips(rows: list[JobRow], skips: Mapping[str, tuple[int, str | None]]) -> list[JobRow]:
    """The rows with each job's skipped slots since start: job id → (count, last skip)."""
    return [
        replace(row, skipped_slots=skips[row.id][0], last_skip=skips[row.id][1])
        if row.id in skips
        else row
        for row in rows
    ]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


async def job_rows(
    setup: Setup,
    store: Store,
    now: datetime,
    next_run_at: NextRunAt | None = None,
) -> list[JobRow]:
    """Every configured job (runnable and broken) with its stored state, in config order; a
    slice of jobs at a time (``pollerd.ops.slices``), so a running service keeps ticking.
    ``next_run_at``: the running scheduler's next fire time of a job, if it has one."""
    states = {state.job_id: state for state in await store.all()}
    rows = [
        job_row(setup, job, states.get(job.id), now, next_run_at)
        async for job in slices.each(setup.jobs)
    ]
    rows.extend(broken_row(broken, states.get(broken.id or "")) for broken in setup.broken)
    return rows


def job_row(
    setup: Setup,
    job: JobConfig,
    state: JobState | None,
    now: datetime,
    next_run_at: NextRunAt | None = None,
) -> JobRow:
    """The row of one runnable job; ``next_run_at`` as for ``job_rows``."""
    row = _job_row(job, setup.router.plugin_for(job.kind), state, now)
    return _override_next(row, next_run_at(job.id)) if next_run_at is not None else row


def broken_row(broken: BrokenJob, state: JobState | None) -> JobRow:
    """The row of a job whose definition is invalid: its reason, and its state if stored."""
    return JobRow(
        id=broken_id(broken),
        kind=broken.kind,
        plugin=None,
        lifecycle=None,
        state="broken",
        schedule="",
        timezone="",
        next_runs=[],
        reason=broken.reason,
        breaker_open_until=None,
        **_stored(state),
    )


def broken_id(broken: BrokenJob) -> str:
    """How rows name a broken job: its id, or its line when it has none."""
    return broken.id or f"<line {broken.line}>"


def _override_next(row: JobRow, live: datetime | None) -> JobRow:
    if live is None or row.state != "active":
        return row
    later = [t for t in row.next_runs if t > live]
    return replace(row, next_runs=[live, *later][:NEXT_RUNS])


def _job_row(
    job: JobConfig, plugin: Manifest | None, state: JobState | None, now: datetime
) -> JobRow:
    status, reason = job_state(job, state)
    return JobRow(
        id=job.id,
        kind=job.kind,
        plugin=plugin.id if plugin else None,
        lifecycle=plugin.lifecycle if plugin else None,
        state=status,
        schedule=job.schedule.describe(),
        timezone=job.timezone.key,
        next_runs=upcoming(job, state, now) if status == "active" else [],
        reason=reason,
        breaker_open_until=state.breaker_open_until if state else None,
        **_stored(state),
    )


def _stored(state: JobState | None) -> dict[str, Any]:
    """A row's fields that come from the job's stored state; empty without one."""
    return {
        "last_status": state.last_status if state else None,
        "last_error": state.last_error if state else None,
        "last_run_at": state.last_run_at if state else None,
        "last_success_at": state.last_success_at if state else None,
        "consecutive_errors": state.consecutive_errors if state else 0,
        "cursor": state.cursor if state else None,
    }


def job_state(job: JobConfig, state: JobState | None) -> tuple[str, str | None]:
    if not job.enabled:
        return "disabled", None
    if state is None:
        return ("paused", "paused in pollers.yaml") if job.paused else ("active", None)
    if state.broken_reason is not None and state.broken_config_hash == job.config_hash:
        return "broken", state.broken_reason
    if state.paused:
        return "paused", state.pause_reason
    return "active", None


def upcoming(job: JobConfig, state: JobState | None, now: datetime) -> list[datetime]:
    """The next fire times as the scheduler computes them: phase and jitter included."""
    last = state.last_scheduled_at if state else None
    after, anchor = first_slot_bounds(
        job.id, job.schedule, align=job.align, last_slot=last, now=now
    )
    slots = next_slots(job.schedule, job.timezone, after, NEXT_RUNS, anchor=anchor)
    fire_times = [
        slot + timedelta(seconds=jitter_offset_s(job.id, slot, job.jitter_s)) for slot in slots
    ]
    if last is not None and job.catchup != "skip":
        if slots_between(job.schedule, job.timezone, last, now, 1):  # a missed slot runs at once
            return [now, *fire_times][:NEXT_RUNS]
    return fire_times


def outcome_json(outcome: TickOutcome) -> dict[str, Any]:
    reply = outcome.reply
    return {
        "job_id": outcome.job_id,
        "tick_id": outcome.tick_id,
        "plugin": outcome.plugin,
        "status": "skipped" if outcome.skipped else outcome.status,
        "skipped": outcome.skipped,
        "attempts": outcome.attempts,
        "duration_s": round(outcome.duration_s, 6),
        "error": outcome.error,
        "committed": outcome.committed,
        "duplicates": outcome.duplicates,  # events the stream already held (Nats-Msg-Id)
        "reply": None
        if reply is None
        else {
            "next_cursor": None if reply.next_cursor is None else encode_cursor(reply.next_cursor),
            "next_interval_secs": reply.next_interval_secs,
            "metrics": dict(reply.metrics),
            "events": [{"id": e.id, "data": e.data} for e in reply.events],
        },
    }


def plugin_rows(setup: Setup, supervisor: Supervisor | None = None) -> list[dict[str, Any]]:
    """Plugins with their supervised state (``stopped`` when the service is not running)."""
    rows = []
    for m in setup.router.plugins():
        status = supervisor.status(m.id) if supervisor else None
        if status is not None:
            state, restarts, last_exit, reason = (
                status.state.value,
                status.restarts,
                status.last_exit,
                status.reason,
            )
        else:
            external = m.lifecycle == "long_lived" and m.entrypoint is None
            state = (
                "external"
                if external
                else ("on_demand" if m.lifecycle == "ephemeral" and not m.prefork else "stopped")
            )
            restarts, last_exit, reason = 0, None, None
        rows.append(
            {
                "id": m.id,
                "version": m.version,
                "kinds": list(m.kinds),
                "lifecycle": m.lifecycle,
                "prefork": m.prefork,
                "state": state,
                "restarts": restarts,
                "last_exit": last_exit,
                "reason": reason,
                "pid": status.pid if status else None,
                "manifest": str(m.path),
            }
        )
    return rows


def format_plugins(rows: list[dict[str, Any]]) -> str:
    header = ("ID", "KINDS", "LIFECYCLE", "STATE", "RESTARTS", "LAST EXIT")
    body = [
        (
            r["id"],
            ",".join(r["kinds"]),
            r["lifecycle"],
            r["state"],
            str(r["restarts"]),
            r["last_exit"] or "-",
        )
        for r in rows
    ]
    lines = [_table(header, body)]
    for row in rows:
        if row.get("reason"):
            lines.append(f"  {row['id']}: " + str(row["reason"]).replace("\n", "\n    "))
    return "\n".join(lines)


def format_jobs(rows: list[JobRow]) -> str:
    header = ("ID", "KIND", "PLUGIN", "STATE", "SCHEDULE", "NEXT RUNS", "LAST", "ERRORS", "CURSOR")
    body = []
    for row in rows:
        zone = row.timezone or "UTC"
        nexts = ", ".join(_local(t, zone) for t in row.next_runs) or "-"
        last = row.last_status or "-"
        if row.last_run_at:
            last += f" at {_local(row.last_run_at, zone)}"
        cursor_text = "-" if row.cursor is None else f"{len(row.cursor)} B"
        body.append(
            (
                row.id,
                row.kind or "?",
                row.plugin or "-",
                row.state,
                row.schedule or "-",
                nexts,
                last,
                str(row.consecutive_errors),
                cursor_text,
            )
        )
    lines = [_table(header, body)]
    for row in rows:
        if row.reason or row.last_error:
            lines.append(f"  {row.id}: {row.reason or row.last_error}")
        if row.skipped_slots:
            skipped = f"{row.skipped_slots} slot(s) skipped since start, last: {row.last_skip}"
            lines.append(f"  {row.id}: {skipped}")
    return "\n".join(lines)


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M:%S")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def tick_record_json(record: TickRecord) -> dict[str, Any]:
    """One tick of `pollerd history --json` and ``GET /v1/jobs/{id}/history``."""
    return {
        "tick_id": record.tick_id,
        "slot": format_time(record.slot),
        "finished_at": format_time(record.finished_at),
        "status": record.status,
        "attempts": record.attempts,
        "duration_s": round(record.duration_s, 6),
        "events": record.events,
        "error": record.error,
        "replica": record.replica,
    }


def format_history(job_id: str, ticks: Sequence[Mapping[str, Any]], zone: str = "UTC") -> str:
    """`pollerd history JOB`: newest first, times in the job's time zone, errors below."""
    if not ticks:
        return f"{job_id}: no ticks recorded yet"
    header = ("SLOT", "FINISHED", "STATUS", "ATTEMPTS", "DURATION", "EVENTS", "REPLICA")
    body = [
        (
            _local(datetime.fromisoformat(t["slot"]), zone),
            _local(datetime.fromisoformat(t["finished_at"]), zone),
            t["status"],
            str(t["attempts"]),
            f"{t['duration_s']:.3f}s",
            str(t["events"]),
            t["replica"] or "-",
        )
        for t in ticks
    ]
    lines = [_table(header, body)]
    lines += [f"  {t['tick_id']}: {t['error']}" for t in ticks if t.get("error")]
    return "\n".join(lines)
