"""A pre-forked plugin in the service: cursors through the store, and SIGKILL of `pollerd run`."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

from conftest import FIXTURES_DIR, process_exists, wait_for_condition
from fixtures.semantics.kit import pollerd_run, service, write_config
from pollerd.stores.base import JobUpdate
from pollerd.supervision.status import PluginState

PREFORK_PLUGINS = FIXTURES_DIR / "prefork"
STARTED_WITHIN_S = 30.0
GONE_WITHIN_S = 1.0


def found(pattern: str, log: Path) -> list[int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [int(pid) for pid in re.findall(pattern, text)]


async def test_pollerd_killed_with_sigkill_leaves_no_zygote_and_no_child(tmp_path: Path) -> None:
    # Every second: its first slot comes within a second (at its phase), then it hangs.
    stuck = {"id": "stuck", "kind": "hang", "schedule": {"every": "1s"}, "tick_timeout": "1m"}
    config = write_config(tmp_path / "pollers.yaml", [stuck], plugins=[str(PREFORK_PLUGINS)])
    log = tmp_path / "pollerd.log"

    async with pollerd_run(config, output=log) as pollerd:
        await wait_for_condition(
            lambda: bool(found(r"hanging in pid (\d+)", log)), STARTED_WITHIN_S
        )
        [zygote] = found(r"plugin zygote zygote started \(pid (\d+)\)", log)
        [child] = found(r"hanging in pid (\d+)", log)
        alive_before = process_exists(zygote) and process_exists(child)
        pollerd.send_signal(signal.SIGKILL)
        await pollerd.wait()
        await wait_for_condition(
            lambda: not process_exists(zygote) and not process_exists(child), GONE_WITHIN_S
        )

    assert alive_before


async def test_a_binary_cursor_goes_through_a_pre_forked_tick_and_the_store_byte_for_byte(
    tmp_path: Path,
) -> None:
    echo = {"id": "echo", "kind": "echo", "schedule": {"every": "1h"}}
    config = write_config(tmp_path / "pollers.yaml", [echo], plugins=[str(PREFORK_PLUGINS)])
    cursor = bytes(range(256)) * 16 + b"\x00\xff"

    async with service(config, schedule=False) as running:  # no NATS: the zygote needs none
        await running.store.update("echo", JobUpdate(cursor=cursor))
        outcome = await running.tick_now("echo")
        state = await running.store.get("echo")
        assert running.supervisor is not None
        zygote = running.supervisor.status("zygote")

    assert outcome is not None and outcome.ok and outcome.committed
    assert state is not None and state.cursor == cursor
    assert zygote is not None and zygote.state is PluginState.RUNNING


async def test_a_changed_manifest_restarts_the_zygote_on_reload_and_ticks_resume(
    tmp_path: Path,
) -> None:
    plugins = tmp_path / "plugins"
    shutil.copytree(PREFORK_PLUGINS / "zygote", plugins / "zygote")
    echo = {"id": "echo", "kind": "echo", "schedule": {"every": "1h"}}
    config = write_config(tmp_path / "pollers.yaml", [echo])

    async with service(config, schedule=False) as running:
        assert running.supervisor is not None
        before = running.supervisor.status("zygote")
        manifest = plugins / "zygote" / "plugin.toml"
        manifest.write_text(manifest.read_text().replace('version = "1"', 'version = "2"'))
        answer = await running.reload()
        after = running.supervisor.status("zygote")
        outcome = await running.tick_now("echo")

    assert answer["ok"] is True
    assert before is not None and after is not None and after.state is PluginState.RUNNING
    assert after.pid != before.pid
    assert outcome is not None and outcome.ok
    assert outcome.reply is not None and outcome.reply.metrics["zygote"] == after.pid
