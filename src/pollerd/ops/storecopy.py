"""`pollerd store copy`: move an existing SQLite state into the configured store (nats-kv)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import fields
from pathlib import Path

from pollerd.config.setup import Setup
from pollerd.errors import PollerdError
from pollerd.stores.base import DEFAULT_HISTORY, JobState, JobUpdate, Store
from pollerd.stores.sqlite import SqliteStore

logger = logging.getLogger(__name__)

HISTORY_COPIED = DEFAULT_HISTORY
_COPIED_FIELDS = tuple(
    f.name
    for f in fields(JobUpdate)
    if f.name not in ("kind", "tick", "keep_ticks") and f.name in JobState.__dataclass_fields__
)


def full_update(state: JobState) -> JobUpdate:
    """A change that writes every field of ``state`` (but its kind, set by ``ensure``)."""
    return JobUpdate(**{name: getattr(state, name) for name in _COPIED_FIELDS})


async def copy_state(setup: Setup, source: Path, *, overwrite: bool = False) -> str:
    """Copy every job's state and recent ticks from the SQLite file ``source`` into the store
    of ``setup``. Refused while a replica leads, and for jobs the target already holds unless
    ``overwrite``."""
    from pollerd.ops.admin import leader_line, open_setup_store

    if not await asyncio.to_thread(source.is_file):
        raise PollerdError(f"{source}: no such file; give the state.db of the old state_dir")
    leader = await leader_line(setup)
    if leader is not None and not leader.startswith("leader: none"):
        raise PollerdError(f"a replica runs on the target store ({leader}); stop it first")
    async with SqliteStore(source) as old, open_setup_store(setup) as new:
        jobs = await old.all()
        held = {state.job_id for state in await new.all()}
        clash = sorted(held & {state.job_id for state in jobs})
        if clash and not overwrite:
            raise PollerdError(
                f"the target store already holds {len(clash)} of these jobs "
                f"({', '.join(clash[:5])}{', ...' if len(clash) > 5 else ''}); "
                "--overwrite replaces them"
            )
        for state in jobs:
            await _copy_job(old, new, state)
    return f"copied {len(jobs)} job(s) from {source} into {new!r}"


async def _copy_job(old: Store, new: Store, state: JobState) -> None:
    await new.delete(state.job_id)
    await new.ensure(state.job_id, state.kind, paused=state.paused)
    await new.update(state.job_id, full_update(state))
    if new.keeps_history:
        for tick in reversed(await old.history(state.job_id, HISTORY_COPIED)):
            await new.update(state.job_id, JobUpdate(tick=tick, keep_ticks=HISTORY_COPIED))
