"""Parsing `pollerd` arguments: global options anywhere, environment defaults, --json."""

from __future__ import annotations

from pathlib import Path

import pytest

from pollerd.ops.cliparser import COMMANDS, build_parser, parse

READ_COMMANDS = (["jobs"], ["plugins"], ["check"], ["history", "inbox"], ["cursor", "get", "inbox"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "-c", "x.yaml", "--json", "jobs"],
        ["jobs", "--log-level", "debug", "-c", "x.yaml", "--json"],
        ["-c", "x.yaml", "jobs", "--log-level", "debug", "-o", "json"],
        ["--log-level", "debug", "jobs", "--config", "x.yaml", "--output", "json"],
    ],
)
def test_global_options_are_accepted_before_or_after_the_command(argv: list[str]) -> None:
    args = parse(argv, {})

    assert (args.command, args.log_level, args.config, args.json) == (
        "jobs",
        "debug",
        Path("x.yaml"),
        True,
    )


def test_an_option_after_the_command_wins_over_the_same_one_before_it() -> None:
    args = parse(["--log-level", "error", "jobs", "--log-level", "debug"], {})

    assert args.log_level == "debug"


def test_the_config_defaults_to_pollerd_config_then_to_the_current_folder() -> None:
    from_env = parse(["jobs"], {"POLLERD_CONFIG": "/etc/pollerd/pollers.yaml"})
    given = parse(["jobs", "-c", "mine.yaml"], {"POLLERD_CONFIG": "/etc/pollerd/pollers.yaml"})
    default = parse(["jobs"], {})

    assert from_env.config == Path("/etc/pollerd/pollers.yaml")
    assert given.config == Path("mine.yaml")
    assert default.config == Path("pollers.yaml")


def test_log_defaults_come_from_the_environment() -> None:
    args = parse(["run"], {"POLLERD_LOG_LEVEL": "debug", "POLLERD_LOG_FORMAT": "json"})
    plain = parse(["run"], {})

    assert (args.log_level, args.log_format) == ("debug", "json")
    assert (plain.log_level, plain.log_format, plain.json) == (None, "text", False)


def test_a_bad_log_level_in_the_environment_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["jobs"], {"POLLERD_LOG_LEVEL": "loud"})

    assert info.value.code == 2
    assert "POLLERD_LOG_LEVEL" in capsys.readouterr().err


@pytest.mark.parametrize("argv", READ_COMMANDS)
def test_every_read_command_takes_json(argv: list[str]) -> None:
    assert parse([*argv, "--json"], {}).json
    assert parse([*argv, "-o", "json"], {}).json
    assert not parse(argv, {}).json


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pollerd import __version__

    with pytest.raises(SystemExit) as info:
        parse(["--version"], {})

    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"pollerd {__version__} ")


def test_the_help_describes_pollerd_and_every_command_has_a_description_and_examples() -> None:
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]

    assert "routes each tick to the plugin" in parser.format_help()
    assert set(subparsers) == set(COMMANDS)
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert COMMANDS[name][1].splitlines()[0] in text, name
        assert f"examples:\n  pollerd {name}" in text or "examples:\n  source" in text, name
