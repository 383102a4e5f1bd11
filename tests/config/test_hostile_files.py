"""Hostile pollers.yaml files given to the real `pollerd` command: an error, never a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMAND_TIMEOUT_S = 60.0
EXIT_FAILED, EXIT_USAGE = 1, 2
HEAD = "version: 1\nstate_dir: state\nplugins: []\nhttp: off\njobs:\n"


def pollerd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pollerd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def deep_job(depth: int) -> str:
    """A job whose config nests ``depth`` mappings (the 101st level opens at line 107)."""
    job = "  - id: deep\n    kind: k\n    schedule: {every: 1h}\n    config:\n"
    return (
        job
        + "".join("  " * (level + 3) + f"k{level}:\n" for level in range(depth))
        + ("  " * (depth + 3) + "v: 1\n")
    )


def billion_laughs() -> str:
    """About 600 bytes that expand to 9**9 values, in a job's config."""
    lines = ["  - id: laughs", "    kind: k", "    schedule: {every: 1h}", "    config:"]
    lines.append('      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for level in range(1, 9):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"      l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", [("check",), ("jobs", "--json")], ids=" ".join)
def test_3000_deep_nesting_is_a_file_line_error_not_a_recursion_error(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "pollers.yaml").write_text(HEAD + deep_job(3000))

    result = pollerd(*command, "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode in (EXIT_FAILED, EXIT_USAGE)
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert "pollers.yaml:107: nested deeper than 100 levels" in result.stderr, result.stderr


def test_run_refuses_a_3000_deep_file_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "pollers.yaml").write_text(HEAD + deep_job(3000))

    result = pollerd("run", "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert "pollers.yaml:107: nested deeper than 100 levels" in result.stderr, result.stderr


def test_check_refuses_an_alias_bomb_at_once(tmp_path: Path) -> None:
    (tmp_path / "pollers.yaml").write_text(HEAD + billion_laughs())

    result = pollerd("check", "-c", "pollers.yaml", cwd=tmp_path)

    assert result.returncode == EXIT_FAILED
    assert "pollers.yaml:15: the alias *l4 makes the document expand" in result.stderr
    assert "alias bomb" in result.stderr
