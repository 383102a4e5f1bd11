"""The zygote of a pre-forked plugin under the supervisor, with real processes and no NATS."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cancelrace import lost_cancellations
from conftest import FIXTURES_DIR, make_tick_request, process_exists, wait_for_condition
from pollerd.config.manifest import Entrypoint, Manifest
from pollerd.errors import PluginUnavailableError, TransportError
from pollerd.supervision.status import PluginState
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.prefork import PreforkTransport

ZYGOTE_DIR = FIXTURES_DIR / "prefork" / "zygote"
ZYGOTE_KINDS = ("echo", "hang", "orphan", "escape", "crash", "env")
WAIT_S = 20.0
FAST: dict[str, Any] = {
    "start_timeout_s": 10.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.2,
    "stop_grace_s": 1.0,
    "max_restarts": 2,
}


def prefork_manifest(
    folder: Path = ZYGOTE_DIR,
    script: str = "zygote_plugin.py",
    kinds: tuple[str, ...] = ZYGOTE_KINDS,
) -> Manifest:
    return Manifest(
        id="zygote",
        version="1",
        path=folder / "plugin.toml",
        kinds=kinds,
        lifecycle="ephemeral",
        prefork=True,
        entrypoint=Entrypoint(command="python", args=(script,)),
    )


def transport_for(manifest: Manifest, supervisor: Supervisor) -> PreforkTransport:
    return PreforkTransport.from_manifest(
        manifest,
        os.environ,
        kill_grace_s=0.5,
        connect=functools.partial(supervisor.zygote_channel, manifest.id),
    )


async def test_a_zygote_killed_with_sigkill_is_restarted_and_ticks_resume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    manifest = prefork_manifest()
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        transport = transport_for(manifest, sup)
        first = sup.status("zygote")
        assert first is not None and first.pid is not None
        before = await transport.send(make_tick_request(kind="echo"), 5.0)

        os.kill(first.pid, signal.SIGKILL)
        await wait_for_condition(
            lambda: (
                (status := sup.status("zygote")) is not None
                and status.state is PluginState.RUNNING
                and status.pid != first.pid
            ),
            WAIT_S,
        )
        after = await transport.send(make_tick_request(kind="echo"), 5.0)
        restarted = sup.status("zygote")

    assert restarted is not None and restarted.restarts == 1
    assert restarted.last_exit == "killed by SIGKILL"
    assert before.metrics["zygote"] == first.pid
    assert after.metrics["zygote"] not in (first.pid, before.metrics["zygote"])


async def test_a_child_in_flight_dies_with_its_zygote_and_its_tick_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    manifest = prefork_manifest()
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        transport = transport_for(manifest, sup)
        zygote = sup.status("zygote")
        assert zygote is not None and zygote.pid is not None
        import asyncio

        tick = asyncio.create_task(transport.send(make_tick_request(kind="hang"), 30.0))
        await wait_for_condition(lambda: "hanging in pid" in caplog.text, WAIT_S)
        [child] = [int(pid) for pid in re.findall(r"hanging in pid (\d+)", caplog.text)]
        os.kill(zygote.pid, signal.SIGKILL)
        with pytest.raises(TransportError) as caught:
            await tick
        await wait_for_condition(lambda: not process_exists(child), 1.0)

    assert "killed by SIGKILL without a reply" in str(caught.value)


async def test_a_plugin_that_is_not_an_sdk_plugin_fails_as_a_zygote_and_ticks_are_unavailable(
    tmp_path: Path,
) -> None:
    (tmp_path / "raw.py").write_text("import sys\nsys.stdin.readline()\nprint('{}')\n")
    manifest = prefork_manifest(tmp_path, "raw.py")
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        await wait_for_condition(
            lambda: (
                (status := sup.status("zygote")) is not None and status.state is PluginState.FAILED
            ),
            WAIT_S,
        )
        with pytest.raises(PluginUnavailableError) as caught:
            await transport_for(manifest, sup).send(make_tick_request(kind="echo"), 5.0)
        status = sup.status("zygote")

    assert status is not None and status.reason is not None
    assert "gave up after 2 restarts" in status.reason
    assert "while starting" in status.reason  # it read EOF on stdin and exited
    assert "its zygote is failed" in str(caught.value)
    assert caught.value.job_id == "inbox"


async def test_a_plugin_running_threads_at_import_is_unfit_and_fails_without_restarts(
    tmp_path: Path,
) -> None:
    (tmp_path / "threaded.py").write_text(
        textwrap.dedent(
            """
            import threading, time
            from pollerd.sdk import Plugin, TickResult
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            plugin = Plugin("zygote")
            plugin.poller("echo")(lambda tick: TickResult())
            plugin.run()
            """
        )
    )
    manifest = prefork_manifest(tmp_path, "threaded.py", kinds=("echo",))
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        status = sup.status("zygote")

    assert status is not None and status.state is PluginState.FAILED and status.restarts == 0
    assert status.reason == "cannot be pre-forked: the plugin runs 1 other thread(s) at import"


async def test_kinds_that_differ_from_the_manifest_fail_at_once(tmp_path: Path) -> None:
    manifest = prefork_manifest(kinds=("echo", "other"))
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        status = sup.status("zygote")

    assert status is not None and status.state is PluginState.FAILED and status.restarts == 0
    assert status.reason is not None
    assert "serves kinds [crash, echo, env, escape, hang, orphan]" in status.reason


async def test_stopping_the_supervisor_leaves_no_zygote_and_no_child(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    manifest = prefork_manifest()
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        zygote = sup.status("zygote")
        assert zygote is not None and zygote.pid is not None
        tick = asyncio.create_task(
            transport_for(manifest, sup).send(make_tick_request(kind="orphan"), 30.0)
        )
        await wait_for_condition(lambda: "grandchild" in caplog.text, WAIT_S)
    with pytest.raises(TransportError):
        await tick

    [grandchild] = [int(pid) for pid in re.findall(r"grandchild (\d+)", caplog.text)]
    await wait_for_condition(lambda: not process_exists(grandchild), 5.0)
    assert not process_exists(zygote.pid)
    assert sup.status("zygote") is not None


async def test_a_ping_of_the_zygote_ends_when_cancelled_even_as_its_answer_lands() -> None:
    # Python 3.11's wait_for returns the answer when the cancellation comes in the loop turn
    # where it landed: the runner's watch loop then went on pinging, and stopping the supervisor
    # waited for good.
    manifest = prefork_manifest()
    async with Supervisor([manifest], nc=None, nats_url="", environ=os.environ, **FAST) as sup:
        channel = await sup.zygote_channel(manifest.id, WAIT_S)

        lost = await lost_cancellations(lambda: channel.ping(WAIT_S))

    assert lost == []
