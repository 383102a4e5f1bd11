"""What the admin commands do, on the store and the config, with or without a running service."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pollerd.config import JobConfig
from pollerd.errors import PollerdError
from pollerd.manifest import Manifest
from pollerd.runner import TickOutcome
from pollerd.schedule import next_slots, slots_between
from pollerd.setup import Setup
from pollerd.stores.base import JobState, JobUpdate, Store
from pollerd.wire import encode_cursor, format_time

if TYPE_CHECKING:
    from pollerd.supervisor import Supervisor

NEXT_RUNS = 3
LIVE_TICK_MARGIN_S = 5.0  # how much longer than a tick may take `pollerd tick` waits for it


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
        }


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


async def job_rows(
    setup: Setup,
    store: Store,
    now: datetime,
    next_run_overrides: Mapping[str, datetime | None] | None = None,
) -> list[JobRow]:
    """Every configured job (runnable and broken) with its stored state, in config order."""
    states = {state.job_id: state for state in await store.all()}
    rows = [
        _job_row(job, setup.router.plugin_for(job.kind), states.get(job.id), now)
        for job in setup.jobs
    ]
    if next_run_overrides:
        rows = [_override_next(row, next_run_overrides) for row in rows]
    for broken in setup.broken:
        state = states.get(broken.id or "")
        rows.append(
            JobRow(
                id=broken.id or f"<line {broken.line}>",
                kind=broken.kind,
                plugin=None,
                lifecycle=None,
                state="broken",
                schedule="",
                timezone="",
                next_runs=[],
                last_status=state.last_status if state else None,
                last_error=state.last_error if state else None,
                last_run_at=state.last_run_at if state else None,
                last_success_at=state.last_success_at if state else None,
                consecutive_errors=state.consecutive_errors if state else 0,
                cursor=state.cursor if state else None,
                reason=broken.reason,
                breaker_open_until=None,
            )
        )
    return rows


def _override_next(row: JobRow, overrides: Mapping[str, datetime | None]) -> JobRow:
    if row.id not in overrides or row.state != "active":
        return row
    live = overrides[row.id]
    if live is None:
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
        last_status=state.last_status if state else None,
        last_error=state.last_error if state else None,
        last_run_at=state.last_run_at if state else None,
        last_success_at=state.last_success_at if state else None,
        consecutive_errors=state.consecutive_errors if state else 0,
        cursor=state.cursor if state else None,
        reason=reason,
        breaker_open_until=state.breaker_open_until if state else None,
    )


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
    """The next fire slots as the scheduler will compute them (without jitter)."""
    last = state.last_scheduled_at if state else None
    if last is None:
        return next_slots(job.schedule, job.timezone, now - timedelta(microseconds=1), NEXT_RUNS)
    missed = slots_between(job.schedule, job.timezone, last, now, 1)
    if missed and job.catchup != "skip":
        return [now, *next_slots(job.schedule, job.timezone, now, NEXT_RUNS - 1)]
    return next_slots(job.schedule, job.timezone, max(now, last), NEXT_RUNS, anchor=last)


async def set_paused(store: Store, job: JobConfig, paused: bool, reason: str | None) -> JobState:
    await store.ensure(job.id, job.kind, paused=job.paused)
    if paused:
        return await store.update(
            job.id, JobUpdate(paused=True, pause_reason=reason or "paused by operator")
        )
    return await store.update(
        job.id,
        JobUpdate(
            paused=False,
            pause_reason=None,
            consecutive_errors=0,
            breaker_open_until=None,
            breaker_cooldown_s=None,
        ),
    )


async def set_cursor(store: Store, job: JobConfig, cursor: bytes | None) -> JobState:
    await store.ensure(job.id, job.kind, paused=job.paused)
    return await store.update(job.id, JobUpdate(cursor=cursor))


def check_summary(setup: Setup) -> list[str]:
    """What `pollerd check` prints: what was found, then every problem."""
    config = setup.config
    lines = [
        f"config: {config.path}",
        f"plugins: {len(setup.router.plugins())} "
        + "("
        + ", ".join(f"{m.id}: {', '.join(m.kinds)} [{m.lifecycle}]" for m in setup.router.plugins())
        + ")",
        f"jobs: {len(setup.jobs)} ok, {len(setup.broken)} broken",
    ]
    lines += [f"broken: {broken.reason}" for broken in setup.broken]
    lines.append("ok" if not setup.broken else f"{len(setup.broken)} problem(s)")
    return lines


def find_job(setup: Setup, job_id: str) -> JobConfig:
    for job in setup.jobs:
        if job.id == job_id:
            return job
    broken = next((b for b in setup.broken if b.id == job_id), None)
    if broken is not None:
        raise PollerdError(f"job {job_id!r} is broken: {broken.reason}")
    known = ", ".join(job.id for job in setup.jobs) or "none"
    raise PollerdError(f"no job {job_id!r} in {setup.config.path.name}; jobs: {known}")


async def collect_jobs(setup: Setup, now: datetime | None = None) -> list[JobRow]:
    from pollerd.schedule import utc_now
    from pollerd.stores import open_store

    async with open_store(setup.config) as store:
        return await job_rows(setup, store, now or utc_now())


async def _live_call(
    setup: Setup, method: str, path: str, body: Any = None, timeout_s: float | None = None
) -> tuple[bool, Any]:
    """Call the running service's admin API; (False, None) when no service answers."""
    from pollerd.adminclient import DEFAULT_TIMEOUT_S, call, service_is_up

    http = setup.config.http
    if not http.enabled or not await service_is_up(http.host, http.port):
        return False, None
    status, answer = await call(
        http.host,
        http.port,
        method,
        path,
        token=http.token,
        json=body,
        timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
    )
    if status >= 400:
        message = answer.get("error") if isinstance(answer, dict) else answer
        raise PollerdError(f"the running service refused {method} {path} ({status}): {message}")
    return True, answer


async def pause(setup: Setup, job_id: str, paused: bool, reason: str | None) -> str:
    from pollerd.stores import open_store

    job = find_job(setup, job_id)
    action = "pause" if paused else "resume"
    live, answer = await _live_call(
        setup, "POST", f"/v1/jobs/{job.id}/{action}", {"reason": reason} if paused else None
    )
    if live:
        return f"{answer['state']} (applied by the running service)"
    async with open_store(setup.config) as store:
        state = await set_paused(store, job, paused, reason)
    return "paused" if state.paused else "active"


async def cursor(setup: Setup, job_id: str, action: str, value: str | None) -> str:
    from pollerd.stores import open_store
    from pollerd.wire import decode_cursor

    job = find_job(setup, job_id)
    new = decode_cursor(value or "") if action == "set" else None
    if action != "get":
        live, answer = await _live_call(
            setup,
            "POST",
            f"/v1/jobs/{job.id}/cursor",
            {"cursor": value if action == "set" else None},
        )
        if live:
            return answer.get("cursor") or ""
    async with open_store(setup.config) as store:
        if action == "get":
            state = await store.get(job.id)
            stored = state.cursor if state else None
            if stored is None:
                print(f"{job.id}: no cursor stored", file=sys.stderr)  # stdout stays scriptable
                return ""
            return encode_cursor(stored)
        state = await set_cursor(store, job, new)
    return "" if state.cursor is None else encode_cursor(state.cursor)


async def tick(
    setup: Setup, job_id: str, *, dry_run: bool, environ: Mapping[str, str]
) -> dict[str, Any]:
    from pollerd.service import Service

    job = find_job(setup, job_id)
    if not job.enabled:
        raise PollerdError(
            f"job {job.id!r} is disabled (enabled: false in {setup.config.path.name})"
        )
    # A running service runs the tick (a dry one too): a second embedded nats-server on its
    # state dir would share its JetStream files and overwrite the URL `pollerd events` reads.
    query = "?dry_run=1" if dry_run else ""
    live, answer = await _live_call(
        setup, "POST", f"/v1/jobs/{job.id}/tick{query}", timeout_s=_live_tick_wait_s(setup, job)
    )
    if live:
        return dict(answer)
    async with Service(setup, environ=environ, schedule=False, http=False) as service:
        outcome = await service.tick_now(job.id, dry_run=dry_run)
    if outcome is None:
        return {"job_id": job.id, "status": "skipped", "reason": "a tick is already running"}
    return outcome_json(outcome)


def _live_tick_wait_s(setup: Setup, job: JobConfig) -> float:
    """How long a tick run by the service may take: its own deadline (retries fit inside it),
    after waiting for a running tick of the job when the overlap policy buffers this one."""
    manifest = setup.router.plugin_for(job.kind)
    tick_timeout_s = job.tick_timeout_s or (manifest.tick_timeout_s if manifest else 0.0)
    return 2 * tick_timeout_s + LIVE_TICK_MARGIN_S


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
                else ("on_demand" if m.lifecycle == "ephemeral" else "stopped")
            )
            restarts, last_exit, reason = 0, None, None
        rows.append(
            {
                "id": m.id,
                "version": m.version,
                "kinds": list(m.kinds),
                "lifecycle": m.lifecycle,
                "state": state,
                "restarts": restarts,
                "last_exit": last_exit,
                "reason": reason,
                "pid": status.pid if status else None,
                "manifest": str(m.path),
            }
        )
    return rows


async def plugins(setup: Setup) -> list[dict[str, Any]]:
    """The running service's plugin rows (live state, restarts, last exit), else the manifests'."""
    live, answer = await _live_call(setup, "GET", "/v1/plugins")
    if live:
        return list(answer)
    return plugin_rows(setup)


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
    return "\n".join(lines)


def _local(moment: datetime, zone: str) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M:%S")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


async def reload(setup: Setup) -> str:
    live, answer = await _live_call(setup, "POST", "/v1/reload")
    if not live:
        raise PollerdError(
            "no running service answers on the admin API "
            f"({setup.config.http.host}:{setup.config.http.port}); nothing to reload"
        )
    return json.dumps(answer, indent=2)


async def print_events(setup: Setup, *, job_id: str | None, follow: bool) -> None:
    """Print the events stream as JSON lines (starts the embedded server on its data if needed)."""
    from contextlib import AsyncExitStack

    from pollerd.events_jetstream import read_events
    from pollerd.natsconn import connect, connect_from_config
    from pollerd.natsserver import EmbeddedNatsServer

    async with AsyncExitStack() as stack:
        nats_config = setup.config.nats
        if nats_config.embedded:
            url = await _running_nats_url(setup)
            if url is None:
                server = EmbeddedNatsServer(setup.config.state_dir / "nats")
                await stack.enter_async_context(server)
                url = server.url
            nc = await connect(url, name="pollerd-events")
        else:
            nc = await connect_from_config(nats_config, name="pollerd-events")
        stack.push_async_callback(nc.close)
        async for event in read_events(nc, job_id=job_id, follow=follow):
            print(
                json.dumps(
                    {
                        "seq": event.seq,
                        "subject": event.subject,
                        "msg_id": event.msg_id,
                        "id": event.id,
                        "data": event.data,
                    }
                ),
                flush=True,
            )


async def _running_nats_url(setup: Setup) -> str | None:
    """The embedded server's URL when the service runs (it writes it into the state dir)."""
    from pathlib import Path

    marker = Path(setup.config.state_dir) / "nats" / "url"
    try:
        url = marker.read_text().strip()
    except OSError:
        return None
    from pollerd.adminclient import service_is_up

    http = setup.config.http
    if http.enabled and await service_is_up(http.host, http.port):
        return url or None
    return None
