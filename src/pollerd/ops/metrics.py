"""Prometheus metrics of one pollerd process, on a registry of their own."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

logger = logging.getLogger(__name__)

# The label values below are closed sets: a value outside them is a bug in the caller, not data.
TICK_OUTCOMES = frozenset(
    {"ok", "transient", "timeout", "unavailable", "protocol", "permanent", "config", "publish"}
)
SKIP_REASONS = frozenset(
    {"overlap", "paused", "broken", "breaker_open", "shutdown", "catchup_dropped", "buffer_full"}
)
PLUGIN_STATES = ("starting", "running", "backoff", "failed", "stopped", "external")
JOB_STATES = ("active", "paused", "broken", "disabled")
RELOAD_RESULTS = ("ok", "invalid")

# The text format generate_latest() writes (the 0.0.4 exposition format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TICK_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600)

_Series = tuple[MetricWrapperBase, tuple[str, ...]]
_M = TypeVar("_M", bound=MetricWrapperBase)


def _check(value: str, allowed: frozenset[str] | tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
    return value


class Metrics:
    """Every pollerd metric, with methods that take plain values (job ids, kinds, counts).

    Labels are bounded: job ids come from the config, kinds from manifests, and outcomes, skip
    reasons and states from the closed sets above. Tick ids and error texts are never labels.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.content_type = CONTENT_TYPE
        reg = self.registry
        self._ticks = Counter(
            "pollerd_ticks",
            "Ticks finished, by job, kind and outcome.",
            ["job", "kind", "outcome"],
            registry=reg,
        )
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
        self._skipped = Counter(
            "pollerd_slots_skipped",
            "Scheduled slots that did not run, by job and reason.",
            ["job", "reason"],
            registry=reg,
        )
        self._consecutive_errors = Gauge(
            "pollerd_consecutive_errors",
            "Failed slots in a row for a job.",
            ["job"],
            registry=reg,
        )
        self._breaker_open = Gauge(
            "pollerd_breaker_open",
            "1 while the job's circuit breaker is open, else 0.",
            ["job"],
            registry=reg,
        )
        self._plugin_state = Gauge(
            "pollerd_plugin_state",
            "1 for the state a plugin is in, 0 for the others.",
            ["plugin", "state"],
            registry=reg,
        )
        self._plugin_restarts = Counter(
            "pollerd_plugin_restarts",
            "Restarts of a supervised plugin.",
            ["plugin"],
            registry=reg,
        )
        self._events = Counter(
            "pollerd_events_published",
            "Events published and acknowledged, by kind.",
            ["kind"],
            registry=reg,
        )
        self._reloads = Counter(
            "pollerd_config_reloads",
            "Config reloads, by result.",
            ["result"],
            registry=reg,
        )
        self._jobs = Gauge("pollerd_jobs", "Configured jobs, by state.", ["state"], registry=reg)
        for result in RELOAD_RESULTS:
            self._reloads.labels(result)
        self._job_series: dict[str, set[_Series]] = {}
        # Children looked up once: ``labels()`` costs a few µs, several times per tick.
        self._children: dict[_Series, MetricWrapperBase] = {}
        self._restarts_seen: dict[str, int] = {}

    def _job_child(self, job: str, metric: _M, *labels: str) -> _M:
        """The child of ``metric`` for ``labels``, remembered as one of ``job``'s series."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
            self._job_series.setdefault(job, set()).add(key)
        return child  # type: ignore[return-value]

    def _kind_child(self, metric: _M, kind: str) -> _M:
        """The child of a metric labelled by kind only (kinds are never forgotten)."""
        key = (metric, (kind,))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(kind)
        return child  # type: ignore[return-value]

    def tick_finished(
        self,
        job: str,
        kind: str,
        outcome: str,
        duration_s: float,
        lateness_s: float | None = None,
    ) -> None:
        """Count one finished slot. ``lateness_s`` is None for ticks that had no scheduled slot."""
        _check(outcome, TICK_OUTCOMES, "tick outcome")
        self._job_child(job, self._ticks, job, kind, outcome).inc()
        self._kind_child(self._tick_duration, kind).observe(max(duration_s, 0.0))
        if lateness_s is not None:
            self._kind_child(self._lateness, kind).observe(max(lateness_s, 0.0))

    def slot_skipped(self, job: str, reason: str, count: int = 1) -> None:
        _check(reason, SKIP_REASONS, "skip reason")
        if count > 0:
            self._job_child(job, self._skipped, job, reason).inc(count)

    def job_health(self, job: str, consecutive_errors: int, breaker_open: bool) -> None:
        self._job_child(job, self._consecutive_errors, job).set(consecutive_errors)
        self._job_child(job, self._breaker_open, job).set(1 if breaker_open else 0)

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

    def config_reloaded(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "invalid").inc()

    def jobs_by_state(self, counts: Mapping[str, int]) -> None:
        """Set the job count of every state; states missing from ``counts`` are 0."""
        for state in counts:
            _check(state, JOB_STATES, "job state")
        for state in JOB_STATES:
            self._jobs.labels(state).set(counts.get(state, 0))

    def forget_job(self, job: str) -> None:
        """Drop every series labelled with ``job`` (the job was removed by a reload)."""
        for key in self._job_series.pop(job, set()):
            metric, labels = key
            metric.remove(*labels)
            self._children.pop(key, None)

    def forget_plugin(self, plugin: str) -> None:
        """Drop every series labelled with ``plugin`` (the plugin is gone after a reload)."""
        for state in PLUGIN_STATES:
            self._plugin_state.remove(plugin, state)
        self._plugin_restarts.remove(plugin)
        self._restarts_seen.pop(plugin, None)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``content_type``)."""
        return generate_latest(self.registry)
