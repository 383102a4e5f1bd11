"""One supervised plugin process: command, environment, output, and an end that leaves nothing."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES_DIR, process_exists, wait_for_condition
from pollerd.config.manifest import Entrypoint, Manifest
from pollerd.errors import SupervisorError
from pollerd.supervision.plugin_process import (
    PluginProcess,
    describe_exit,
    plugin_command,
    plugin_environment,
)

SUPERVISED_DIR = FIXTURES_DIR / "supervised"
WAIT_S = 10.0


def make_manifest(
    *, command: str = "python", env: tuple[str, ...] = (), folder: Path = SUPERVISED_DIR
) -> Manifest:
    return Manifest(
        id="echo",
        version="1.2.3",
        path=folder / "plugin.toml",
        kinds=("echo",),
        lifecycle="long_lived",
        entrypoint=Entrypoint(command=command, args=("echo.py",), env=env),
    )


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_an_exit_status_is_described_for_an_operator(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


def test_a_plugin_environment_holds_its_allow_list_and_pollerd_variables_only() -> None:
    env = plugin_environment(
        make_manifest(env=("HTTPS_PROXY", "UNSET_ONE")),
        environ={"HTTPS_PROXY": "http://proxy", "HOME": "/root", "POLLERD_MODE": "x"},
        nats_url="nats://127.0.0.1:4222",
        nats_env={"POLLERD_NATS_TOKEN": "secret"},
        extra_env={"POLLERD_CONFIG_DIR": "/etc/pollerd"},
        parent_pid=42,
    )

    assert env == {
        "HTTPS_PROXY": "http://proxy",
        "POLLERD_CONFIG_DIR": "/etc/pollerd",
        "POLLERD_NATS_TOKEN": "secret",
        "POLLERD_PROTOCOL": "1",
        "POLLERD_MODE": "long_lived",
        "POLLERD_PLUGIN_ID": "echo",
        "POLLERD_PLUGIN_VERSION": "1.2.3",
        "POLLERD_SUBJECT_PREFIX": "pollerd.plugins.echo",
        "POLLERD_NATS_URL": "nats://127.0.0.1:4222",
        "POLLERD_PARENT_PID": "42",
    }


def test_the_python_command_is_the_given_interpreter_and_args_follow() -> None:
    argv = plugin_command(make_manifest(), python="/opt/py/bin/python", search_path="")

    assert argv == ["/opt/py/bin/python", "echo.py"]


def test_a_relative_command_path_is_taken_from_the_plugin_folder(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "plugin"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)

    argv = plugin_command(
        make_manifest(command="bin/plugin", folder=tmp_path), python="py", search_path=""
    )

    assert argv == [str(program), "echo.py"]


def test_a_command_name_is_looked_up_on_the_given_path(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)

    argv = plugin_command(make_manifest(command="tool"), python="py", search_path=str(tmp_path))

    assert argv == [str(tmp_path / "tool"), "echo.py"]


@pytest.mark.parametrize("command", ["no-such-tool", "./missing.sh"])
def test_a_command_that_cannot_be_found_names_the_manifest(command: str, tmp_path: Path) -> None:
    manifest = make_manifest(command=command, folder=tmp_path)

    with pytest.raises(SupervisorError) as caught:
        plugin_command(manifest, python="py", search_path=str(tmp_path))

    assert repr(command) in str(caught.value)
    assert str(manifest.path) in str(caught.value)


# --- with real plugins -------------------------------------------------------------------------


async def test_stopping_a_plugin_that_ignores_sigterm_kills_its_whole_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file = tmp_path / "child.pid"
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    process = await PluginProcess.spawn(
        "stubborn",
        [sys.executable, "stubborn.py", str(pid_file)],
        cwd=SUPERVISED_DIR,
        env={},
    )
    try:
        await wait_for_condition(pid_file.exists, WAIT_S)
        await wait_for_condition(lambda: bool(pid_file.read_text()), WAIT_S)
    finally:
        returncode = await process.stop(grace_s=0.2)

    child_pid = int(pid_file.read_text())
    assert describe_exit(returncode) == "killed by SIGKILL"
    assert not process_exists(process.pid)
    await wait_for_condition(lambda: not process_exists(child_pid), WAIT_S)  # reaped by init
    assert "plugin=stubborn: stubborn on stdout" in caplog.messages
    assert "plugin=stubborn: stubborn on stderr" in caplog.messages
    assert list(process.stderr_tail) == ["stubborn on stderr"]


async def test_stopping_a_plugin_that_already_exited_returns_its_code_and_its_last_words() -> None:
    process = await PluginProcess.spawn(
        "crashy", [sys.executable, "crash_at_start.py"], cwd=SUPERVISED_DIR, env={}
    )
    await process.exited

    returncode = await process.stop(grace_s=0.2)

    assert returncode == 3
    assert len(process.stderr_tail) == 10
    assert process.stderr_tail[-1] == "start-up line 12"


LEAVES_A_CHILD = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
"""


async def test_an_exit_is_seen_at_once_even_when_a_child_keeps_the_pipes_open(
    tmp_path: Path,
) -> None:
    process = await PluginProcess.spawn(
        "leaver", [sys.executable, "-c", LEAVES_A_CHILD], cwd=tmp_path, env={}
    )
    code = await asyncio.wait_for(process.exited, 10.0)  # not when the child's 60 s are up
    returncode = await process.stop(1.0)

    assert code == 0 and returncode == 0
