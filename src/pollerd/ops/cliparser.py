"""The `pollerd` command line: global options, subcommands with descriptions and examples."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pollerd import __version__

PROG = "pollerd"
DEFAULT_CONFIG = "pollers.yaml"
CONFIG_VARIABLE = "POLLERD_CONFIG"
LOG_LEVEL_VARIABLE = "POLLERD_LOG_LEVEL"
LOG_FORMAT_VARIABLE = "POLLERD_LOG_FORMAT"
LOG_LEVELS = ("debug", "info", "warning", "error")
OUTPUTS = ("text", "json")
COMPLETION_SHELLS = ("bash", "zsh")
SCHEMAS = ("pollers", "plugin")
DEFAULT_HISTORY = 20

DESCRIPTION = """\
Runs poller jobs on a schedule and routes each tick to the plugin that owns the job's kind.

pollerd reads pollers.yaml (the jobs), finds the plugins that declare poller kinds in their
plugin.toml, and runs each job's ticks through its plugin: over NATS for long-lived plugins, as a
one-shot process for ephemeral ones. Events the plugins find are published to NATS JetStream, and
a job's cursor advances only once they are acknowledged.
"""

EPILOG = f"""\
global options (-c, --log-level, --log-format, --json/-o) go before or after the command.
The config is -c, else ${CONFIG_VARIABLE}, else ./{DEFAULT_CONFIG}. ${LOG_LEVEL_VARIABLE} and
${LOG_FORMAT_VARIABLE} set the log defaults.

examples:
  pollerd run                          run the service on ./pollers.yaml
  pollerd check -c /etc/pollerd/pollers.yaml
  pollerd jobs --json                  every job with its state, as JSON
  pollerd history inbox -n 5           the last five ticks of job inbox
  pollerd tick inbox --dry-run         one tick now; publish and commit nothing
  source <(pollerd completion bash)    tab completion in this shell

exit codes: 0 ok, 1 failed check or job error, 2 usage error or unreadable config.
"""

# name → (one-line help, description, examples)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "run": (
        "run the service",
        "Run the service: schedule the jobs, supervise the plugins, serve the admin HTTP API.\n"
        "SIGTERM or SIGINT drain running ticks and stop; SIGHUP reloads the config.",
        ("pollerd run", "pollerd run -c /etc/pollerd/pollers.yaml --log-format json"),
    ),
    "check": (
        "validate the config, the plugin manifests and the kinds",
        "Validate pollers.yaml, every plugin.toml and who owns which kind, without running\n"
        "anything. Exits 0 when everything is valid, 1 when something is not (each problem\n"
        "names its file, line and field).",
        ("pollerd check", "pollerd check --json | jq .broken"),
    ),
    "jobs": (
        "list jobs with their state, next runs and cursor",
        "List every job: kind, plugin, state (active, paused, broken, disabled), schedule, next\n"
        "runs, last result, consecutive errors and cursor size. Asks the running service for\n"
        "live next runs when one answers.",
        ("pollerd jobs", "pollerd jobs -o json | jq '.[] | select(.state != \"active\")'"),
    ),
    "plugins": (
        "list plugins with their kinds and state",
        "List every plugin: kinds, lifecycle, state (live from the running service) and restarts.",
        ("pollerd plugins", "pollerd plugins --json"),
    ),
    "history": (
        "show the recent ticks of a job",
        "Show the last ticks of a job, newest first: slot, status, attempts, duration, events,\n"
        "error and which replica ran it. pollerd keeps the last `history` ticks of each job\n"
        "(pollers.yaml, default 50).",
        ("pollerd history inbox", "pollerd history inbox -n 5 --json"),
    ),
    "tick": (
        "run one tick of a job now, through the normal path",
        "Run one tick of a job now through the normal path (plugin, events, commit) and print\n"
        "its outcome as JSON. The running service runs it when one answers. Exits 1 when the\n"
        "tick failed.",
        ("pollerd tick inbox", "pollerd tick inbox --dry-run"),
    ),
    "pause": (
        "pause a job",
        "Pause a job: its slots are skipped until `pollerd resume`. Survives restarts.",
        ("pollerd pause inbox --reason 'disk maintenance'",),
    ),
    "resume": (
        "resume a paused job (also closes its breaker)",
        "Resume a paused job; also closes its circuit breaker and clears its error count.",
        ("pollerd resume inbox",),
    ),
    "cursor": (
        "read or change a job's cursor",
        "Read (get), replace (set VALUE, base64url) or clear (reset) a job's cursor.",
        ("pollerd cursor get inbox", "pollerd cursor set inbox aGVsbG8", "pollerd cursor reset x"),
    ),
    "reload": (
        "make the running service reload pollers.yaml",
        "Ask the running service to reload pollers.yaml and the plugin manifests (as SIGHUP).\n"
        "An invalid config is refused and the old one keeps running.",
        ("pollerd reload",),
    ),
    "events": (
        "read the events stream",
        "Print the events in the JetStream stream as JSON lines, optionally of one job, and\n"
        "with --follow keep printing new ones.",
        ("pollerd events --job inbox", "pollerd events --follow"),
    ),
    "store": (
        "copy an existing SQLite state into the configured store",
        "`store copy --from OLD/state.db` copies every job's cursor, state and recent ticks\n"
        "from a SQLite state file into the store of the config (store: nats-kv), before the\n"
        "replicas start. Refused while a replica leads; jobs already in the target are kept\n"
        "unless --overwrite.",
        ("pollerd store copy --from .pollerd/state.db -c replicas.yaml",),
    ),
    "schema": (
        "print the JSON Schema of pollers.yaml or plugin.toml",
        "Print a JSON Schema that accepts what pollerd accepts (durations as strings such as\n"
        "10s), for editors and the YAML language server.",
        ("pollerd schema pollers > pollers.schema.json", "pollerd schema plugin"),
    ),
    "nats-permissions": (
        "print the NATS permissions of pollerd and of each plugin",
        "Print the users pollerd and each long-lived plugin need on an external NATS server,\n"
        "with the least permissions that work (an `authorization` block to adapt). With\n"
        "--env PLUGIN, print what an external plugin sets to reach the embedded server.",
        ("pollerd nats-permissions", "pollerd nats-permissions --env feeds > feeds.env"),
    ),
    "new-plugin": (
        "write a working plugin folder to start from",
        "Write a plugin folder (plugin.toml and a handler) that runs as is.",
        ("pollerd new-plugin weather --lifecycle ephemeral",),
    ),
    "completion": (
        "print a shell completion script (bash or zsh)",
        "Print a completion script for bash or zsh.",
        (
            "source <(pollerd completion bash)",
            "pollerd completion zsh > ~/.zfunc/_pollerd   # with fpath+=(~/.zfunc) in .zshrc",
        ),
    ),
}


def version_text() -> str:
    return f"{PROG} {__version__} (Python {platform.python_version()})"


def _global_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (defaults are filled in later)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options")
    config = group.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"pollers.yaml (default: ${CONFIG_VARIABLE}, else ./{DEFAULT_CONFIG})",
    )
    config.complete = {"bash": "_shtab_compgen_files", "zsh": "_files"}  # type: ignore[attr-defined]
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="default: info for `run`, warning for the other commands",
    )
    group.add_argument(
        "--log-format", choices=OUTPUTS, default=argparse.SUPPRESS, help="default: text"
    )
    group.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=argparse.SUPPRESS,
        help="text for people (default) or json for programs",
    )
    group.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS,
        help="same as -o json",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {
        name: commands.add_parser(
            name,
            help=help_text,
            description=description,
            epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, (help_text, description, examples) in COMMANDS.items()
    }
    _add_arguments(subs)
    return parser


def _add_arguments(subs: Mapping[str, argparse.ArgumentParser]) -> None:
    subs["history"].add_argument("job", help="the job id")
    subs["history"].add_argument(
        "-n",
        "--limit",
        type=_positive,
        default=DEFAULT_HISTORY,
        help=f"how many ticks, newest first (default: {DEFAULT_HISTORY})",
    )
    subs["tick"].add_argument("job", help="the job id")
    subs["tick"].add_argument("--dry-run", action="store_true", help="do not publish or commit")
    subs["pause"].add_argument("job", help="the job id")
    subs["pause"].add_argument("--reason", default=None, help="shown by `pollerd jobs`")
    subs["resume"].add_argument("job", help="the job id")
    subs["cursor"].add_argument("action", choices=["get", "set", "reset"])
    subs["cursor"].add_argument("job", help="the job id")
    subs["cursor"].add_argument("value", nargs="?", help="base64url, for set")
    subs["events"].add_argument("--job", default=None, help="only this job's events")
    subs["events"].add_argument("--follow", action="store_true", help="wait for new events")
    subs["nats-permissions"].add_argument(
        "--env", metavar="PLUGIN", default=None, help="an external plugin's environment"
    )
    new_plugin = subs["new-plugin"]
    new_plugin.add_argument("name", help="the plugin id, also the folder name")
    new_plugin.add_argument("--lifecycle", required=True, choices=["ephemeral", "long_lived"])
    new_plugin.add_argument("--kind", default=None, help="the poller kind (default: the name)")
    new_plugin.add_argument(
        "--dir", default=Path("plugins"), type=Path, help="the plugins folder (default: plugins)"
    )
    subs["store"].add_argument("action", choices=["copy"])
    subs["store"].add_argument(
        "--from", dest="source", type=Path, required=True, help="the SQLite state.db to copy"
    )
    subs["store"].add_argument(
        "--overwrite", action="store_true", help="replace jobs the target already holds"
    )
    subs["completion"].add_argument("shell", choices=COMPLETION_SHELLS)
    subs["schema"].add_argument("which", nargs="?", choices=SCHEMAS, default="pollers")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse ``argv``, then fill the global options not given from ``environ`` or defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = {
        "config": Path(environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG),
        "log_level": environ.get(LOG_LEVEL_VARIABLE) or None,
        "log_format": environ.get(LOG_FORMAT_VARIABLE) or "text",
        "output": "text",
    }
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.log_level not in (None, *LOG_LEVELS):
        parser.error(f"${LOG_LEVEL_VARIABLE}: {args.log_level!r} is not one of {LOG_LEVELS}")
    if args.log_format not in OUTPUTS:
        parser.error(f"${LOG_FORMAT_VARIABLE}: {args.log_format!r} is not one of {OUTPUTS}")
    args.json = args.output == "json"
    return args
