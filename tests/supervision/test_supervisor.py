"""The supervisor against a real nats-server and real plugin processes built with pollerd.sdk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.micro import add_service
from nats.micro.request import Request

from cancelrace import lost_cancellations
from conftest import FIXTURES_DIR, make_tick_request, process_exists, wait_process_gone
from pollerd import wire
from pollerd.config.manifest import Entrypoint, Manifest
from pollerd.errors import SupervisorError, TickTimeoutError
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.supervision.plugin_runner import (
    PluginRunner,
    RunnerSettings,
    check_service_info,
    served_name,
)
from pollerd.supervision.status import PluginState, PluginStatus
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.nats import NatsTransport
from pollerd.transports.natsmux import mux_for

SUPERVISED_DIR = FIXTURES_DIR / "supervised"
ECHO_KINDS = ("echo", "environ", "hang")
WAIT_S = 20.0
TICK_TIMEOUT_S = 5.0
PROBE_CANCEL_ROUNDS = 300
PROBE_CANCEL_TURNS = 40  # loop turns before the cancel: a request and its answer take a few
PROBE_END_WAIT_S = 2.0
FAST = {
    "start_timeout_s": 15.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "stop_grace_s": 1.0,
}


def make_manifest(
    plugin_id: str = "echo",
    *,
    script: str | None = "echo.py",
    kinds: tuple[str, ...] = ECHO_KINDS,
    command: str = "python",
    env: tuple[str, ...] = (),
    lifecycle: Any = "long_lived",
    folder: Path = SUPERVISED_DIR,
) -> Manifest:
    entrypoint = None
    if script is not None:
        entrypoint = Entrypoint(command=command, args=(script,), env=env)
    return Manifest(
        id=plugin_id,
        version="1.2.3",
        path=folder / "plugin.toml",
        kinds=kinds,
        lifecycle=lifecycle,
        entrypoint=entrypoint,
    )


class StatusRecorder:
    """The ``on_change`` callback of a test: keeps every status and lets the test await one."""

    def __init__(self) -> None:
        self.history: list[PluginStatus] = []
        self._changed = asyncio.Event()

    def __call__(self, status: PluginStatus) -> None:
        self.history.append(status)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[PluginStatus], bool], timeout_s: float = WAIT_S
    ) -> PluginStatus:
        seen = 0
        async with asyncio.timeout(timeout_s):
            while True:
                for status in self.history[seen:]:
                    if predicate(status):
                        return status
                seen = len(self.history)
                self._changed.clear()
                await self._changed.wait()

    def states(self, plugin_id: str) -> list[PluginState]:
        return [status.state for status in self.history if status.plugin_id == plugin_id]


async def send(
    nc: Client,
    manifest: Manifest,
    kind: str,
    cursor: bytes | None = None,
    timeout_s: float = TICK_TIMEOUT_S,
) -> wire.TickReply:
    """One tick to the plugin of ``manifest`` through the NATS transport."""
    transport = NatsTransport(nc, plugin_id=manifest.id, subject_prefix=manifest.subject_prefix)
    return await transport.send(make_tick_request(kind=kind, cursor=cursor), timeout_s)


@pytest.fixture
def recorder() -> StatusRecorder:
    return StatusRecorder()


@pytest.fixture
def supervise(
    nats_server: EmbeddedNatsServer, nats_client: Client, recorder: StatusRecorder
) -> Callable[..., Supervisor]:
    """A factory of supervisors on the test's server, reporting to ``recorder``."""

    def factory(*manifests: Manifest, **options: Any) -> Supervisor:
        settings: dict[str, Any] = {**FAST, **options}
        settings.setdefault("environ", {"PATH": os.environ.get("PATH", os.defpath)})
        return Supervisor(
            manifests,
            nc=nats_client,
            nats_url=nats_server.url,
            rng=random.Random(7),
            on_change=recorder,
            **settings,
        )

    return factory


def running(plugin_id: str, restarts: int = 0) -> Callable[[PluginStatus], bool]:
    return lambda s: (
        s.plugin_id == plugin_id and s.state is PluginState.RUNNING and s.restarts >= restarts
    )


def in_state(plugin_id: str, state: PluginState) -> Callable[[PluginStatus], bool]:
    return lambda s: s.plugin_id == plugin_id and s.state is state


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        ({"metadata": {"kinds": "hang,echo,environ", "protocol": "1"}}, None),
        ({"metadata": {"kinds": " echo , environ,hang", "protocol": "1"}}, None),
        ({"metadata": {"kinds": "echo", "protocol": "1"}}, "serves kinds [echo] but"),
        ({"metadata": {"protocol": "1"}}, "serves kinds [] but"),
        ({}, "serves kinds [] but"),
        (None, "serves kinds [] but"),
        ({"metadata": {"kinds": "echo,environ,hang", "protocol": "2"}}, "speaks protocol 2"),
        ({"metadata": {"kinds": "echo,environ,hang"}}, "speaks protocol unknown"),
    ],
)
def test_service_info_must_list_the_manifest_kinds_and_protocol(
    info: object, problem: str | None
) -> None:
    found = check_service_info(info, make_manifest())

    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert "declares [echo, environ, hang]" in found or "protocol" in problem


# --- with real plugins -------------------------------------------------------------------------


@pytest.mark.nats
async def test_a_healthy_plugin_runs_and_answers_a_tick(
    supervise: Callable[..., Supervisor], nats_client: Client
) -> None:
    manifest = make_manifest()

    async with supervise(manifest) as supervisor:
        status = supervisor.status("echo")
        reply = await send(nats_client, manifest, "echo", b"a")

    assert status is not None
    assert status.state is PluginState.RUNNING
    assert status.pid is not None and status.restarts == 0 and status.reason is None
    assert reply.next_cursor == b"a+"


@pytest.mark.nats
async def test_a_plugin_sees_only_its_allow_list_and_the_pollerd_variables(
    supervise: Callable[..., Supervisor], nats_client: Client
) -> None:
    manifest = make_manifest(env=("ALLOWED_ONE",))
    environ = {"PATH": os.defpath, "ALLOWED_ONE": "yes", "SECRET_ONE": "no"}

    async with supervise(manifest, environ=environ, extra_env={"POLLERD_CONFIG_DIR": "/x"}):
        reply = await send(nats_client, manifest, "environ")

    data = reply.events[0].data
    assert "ALLOWED_ONE" in data["names"] and "POLLERD_CONFIG_DIR" in data["names"]
    assert "SECRET_ONE" not in data["names"] and "PATH" not in data["names"]
    assert data["mode"] == "long_lived"


@pytest.mark.nats
async def test_a_plugin_killed_with_sigkill_is_restarted_after_a_backoff(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder, nats_client: Client
) -> None:
    manifest = make_manifest()

    async with supervise(manifest) as supervisor:
        first = supervisor.status("echo")
        assert first is not None and first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        backoff = await recorder.wait_for(in_state("echo", PluginState.BACKOFF))
        again = await recorder.wait_for(running("echo", restarts=1))
        reply = await send(nats_client, manifest, "echo")

    assert backoff.last_exit == "killed by SIGKILL"
    assert backoff.reason is not None and "killed by SIGKILL" in backoff.reason
    assert again.restarts == 1 and again.pid not in (None, first.pid)
    assert not process_exists(first.pid)
    assert reply.next_cursor == b"+"


@pytest.mark.nats
async def test_a_plugin_that_exits_at_start_up_fails_after_max_restarts_with_its_stderr(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder
) -> None:
    manifest = make_manifest("crashy", script="crash_at_start.py")

    async with supervise(manifest, max_restarts=2) as supervisor:
        failed = await recorder.wait_for(in_state("crashy", PluginState.FAILED))
        available = supervisor.available("crashy")

    assert failed.restarts == 2
    assert failed.last_exit == "exit code 3"
    assert failed.reason is not None
    assert "gave up after 2 restarts" in failed.reason and "exit code 3" in failed.reason
    assert "start-up line 12" in failed.reason and "start-up line 3" in failed.reason
    assert "start-up line 2\n" not in failed.reason  # only the last ten lines
    assert recorder.states("crashy").count(PluginState.BACKOFF) == 2
    assert available is False


@pytest.mark.nats
async def test_a_kinds_mismatch_fails_at_once_naming_both_lists(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder
) -> None:
    manifest = make_manifest(kinds=("rss", "echo"))

    async with supervise(manifest) as supervisor:
        status = supervisor.status("echo")

    assert status is not None and status.state is PluginState.FAILED
    assert status.reason is not None
    assert "serves kinds [echo, environ, hang]" in status.reason
    assert "declares [echo, rss]" in status.reason
    assert status.restarts == 0
    assert PluginState.BACKOFF not in recorder.states("echo")
    starting = [s for s in recorder.history if s.state is PluginState.STARTING and s.pid]
    assert not process_exists(starting[0].pid or 0)


@pytest.mark.nats
async def test_a_hung_plugin_that_misses_its_pings_is_killed_and_restarted(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder, nats_client: Client
) -> None:
    manifest = make_manifest()

    async with supervise(
        manifest, ping_interval_s=0.2, ping_failures=2, stop_grace_s=0.2
    ) as supervisor:
        first = supervisor.status("echo")
        assert first is not None and first.pid is not None
        with pytest.raises(TickTimeoutError):
            await send(nats_client, manifest, "hang", timeout_s=0.5)
        backoff = await recorder.wait_for(in_state("echo", PluginState.BACKOFF))
        again = await recorder.wait_for(running("echo", restarts=1))

    assert backoff.reason is not None and "pings in a row" in backoff.reason
    assert backoff.last_exit == "killed by SIGKILL"  # a stopped process ignores SIGTERM
    assert again.pid != first.pid
    assert not process_exists(first.pid)


@pytest.mark.nats
async def test_leaving_the_context_leaves_no_process_and_no_task(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder, nats_client: Client
) -> None:
    with contextlib.suppress(NoRespondersError):  # the connection's reply subscription: not ours
        await mux_for(nats_client).request("nobody.listens", b"", TICK_TIMEOUT_S)
    before = asyncio.all_tasks()

    async with supervise(make_manifest("one"), make_manifest("two")) as supervisor:
        pids = [status.pid for status in supervisor.statuses()]
        during = asyncio.all_tasks() - before

    assert len(pids) == 2 and all(pids)
    assert during  # the supervisor did run tasks of its own
    assert not any(process_exists(pid or 0) for pid in pids)
    assert asyncio.all_tasks() - before == set()
    assert [s.state for s in supervisor.statuses()] == [PluginState.STOPPED] * 2
    assert [s.state for s in recorder.history[-2:]] == [PluginState.STOPPED] * 2


@pytest.mark.nats
async def test_an_external_plugin_is_not_started_and_an_ephemeral_one_is_ignored(
    supervise: Callable[..., Supervisor],
) -> None:
    external = make_manifest("remote", script=None)
    ephemeral = make_manifest("oneshot", lifecycle="ephemeral")

    async with supervise(external, ephemeral) as supervisor:
        remote = supervisor.status("remote")
        oneshot = supervisor.status("oneshot")
        available = supervisor.available("remote")

    assert remote is not None and remote.state is PluginState.EXTERNAL and remote.pid is None
    assert oneshot is None
    assert available is True
    assert supervisor.available("remote") is False  # stopped with the supervisor


@pytest.mark.nats
async def test_a_plugin_can_be_added_and_removed_while_the_supervisor_runs(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder, nats_client: Client
) -> None:
    manifest = make_manifest("late")

    async with supervise() as supervisor:
        await supervisor.add(manifest)
        added = supervisor.status("late")
        reply = await send(nats_client, manifest, "echo")
        with pytest.raises(SupervisorError):
            await supervisor.add(manifest)
        await supervisor.remove("late")
        removed = supervisor.status("late")

    assert added is not None and added.state is PluginState.RUNNING and added.pid
    assert reply.next_cursor == b"+"
    assert removed is None
    assert recorder.history[-1].state is PluginState.STOPPED
    await wait_process_gone(added.pid, timeout_s=0.5)


@pytest.mark.nats
async def test_a_command_that_does_not_exist_fails_without_restarts(
    supervise: Callable[..., Supervisor], recorder: StatusRecorder
) -> None:
    manifest = make_manifest("ghost", command="no-such-plugin-binary")

    async with supervise(manifest) as supervisor:
        status = supervisor.status("ghost")

    assert status is not None and status.state is PluginState.FAILED
    assert status.reason is not None and "'no-such-plugin-binary'" in status.reason
    assert PluginState.BACKOFF not in recorder.states("ghost")


def test_the_service_serving_a_subject_is_found_by_its_endpoints_in_an_info_answer() -> None:
    info = {"name": "wrong-id", "endpoints": [{"name": "tick", "subject": "p.x.tick"}]}
    frame = json.dumps(info).encode()
    assert served_name(frame, "p.x.tick") == "wrong-id"
    assert served_name(frame, "p.y.tick") is None
    assert served_name(b"not json", "p.x.tick") is None
    assert served_name(b'{"endpoints": "?"}', "p.x.tick") is None


def unstarted_runner(
    plugin_id: str, nats_server: EmbeddedNatsServer, nats_client: Client
) -> PluginRunner:
    """A runner whose parts a test drives itself; it starts no process."""
    return PluginRunner(
        make_manifest(plugin_id),
        RunnerSettings(
            nc=nats_client,
            nats_url=nats_server.url,
            environ={},
            nats_env={},
            plugin_env=lambda manifest: {},
            extra_env={},
            python=sys.executable,
            clock=lambda: datetime.now(UTC),
            rng=random.Random(7),
            ping_interval_s=1.0,
            ping_failures=3,
            stall_timeouts=3,
            max_restarts=0,
            restart_window_s=60.0,
            on_change=None,
            **FAST,
        ),
    )


@pytest.mark.nats
async def test_the_readiness_probe_ends_when_cancelled_even_as_an_answer_lands(
    nats_server: EmbeddedNatsServer, nats_client: Client
) -> None:
    # Python 3.11's asyncio.wait_for (under nats-py's request) returns the answer when the
    # cancellation comes in the loop turn where the answer landed: a probe that went on asking
    # then kept a plugin that had exited at start "starting" for good. Cancelled a few loop turns
    # after each start, the probe is cancelled in every phase of its request, that one included.
    runner = unstarted_runner("nobody", nats_server, nats_client)
    still_running = 0
    for turns in range(PROBE_CANCEL_ROUNDS):
        probe = asyncio.create_task(runner._probe_info())
        for _ in range(turns % PROBE_CANCEL_TURNS):
            await asyncio.sleep(0)
        probe.cancel()
        await asyncio.wait({probe}, timeout=PROBE_END_WAIT_S)
        if not probe.done():
            still_running += 1
            probe.cancel()  # again, so that the test itself ends
            await asyncio.wait({probe})

    assert still_running == 0


@pytest.mark.nats
async def test_the_search_for_a_misnamed_service_ends_when_cancelled_even_as_an_answer_lands(
    nats_server: EmbeddedNatsServer, nats_client: Client
) -> None:
    # After a start timeout the runner asks every service for its INFO (nats-py's next_msg). A
    # cancellation lost there as an answer landed let the runner go on: it restarted the plugin
    # and its stop() waited for good.
    async def unused(request: Request) -> None:
        """Only the service's INFO answer matters here."""

    other = await add_service(nats_client, name="other", version="1.0.0")
    await other.add_endpoint(name="tick", subject="other.tick", handler=unused)
    runner = unstarted_runner("echo", nats_server, nats_client)

    try:
        lost = await lost_cancellations(runner._service_on_our_subject)
    finally:
        await other.stop()

    assert lost == []
