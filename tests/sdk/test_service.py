"""The SDK's long-lived mode: a nats.micro service per plugin that never serialises ticks."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client

from conftest import (
    NATS_PLUGINS_DIR,
    Spawn,
    free_port,
    long_lived_env,
    make_tick_request,
    process_exists,
    wait_process_gone,
    wait_until_served,
)
from pollerd import wire
from pollerd.errors import (
    ErrorClass,
    NatsError,
    PluginReplyError,
    PluginUnavailableError,
    TickTimeoutError,
)
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.sdk import Plugin, Tick, TickResult
from pollerd.sdk._service import (
    DEFAULT_VERSION,
    ServiceSettings,
    TickService,
    serve,
    service_name,
    watched_parent,
)
from pollerd.transports.nats import NatsTransport

PREFIX = "pollerd.plugins.in-process"
PLUGIN_ID = "in-process"
BOUND_S = 15.0
PROBE_TIMEOUT_S = 0.5

Handler = Callable[[Tick], Awaitable[TickResult]]


def make_plugin(handler: Handler, *, max_concurrency: int = 32) -> Plugin:
    plugin = Plugin(PLUGIN_ID, max_concurrency=max_concurrency)
    plugin.poller("alpha", "beta")(handler)
    return plugin


def make_transport(nc: Client) -> NatsTransport:
    return NatsTransport(nc, plugin_id=PLUGIN_ID, subject_prefix=PREFIX)


def alpha_tick(job_id: str = "inbox") -> wire.TickRequest:
    return make_tick_request(kind="alpha", job_id=job_id)


async def answer_ok(tick: Tick) -> TickResult:
    return TickResult(next_cursor=b"ok")


# --- in process: the service on a real server -----------------------------------------------


@pytest.mark.nats
async def test_twenty_concurrent_ticks_are_all_in_the_handler_at_once(nats_client: Client) -> None:
    total = 20
    entered = 0
    all_in = asyncio.Event()

    async def wait_for_everyone(tick: Tick) -> TickResult:
        nonlocal entered
        entered += 1
        if entered == total:
            all_in.set()
        await all_in.wait()
        return TickResult(next_cursor=tick.job_id.encode())

    transport = make_transport(nats_client)
    async with TickService(make_plugin(wait_for_everyone), nats_client, subject_prefix=PREFIX):
        replies = await asyncio.gather(
            *(transport.send(alpha_tick(f"job{i}"), BOUND_S) for i in range(total))
        )
    assert [r.next_cursor for r in replies] == [f"job{i}".encode() for i in range(total)]
    assert entered == total


@pytest.mark.nats
async def test_ticks_in_the_handler_never_exceed_max_concurrency(nats_client: Client) -> None:
    running = peak = 0
    two_in = asyncio.Event()

    async def hold_until_two(tick: Tick) -> TickResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_in.set()
        await two_in.wait()
        running -= 1
        return TickResult()

    transport = make_transport(nats_client)
    plugin = make_plugin(hold_until_two, max_concurrency=2)
    async with TickService(plugin, nats_client, subject_prefix=PREFIX):
        replies = await asyncio.gather(
            *(transport.send(alpha_tick(f"j{i}"), BOUND_S) for i in range(6))
        )
    assert len(replies) == 6
    assert peak == 2


@pytest.mark.nats
async def test_ping_and_info_describe_the_plugin_and_its_kinds(nats_client: Client) -> None:
    async with TickService(
        make_plugin(answer_ok), nats_client, subject_prefix=PREFIX, version="1.2.3"
    ):
        ping = json.loads(await wait_until_served(nats_client, f"$SRV.PING.{PLUGIN_ID}"))
        info_msg = await nats_client.request(f"$SRV.INFO.{PLUGIN_ID}", b"", timeout=5)
    info = json.loads(info_msg.data)
    assert ping["name"] == PLUGIN_ID
    assert info["version"] == "1.2.3"
    assert info["metadata"] == {"plugin": PLUGIN_ID, "kinds": "alpha,beta", "protocol": "1"}
    assert [(e["name"], e["subject"], e["queue_group"]) for e in info["endpoints"]] == [
        ("tick", f"{PREFIX}.tick", "pollerd")
    ]


class RaisingPlugin:
    """Breaks the SDK's promise that ``handle`` never raises."""

    plugin_id = PLUGIN_ID
    kinds = ("alpha",)
    max_concurrency = 1

    async def handle(self, frame: bytes, *, waited_s: float = 0.0) -> bytes:
        raise RuntimeError("disk on fire")


@pytest.mark.nats
async def test_a_handle_that_raises_still_answers_a_transient_error(nats_client: Client) -> None:
    async with TickService(RaisingPlugin(), nats_client, subject_prefix=PREFIX):
        with pytest.raises(PluginReplyError) as failed:
            await make_transport(nats_client).send(alpha_tick(), BOUND_S)
    assert failed.value.error_class is ErrorClass.TRANSIENT
    assert "disk on fire" in str(failed.value)


@pytest.mark.nats
async def test_a_stopped_service_takes_no_more_ticks(nats_client: Client) -> None:
    transport = make_transport(nats_client)
    async with TickService(make_plugin(answer_ok), nats_client, subject_prefix=PREFIX):
        served = await transport.send(alpha_tick(), BOUND_S)
    with pytest.raises(PluginUnavailableError):
        await transport.send(alpha_tick(), BOUND_S)
    assert served.next_cursor == b"ok"


@pytest.mark.nats
async def test_serve_runs_until_the_watched_process_is_gone(
    nats_server: EmbeddedNatsServer, nats_client: Client, python: str
) -> None:
    watched = await asyncio.create_subprocess_exec(python, "-c", "import time; time.sleep(60)")
    environ = {
        **long_lived_env(nats_server.url, plugin_id=PLUGIN_ID, subject_prefix=PREFIX),
        "POLLERD_PARENT_PID": str(watched.pid),
        "POLLERD_PLUGIN_VERSION": "0.3.0",
    }
    serving = asyncio.create_task(serve(make_plugin(answer_ok), environ, parent_poll_s=0.02))
    try:
        info = json.loads(await wait_until_served(nats_client, f"$SRV.INFO.{PLUGIN_ID}"))
        reply = await make_transport(nats_client).send(alpha_tick(), BOUND_S)
    finally:
        watched.kill()
        await watched.wait()
    await asyncio.wait_for(serving, BOUND_S)
    assert info["version"] == "0.3.0"
    assert reply.next_cursor == b"ok"
    assert serving.done()


async def test_serve_fails_at_once_when_nats_is_unreachable() -> None:
    environ = {"POLLERD_NATS_URL": f"nats://127.0.0.1:{free_port()}", "POLLERD_PARENT_PID": "0"}
    with pytest.raises(NatsError) as unreachable:
        await asyncio.wait_for(serve(make_plugin(answer_ok), environ), BOUND_S)
    assert "cannot connect to NATS" in str(unreachable.value)


# --- as a process: the SDK plugin fixture run the way pollerd runs it ------------------------


@pytest.mark.nats
async def test_sigterm_lets_the_tick_in_flight_finish_then_exits_zero(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn
) -> None:
    prefix = "pollerd.plugins.echo"
    plugin = await spawn(
        NATS_PLUGINS_DIR / "sdk_plugin.py",
        env=long_lived_env(nats_server.url, plugin_id="echo", subject_prefix=prefix),
    )
    await wait_until_served(nats_client, "$SRV.PING.echo", plugin)
    transport = NatsTransport(nats_client, plugin_id="echo", subject_prefix=prefix)
    held = asyncio.create_task(
        transport.send(make_tick_request(cursor=b"a", config={"hold": True}), BOUND_S)
    )
    assert plugin.stdout is not None
    started = await asyncio.wait_for(plugin.stdout.readline(), BOUND_S)
    plugin.send_signal(signal.SIGTERM)
    refused = await _until_refused(transport)
    plugin.send_signal(signal.SIGUSR1)  # lets the held tick finish
    reply = await asyncio.wait_for(held, BOUND_S)
    exit_code = await asyncio.wait_for(plugin.wait(), BOUND_S)
    assert started.startswith(b"started inbox@")
    assert isinstance(refused, PluginUnavailableError)
    assert reply.next_cursor == b"a+"
    assert exit_code == 0


async def _until_refused(transport: NatsTransport) -> PluginUnavailableError:
    """Send ticks until the plugin stops taking them (it was told to stop).

    A probe that reached the plugin just as it unsubscribed gets no reply: it times out.
    """
    async with asyncio.timeout(BOUND_S):
        while True:
            try:
                await transport.send(make_tick_request(job_id="probe"), PROBE_TIMEOUT_S)
            except PluginUnavailableError as exc:
                return exc
            except TickTimeoutError:
                continue
            await asyncio.sleep(0.02)


@pytest.mark.nats
async def test_the_plugin_exits_when_its_parent_dies(
    nats_server: EmbeddedNatsServer, nats_client: Client, spawn: Spawn, python: str
) -> None:
    parent = await spawn(
        NATS_PLUGINS_DIR / "orphaning_parent.py",
        python,
        str(NATS_PLUGINS_DIR / "sdk_plugin.py"),
        env=long_lived_env(
            nats_server.url, plugin_id="orphan", subject_prefix="pollerd.plugins.orphan"
        ),
    )
    assert parent.stdout is not None
    plugin_pid = int(await asyncio.wait_for(parent.stdout.readline(), BOUND_S))
    await wait_until_served(nats_client, "$SRV.PING.orphan")
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    await wait_process_gone(plugin_pid)
    assert not process_exists(plugin_pid)


# --- pure: settings from the environment -----------------------------------------------------


def test_settings_come_from_the_pollerd_environment() -> None:
    environ = {
        "POLLERD_NATS_URL": "nats://127.0.0.1:4222",
        "POLLERD_NATS_TOKEN": "tok",
        "POLLERD_NATS_USER": "u",
        "POLLERD_NATS_PASSWORD": "p",
        "POLLERD_NATS_CREDS": "/etc/plugin.creds",
        "POLLERD_NATS_TLS_CA": "/etc/ca.pem",
        "POLLERD_SUBJECT_PREFIX": "acme.feeds",
        "POLLERD_PLUGIN_VERSION": "2.0.1",
        "POLLERD_PARENT_PID": "4242",
    }
    settings = ServiceSettings.from_environ(environ, plugin_id="feeds", ppid=99)
    assert settings == ServiceSettings(
        nats_url="nats://127.0.0.1:4222",
        subject_prefix="acme.feeds",
        version="2.0.1",
        connect_options={
            "token": "tok",
            "user": "u",
            "password": "p",
            "creds": "/etc/plugin.creds",
            "tls_ca": "/etc/ca.pem",
        },
        parent_pid=4242,
    )


def test_settings_default_the_prefix_version_and_parent() -> None:
    settings = ServiceSettings.from_environ(
        {"POLLERD_NATS_URL": "nats://h:1", "POLLERD_PLUGIN_VERSION": "not-semver"},
        plugin_id="feeds",
        ppid=77,
    )
    assert (settings.subject_prefix, settings.version, settings.parent_pid) == (
        "pollerd.plugins.feeds",
        DEFAULT_VERSION,
        77,
    )
    assert settings.connect_options == {}


def test_settings_without_a_nats_url_say_which_variable_is_missing() -> None:
    with pytest.raises(NatsError) as missing:
        ServiceSettings.from_environ({}, plugin_id="feeds", ppid=1)
    assert "POLLERD_NATS_URL" in str(missing.value)


@pytest.mark.parametrize(
    ("environ", "ppid", "expected"),
    [
        ({}, 500, 500),
        ({}, 1, None),
        ({"POLLERD_PARENT_PID": "321"}, 500, 321),
        ({"POLLERD_PARENT_PID": "0"}, 500, None),
        ({"POLLERD_PARENT_PID": " "}, 500, 500),
    ],
)
def test_the_watched_parent_follows_the_environment(
    environ: dict[str, str], ppid: int, expected: int | None
) -> None:
    assert watched_parent(environ, ppid) == expected


def test_a_parent_pid_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(NatsError) as refused:
        watched_parent({"POLLERD_PARENT_PID": "me"}, 5)
    assert "POLLERD_PARENT_PID" in str(refused.value)


@pytest.mark.parametrize(
    ("plugin_id", "name"),
    [("feeds", "feeds"), ("dir-watch_2", "dir-watch_2"), ("a.b c", "a_b_c"), ("", "plugin")],
)
def test_service_names_keep_only_the_allowed_characters(plugin_id: str, name: str) -> None:
    assert service_name(plugin_id) == name


def test_importing_the_sdk_does_not_import_nats(python: str) -> None:
    probe = (
        "import sys, pollerd.sdk; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nats'))"
    )
    completed = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
