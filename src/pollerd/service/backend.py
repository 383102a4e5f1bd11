"""The running service as the admin HTTP API sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pollerd.errors import PollerdError
from pollerd.ops import admin, slices, views
from pollerd.wire import format_time

if TYPE_CHECKING:
    from pollerd.config.pollers import JobConfig
    from pollerd.engine.skips import SkipSummary
    from pollerd.service.core import Service


class ServiceBackend:
    """Implements ``pollerd.ops.http.AdminBackend`` over a running ``Service``."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def _job(self, job_id: str) -> JobConfig:
        job = self._service.setup.job(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    async def jobs(self) -> list[dict[str, Any]]:
        service = self._service
        rows = await views.job_rows(
            service.setup, service.store, service.clock(), service.next_run_at
        )
        return [row.to_json() async for row in slices.each(views.with_skips(rows, self._skips()))]

    async def skips(self) -> list[dict[str, Any]]:
        return [
            {"id": job_id, "skipped_slots": count, "last_skip": last}
            for job_id, (count, last) in self._skips().items()
        ]

    def _skips(self) -> dict[str, tuple[int, str]]:
        return {job_id: _shown(s) for job_id, s in self._service.recorder.skips.summaries().items()}

    def leadership(self) -> dict[str, Any] | None:
        """Which replica leads (store nats-kv); None for a single pollerd."""
        leadership = self._service.leadership
        return None if leadership is None else leadership.describe()

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's row, as ``jobs`` shows it, without the others'."""
        service = self._service
        setup = service.setup
        job = setup.job(job_id)
        if job is not None:
            state = await service.store.get(job_id)
            row = views.job_row(setup, job, state, service.clock(), service.next_run_at)
        else:
            broken = next((b for b in setup.broken if views.broken_id(b) == job_id), None)
            if broken is None:
                return None
            row = views.broken_row(broken, await service.store.get(job_id))
        summary = service.recorder.skips.summary(job_id)
        skips = {} if summary is None else {job_id: _shown(summary)}
        return views.with_skips([row], skips)[0].to_json()

    async def history(self, job_id: str, limit: int) -> list[dict[str, Any]]:
        job = self._job(job_id)
        return [views.tick_record_json(t) for t in await self._service.store.history(job.id, limit)]

    async def plugins(self) -> list[dict[str, Any]]:
        return views.plugin_rows(self._service.setup, self._service.supervisor)

    async def pause(self, job_id: str, reason: str | None) -> dict[str, Any]:
        await admin.set_paused(self._service.store, self._job(job_id), True, reason)
        return await self._row(job_id)

    async def resume(self, job_id: str) -> dict[str, Any]:
        await admin.set_paused(self._service.store, self._job(job_id), False, None)
        return await self._row(job_id)

    async def tick(self, job_id: str, *, dry_run: bool = False) -> dict[str, Any]:
        job = self._job(job_id)
        outcome = await self._service.tick_now(job_id, dry_run=dry_run)
        if outcome is None:
            if job.overlap == "buffer_one":
                raise PollerdError(
                    f"job {job_id!r} has a tick running; this one is buffered (overlap: "
                    "buffer_one) and runs when it ends, unless a slot is buffered already"
                )
            raise PollerdError(
                f"job {job_id!r} has a tick running; its overlap policy skipped this one"
            )
        return views.outcome_json(outcome)

    async def set_cursor(self, job_id: str, cursor: bytes | None) -> dict[str, Any]:
        await admin.set_cursor(self._service.store, self._job(job_id), cursor)
        return await self._row(job_id)

    async def reload(self) -> dict[str, Any]:
        return await self._service.reload()

    def readiness(self) -> dict[str, str | None]:
        return self._service.readiness()

    async def _row(self, job_id: str) -> dict[str, Any]:
        row = await self.job(job_id)
        assert row is not None
        return row


def _shown(skips: SkipSummary) -> tuple[int, str]:
    """A job's skipped slots as its row shows them: the count, and the last one."""
    return skips.count, f"{skips.last_reason} at {format_time(skips.last_at)}"
