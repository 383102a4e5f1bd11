"""Per-job series kept in plain dicts and written straight to the text format.

At 10,000 jobs, prometheus-client children cost about 1 KiB and a lock each, and
``generate_latest`` about 10 µs per sample: a scrape took seconds. Job ids, kinds, outcomes and
skip reasons never need escaping in the text format (their patterns allow only letters, digits,
``_``, ``.`` and ``-``), so lines are written directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pollerd.ops.slices import chunks

logger = logging.getLogger(__name__)

JOB_LABEL = "job_id"  # never "job": Prometheus owns that label on every scraped series

_TICKS = ("pollerd_ticks_total", "Ticks finished, by job, kind and outcome.")
_SKIPPED = ("pollerd_slots_skipped_total", "Scheduled slots that did not run, by job and reason.")
_ERRORS = ("pollerd_job_consecutive_errors", "Failed slots in a row for a job.")
_BREAKER = ("pollerd_job_breaker_open", "1 while the job's circuit breaker is open, else 0.")


class JobSeries(Collector):
    """Ticks, skips, consecutive errors and breaker state of every job, in plain dicts.

    Job ids, kinds, outcomes and skip reasons never need escaping in the text format (their
    patterns allow only letters, digits, ``_``, ``.`` and ``-``), so lines are written directly.
    """

    def __init__(self) -> None:
        self.ticks: dict[str, dict[tuple[str, str], float]] = {}  # job → (kind, outcome) → n
        self.skipped: dict[str, dict[str, float]] = {}  # job → reason → n
        self.health: dict[str, tuple[float, float]] = {}  # job → (consecutive errors, open)

    def forget(self, job_id: str) -> None:
        self.ticks.pop(job_id, None)
        self.skipped.pop(job_id, None)
        self.health.pop(job_id, None)

    def collect(self) -> Iterable[Metric]:
        """Families for ``get_sample_value`` and tests; scrapes use ``text``."""
        ticks = CounterMetricFamily(*_TICKS, labels=[JOB_LABEL, "kind", "outcome"])
        for job_id, counts in self.ticks.items():
            for (kind, outcome), value in counts.items():
                ticks.add_metric([job_id, kind, outcome], value)
        skipped = CounterMetricFamily(*_SKIPPED, labels=[JOB_LABEL, "reason"])
        for job_id, reasons in self.skipped.items():
            for reason, value in reasons.items():
                skipped.add_metric([job_id, reason], value)
        errors = GaugeMetricFamily(*_ERRORS, labels=[JOB_LABEL])
        breaker = GaugeMetricFamily(*_BREAKER, labels=[JOB_LABEL])
        for job_id, (consecutive, open_) in self.health.items():
            errors.add_metric([job_id], consecutive)
            breaker.add_metric([job_id], open_)
        return [ticks, skipped, errors, breaker]

    def describe(self) -> Iterable[Metric]:
        return []

    def text(self) -> str:
        return "".join(self.text_slices())

    def text_slices(self) -> Iterator[str]:
        """The text format, a slice of jobs at a time (``pollerd.ops.slices``): each family
        is written for the jobs it held when it began (a list of their ids, no copy of the
        dict's items), so ticks may count between two slices."""
        yield header(*_TICKS, "counter")
        name, ticks = _TICKS[0], self.ticks
        for chunk in chunks(list(ticks)):
            yield "".join(
                f'{name}{{{JOB_LABEL}="{job_id}",kind="{kind}",outcome="{outcome}"}} '
                f"{format_value(value)}\n"
                for job_id in chunk
                for (kind, outcome), value in ticks.get(job_id, {}).items()
            )
        yield header(*_SKIPPED, "counter")
        name, skipped = _SKIPPED[0], self.skipped
        for chunk in chunks(list(skipped)):
            yield "".join(
                f'{name}{{{JOB_LABEL}="{job_id}",reason="{reason}"}} {format_value(value)}\n'
                for job_id in chunk
                for reason, value in skipped.get(job_id, {}).items()
            )
        health = self.health
        job_ids = list(health)
        for index, (name, help_text) in enumerate((_ERRORS, _BREAKER)):
            yield header(name, help_text, "gauge")
            for chunk in chunks(job_ids):
                yield "".join(
                    f'{name}{{{JOB_LABEL}="{job_id}"}} {format_value(values[index])}\n'
                    for job_id in chunk
                    if (values := health.get(job_id)) is not None
                )


def header(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


_WHOLE_TEXT: dict[float, str] = {}  # whole values written before: counts, 0/1 flags, intervals
_WHOLE_TEXT_LIMIT = 100_000


def format_value(value: float) -> str:
    """A sample value as prometheus-client writes it (``1.0``, ``1.7e+09``, ``+Inf``).

    Most per-job samples are whole numbers that many jobs share (0 errors, breaker 0, interval
    10, tick counts): their text is kept (with next fire times read in seconds, a 10,000-job
    scrape beside 1,000 ticks/s went from 221 to 162 ms)."""
    text = _WHOLE_TEXT.get(value)
    if text is not None:
        return text
    text = str(floatToGoString(value))  # type: ignore[no-untyped-call]
    if float(value).is_integer() and len(_WHOLE_TEXT) < _WHOLE_TEXT_LIMIT:
        _WHOLE_TEXT[value] = text
    return text
