"""What a reload changes: the pure comparison of two setups."""

from __future__ import annotations

from pathlib import Path

from pollerd.config.reload import plan_reload, restart_needed
from pollerd.config.setup import Setup, load_setup

MANIFEST = """
[plugin]
id = "files"
version = "0.1.0"

[plugin.entrypoint]
command = "python"
args = ["plugin.py"]

[plugin.poller]
kinds = ["dir_watch"]
lifecycle = "ephemeral"
"""


def setup_with(tmp_path: Path, jobs: str, *, http: str = "off", grace: str = "10s") -> Setup:
    folder = tmp_path / "plugins" / "files"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.toml").write_text(MANIFEST)
    path = tmp_path / "pollers.yaml"
    path.write_text(
        f"version: 1\nstate_dir: state\nplugins: [plugins]\nhttp: {http}\n"
        f"shutdown_grace: {grace}\njobs:\n{jobs}"
    )
    return load_setup(path, {})


def job(job_id: str, every: str = "10s") -> str:
    return f"  - {{id: {job_id}, kind: dir_watch, schedule: {{every: {every}}}}}\n"


def test_added_removed_and_changed_jobs_are_told_apart(tmp_path: Path) -> None:
    old = setup_with(tmp_path, job("kept") + job("gone") + job("edited"))
    new = setup_with(tmp_path, job("kept") + job("edited", "5s") + job("fresh"))

    plan = plan_reload(old, new)

    assert plan.summary()["added"] == ["fresh"]
    assert plan.summary()["removed"] == ["gone"]
    assert plan.summary()["changed"] == ["edited"]
    assert not plan.plugins_added and not plan.plugins_removed and not plan.plugins_changed


def test_an_identical_file_plans_nothing(tmp_path: Path) -> None:
    old = setup_with(tmp_path, job("kept"))
    new = setup_with(tmp_path, job("kept"))

    assert plan_reload(old, new).empty
    assert restart_needed(old, new) == []


def test_service_settings_that_need_a_restart_are_named(tmp_path: Path) -> None:
    old = setup_with(tmp_path, job("kept"))
    new = setup_with(tmp_path, job("kept"), http="127.0.0.1:9999", grace="3s")

    assert restart_needed(old, new) == ["http", "shutdown_grace"]
