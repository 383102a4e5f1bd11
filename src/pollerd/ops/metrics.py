"""Prometheus metrics of one pollerd process, on a registry of their own.

Names follow the Prometheus conventions: the per-job label is ``job_id`` (Prometheus sets
``job`` on every scraped series itself), units are in the names (``_seconds``,
``_timestamp_seconds``), counters end in ``_total`` and no ``*_created`` series are exported.
New metrics follow the same rules and get a row in the operator guide's metrics table.

Per-job series (``jobseries.py``, and the scrape-time ones here) are written straight to text, not
through prometheus-client children and ``generate_latest``: at 10,000 jobs those made a scrape
take seconds. The other metrics are prometheus-client's. ``registry`` still holds every family,
so ``get_sample_value`` works on it.
"""

from __future__ import annotations

import io
import itertools
import logging
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from pollerd.ops.jobseries import JOB_LABEL, JobSeries, format_value, header
from pollerd.ops.slices import chunks, joined

logger = logging.getLogger(__name__)

# The label values below are closed sets: a value outside them is a bug in the caller, not data.
TICK_OUTCOMES = frozenset(
    {"ok", "transient", "timeout", "unavailable", "protocol", "permanent", "config", "publish"}
    | {"store"}
)
SKIP_REASONS = frozenset(
    {"overlap", "paused", "broken", "breaker_open", "shutdown", "catchup_dropped", "buffer_full"}
    | {"committed"}
)
PLUGIN_STATES = ("starting", "running", "backoff", "failed", "stopped", "external")
JOB_STATES = ("active", "paused", "broken", "disabled")
RELOAD_RESULTS = ("ok", "invalid")

# The text format generate_latest() writes (the 0.0.4 exposition format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TICK_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600)

_M = TypeVar("_M", bound=MetricWrapperBase)

# ``*_created`` series double every counter and histogram for a value nobody alerts on; the
# switch is process-wide in prometheus-client, and pollerd never wants them.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class JobTimes:
    """What a scrape shows about one job's timing (Unix seconds; None: no series)."""

    job_id: str
    last_success_s: float | None  # the last successful tick; None if it never succeeded
    next_run_s: float | None  # the next fire time of an active job; None when not scheduled
    interval_s: float | None  # the nominal interval; None for an ``at`` job


JobTimesSource = Callable[[], Iterable[JobTimes]]
ReadinessSource = Callable[[], Mapping[str, str | None]]


_JOB_TIME_FAMILIES = (  # in the order of JobTimes' values
    (
        "pollerd_job_last_success_timestamp_seconds",
        "When the job's last successful tick finished (Unix time).",
    ),
    (
        "pollerd_job_next_run_timestamp_seconds",
        "When an active job fires next, jitter included (Unix time).",
    ),
    (
        "pollerd_job_interval_seconds",
        "The job's nominal interval: its every, or the gap between two cron slots.",
    ),
)
_READY_FAMILY = (
    "pollerd_ready",
    "1 when /readyz answers ready, else 0, with one series per component.",
)


class _Delegate(Collector):
    """Every family of another registry, so that ``Metrics.registry`` holds all of them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return list(self._registry.collect())

    def describe(self) -> Iterable[Metric]:
        return []


def _check(value: str, allowed: frozenset[str] | tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
    return value


class _ScrapeTimeCollector(Collector):
    """Series computed when scraped, from the service's state: nothing to update per tick."""

    def __init__(self) -> None:
        self.job_times: JobTimesSource | None = None
        self.readiness: ReadinessSource | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        jobs = list(self.job_times()) if self.job_times is not None else []
        ready = dict(self.readiness()) if self.readiness is not None else None
        return list(self._families(jobs, ready))

    def text(self) -> str:
        return "".join(self.text_slices())

    def text_slices(self) -> Iterator[str]:
        """The per-job families in the text format, without building a family per scrape, a
        slice of jobs at a time (``pollerd.ops.slices``): one pass over the jobs writes the
        lines of all three families."""
        # One growing buffer a family, each line written as it is made: ticks allocate between
        # the slices, and lines or slices kept until the end among their objects kept the heap
        # from shrinking after a scrape (pollerd.ops.slices.joined).
        families = (io.StringIO(), io.StringIO(), io.StringIO())
        last_success, next_run, interval = (text.write for text in families)
        success_name, next_name, interval_name = (name for name, _ in _JOB_TIME_FAMILIES)
        for chunk in chunks(self.job_times() if self.job_times is not None else ()):
            for times in chunk:  # a lazy source computes a slice of jobs at a time
                label = f'{{{JOB_LABEL}="{times.job_id}"}} '
                if times.last_success_s is not None:
                    last_success(f"{success_name}{label}{format_value(times.last_success_s)}\n")
                if times.next_run_s is not None:
                    next_run(f"{next_name}{label}{format_value(times.next_run_s)}\n")
                if times.interval_s is not None:
                    interval(f"{interval_name}{label}{format_value(times.interval_s)}\n")
            yield ""
        for (name, help_text), text in zip(_JOB_TIME_FAMILIES, families, strict=True):
            yield header(name, help_text, "gauge")
            yield text.getvalue()
        ready = dict(self.readiness()) if self.readiness is not None else {}
        yield header(*_READY_FAMILY, "gauge") + "".join(
            f'{_READY_FAMILY[0]}{{component="{component}"}} {1.0 if reason is None else 0.0}\n'
            for component, reason in ready.items()
        )

    def _families(
        self, jobs: Iterable[JobTimes] = (), ready: Mapping[str, str | None] | None = None
    ) -> Iterator[Metric]:
        last_success, next_run, interval = (
            GaugeMetricFamily(name, help_text, labels=[JOB_LABEL])
            for name, help_text in _JOB_TIME_FAMILIES
        )
        for times in jobs:
            for family, value in (
                (last_success, times.last_success_s),
                (next_run, times.next_run_s),
                (interval, times.interval_s),
            ):
                if value is not None:
                    family.add_metric([times.job_id], value)
        yield from (last_success, next_run, interval)
        ready_family = GaugeMetricFamily(*_READY_FAMILY, labels=["component"])
        for component, reason in (ready or {}).items():
            ready_family.add_metric([component], 1.0 if reason is None else 0.0)
        yield ready_family


class Metrics:
    """Every pollerd metric, with methods that take plain values (job ids, kinds, counts).

    Labels are bounded: job ids come from the config, kinds from manifests, and outcomes, skip
    reasons and states from the closed sets above. Tick ids and error texts are never labels.
    Per-job timestamps and readiness are read at scrape time from the sources given to
    ``watch``, so a tick costs nothing for them.
    """

    def __init__(self, *, version: str | None = None) -> None:
        # The families prometheus-client renders; the per-job ones are written by JobSeries.
        self._common = CollectorRegistry(auto_describe=True)
        self.content_type = CONTENT_TYPE
        reg = self._common
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        build = Gauge(
            "pollerd_build_info",
            "Always 1; the labels say which pollerd and Python run.",
            ["version", "python_version"],
            registry=reg,
        )
        build.labels(version or _package_version(), platform.python_version()).set(1)
        self._tick_duration = Histogram(
            "pollerd_tick_duration_seconds",
            "Wall time of a tick slot, retries included.",
            ["kind"],
            buckets=TICK_DURATION_BUCKETS_S,
            registry=reg,
        )
        self._lateness = Histogram(
            "pollerd_schedule_lateness_seconds",
            "How late a slot started after its scheduled time.",
            ["kind"],
            buckets=LATENESS_BUCKETS_S,
            registry=reg,
        )
        self._plugin_state = Gauge(
            "pollerd_plugin_state",
            "1 for the state a plugin is in, 0 for the others.",
            ["plugin", "state"],
            registry=reg,
        )
        self._plugin_restarts = Counter(
            "pollerd_plugin_restarts_total",
            "Restarts of a supervised plugin.",
            ["plugin"],
            registry=reg,
        )
        self._events = Counter(
            "pollerd_events_published_total",
            "Events published and acknowledged, by kind.",
            ["kind"],
            registry=reg,
        )
        self._duplicates = Counter(
            "pollerd_events_duplicate",
            "Events the stream dropped as duplicates of stored ones (same Nats-Msg-Id), by kind.",
            ["kind"],
            registry=reg,
        )
        self._reloads = Counter(
            "pollerd_config_reloads_total",
            "Config reloads, by result.",
            ["result"],
            registry=reg,
        )
        self._jobs = Gauge("pollerd_jobs", "Configured jobs, by state.", ["state"], registry=reg)
        self._leader = Gauge(
            "pollerd_leader",
            "1 while this replica leads (schedules and commits ticks), 0 on a standby.",
            registry=reg,
        )
        self._leadership_changes = Counter(
            "pollerd_leadership_changes_total",
            "Times this replica took or lost the lead.",
            registry=reg,
        )
        for result in RELOAD_RESULTS:
            self._reloads.labels(result)
        self._scrape_time = _ScrapeTimeCollector()
        self._jobs_series = JobSeries()
        # Kind children looked up once: ``labels()`` costs a few µs, several times per tick.
        self._children: dict[tuple[MetricWrapperBase, str], MetricWrapperBase] = {}
        self._restarts_seen: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (_Delegate(self._common), self._jobs_series, self._scrape_time):
            self.registry.register(collector)

    def watch(
        self, *, job_times: JobTimesSource | None = None, readiness: ReadinessSource | None = None
    ) -> None:
        """Where scrapes read per-job timestamps and readiness (called once the service runs)."""
        if job_times is not None:
            self._scrape_time.job_times = job_times
        if readiness is not None:
            self._scrape_time.readiness = readiness

    def _kind_child(self, metric: _M, kind: str) -> _M:
        """The child of a metric labelled by kind only (kinds are never forgotten)."""
        key = (metric, kind)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(kind)
        return child  # type: ignore[return-value]

    def tick_finished(
        self,
        job_id: str,
        kind: str,
        outcome: str,
        duration_s: float,
        lateness_s: float | None = None,
    ) -> None:
        """Count one finished slot. ``lateness_s`` is None for ticks that had no scheduled slot."""
        _check(outcome, TICK_OUTCOMES, "tick outcome")
        counts = self._jobs_series.ticks.get(job_id)
        if counts is None:
            counts = self._jobs_series.ticks[job_id] = {}
        key = (kind, outcome)
        counts[key] = counts.get(key, 0.0) + 1.0
        self._kind_child(self._tick_duration, kind).observe(max(duration_s, 0.0))
        if lateness_s is not None:
            self._kind_child(self._lateness, kind).observe(max(lateness_s, 0.0))

    def slot_skipped(self, job_id: str, reason: str, count: int = 1) -> None:
        _check(reason, SKIP_REASONS, "skip reason")
        if count > 0:
            reasons = self._jobs_series.skipped.setdefault(job_id, {})
            reasons[reason] = reasons.get(reason, 0.0) + count

    def job_health(self, job_id: str, consecutive_errors: int, breaker_open: bool) -> None:
        health = self._jobs_series.health
        value = (float(consecutive_errors), 1.0 if breaker_open else 0.0)
        if health.get(job_id) != value:
            health[job_id] = value

    def plugin_state(self, plugin: str, state: str, restarts: int) -> None:
        """Record a plugin's state and its restart count so far (a running total)."""
        _check(state, PLUGIN_STATES, "plugin state")
        for candidate in PLUGIN_STATES:
            self._plugin_state.labels(plugin, candidate).set(1 if candidate == state else 0)
        seen = self._restarts_seen.get(plugin, 0)
        child = self._plugin_restarts.labels(plugin)
        if restarts > seen:
            child.inc(restarts - seen)
        self._restarts_seen[plugin] = restarts

    def events_published(self, kind: str, count: int) -> None:
        if count > 0:
            self._kind_child(self._events, kind).inc(count)

    def events_duplicate(self, kind: str, count: int) -> None:
        if count > 0:
            self._kind_child(self._duplicates, kind).inc(count)

    def leadership(self, leading: bool, *, change: bool = True) -> None:
        """This replica leads or not; ``change=False`` for the single-process service."""
        self._leader.set(1 if leading else 0)
        if change:
            self._leadership_changes.inc()

    def config_reloaded(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "invalid").inc()

    def jobs_by_state(self, counts: Mapping[str, int]) -> None:
        """Set the job count of every state; states missing from ``counts`` are 0."""
        for state in counts:
            _check(state, JOB_STATES, "job state")
        for state in JOB_STATES:
            self._jobs.labels(state).set(counts.get(state, 0))

    def forget_job(self, job_id: str) -> None:
        """Drop every series labelled with ``job_id`` (the job was removed by a reload)."""
        self._jobs_series.forget(job_id)

    def forget_plugin(self, plugin: str) -> None:
        """Drop every series labelled with ``plugin`` (the plugin is gone after a reload)."""
        for state in PLUGIN_STATES:
            self._plugin_state.remove(plugin, state)
        self._plugin_restarts.remove(plugin)
        self._restarts_seen.pop(plugin, None)

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (``content_type``)."""
        per_job = self._jobs_series.text() + self._scrape_time.text()
        return generate_latest(self._common) + per_job.encode()

    async def render_async(self) -> bytes:
        """``render``, with a turn of the event loop after each slice of jobs: a scrape of
        10,000 jobs does not hold the ticks that fall due meanwhile (``pollerd.ops.slices``)."""
        per_job = await joined(
            itertools.chain(self._jobs_series.text_slices(), self._scrape_time.text_slices())
        )
        return generate_latest(self._common) + per_job.encode()


def _package_version() -> str:
    from pollerd import __version__

    return __version__
