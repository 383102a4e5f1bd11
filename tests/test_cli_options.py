"""Global options, --json on every read command, POLLERD_CONFIG and completion, as run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pollerd import __version__
from system_tools import require_tool
from test_cli import COMMAND_TIMEOUT_S, EXIT_FAILED, EXIT_OK, write_mixed_config

SHELL_TIMEOUT_S = 30.0


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pollerd", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def test_version_prints_the_version(tmp_path: Path) -> None:
    done = run("--version", cwd=tmp_path)

    assert done.returncode == EXIT_OK
    assert done.stdout.startswith(f"pollerd {__version__} (Python ")


def test_log_level_after_the_command_is_accepted_and_applies(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)

    done = run("jobs", "--log-level", "debug", cwd=tmp_path)

    assert done.returncode == EXIT_OK, done.stderr
    assert " DEBUG " in done.stderr
    assert "good" in done.stdout


def test_pollerd_config_names_the_config_from_any_folder(tmp_path: Path) -> None:
    config = write_mixed_config(tmp_path / "etc")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = run("jobs", "--json", cwd=elsewhere, env={"POLLERD_CONFIG": str(config)})

    assert done.returncode == EXIT_OK, done.stderr
    assert {row["id"] for row in json.loads(done.stdout)} >= {"good", "failing"}


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["jobs"], EXIT_OK),
        (["plugins"], EXIT_OK),
        (["check"], EXIT_FAILED),  # the mixed config has two broken jobs
        (["cursor", "get", "good"], EXIT_OK),
    ],
)
def test_every_read_command_prints_json_with_json_or_o_json(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    write_mixed_config(tmp_path)

    long = run(*argv, "--json", cwd=tmp_path)
    short = run("-o", "json", *argv, cwd=tmp_path)

    assert (long.returncode, short.returncode) == (code, code), long.stderr
    assert timeless(json.loads(long.stdout)) == timeless(json.loads(short.stdout))


def timeless(value: Any) -> Any:
    """``value`` without the next-run times (they move between two runs of a command)."""
    if isinstance(value, list):
        return [timeless(item) for item in value]
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not k.startswith("next_run")}
    return value


def test_check_json_lists_the_broken_jobs_with_their_lines(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)

    report = json.loads(run("check", "--json", cwd=tmp_path).stdout)

    assert report["ok"] is False
    assert {b["id"] for b in report["broken"]} == {"unknown", "badcron"}
    assert report["jobs"] == ["good", "failing"]


def test_pause_json_says_the_state_and_who_applied_it(tmp_path: Path) -> None:
    write_mixed_config(tmp_path)

    done = run("pause", "good", "--json", cwd=tmp_path)

    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout) == {
        "job_id": "good",
        "state": "paused",
        "applied_by_service": False,
    }


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    script = run("completion", "bash", cwd=tmp_path).stdout
    (tmp_path / "pollerd.bash").write_text(script)
    probe = (
        "source pollerd.bash\n"
        'COMP_WORDS=(pollerd jo); COMP_CWORD=1; _shtab_pollerd; echo "${COMPREPLY[*]}"\n'
        'COMP_WORDS=(pollerd jobs --log-l); COMP_CWORD=2; _shtab_pollerd; echo "${COMPREPLY[*]}"\n'
    )

    done = subprocess.run(
        ["bash", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["jobs", "--log-level"]


def test_zsh_completion_is_registered_for_pollerd_by_compinit(tmp_path: Path) -> None:
    zsh = require_tool("zsh")
    (tmp_path / "_pollerd").write_text(run("completion", "zsh", cwd=tmp_path).stdout)
    probe = (
        f"fpath=({tmp_path} $fpath); autoload -U compinit; compinit -u -d {tmp_path}/.zcompdump;"
        " print -r -- ${_comps[pollerd]}"
    )

    syntax = subprocess.run([zsh, "-n", "_pollerd"], cwd=tmp_path, timeout=SHELL_TIMEOUT_S)
    done = subprocess.run(
        [zsh, "-f", "-c", probe],
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        check=False,
    )

    assert syntax.returncode == 0
    assert done.stdout.strip() == "_pollerd", done.stderr
