"""Misbehaving long-lived plugins cost one failed tick each, never their neighbours' ticks.

Real service, real nats-server, real plugin processes (tests/fixtures/edges): a handler that
hangs while a canary job of the same plugin keeps ticking, a plugin that answers pings but no
ticks, a plugin whose code names another id than its plugin.toml.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES_DIR, wait_for_condition
from fixtures.semantics.kit import metric
from pollerd.config.setup import load_setup
from pollerd.service.core import Service
from pollerd.supervision.status import PluginState, PluginStatus

pytestmark = pytest.mark.nats

EDGES_DIR = FIXTURES_DIR / "edges"
HANGING = EDGES_DIR / "hanging.py"
WAIT_S = 20.0
MAX_LATENESS_S = 1.0
SUPERVISOR: Mapping[str, float] = {
    "start_timeout_s": 15.0,
    "ping_interval_s": 0.5,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "stop_grace_s": 1.0,
}
PLAIN_DEFAULTS = {"retry": {"attempts": 1}, "breaker": {"threshold": 1000}}


def write_plugin(
    root: Path,
    plugin_id: str,
    kinds: list[str],
    script: Path,
    *args: str,
    tick_timeout: str = "5s",
) -> None:
    folder = root / "plugins" / plugin_id
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'[plugin]\nid = "{plugin_id}"\nversion = "1.0.0"\n\n'
        f'[plugin.entrypoint]\ncommand = "python"\nargs = {json.dumps([str(script), *args])}\n\n'
        f'[plugin.poller]\nkinds = {json.dumps(kinds)}\nlifecycle = "long_lived"\n'
        f'tick_timeout = "{tick_timeout}"\n'
    )


def write_config(root: Path, jobs: list[dict[str, Any]]) -> Path:
    config = {
        "version": 1,
        "state_dir": str(root / "state"),
        "plugins": [str(root / "plugins")],
        "http": "off",
        "defaults": PLAIN_DEFAULTS,
        "jobs": jobs,
    }
    path = root / "pollers.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def job(job_id: str, kind: str, every: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "kind": kind, "schedule": {"every": every}, **fields}


def open_service(config: Path, **supervisor: float) -> Service:
    return Service(
        load_setup(config, os.environ),
        environ=os.environ,
        http=False,
        supervisor_options={**SUPERVISOR, **supervisor},
    )


def runs(log: Path, job_id: str) -> list[dict[str, Any]]:
    """What the hanging.py plugin recorded for one job, in order."""
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    return [line for line in lines if line["job"] == job_id]


def status_of(service: Service, plugin_id: str) -> PluginStatus:
    assert service.supervisor is not None
    status = service.supervisor.status(plugin_id)
    assert status is not None
    return status


async def test_a_hung_async_handler_is_cancelled_at_its_deadline_and_a_canary_stays_on_time(
    tmp_path: Path,
) -> None:
    # The plugin runs at most 4 ticks at once: before deadlines were enforced, the 5th hung
    # tick left no room for the canary (after ~64 with the SDK's default).
    write_plugin(tmp_path, "edgy", ["hang", "hang_sync", "canary"], HANGING)
    log = tmp_path / "runs.log"
    config = write_config(
        tmp_path,
        [
            job("stuck", "hang", "200ms", tick_timeout="300ms", config={"log": str(log)}),
            job("canary", "canary", "250ms", config={"log": str(log)}),
        ],
    )
    hung_ticks = 12

    async with open_service(config) as service:
        await wait_for_condition(lambda: len(runs(log, "stuck")) >= hung_ticks, WAIT_S)
        canary_before = len(runs(log, "canary"))
        started = time.monotonic()
        await wait_for_condition(lambda: len(runs(log, "canary")) >= canary_before + 8, WAIT_S)
        elapsed_s = time.monotonic() - started
        stuck = await service.store.get("stuck")
        canary = await service.store.get("canary")
        plugin = status_of(service, "edgy")

    lateness_s = [run["late_s"] for run in runs(log, "canary")]
    assert max(lateness_s) < MAX_LATENESS_S, lateness_s
    assert elapsed_s < 8 * 0.25 + MAX_LATENESS_S  # 8 slots of 250 ms, none lost
    assert canary is not None and canary.last_status == "ok"
    assert stuck is not None and stuck.last_status == "transient"
    assert "did not finish by the tick's deadline" in (stuck.last_error or "")
    assert "cancelled" in (stuck.last_error or "")
    assert plugin.state is PluginState.RUNNING and plugin.restarts == 0


async def test_a_plugin_that_answers_pings_but_no_ticks_is_restarted_as_not_serving(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "deaf", ["deaf"], EDGES_DIR / "deaf.py")
    config = write_config(tmp_path, [job("unheard", "deaf", "100ms", tick_timeout="200ms")])

    async with open_service(config, stall_timeouts=3) as service:
        await wait_for_condition(lambda: status_of(service, "deaf").restarts >= 1, WAIT_S)
        timeouts = metric(service.metrics, "pollerd_ticks_total", outcome="timeout")
        restarted = status_of(service, "deaf")

    assert timeouts >= 3
    assert restarted.reason is not None
    assert "answered pings but 3 ticks in a row got no reply" in restarted.reason
    assert "alive but not serving" in restarted.reason


async def test_a_plugin_announcing_another_id_fails_at_once_naming_both_ids(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "idmismatch", ["mismatch"], EDGES_DIR / "wrong_id.py")
    config = write_config(tmp_path, [job("mis", "mismatch", "1h")])
    started = time.monotonic()

    async with open_service(config) as service:
        await wait_for_condition(
            lambda: status_of(service, "idmismatch").state is PluginState.FAILED, WAIT_S
        )
        failed_after_s = time.monotonic() - started
        failed = status_of(service, "idmismatch")
        outcome = await service.tick_now("mis")

    assert failed_after_s < 10.0  # the start timeout (15 s here) is not waited out
    assert failed.restarts == 0
    assert failed.reason is not None
    assert "exited while starting with code 78" in failed.reason
    assert "announces id 'wrong-id'" in failed.reason
    assert "started it as 'idmismatch'" in failed.reason
    assert outcome is not None and outcome.status == "unavailable"


async def test_a_plain_nats_plugin_serving_our_subject_under_another_name_fails_naming_it(
    tmp_path: Path,
) -> None:
    write_plugin(tmp_path, "misnamed", ["deaf"], EDGES_DIR / "deaf.py", "wrong-id")
    config = write_config(tmp_path, [job("mis", "deaf", "1h")])

    async with open_service(config, start_timeout_s=4.0) as service:
        await wait_for_condition(
            lambda: status_of(service, "misnamed").state is PluginState.FAILED, WAIT_S
        )
        failed = status_of(service, "misnamed")

    # Not a minute of flapping: failed at the first start that served (a machine loaded enough
    # to keep the first start from serving within the start timeout costs one restart).
    assert failed.restarts <= 1
    assert failed.reason is not None
    assert "a service named 'wrong-id' serves pollerd.plugins.misnamed.tick" in failed.reason
    assert "announces another id than its manifest's 'misnamed'" in failed.reason
