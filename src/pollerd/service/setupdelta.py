"""A setup as the reading child sends it: the jobs its previous answer had are sent as positions.

At 10,000 jobs, pickling the whole ``Setup`` in the child and unpickling it in pollerd took a
seventh of a one-job reload, the unpickling in a thread that shares pollerd's GIL with the ticks.
The child keeps the jobs it read last time (``pollerd.config.jobcache``): a job it reused is the
very object of its previous answer, which pollerd holds too. So an answer numbers itself and
names the answer it is relative to (``base``); each job that is the same object as one of the
base's is its position there, and only the others travel. Pure functions of their inputs: the
child encodes, pollerd decodes with the same base.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from pollerd.config.pollers import BrokenJob, JobConfig, ServiceConfig
from pollerd.config.router import PluginPollerRouter
from pollerd.config.setup import Setup

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetupDelta:
    number: int  # this answer, counted by the child
    base: int | None  # the answer the positions refer to; None: every job is sent
    config: ServiceConfig  # without its jobs
    router: PluginPollerRouter
    config_jobs: list[int | JobConfig]  # the config's jobs: a position in the base's, or the job
    jobs: list[int]  # the setup's runnable jobs, by their position in the config's
    broken: tuple[BrokenJob, ...]


class DeltaBaseError(Exception):
    """The answer refers to another base than the one given to decode it."""


def encode_setup(setup: Setup, number: int, base: tuple[int, Setup] | None) -> SetupDelta:
    """``setup`` as answer ``number``, relative to ``base`` (an earlier answer and its number)."""
    known = {id(job): at for at, job in enumerate(base[1].config.jobs)} if base else {}
    config_jobs = [known.get(id(job), job) for job in setup.config.jobs]
    positions = {id(job): at for at, job in enumerate(setup.config.jobs)}
    return SetupDelta(
        number=number,
        base=base[0] if base else None,
        config=dataclasses.replace(setup.config, jobs=()),
        router=setup.router,
        config_jobs=config_jobs,
        jobs=[positions[id(job)] for job in setup.jobs],
        broken=setup.broken,
    )


def decode_setup(delta: SetupDelta, base: tuple[int, Setup] | None) -> Setup:
    """The setup ``delta`` encodes; raises ``DeltaBaseError`` if it needs another base."""
    if delta.base is not None and (base is None or base[0] != delta.base):
        raise DeltaBaseError(f"answer {delta.number} is relative to answer {delta.base}")
    before = base[1].config.jobs if base is not None else ()
    config_jobs = tuple(
        before[entry] if isinstance(entry, int) else entry for entry in delta.config_jobs
    )
    config = dataclasses.replace(delta.config, jobs=config_jobs)
    jobs = tuple(config_jobs[at] for at in delta.jobs)
    return Setup(config=config, router=delta.router, jobs=jobs, broken=delta.broken)
