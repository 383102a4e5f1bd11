"""Least privilege on the embedded nats-server, tried as an attacker on the same machine would.

A real ``Service`` runs its embedded server with one supervised SDK plugin (``alpha``) and one
external plain nats-py plugin (``beta``, connected with its documented credentials). The
attacker is either a client without credentials or ``beta``'s user trying to reach further.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from conftest import FIXTURES_DIR, Spawn
from pollerd.config.setup import load_setup
from pollerd.engine.events import SUBJECT_ROOT, event_msg_id
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.natsio.auth import plugin_user_name, read_credentials
from pollerd.natsio.jetstream import read_events
from pollerd.service.core import Service
from pollerd.wire import make_tick_id
from service.test_longlived import (
    FAST_SUPERVISOR,
    RAW_PLUGIN,
    SDK_PLUGIN,
    job,
    read_line,
    run_cli,
    stored,
    tick,
    write_config,
    write_plugin,
)

pytestmark = pytest.mark.nats

FIXED_NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VIOLATION_WAIT_S = 5.0
IMPOSTOR_TICKS = 6
ALPHA_TICK = "pollerd.plugins.alpha.tick"
ECHO_PLUGIN = FIXTURES_DIR / "supervised" / "echo.py"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    write_plugin(tmp_path, "alpha", "count", script=SDK_PLUGIN)
    write_plugin(tmp_path, "beta", "raw", script=None)
    config = write_config(tmp_path, [job("a1", "count"), job("b1", "raw")])
    async with Service(
        load_setup(config, os.environ),
        environ=os.environ,
        clock=lambda: FIXED_NOW,
        schedule=False,
        http=False,
        supervisor_options=FAST_SUPERVISOR,
    ) as running:
        yield running


class Attacker:
    """A client connected as ``beta``'s user that records the server's refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = Client()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def connect(self, service: Service) -> Client:
        credentials = read_credentials(service.config.state_dir / "nats")
        assert credentials is not None
        await self.nc.connect(
            service.nats_url,
            user=plugin_user_name("beta"),
            password=credentials.plugin("beta"),
            error_cb=self.on_error,
            allow_reconnect=False,
        )
        return self.nc

    async def wait_refusals(self, count: int) -> list[str]:
        async with asyncio.timeout(VIOLATION_WAIT_S):
            while len(self.errors) < count:
                await self.nc.flush()
                await asyncio.sleep(0.01)
        return self.errors


@pytest.fixture
async def attacker() -> AsyncIterator[Attacker]:
    attacker = Attacker()
    yield attacker
    await attacker.nc.close()


async def events_of(service: Service, job_id: str) -> list[str]:
    assert service.nc is not None
    return [event.msg_id async for event in read_events(service.nc, job_id=job_id)]


async def test_a_client_without_credentials_is_refused(service: Service) -> None:
    assert service.nats_url is not None
    with pytest.raises(NatsError) as refused:
        await natsconn.connect(service.nats_url, name="intruder")
    assert "Authorization Violation" in str(refused.value)


async def test_a_plugin_user_cannot_publish_events_nor_use_jetstream_nor_read_other_ticks(
    service: Service, attacker: Attacker
) -> None:
    nc = await attacker.connect(service)
    # The real event of a1's next tick, published first so that JetStream would drop the real
    # one as a duplicate while the cursor advances past it.
    event_id = make_tick_id("a1", FIXED_NOW)
    await nc.publish(
        f"{SUBJECT_ROOT}.count.a1", b"{}", headers={"Nats-Msg-Id": event_msg_id("a1", event_id)}
    )
    await nc.publish("$JS.API.STREAM.DELETE.POLLERD_EVENTS", b"")
    await nc.subscribe(ALPHA_TICK)
    refusals = await attacker.wait_refusals(3)

    outcome = await tick(service, "a1")
    stored_ids = await events_of(service, "a1")

    assert outcome.status == "ok"
    assert stored_ids == [event_msg_id("a1", event_id)]
    assert any(f'publish to "{SUBJECT_ROOT}.count.a1"' in text for text in refusals)
    assert any('publish to "$js.api.stream.delete' in text.lower() for text in refusals)
    assert any(f'subscription to "{ALPHA_TICK}"' in text for text in refusals)


async def test_an_impostor_cannot_answer_another_plugins_ticks(
    service: Service, attacker: Attacker
) -> None:
    nc = await attacker.connect(service)
    forged: list[bytes] = []

    async def answer(msg: Msg) -> None:
        forged.append(msg.data)
        await msg.respond(b'{"jsonrpc":"2.0","id":"x","result":{"next_cursor":"Zm9yZ2Vk"}}')

    await nc.subscribe(ALPHA_TICK, cb=answer)
    await nc.subscribe(ALPHA_TICK, queue="pollerd", cb=answer)
    await attacker.wait_refusals(2)

    outcomes = [await tick(service, "a1") for _ in range(IMPOSTOR_TICKS)]
    state = await stored(service, "a1")

    assert [o.status for o in outcomes] == ["ok"] * IMPOSTOR_TICKS
    assert state.cursor == b"+" * IMPOSTOR_TICKS  # every commit came from the real plugin
    assert forged == []


async def test_an_external_plain_nats_py_plugin_works_with_its_documented_credentials(
    service: Service, spawn: Spawn
) -> None:
    config = service.config.path
    code, out, err = await run_cli(
        "nats-permissions", "--env", "beta", "--json", "-c", str(config), cwd=config.parent
    )
    assert code == 0, err
    env = {"POLLERD_PROTOCOL": "1", "POLLERD_MODE": "long_lived", **json.loads(out)}
    process = await spawn(RAW_PLUGIN, env=env)
    assert await read_line(process) == "ready"

    outcome = await tick(service, "b1")

    assert env["POLLERD_NATS_URL"] == service.nats_url
    assert env["POLLERD_NATS_USER"] == "plugin-beta"
    assert outcome.status == "ok"
    assert (await stored(service, "b1")).cursor == b"\x00"


async def test_a_plugin_added_by_a_reload_gets_a_user_on_the_running_server(
    service: Service, tmp_path: Path
) -> None:
    folder = tmp_path / "plugins" / "gamma"
    folder.mkdir()
    (folder / "plugin.toml").write_text(
        '[plugin]\nid = "gamma"\nversion = "1.0.0"\n\n'
        f'[plugin.entrypoint]\ncommand = "python"\nargs = ["{ECHO_PLUGIN}"]\n\n'
        '[plugin.poller]\nkinds = ["echo", "environ", "hang"]\nlifecycle = "long_lived"\n'
    )
    write_config(tmp_path, [job("a1", "count"), job("b1", "raw"), job("g1", "echo")])

    result = await service.reload()
    outcome = await tick(service, "g1")

    assert result["ok"], result
    assert outcome.status == "ok"
    credentials = read_credentials(service.config.state_dir / "nats")
    assert credentials is not None and "gamma" in credentials.plugins


async def test_state_files_are_private_to_pollerds_user(service: Service) -> None:
    state = service.config.state_dir
    nats_dir = state / "nats"
    files = ["state.db", "pollerd.lock"] + [
        f"nats/{name}"
        for name in ("url", "auth.json", "nats-server.conf", "nats-server.log", "nats-server.pid")
    ]

    modes = {name: stat.S_IMODE((state / name).stat().st_mode) for name in files}

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(nats_dir.stat().st_mode) == 0o700
    assert modes == dict.fromkeys(files, 0o600)


async def test_pollerd_run_refuses_a_public_admin_port_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "pollers.yaml"
    config.write_text(
        json.dumps(
            {"version": 1, "state_dir": "state", "http": "0.0.0.0:0", "plugins": [], "jobs": []}
        )
    )

    code, _, err = await run_cli("run", "-c", str(config), cwd=tmp_path)

    assert code == 1
    assert "http listens on 0.0.0.0 without a token" in err
