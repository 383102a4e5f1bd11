"""deploy/prometheus/alerts.yaml: valid for Prometheus, right when tested, and only real series."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from ops.test_operator import StartPollerd, count_job, start_pollerd, write_config
from system_tools import require_tool

PROMETHEUS_DIR = Path(__file__).parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yaml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yaml"
# Series that Prometheus records itself for every target, not exposed by pollerd.
PROMETHEUS_SERIES = frozenset({"up"})
SERIES_NAME = re.compile(r"\b((?:pollerd|process|python)_[a-z0-9_]+|up)\b(?!\s*\()")
REQUIRED_ALERTS = {
    "PollerdJobNotSucceeding",
    "PollerdJobBreakerOpen",
    "PollerdPluginFailed",
    "PollerdNotReady",
    "PollerdEventsNotPublishing",
}
PROMTOOL_TIMEOUT_S = 60

__all__ = ["start_pollerd"]  # the fixture, used by name


def expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def series_names(expression: str) -> set[str]:
    """The series an expression selects (identifiers followed by ``(`` are functions)."""
    return set(SERIES_NAME.findall(expression))


def test_series_names_are_found_in_an_expression_and_functions_are_not() -> None:
    found = series_names('sum by (job) (increase(pollerd_ticks_total{outcome="x"}[5m])) and up')

    assert found == {"pollerd_ticks_total", "up"}


def test_promtool_accepts_the_rules() -> None:
    promtool = require_tool("promtool")

    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions())} rules found" in result.stdout


def test_the_rules_fire_as_their_unit_tests_expect() -> None:
    promtool = require_tool("promtool")

    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_cover_what_an_operator_alerts_on() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"]}

    assert names >= REQUIRED_ALERTS


@pytest.mark.slow
async def test_every_series_the_rules_name_is_exposed_by_a_running_pollerd(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    port = free_port()
    pollerd = await start_pollerd(write_config(tmp_path, port, [count_job("fast")]), port)
    _, text = await pollerd.get("/metrics")
    exposed = set()
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        exposed.add(family.name + ("_total" if family.type == "counter" else ""))
        exposed.update(sample.name for sample in family.samples)
    named = set().union(*(series_names(expr) for expr in expressions()))

    assert named - PROMETHEUS_SERIES
    assert sorted(named - PROMETHEUS_SERIES - exposed) == []
