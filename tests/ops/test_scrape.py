"""A Prometheus scrape of a running `pollerd run`: the names and labels alerts rely on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from conftest import free_port
from ops.test_operator import StartPollerd, count_job, start_pollerd, wait_until, write_config
from pollerd import __version__

pytestmark = pytest.mark.slow

__all__ = ["start_pollerd"]  # the fixture, used by name


def samples_of(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def test_a_scrape_shows_job_id_build_info_process_metrics_and_job_timestamps(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    jobs = [count_job("fast"), {**count_job("hourly"), "schedule": {"cron": "0 * * * *"}}]
    pollerd = await start_pollerd(write_config(tmp_path, port, jobs), port)
    scraped: list[Sample] = []

    async def fast_succeeded() -> bool:
        _, text = await pollerd.get("/metrics")
        scraped[:] = samples_of(text)
        return (
            value(scraped, "pollerd_job_last_success_timestamp_seconds", job_id="fast") is not None
        )

    await wait_until(fast_succeeded)
    now = time.time()

    assert [s.name for s in scraped if "job" in s.labels] == []
    assert [s.name for s in scraped if s.name.endswith("_created")] == []
    assert (value(scraped, "pollerd_ticks_total", job_id="fast", outcome="ok") or 0) >= 1
    assert value(scraped, "pollerd_build_info", version=__version__) == 1
    assert (value(scraped, "process_cpu_seconds_total") or 0) > 0
    assert (value(scraped, "process_resident_memory_bytes") or 0) > 0
    last_success = value(scraped, "pollerd_job_last_success_timestamp_seconds", job_id="fast")
    assert last_success is not None and now - 60 < last_success <= now
    assert value(scraped, "pollerd_job_last_success_timestamp_seconds", job_id="hourly") is None
    next_hourly = value(scraped, "pollerd_job_next_run_timestamp_seconds", job_id="hourly")
    assert next_hourly is not None and now < next_hourly <= now + 3600
    assert value(scraped, "pollerd_job_next_run_timestamp_seconds", job_id="fast") is not None
    assert value(scraped, "pollerd_job_interval_seconds", job_id="fast") == pytest.approx(0.2)
    assert value(scraped, "pollerd_job_interval_seconds", job_id="hourly") == 3600
    assert value(scraped, "pollerd_ready", component="store") == 1


async def test_a_paused_job_has_no_next_run_series(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    jobs = [{**count_job("held"), "paused": True}, count_job("fast")]
    pollerd = await start_pollerd(write_config(tmp_path, port, jobs), port)
    scraped: list[Sample] = []

    async def fast_scheduled() -> bool:
        _, text = await pollerd.get("/metrics")
        scraped[:] = samples_of(text)
        return value(scraped, "pollerd_jobs", state="paused") == 1

    await wait_until(fast_scheduled)

    assert value(scraped, "pollerd_job_next_run_timestamp_seconds", job_id="fast") is not None
    assert value(scraped, "pollerd_job_next_run_timestamp_seconds", job_id="held") is None
    assert value(scraped, "pollerd_job_interval_seconds", job_id="held") == pytest.approx(0.2)
