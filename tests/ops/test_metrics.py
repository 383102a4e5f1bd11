from __future__ import annotations

import platform
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pollerd.ops.metrics import JOB_STATES, PLUGIN_STATES, JobTimes, Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series_with(metrics: Metrics, label: str, value: str) -> list[str]:
    return [
        s.name
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.labels.get(label) == value
    ]


def test_a_finished_tick_is_counted_by_job_kind_and_outcome() -> None:
    metrics = Metrics()
    metrics.tick_finished("feeds", "rss", "ok", 0.2, 0.01)
    metrics.tick_finished("feeds", "rss", "ok", 0.3, None)
    metrics.tick_finished("feeds", "rss", "timeout", 5.0, 0.0)

    assert sample(metrics, "pollerd_ticks_total", job_id="feeds", kind="rss", outcome="ok") == 2
    assert (
        sample(metrics, "pollerd_ticks_total", job_id="feeds", kind="rss", outcome="timeout") == 1
    )
    assert sample(metrics, "pollerd_tick_duration_seconds_count", kind="rss") == 3
    assert sample(metrics, "pollerd_schedule_lateness_seconds_count", kind="rss") == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.tick_finished("j", "k", "boom: connection reset", 1.0), "tick outcome"),
        (lambda m: m.slot_skipped("j", "because"), "skip reason"),
        (lambda m: m.plugin_state("p", "dancing", 0), "plugin state"),
        (lambda m: m.jobs_by_state({"sleeping": 1}), "job state"),
    ],
)
def test_label_values_outside_the_closed_sets_are_refused(
    call: Callable[[Metrics], object], message: str
) -> None:
    metrics = Metrics()
    with pytest.raises(ValueError) as info:
        call(metrics)

    assert message in str(info.value)


def test_skipped_slots_and_job_health_are_labelled_by_job() -> None:
    metrics = Metrics()
    metrics.slot_skipped("feeds", "overlap")
    metrics.slot_skipped("feeds", "catchup_dropped", count=4)
    metrics.slot_skipped("feeds", "paused", count=0)
    metrics.slot_skipped("feeds", "committed")  # replicas: a duplicate run of a committed slot
    metrics.job_health("feeds", consecutive_errors=3, breaker_open=True)

    assert sample(metrics, "pollerd_slots_skipped_total", job_id="feeds", reason="overlap") == 1
    assert (
        sample(metrics, "pollerd_slots_skipped_total", job_id="feeds", reason="catchup_dropped")
        == 4
    )
    assert sample(metrics, "pollerd_slots_skipped_total", job_id="feeds", reason="paused") is None
    assert sample(metrics, "pollerd_slots_skipped_total", job_id="feeds", reason="committed") == 1
    assert sample(metrics, "pollerd_job_consecutive_errors", job_id="feeds") == 3
    assert sample(metrics, "pollerd_job_breaker_open", job_id="feeds") == 1


def test_forget_job_removes_only_that_jobs_series() -> None:
    metrics = Metrics()
    for job in ("gone", "kept"):
        metrics.tick_finished(job, "rss", "ok", 0.1, 0.0)
        metrics.slot_skipped(job, "overlap")
        metrics.job_health(job, consecutive_errors=0, breaker_open=False)

    metrics.forget_job("gone")

    assert series_with(metrics, "job_id", "gone") == []
    assert sorted(series_with(metrics, "job_id", "kept")) == [
        "pollerd_job_breaker_open",
        "pollerd_job_consecutive_errors",
        "pollerd_slots_skipped_total",
        "pollerd_ticks_total",
    ]


def test_a_job_re_added_after_forget_starts_from_zero() -> None:
    metrics = Metrics()
    metrics.tick_finished("feeds", "rss", "ok", 0.1)
    metrics.forget_job("feeds")
    metrics.tick_finished("feeds", "rss", "ok", 0.1)

    assert sample(metrics, "pollerd_ticks_total", job_id="feeds", kind="rss", outcome="ok") == 1


def test_plugin_state_is_one_series_per_state_with_only_the_current_one_set() -> None:
    metrics = Metrics()
    metrics.plugin_state("rss", "starting", restarts=0)
    metrics.plugin_state("rss", "running", restarts=0)

    values = {
        state: sample(metrics, "pollerd_plugin_state", plugin="rss", state=state)
        for state in PLUGIN_STATES
    }
    assert values == {state: (1.0 if state == "running" else 0.0) for state in PLUGIN_STATES}


def test_plugin_restarts_follow_the_running_total_reported() -> None:
    metrics = Metrics()
    metrics.plugin_state("rss", "running", restarts=0)
    metrics.plugin_state("rss", "backoff", restarts=2)
    metrics.plugin_state("rss", "running", restarts=2)
    metrics.plugin_state("rss", "running", restarts=3)

    assert sample(metrics, "pollerd_plugin_restarts_total", plugin="rss") == 3


def test_forget_plugin_removes_its_series() -> None:
    metrics = Metrics()
    metrics.plugin_state("rss", "failed", restarts=5)
    metrics.forget_plugin("rss")

    assert series_with(metrics, "plugin", "rss") == []


def test_jobs_by_state_sets_missing_states_to_zero() -> None:
    metrics = Metrics()
    metrics.jobs_by_state({"active": 4, "paused": 1})
    metrics.jobs_by_state({"active": 5})

    values = {state: sample(metrics, "pollerd_jobs", state=state) for state in JOB_STATES}
    assert values == {"active": 5, "paused": 0, "broken": 0, "disabled": 0}


def test_events_and_reloads_are_counted() -> None:
    metrics = Metrics()
    metrics.events_published("rss", 3)
    metrics.events_published("rss", 0)
    metrics.config_reloaded(ok=True)
    metrics.config_reloaded(ok=False)
    metrics.config_reloaded(ok=False)

    assert sample(metrics, "pollerd_events_published_total", kind="rss") == 3
    assert sample(metrics, "pollerd_config_reloads_total", result="ok") == 1
    assert sample(metrics, "pollerd_config_reloads_total", result="invalid") == 2


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.tick_finished("feeds", "rss", "ok", 0.1)

    assert sample(second, "pollerd_ticks_total", job_id="feeds", kind="rss", outcome="ok") is None


def test_render_is_parseable_prometheus_text_with_every_family() -> None:
    metrics = Metrics(version="9.9.9")
    metrics.watch(
        job_times=lambda: [JobTimes("feeds", 1_700_000_000.0, 1_700_000_060.0, 60.0)],
        readiness=lambda: {"store": None},
    )
    metrics.tick_finished("feeds", "rss", "ok", 0.1, 0.5)
    metrics.slot_skipped("feeds", "overlap")
    metrics.job_health("feeds", 0, False)
    metrics.plugin_state("rss", "running", 0)
    metrics.events_published("rss", 1)
    metrics.events_duplicate("rss", 1)
    metrics.config_reloaded(ok=True)
    metrics.jobs_by_state({"active": 1})

    parsed = text_string_to_metric_families(metrics.render().decode())
    families = {f.name for f in parsed if f.name.startswith("pollerd_")}

    assert families == {
        "pollerd_build_info",
        "pollerd_ticks",
        "pollerd_tick_duration_seconds",
        "pollerd_schedule_lateness_seconds",
        "pollerd_slots_skipped",
        "pollerd_job_consecutive_errors",
        "pollerd_job_breaker_open",
        "pollerd_job_last_success_timestamp_seconds",
        "pollerd_job_next_run_timestamp_seconds",
        "pollerd_job_interval_seconds",
        "pollerd_plugin_state",
        "pollerd_plugin_restarts",
        "pollerd_events_published",
        "pollerd_events_duplicate",
        "pollerd_config_reloads",
        "pollerd_jobs",
        "pollerd_ready",
        "pollerd_leader",
        "pollerd_leadership_changes",
    }
    assert metrics.content_type.startswith("text/plain; version=0.0.4")


def test_no_series_has_a_job_label_or_a_created_suffix() -> None:
    metrics = Metrics()
    metrics.watch(job_times=lambda: [JobTimes("feeds", 1.0, 2.0, 3.0)])
    metrics.tick_finished("feeds", "rss", "ok", 0.1, 0.5)
    metrics.slot_skipped("feeds", "overlap")
    metrics.plugin_state("rss", "running", 1)

    samples = [
        s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
    ]

    assert samples
    assert [s.name for s in samples if "job" in s.labels] == []
    assert [s.name for s in samples if s.name.endswith("_created")] == []


def test_build_info_and_the_process_and_python_collectors_are_exported() -> None:
    metrics = Metrics(version="1.2.3")

    assert (
        sample(
            metrics,
            "pollerd_build_info",
            version="1.2.3",
            python_version=(platform.python_version()),
        )
        == 1
    )
    assert (sample(metrics, "process_start_time_seconds") or 0) > 0
    assert (sample(metrics, "process_resident_memory_bytes") or 0) > 0
    assert sample(metrics, "python_info", **_python_info_labels()) == 1


def _python_info_labels() -> dict[str, str]:
    major, minor, patch = platform.python_version_tuple()
    return {
        "implementation": platform.python_implementation(),
        "major": major,
        "minor": minor,
        "patchlevel": patch,
        "version": platform.python_version(),
    }


def test_job_times_are_read_at_scrape_time_and_absent_values_have_no_series() -> None:
    metrics = Metrics()
    current = [JobTimes("feeds", 100.0, None, 60.0), JobTimes("once", None, 200.0, None)]
    metrics.watch(job_times=lambda: current)

    assert sample(metrics, "pollerd_job_last_success_timestamp_seconds", job_id="feeds") == 100
    assert sample(metrics, "pollerd_job_next_run_timestamp_seconds", job_id="feeds") is None
    assert sample(metrics, "pollerd_job_interval_seconds", job_id="feeds") == 60
    assert sample(metrics, "pollerd_job_last_success_timestamp_seconds", job_id="once") is None
    assert sample(metrics, "pollerd_job_next_run_timestamp_seconds", job_id="once") == 200

    current = [JobTimes("feeds", 160.0, 220.0, 60.0)]

    assert sample(metrics, "pollerd_job_last_success_timestamp_seconds", job_id="feeds") == 160
    assert sample(metrics, "pollerd_job_next_run_timestamp_seconds", job_id="once") is None


def test_readiness_is_one_series_per_component() -> None:
    metrics = Metrics()
    metrics.watch(readiness=lambda: {"store": None, "nats": "not connected"})

    assert sample(metrics, "pollerd_ready", component="store") == 1
    assert sample(metrics, "pollerd_ready", component="nats") == 0


def test_leadership_sets_the_leader_gauge_and_counts_changes_only_when_asked() -> None:
    metrics = Metrics()
    metrics.leadership(True, change=False)
    alone = sample(metrics, "pollerd_leadership_changes_total")
    metrics.leadership(False)
    metrics.leadership(True)

    assert alone == 0
    assert sample(metrics, "pollerd_leader") == 1
    assert sample(metrics, "pollerd_leadership_changes_total") == 2


@pytest.mark.parametrize(
    "value", [0.0, 1.0, 7, 10.0, 12345678.0, 0.25, 1733108400.123456, 1.7e9, float("inf"), -3.0]
)
def test_sample_values_are_written_as_prometheus_client_writes_them(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    from pollerd.ops.jobseries import format_value

    expected = floatToGoString(value)  # type: ignore[no-untyped-call]
    assert format_value(value) == expected
    assert format_value(value) == expected  # again, from the kept text for whole values


async def test_the_sliced_scrape_writes_what_render_writes() -> None:
    metrics = Metrics()
    job_ids = [f"job{index:04d}" for index in range(500)]
    for index, job_id in enumerate(job_ids):
        metrics.tick_finished(job_id, "rss", "ok", 0.1, 0.01)
        metrics.slot_skipped(job_id, "overlap", count=index % 3)
        metrics.job_health(job_id, consecutive_errors=index % 5, breaker_open=index % 7 == 0)
    times = [JobTimes(job_id, 100.0 + i, 200.0 + i, 60.0) for i, job_id in enumerate(job_ids)]
    metrics.watch(job_times=lambda: iter(times), readiness=lambda: {"store": None})

    def steady(text: bytes) -> list[bytes]:  # the process's own CPU and GC figures move
        return [
            line for line in text.splitlines() if not line.startswith((b"process_", b"python_gc"))
        ]

    assert steady(await metrics.render_async()) == steady(metrics.render())
    assert len(steady(metrics.render())) > 5 * len(job_ids)
