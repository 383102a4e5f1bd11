"""`pollerd check` as an operator runs it (a real process): schedules, next fires and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

COMMAND_TIMEOUT_S = 60.0
REPO = Path(__file__).parents[2]
EXIT_OK, EXIT_FAILED = 0, 1
PLUGIN = """\
[plugin]
id = "probe"
version = "0.1.0"

[plugin.entrypoint]
command = "python"
args = ["-c", "pass"]

[plugin.poller]
kinds = ["probe"]
lifecycle = "ephemeral"
"""


def check(tmp_path: Path, jobs: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "plugins" / "probe").mkdir(parents=True, exist_ok=True)
    (tmp_path / "plugins" / "probe" / "plugin.toml").write_text(PLUGIN)
    (tmp_path / "pollers.yaml").write_text(
        "version: 1\nstate_dir: state\nhttp: off\njobs:\n" + jobs
    )
    return subprocess.run(
        [sys.executable, "-m", "pollerd", "check", "-c", "pollers.yaml", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def test_check_prints_each_jobs_schedule_and_its_next_fire_times(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        "  - id: weekdays\n    kind: probe\n    timezone: Europe/Paris\n"
        "    schedule: {cron: '0 9 * * 1-5', seconds: 30}\n"
        "  - id: often\n    kind: probe\n    schedule: {every: 10s}\n    jitter: 2s\n"
        "  - id: once\n    kind: probe\n    schedule: {at: '2030-01-01T00:00:00Z'}\n",
    )

    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    weekdays = next(line for line in lines if line.startswith("job weekdays: "))
    assert weekdays.startswith(
        "job weekdays: cron '0 9 * * 1-5' seconds '30' (Europe/Paris); next: "
    )
    fires = weekdays.split("; next: ")[1].split(", ")
    assert len(fires) == 3
    assert all(fire.endswith(("T09:00:30+01:00", "T09:00:30+02:00")) for fire in fires), fires
    [often] = [line for line in lines if line.startswith("job often: ")]
    assert often.startswith("job often: every 10s + up to 2s jitter; next: ")  # at its phase
    assert "job once: at 2030-01-01T00:00:00Z (UTC); next: 2030-01-01T00:00:00+00:00" in lines


def test_check_json_lists_the_schedules(tmp_path: Path) -> None:
    result = check(
        tmp_path, "  - id: daily\n    kind: probe\n    schedule: {cron: '30 6 * * *'}\n", "--json"
    )

    report = json.loads(result.stdout)
    (row,) = report["schedules"]
    assert row["id"] == "daily" and row["schedule"] == "cron '30 6 * * *'"
    assert len(row["next"]) == 3 and all(fire.endswith("T06:30:00+00:00") for fire in row["next"])


def test_a_six_field_cron_is_refused_with_both_readings_spelled_out(tmp_path: Path) -> None:
    result = check(
        tmp_path, "  - id: meant\n    kind: probe\n    schedule: {cron: 0 9 * * 1-5 0}\n"
    )

    assert result.returncode == EXIT_FAILED
    assert (
        "pollers.yaml:7: jobs[0].schedule.cron: cron '0 9 * * 1-5 0' has 6 fields, which tools "
        "read differently" in result.stdout
    )
    assert "{cron: '0 9 * * 1-5', seconds: '0'} for seconds last" in result.stdout


def test_a_dotted_job_id_is_refused_by_check(tmp_path: Path) -> None:
    result = check(tmp_path, "  - id: node.dotted\n    kind: probe\n    schedule: {every: 1m}\n")

    assert result.returncode == EXIT_FAILED
    assert "pollers.yaml:5: jobs[0].id: invalid job id 'node.dotted': no '.'" in result.stdout


def test_check_refuses_a_job_config_the_shipped_plugin_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "pollers.yaml").write_text(
        f"version: 1\nstate_dir: state\nhttp: off\nplugins: [{REPO / 'plugins'}]\njobs:\n"
        "  - id: news\n    kind: rss\n    schedule: {every: 15m}\n"
        "    config:\n      ulr: https://example.org/feed.xml\n"
        "  - id: inbox\n    kind: dir_watch\n    schedule: {every: 10s}\n"
        "    config: {path: ./inbox, max_events: many}\n"
    )

    result = subprocess.run(
        [sys.executable, "-m", "pollerd", "check", "-c", "pollers.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == EXIT_FAILED
    assert "pollers.yaml:9: jobs[0].config.url: required" in result.stdout
    assert "pollers.yaml:10: jobs[0].config.ulr: unknown key; did you mean 'url'?" in result.stdout
    assert "pollers.yaml:14: jobs[1].config.max_events: 'many' is not of type 'integer'" in (
        result.stdout
    )
