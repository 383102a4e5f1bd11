"""Jobs, schedules and policies pickle as the tuple of their fields and come back whole."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from pollerd.config.jobs import BreakerPolicy, JobConfig, RetryPolicy
from pollerd.config.schedule import EverySchedule
from pollerd.config.slotstate import quick_pickle


def test_a_job_comes_back_equal_with_its_lines_and_hash() -> None:
    job = JobConfig(
        id="a",
        kind="k",
        schedule=EverySchedule(10),
        retry=RetryPolicy(attempts=2),
        breaker=BreakerPolicy(threshold=1),
        line=7,
        index=2,
        field_lines={"kind": 8},
        config_lines={("x",): 9},
    )

    back = pickle.loads(pickle.dumps(job))

    assert back == job and back.config_hash == job.config_hash
    assert (back.line, back.index, back.field_lines, back.config_lines) == (
        7,
        2,
        {"kind": 8},
        {("x",): 9},
    )


def test_a_class_without_slots_is_refused() -> None:
    @dataclass(frozen=True)
    class Plain:
        value: int

    with pytest.raises(TypeError) as caught:
        quick_pickle(Plain)

    assert "Plain.value is not a slot" in str(caught.value)
