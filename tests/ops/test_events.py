"""`pollerd events` reads the stream through the running service's server, or starts one."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

from pollerd.config.setup import load_setup
from pollerd.service.core import Service

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60.0


def write_config(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "plugins" / "files", tmp_path / "plugins" / "files")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("a")
    path = tmp_path / "pollers.yaml"
    path.write_text(
        "version: 1\nstate_dir: state\nplugins: [plugins]\nhttp: off\njobs:\n"
        "  - {id: inbox, kind: dir_watch, schedule: {every: 1h}, config: {path: inbox}}\n"
    )
    return path


def read_events(config: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "pollerd", "events", "--job", "inbox", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_events_are_read_through_a_running_service_and_after_it_stopped(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    setup = load_setup(config, {})

    async with Service(setup, environ={}, schedule=False, http=False) as service:
        outcome = await service.tick_now("inbox")
        # The service holds the state dir: the CLI reads through its server.
        while_running = await asyncio.to_thread(read_events, config)
    after_stop = read_events(config)  # nobody runs: the CLI starts a server on the same data

    assert outcome is not None and outcome.ok
    assert [e["data"]["path"] for e in while_running] == ["a.txt"]  # type: ignore[index]
    assert while_running == after_stop
    assert while_running[0]["subject"] == "pollerd.events.dir_watch.inbox"
    assert str(while_running[0]["msg_id"]).startswith("inbox:a.txt:")
