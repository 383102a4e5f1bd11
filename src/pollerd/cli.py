"""The `pollerd` command: parses arguments, loads the config, calls one function."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pollerd.errors import ConfigError, ManifestError, PollerdError
from pollerd.ops import admin, views
from pollerd.ops.logs import setup_logging

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # a failed check or a failed tick
EXIT_USAGE = 2  # bad arguments or an unreadable / invalid config

DEFAULT_CONFIG = "pollers.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pollerd", description=__doc__)
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info for `run`, warning for the other commands",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("-c", "--config", default=DEFAULT_CONFIG, type=Path, help="pollers.yaml")
        return sub

    command("run", "run the service")
    command("check", "validate the config, the plugin manifests and the kinds")
    jobs = command("jobs", "list jobs with their state, next runs and cursor")
    jobs.add_argument("--json", action="store_true")
    plugins = command("plugins", "list plugins with their kinds and state")
    plugins.add_argument("--json", action="store_true")
    tick = command("tick", "run one tick of a job now, through the normal path")
    tick.add_argument("job")
    tick.add_argument("--dry-run", action="store_true", help="do not publish or commit")
    pause = command("pause", "pause a job")
    pause.add_argument("job")
    pause.add_argument("--reason", default=None)
    resume = command("resume", "resume a paused job (also closes its breaker)")
    resume.add_argument("job")
    cursor = command("cursor", "read or change a job's cursor")
    cursor.add_argument("action", choices=["get", "set", "reset"])
    cursor.add_argument("job")
    cursor.add_argument("value", nargs="?", help="base64url, for set")
    command("reload", "make the running service reload pollers.yaml")
    events = command("events", "read the events stream")
    events.add_argument("--job", default=None)
    events.add_argument("--follow", action="store_true")
    new_plugin = commands.add_parser(
        "new-plugin", help="write a working plugin folder to start from"
    )
    new_plugin.add_argument("name", help="the plugin id, also the folder name")
    new_plugin.add_argument("--lifecycle", required=True, choices=["ephemeral", "long_lived"])
    new_plugin.add_argument("--kind", default=None, help="the poller kind (default: the name)")
    new_plugin.add_argument(
        "--dir", default=Path("plugins"), type=Path, help="the plugins folder (default: plugins)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("info" if args.command == "run" else "warning")
    setup_logging(level, args.log_format)
    handler = _HANDLERS[args.command]
    try:
        return handler(args)
    except (ConfigError, ManifestError) as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PollerdError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `pollerd jobs | head`: the reader left, nothing to report
        sys.stderr.close()
        return EXIT_OK


def _unreadable(path: Path) -> bool:
    return not path.is_file() or not os.access(path, os.R_OK)


def _load(args: argparse.Namespace) -> Any:
    from pollerd.config.setup import load_setup

    return load_setup(args.config, os.environ)  # messages name the file as the operator gave it


def _run(args: argparse.Namespace) -> int:
    from pollerd.service.runtime import run_service

    setup = _load(args)
    asyncio.run(run_service(setup, os.environ))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    try:
        setup = _load(args)
    except (ConfigError, ManifestError) as exc:
        # DESIGN §8: check exits 0 or 1; what it found wrong is its answer, not a usage error.
        if isinstance(exc, ConfigError) and _unreadable(args.config):
            raise
        print(f"pollerd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in admin.check_summary(setup):
        print(line)
    return EXIT_FAILED if setup.broken else EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    try:
        setup = _load(args)
    except (ConfigError, ManifestError) as exc:
        return _jobs_of_running_service(args, exc)
    rows = asyncio.run(admin.collect_jobs(setup))
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(views.format_jobs(rows))
    return EXIT_OK


def _jobs_of_running_service(args: argparse.Namespace, error: PollerdError) -> int:
    """The config on disk is invalid: say so, and show what a running service still runs."""
    from pollerd.ops import lastknown

    print(f"pollerd: {error}", file=sys.stderr)
    address = lastknown.admin_address(args.config.resolve(), os.environ)
    running = asyncio.run(lastknown.query_running_service(address))
    if running is None:
        if address is not None:
            where = f"{address[0]}:{address[1]}"
            print(f"pollerd: no running service answers on {where}", file=sys.stderr)
    elif args.json:
        print(lastknown.keeps_running_line(running), file=sys.stderr)
        print(json.dumps(running.jobs, indent=2))
    else:
        print(lastknown.format_running(running))
    return EXIT_USAGE


def _plugins(args: argparse.Namespace) -> int:
    setup = _load(args)
    rows = asyncio.run(admin.plugins(setup))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(views.format_plugins(rows))
    return EXIT_OK


def _tick(args: argparse.Namespace) -> int:
    setup = _load(args)
    from pollerd.service.core import tick_in_process

    run_locally = functools.partial(tick_in_process, environ=os.environ)
    result = asyncio.run(admin.tick(setup, args.job, dry_run=args.dry_run, run_locally=run_locally))
    print(json.dumps(result, indent=2))
    return EXIT_OK if result.get("status") == "ok" else EXIT_FAILED


def _pause(args: argparse.Namespace) -> int:
    setup = _load(args)
    state = asyncio.run(admin.pause(setup, args.job, True, args.reason))
    print(f"{args.job}: {state}")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    setup = _load(args)
    state = asyncio.run(admin.pause(setup, args.job, False, None))
    print(f"{args.job}: {state}")
    return EXIT_OK


def _cursor(args: argparse.Namespace) -> int:
    setup = _load(args)
    if args.action == "set" and args.value is None:
        print("pollerd: cursor set needs a base64url VALUE", file=sys.stderr)
        return EXIT_USAGE
    if args.action != "set" and args.value is not None:
        print(f"pollerd: cursor {args.action} takes no VALUE", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = asyncio.run(admin.cursor(setup, args.job, args.action, args.value))
    except ValueError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(text)
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    setup = _load(args)
    print(asyncio.run(admin.reload(setup)))
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    setup = _load(args)
    asyncio.run(admin.print_events(setup, job_id=args.job, follow=args.follow))
    return EXIT_OK


def _new_plugin(args: argparse.Namespace) -> int:
    from pollerd.ops.scaffold import ScaffoldError, new_plugin, next_steps

    try:
        skeleton, folder = new_plugin(
            args.name, args.lifecycle, plugins_dir=args.dir, kind=args.kind
        )
    except ScaffoldError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(next_steps(skeleton, folder)))
    return EXIT_OK


_HANDLERS = {
    "run": _run,
    "check": _check,
    "jobs": _jobs,
    "plugins": _plugins,
    "tick": _tick,
    "pause": _pause,
    "resume": _resume,
    "cursor": _cursor,
    "reload": _reload,
    "events": _events,
    "new-plugin": _new_plugin,
}


if __name__ == "__main__":
    sys.exit(main())
