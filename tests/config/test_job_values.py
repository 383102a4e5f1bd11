"""Jobs loaded from one file share equal values, and pickle back to what was loaded."""

from __future__ import annotations

import pickle
import textwrap
from datetime import timedelta
from pathlib import Path

from pollerd.config.pollers import ServiceConfig, load_config
from pollerd.config.schedule import AtSchedule, CronSchedule, EverySchedule

JOBS = """
version: 1
defaults:
  retry: {attempts: 5}
jobs:
  - id: a
    kind: k
    schedule: {every: 10s}
    config: {feeds: [{url: "https://a.example"}]}
  - id: b
    kind: k
    schedule: {every: 10s}
    breaker: {threshold: 2}
  - id: c
    kind: k
    schedule: {cron: "*/5 * * * *"}
    timezone: Europe/Paris
  - id: d
    kind: k
    schedule: {at: "2030-01-01T10:00:00+01:00"}
  - id: e
    kind: k
    schedule: {at: "2030-01-01T09:00:00+00:00"}
"""


def load(tmp_path: Path, text: str) -> ServiceConfig:
    path = tmp_path / "pollers.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_config(path, {})


def test_jobs_with_equal_policies_and_schedules_share_one_object_each(tmp_path: Path) -> None:
    a, b, *_ = load(tmp_path, JOBS).jobs
    assert a.schedule is b.schedule
    assert a.retry is b.retry
    assert a.retry.attempts == 5
    assert a.breaker is not b.breaker
    assert b.breaker.threshold == 2


def test_at_schedules_at_one_instant_in_other_zones_keep_their_own_zone(tmp_path: Path) -> None:
    *_, d, e = load(tmp_path, JOBS).jobs
    assert isinstance(d.schedule, AtSchedule)
    assert isinstance(e.schedule, AtSchedule)
    assert d.schedule == e.schedule  # the same instant
    assert d.schedule.at.utcoffset() == timedelta(hours=1)
    assert e.schedule.at.utcoffset() == timedelta(0)


def test_a_pickled_job_comes_back_with_every_field_and_its_lines(tmp_path: Path) -> None:
    jobs = load(tmp_path, JOBS).jobs
    back = pickle.loads(pickle.dumps(jobs, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == jobs
    for before, after in zip(jobs, back, strict=True):
        assert after.config_hash == before.config_hash
        assert (after.line, after.index) == (before.line, before.index)
        assert after.field_lines == before.field_lines
        assert after.config_lines == before.config_lines
    assert back[0].config == {"feeds": [{"url": "https://a.example"}]}
    assert back[0].schedule is back[1].schedule  # shared in the pickle too


def test_schedules_pickle_back_equal() -> None:
    schedules = [EverySchedule(2.5), CronSchedule("0 * * * * *")]
    assert pickle.loads(pickle.dumps(schedules)) == schedules
