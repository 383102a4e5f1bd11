"""The reading child's answer names the jobs of its previous answer by position; pollerd decodes
it with the same previous answer into the setup the child loaded."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pollerd.config.models import StoreConfig
from pollerd.config.pollers import BrokenJob, HttpConfig, JobConfig, NatsConfig, ServiceConfig
from pollerd.config.router import PluginPollerRouter
from pollerd.config.schedule import EverySchedule
from pollerd.config.setup import Setup
from pollerd.service.setupdelta import DeltaBaseError, SetupDelta, decode_setup, encode_setup

BROKEN = BrokenJob("bad", "k", 9, "pollers.yaml:9: jobs[3].kind: unknown kind")


def job(job_id: str, every_s: float = 10.0, line: int = 1) -> JobConfig:
    return JobConfig(id=job_id, kind="k", schedule=EverySchedule(every_s), line=line)


def setup_of(config_jobs: list[JobConfig], runnable: list[JobConfig]) -> Setup:
    config = ServiceConfig(
        path=Path("/srv/pollers.yaml"),
        version=1,
        nats=NatsConfig(),
        store=StoreConfig(),
        state_dir=Path("/srv/state"),
        plugin_dirs=(),
        http=HttpConfig(),
        jobs=tuple(config_jobs),
        broken=(BROKEN,),
    )
    return Setup(config, PluginPollerRouter(), tuple(runnable), (BROKEN,))


def through_pickle(value: object) -> object:
    """What pollerd reads of what the child wrote."""
    return pickle.loads(pickle.dumps(value))


def test_only_the_jobs_that_are_not_the_bases_travel() -> None:
    a, b, c = job("a"), job("b"), job("c")
    base = setup_of([a, b, c], [a, b, c])
    b2, d = job("b", every_s=20.0), job("d")
    new = setup_of([d, a, b2, c], [d, a, b2])

    delta = encode_setup(new, 2, (1, base))
    decoded = decode_setup(delta, (1, base))  # pollerd's own base: the same objects

    assert delta.config_jobs == [d, 0, b2, 2]
    assert decoded.jobs == (d, a, b2) and decoded.config.jobs == (d, a, b2, c)
    assert decoded.jobs[1] is a and decoded.config.jobs[3] is c
    assert decoded.broken == (BROKEN,) and decoded.config.broken == (BROKEN,)
    assert decoded.config == new.config


def test_an_answer_without_a_base_carries_every_job() -> None:
    a, b = job("a"), job("b")
    new = setup_of([a, b], [b])

    delta = through_pickle(encode_setup(new, 1, None))
    assert isinstance(delta, SetupDelta)
    decoded = decode_setup(delta, None)

    assert decoded.config.jobs == (a, b) and decoded.jobs == (b,)


def test_an_answer_relative_to_another_base_is_refused() -> None:
    a = job("a")
    base = setup_of([a], [a])
    delta = encode_setup(setup_of([a], [a]), 3, (2, base))

    with pytest.raises(DeltaBaseError) as caught:
        decode_setup(delta, (1, base))

    assert "relative to answer 2" in str(caught.value)
