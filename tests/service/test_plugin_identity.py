"""Plugins in another language, and plugins run as another user (when pollerd runs as root).

The shell plugin follows the protocol page alone: one request line on stdin, one reply line on
stdout; it reports the user id it runs as in its cursor and event.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollerd.config.setup import load_setup
from pollerd.errors import SupervisorError
from pollerd.service.core import Service
from pollerd.supervision.lifeline import with_parent_death_signal
from pollerd.supervision.plugin_process import plugin_identity
from service.test_longlived import job, stored, tick

pytestmark = pytest.mark.nats

NOBODY = "nobody"
SHELL_PLUGIN = r"""#!/bin/sh
read -r line
tick_id=$(printf '%s' "$line" | sed -n 's/.*"tick_id": *"\([^"]*\)".*/\1/p')
uid=$(id -u)
cursor=$(printf 'uid-%s' "$uid" | base64 | tr '+/' '-_' | tr -d '=\n')
event='{"id":"'"$tick_id"'","data":{"uid":'"$uid"'}}'
result='{"next_cursor":"'"$cursor"'","events":['"$event"']}'
printf '{"jsonrpc":"2.0","id":"%s","result":%s}\n' "$tick_id" "$result"
"""
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def nobody_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(NOBODY)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="pollerd-plugins-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def write_shell_plugin(plugins: Path, identity: str = "") -> None:
    folder = plugins / "shell"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    script = folder / "plugin.sh"
    script.write_text(SHELL_PLUGIN)
    script.chmod(0o755)
    (folder / "plugin.toml").write_text(
        '[plugin]\nid = "shell"\nversion = "1.0.0"\n\n'
        f'[plugin.entrypoint]\ncommand = "./plugin.sh"\n{identity}\n'
        '[plugin.poller]\nkinds = ["shell"]\nlifecycle = "ephemeral"\n'
    )


def write_config(root: Path, plugins: Path) -> Path:
    config = {
        "version": 1,
        "state_dir": str(root / "state"),
        "plugins": [str(plugins)],
        "http": "off",
        "jobs": [job("sh1", "shell")],
    }
    path = root / "pollers.yaml"
    path.write_text(json.dumps(config))
    return path


async def run_one_tick(config: Path) -> bytes | None:
    async with Service(
        load_setup(config, os.environ), environ=os.environ, schedule=False, http=False
    ) as service:
        outcome = await tick(service, "sh1")
        assert outcome.status == "ok", outcome
        return (await stored(service, "sh1")).cursor


async def test_a_shell_plugin_written_against_the_protocol_page_ticks(tmp_path: Path) -> None:
    write_shell_plugin(tmp_path / "plugins")

    cursor = await run_one_tick(write_config(tmp_path, tmp_path / "plugins"))

    assert cursor == f"uid-{os.geteuid()}".encode()


@as_root
async def test_an_ephemeral_plugin_with_a_user_runs_as_that_user(
    tmp_path: Path, open_folder: Path
) -> None:
    write_shell_plugin(open_folder, f'user = "{NOBODY}"\n')

    cursor = await run_one_tick(write_config(tmp_path, open_folder))

    assert cursor == f"uid-{nobody_ids()[0]}".encode()


@as_root
def test_a_supervised_plugin_with_a_user_is_started_as_that_user_with_no_extra_groups() -> None:
    uid, gid = nobody_ids()
    argv = with_parent_death_signal(["/bin/sh", "-c", "id -u; id -G"], identity=(uid, gid))

    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/")

    assert out.stdout.split() == [str(uid), str(gid)]


def test_a_user_without_root_is_refused_with_a_reason(tmp_path: Path) -> None:
    from pollerd.config.manifest import Entrypoint, Manifest

    manifest = Manifest(
        id="p",
        version="1.0.0",
        path=tmp_path / "plugin.toml",
        kinds=("p",),
        lifecycle="long_lived",
        entrypoint=Entrypoint("python", user=NOBODY),
    )
    with pytest.raises(SupervisorError) as refused:
        plugin_identity(manifest, euid=1000)
    assert "pollerd is not root" in str(refused.value)
