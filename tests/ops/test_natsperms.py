"""`pollerd nats-permissions`: the printed blocks, loaded into a real nats-server, are enough for
pollerd, a supervised plugin and an external plain nats-py plugin — and no more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from conftest import Spawn, free_port, long_lived_env
from pollerd.config.setup import load_setup
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.natsio.auth import NatsUser
from pollerd.natsio.jetstream import read_events
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.service.core import Service
from service.test_longlived import (
    FAST_SUPERVISOR,
    RAW_PLUGIN,
    SDK_PLUGIN,
    job,
    read_line,
    run_cli,
    tick,
    write_plugin,
)

pytestmark = pytest.mark.nats

PASSWORDS = {"pollerd": "pw-pollerd", "plugin-alpha": "pw-alpha", "plugin-beta": "pw-beta"}


def write_config(root: Path, port: int) -> Path:
    config: dict[str, Any] = {
        "version": 1,
        "nats": {"url": f"nats://127.0.0.1:{port}", "user": "pollerd", "password": "pw-pollerd"},
        "state_dir": str(root / "state"),
        "plugins": [str(root / "plugins")],
        "http": "off",
        "jobs": [job("a1", "count"), job("b1", "raw")],
    }
    path = root / "pollers.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
async def external_server(tmp_path: Path) -> AsyncIterator[tuple[Path, EmbeddedNatsServer]]:
    """A nats-server configured with what `pollerd nats-permissions --json` prints."""
    write_plugin(tmp_path, "alpha", "count", script=SDK_PLUGIN)
    write_plugin(tmp_path, "beta", "raw", script=None)
    port = free_port()
    config = write_config(tmp_path, port)
    code, out, err = await run_cli("nats-permissions", "--json", "-c", str(config), cwd=tmp_path)
    assert code == 0, err
    users = [
        NatsUser(block["user"], PASSWORDS[block["user"]], block.get("permissions"))
        for block in json.loads(out)["users"]
    ]
    async with EmbeddedNatsServer(tmp_path / "external", port=port, users=users) as server:
        yield config, server


async def test_the_printed_permissions_let_pollerd_and_its_plugins_work(
    external_server: tuple[Path, EmbeddedNatsServer], spawn: Spawn
) -> None:
    config, server = external_server
    env = long_lived_env(server.url, plugin_id="beta", subject_prefix="pollerd.plugins.beta")
    env |= {"POLLERD_NATS_USER": "plugin-beta", "POLLERD_NATS_PASSWORD": "pw-beta"}
    beta = await spawn(RAW_PLUGIN, env=env)
    assert await read_line(beta) == "ready"

    async with Service(
        load_setup(config, os.environ),
        environ=os.environ,
        schedule=False,
        http=False,
        supervisor_options=FAST_SUPERVISOR,
    ) as service:
        supervised = await tick(service, "a1")
        external = await tick(service, "b1")
        assert service.nc is not None
        events = [event.id async for event in read_events(service.nc, job_id="a1")]

    assert (supervised.status, external.status) == ("ok", "ok")
    assert len(events) == 1


async def test_a_plugin_user_of_the_printed_blocks_cannot_publish_events(
    external_server: tuple[Path, EmbeddedNatsServer],
) -> None:
    _, server = external_server
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc))

    nc = Client()
    await nc.connect(
        server.url, user="plugin-beta", password="pw-beta", error_cb=on_error, allow_reconnect=False
    )
    await nc.publish("pollerd.events.raw.b1", b"{}")
    await nc.flush()
    with pytest.raises(NatsError):
        await natsconn.connect(server.url, name="nobody")
    await nc.close()

    assert any("permissions violation for publish" in text for text in refused)


def test_the_text_form_is_a_nats_authorization_block(tmp_path: Path) -> None:
    write_plugin(tmp_path, "alpha", "count", script=SDK_PLUGIN)
    config = write_config(tmp_path, 4222)

    out = subprocess.run(
        [sys.executable, "-m", "pollerd", "nats-permissions", "-c", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "authorization {" in out
    assert '"user": "plugin-alpha"' in out
    assert '"pollerd.plugins.alpha.tick pollerd"' in out
