"""What the admin commands do, on the store and the config, with or without a running service."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pollerd.config.pollers import JobConfig
from pollerd.config.schedule import utc_now
from pollerd.config.setup import Setup
from pollerd.errors import PollerdError
from pollerd.ops.schedules import format_schedule, job_schedules
from pollerd.ops.views import (
    JobRow,
    job_rows,
    outcome_json,
    plugin_rows,
    with_skips,
)
from pollerd.stores.base import JobState, JobUpdate, Store
from pollerd.wire import encode_cursor

if TYPE_CHECKING:
    from nats.aio.client import Client

    from pollerd.engine.runner import TickOutcome

# Runs one tick in this process when no service answers: (setup, job id, dry run) -> outcome,
# None when the job's overlap policy skipped it. The CLI passes the service's own.
LocalTick = Callable[["Setup", str, bool], Awaitable["TickOutcome | None"]]

if TYPE_CHECKING:
    from contextlib import AsyncExitStack as ExitStackLike

LIVE_TICK_MARGIN_S = 5.0  # how much longer than a tick may take `pollerd tick` waits for it
APPLIED_BY_SERVICE = " (applied by the running service)"


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
    """Set (or reset, with None) the cursor; the job's events then get a new id space, so a
    deliberate re-read is delivered rather than dropped as duplicates (operator guide)."""
    state = await store.ensure(job.id, job.kind, paused=job.paused)
    return await store.update(job.id, JobUpdate(cursor=cursor, event_space=state.event_space + 1))


def check_summary(setup: Setup, now: datetime | None = None) -> list[str]:
    """What `pollerd check` prints: what was found, each job's schedule, then every problem."""
    config = setup.config
    lines = [
        f"config: {config.path}",
        f"plugins: {len(setup.router.plugins())} "
        + "("
        + ", ".join(f"{m.id}: {', '.join(m.kinds)} [{m.lifecycle}]" for m in setup.router.plugins())
        + ")",
        f"jobs: {len(setup.jobs)} ok, {len(setup.broken)} broken",
    ]
    lines += [format_schedule(row) for row in job_schedules(setup.jobs, now or utc_now())]
    lines += [f"warning: {text}" for m in setup.router.plugins() for text in m.warnings]
    lines += [f"broken: {broken.reason}" for broken in setup.broken]
    lines.append("ok" if not setup.broken else f"{len(setup.broken)} problem(s)")
    return lines


def open_setup_store(setup: Setup) -> Store:
    """The config's store, unopened; a nats-kv store connects with the config's NATS settings."""
    from pollerd.stores import open_store

    nats = setup.config.nats

    async def connect() -> Client:
        # Imported here: the NATS client costs a quarter of a second to import, which a
        # command on the SQLite store does not need.
        from pollerd.natsio.connection import connect_from_config

        return await connect_from_config(nats, name="pollerd-cli")

    return open_store(setup.config, connect=connect)


def check_report(setup: Setup, now: datetime | None = None) -> dict[str, Any]:
    """What `pollerd check --json` prints."""
    return {
        "ok": not setup.broken,
        "config": str(setup.config.path),
        "plugins": [
            {"id": m.id, "kinds": list(m.kinds), "lifecycle": m.lifecycle}
            for m in setup.router.plugins()
        ],
        "jobs": [job.id for job in setup.jobs],
        "schedules": job_schedules(setup.jobs, now or utc_now()),
        "broken": [{"id": b.id, "line": b.line, "reason": b.reason} for b in setup.broken],
    }


async def leader_line(setup: Setup) -> str | None:
    """Which replica leads (store nats-kv), read from the lease; None for a single pollerd."""
    config = setup.config
    if not config.store.replicated:
        return None
    from pollerd.natsio.connection import connect_from_config
    from pollerd.natsio.lease import read_leader

    nc = await connect_from_config(config.nats, name="pollerd-cli")
    try:
        leader = await read_leader(nc, config.store.bucket)
    finally:
        await nc.close()
    if leader is None:
        return "leader: none (no replica holds the lease)"
    return f"leader: {leader.name} (epoch {leader.epoch}, since {leader.since.isoformat()})"


def find_job(setup: Setup, job_id: str) -> JobConfig:
    job = setup.job(job_id)
    if job is not None:
        return job
    broken = next((b for b in setup.broken if b.id == job_id), None)
    if broken is not None:
        raise PollerdError(f"job {job_id!r} is broken: {broken.reason}")
    known = ", ".join(job.id for job in setup.jobs) or "none"
    raise PollerdError(f"no job {job_id!r} in {setup.config.path.name}; jobs: {known}")


async def collect_jobs(setup: Setup, now: datetime | None = None) -> list[JobRow]:
    async with open_setup_store(setup) as store:
        rows = await job_rows(setup, store, now or utc_now())
    return await _with_live_skips(setup, rows)


async def _with_live_skips(setup: Setup, rows: list[JobRow]) -> list[JobRow]:
    """Add the skipped slots a running service counted (it keeps them in memory only)."""
    try:  # only the skips: the whole rows cost the service a second at 10,000 jobs
        live, answer = await _live_call(setup, "GET", "/v1/jobs?only=skips")
    except PollerdError:
        return rows
    if not live or not isinstance(answer, list):
        return rows
    skips = {
        str(row["id"]): (int(row.get("skipped_slots") or 0), row.get("last_skip"))
        for row in answer
        if isinstance(row, dict) and row.get("skipped_slots")
    }
    return with_skips(rows, skips)


async def _live_call(
    setup: Setup, method: str, path: str, body: Any = None, timeout_s: float | None = None
) -> tuple[bool, Any]:
    """Call the running service's admin API; (False, None) when no service answers."""
    from pollerd.ops.adminclient import DEFAULT_TIMEOUT_S, call, service_is_up

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
    job = find_job(setup, job_id)
    action = "pause" if paused else "resume"
    live, answer = await _live_call(
        setup, "POST", f"/v1/jobs/{job.id}/{action}", {"reason": reason} if paused else None
    )
    if live:
        return f"{answer['state']}{APPLIED_BY_SERVICE}"
    async with open_setup_store(setup) as store:
        state = await set_paused(store, job, paused, reason)
    return "paused" if state.paused else "active"


async def cursor(setup: Setup, job_id: str, action: str, value: str | None) -> str:
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
    async with open_setup_store(setup) as store:
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
    setup: Setup, job_id: str, *, dry_run: bool, run_locally: LocalTick
) -> dict[str, Any]:
    """Run one tick of ``job_id``: through the running service when one answers, else with
    ``run_locally`` (an in-process service without schedule or HTTP)."""
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
    outcome = await run_locally(setup, job.id, dry_run)
    if outcome is None:
        return {"job_id": job.id, "status": "skipped", "reason": "a tick is already running"}
    return outcome_json(outcome)


def _live_tick_wait_s(setup: Setup, job: JobConfig) -> float:
    """How long a tick run by the service may take: its own deadline (retries fit inside it),
    after waiting for a running tick of the job when the overlap policy buffers this one."""
    manifest = setup.router.plugin_for(job.kind)
    tick_timeout_s = job.tick_timeout_s or (manifest.tick_timeout_s if manifest else 0.0)
    return 2 * tick_timeout_s + LIVE_TICK_MARGIN_S


async def history(setup: Setup, job_id: str, limit: int) -> list[dict[str, Any]]:
    """The job's last ``limit`` ticks, newest first: from the running service when one answers
    (it may use a store this process cannot open alone), else from the store."""
    from pollerd.ops.views import tick_record_json

    job = find_job(setup, job_id)
    live, answer = await _live_call(setup, "GET", f"/v1/jobs/{job.id}/history?limit={limit}")
    if live:
        return list(answer)
    async with open_setup_store(setup) as store:
        return [tick_record_json(t) for t in await store.history(job.id, limit)]


async def plugins(setup: Setup) -> list[dict[str, Any]]:
    """The running service's plugin rows (live state, restarts, last exit), else the manifests'."""
    live, answer = await _live_call(setup, "GET", "/v1/plugins")
    if live:
        return list(answer)
    return plugin_rows(setup)


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

    from pollerd.natsio.auth import POLLERD_USER, embedded_users, load_credentials
    from pollerd.natsio.connection import connect, connect_from_config
    from pollerd.natsio.jetstream import read_events
    from pollerd.natsio.server import EmbeddedNatsServer

    async with AsyncExitStack() as stack:
        nats_config = setup.config.nats
        if nats_config.embedded:
            store_dir = setup.config.state_dir / "nats"
            url = _running_nats_url(setup, stack)
            credentials = load_credentials(store_dir, ())
            if url is None:
                users = embedded_users(credentials, ())
                server = EmbeddedNatsServer(store_dir, port=nats_config.port, users=users)
                await stack.enter_async_context(server)
                url = server.url
            nc = await connect(
                url, name="pollerd-events", user=POLLERD_USER, password=credentials.pollerd
            )
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


def _running_nats_url(setup: Setup, stack: ExitStackLike) -> str | None:
    """The embedded server's URL while a service runs on this state dir (it holds the state
    lock and writes the URL next to the server's data). Otherwise None, and the state lock is
    taken on ``stack`` so no service starts on the data while the caller reads it."""
    from pollerd.stores.statelock import StateLock, StateLockedError

    try:
        stack.enter_context(StateLock(setup.config.state_dir))
    except StateLockedError:
        try:
            return (setup.config.state_dir / "nats" / "url").read_text().strip() or None
        except OSError:
            return None
    return None
