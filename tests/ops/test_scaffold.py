"""`pollerd new-plugin`: the folder it writes passes check, ticks and tests on a fresh config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import free_port
from pollerd.config.manifest import load_manifest
from pollerd.ops.scaffold import (
    ScaffoldError,
    check_names,
    default_kind,
    render_plugin,
    write_plugin,
)
from pollerd.wire import encode_cursor

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 30.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LONGEST_NAME = "a" + "b-" * 31 + "c"  # 64 characters, the longest plugin id


def pollerd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in ``cwd``, as an operator types it."""
    return subprocess.run(
        [sys.executable, "-m", "pollerd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def write_config(folder: Path, kind: str) -> None:
    """A pollers.yaml with one job of ``kind``; the admin port is free, so no service answers."""
    (folder / "pollers.yaml").write_text(
        "version: 1\n"
        "state_dir: state\n"
        "plugins: [plugins]\n"
        f"http: 127.0.0.1:{free_port()}\n"
        "jobs:\n"
        "  - id: counter\n"
        f"    kind: {kind}\n"
        "    schedule: {every: 1h}\n"
        "    config: {label: from-the-test}\n"
    )


# -- names, pure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("demo", None, "demo"),
        ("my-demo", None, "my_demo"),
        ("my_demo2", None, "my_demo2"),
        ("demo", "other_kind", "other_kind"),
        (LONGEST_NAME, None, default_kind(LONGEST_NAME)),
    ],
)
def test_the_kind_defaults_to_the_name_with_underscores(
    name: str, kind: str | None, expected: str
) -> None:
    assert check_names(name, "ephemeral", kind) == expected


@pytest.mark.parametrize(
    ("name", "lifecycle", "kind", "named"),
    [
        ("Demo", "ephemeral", None, "plugin name"),
        ("9demo", "ephemeral", None, "plugin name"),
        ("demo/x", "ephemeral", None, "plugin name"),
        ("", "ephemeral", None, "plugin name"),
        (LONGEST_NAME + "d", "ephemeral", None, "plugin name"),
        ("demo", "forever", None, "lifecycle"),
        ("demo", "ephemeral", "my-kind", "kind"),
        ("demo", "ephemeral", "Kind", "kind"),
        ("demo", "ephemeral", "", "kind"),
    ],
)
def test_bad_names_are_refused_naming_the_rule(
    name: str, lifecycle: str, kind: str | None, named: str
) -> None:
    with pytest.raises(ScaffoldError) as caught:
        check_names(name, lifecycle, kind)

    assert f"invalid {named}" in str(caught.value)


@pytest.mark.parametrize("lifecycle", ["ephemeral", "long_lived"])
def test_the_manifest_is_valid_and_runs_the_handler_file(tmp_path: Path, lifecycle: str) -> None:
    skeleton = render_plugin("my-demo", lifecycle)
    folder = write_plugin(skeleton, tmp_path)

    manifest = load_manifest(folder / "plugin.toml")

    assert (manifest.id, manifest.kinds, manifest.lifecycle) == ("my-demo", ("my_demo",), lifecycle)
    assert manifest.entrypoint is not None
    assert manifest.entrypoint.command == "python"
    assert manifest.entrypoint.args == ("my_demo_plugin.py",)
    assert (folder / "my_demo_plugin.py").is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted(skeleton.files)


def test_a_long_lived_manifest_spells_out_the_default_subject_prefix() -> None:
    text = render_plugin("demo", "long_lived").files["plugin.toml"]

    assert tomllib.loads(text)["plugin"]["poller"]["subject_prefix"] == "pollerd.plugins.demo"


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")

    with pytest.raises(ScaffoldError) as caught:
        write_plugin(render_plugin("demo", "ephemeral"), tmp_path)

    assert "already exists" in str(caught.value)
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left behind


@pytest.mark.skipif(shutil.which("ruff", path=Path(sys.executable).parent) is None, reason="ruff")
@pytest.mark.parametrize("lifecycle", ["ephemeral", "long_lived"])
def test_the_generated_code_passes_the_projects_lint_and_format(lifecycle: str) -> None:
    """`make lint` covers plugins/, where new-plugin puts its folders by default."""
    ruff = str(Path(sys.executable).parent / "ruff")
    skeleton = render_plugin(LONGEST_NAME, lifecycle)
    for file_name, text in skeleton.files.items():
        if not file_name.endswith(".py"):
            continue
        virtual = f"plugins/{LONGEST_NAME}/{file_name}"
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [ruff, *command, "--stdin-filename", virtual, "-"],
                input=text,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )
            assert result.returncode == 0, f"ruff {command} {file_name}:\n{result.stdout}"


# -- the real CLI on a fresh config ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lifecycle", ["ephemeral", "long_lived"])
def test_a_new_plugin_passes_check_ticks_and_its_own_tests(tmp_path: Path, lifecycle: str) -> None:
    created = pollerd(tmp_path, "new-plugin", "demo", "--lifecycle", lifecycle)
    assert created.returncode == EXIT_OK, created.stderr
    assert "plugins/demo/plugin.toml" in created.stdout
    write_config(tmp_path, "demo")

    check = pollerd(tmp_path, "check")
    assert check.returncode == EXIT_OK, check.stdout + check.stderr
    assert f"demo: demo [{lifecycle}]" in check.stdout

    tick = pollerd(tmp_path, "--log-level", "info", "tick", "counter")
    assert tick.returncode == EXIT_OK, tick.stdout + tick.stderr
    outcome = json.loads(tick.stdout)
    assert (outcome["status"], outcome["committed"]) == ("ok", True)
    [event] = outcome["reply"]["events"]
    assert event["data"]["count"] == 1
    assert event["data"]["label"] == "from-the-test"
    if lifecycle == "long_lived":
        assert "plugin demo is running" in tick.stderr  # started under supervision for the tick

    cursor = pollerd(tmp_path, "cursor", "get", "counter")
    assert cursor.stdout.strip() == encode_cursor(b"1")

    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "plugins/demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert own_tests.returncode == EXIT_OK, own_tests.stdout + own_tests.stderr
    assert "4 passed" in own_tests.stdout


def test_the_cli_refuses_to_overwrite_with_exit_code_2(tmp_path: Path) -> None:
    first = pollerd(tmp_path, "new-plugin", "demo", "--lifecycle", "ephemeral", "--dir", "mine")
    handler = tmp_path / "mine" / "demo" / "demo_plugin.py"
    handler.write_text("# my edits\n")

    again = pollerd(tmp_path, "new-plugin", "demo", "--lifecycle", "long_lived", "--dir", "mine")

    assert first.returncode == EXIT_OK
    assert again.returncode == EXIT_USAGE
    assert "already exists" in again.stderr
    assert handler.read_text() == "# my edits\n"


@pytest.mark.parametrize(
    "args",
    [
        ["Bad", "--lifecycle", "ephemeral"],
        ["demo", "--lifecycle", "ephemeral", "--kind", "no-dashes"],
        ["demo", "--lifecycle", "sometimes"],
        ["demo"],
    ],
)
def test_the_cli_refuses_bad_arguments_with_exit_code_2(tmp_path: Path, args: list[str]) -> None:
    result = pollerd(tmp_path, "new-plugin", *args)

    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip()
    assert not (tmp_path / "plugins" / "demo").exists()
