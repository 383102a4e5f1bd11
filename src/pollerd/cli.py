"""The `pollerd` command: parses arguments, loads the config, calls one function."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pollerd.errors import ConfigError, ManifestError, PollerdError
from pollerd.ops import admin, views
from pollerd.ops.cliparser import build_parser, parse
from pollerd.ops.logs import setup_logging

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # a failed check or a failed tick
EXIT_USAGE = 2  # bad arguments or an unreadable / invalid config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv, os.environ)
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


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _unreadable(path: Path) -> bool:
    return not path.is_file() or not os.access(path, os.R_OK)


def _load(args: argparse.Namespace) -> Any:
    from pollerd.config.setup import load_setup

    setup = load_setup(args.config, os.environ)  # messages name the file as the operator gave it
    # The setup lives as long as the command (the service: until a reload): out of the cyclic
    # collector's sight, the rows and ticks that follow do not make it traverse every job again.
    gc.freeze()
    return setup


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
        if args.json:
            _print_json({"ok": False, "config": str(args.config), "error": str(exc)})
        return EXIT_FAILED
    if args.json:
        _print_json(admin.check_report(setup))
    else:
        for line in admin.check_summary(setup):
            print(line)
    return EXIT_FAILED if setup.broken else EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    try:
        setup = _load(args)
    except (ConfigError, ManifestError) as exc:
        return _jobs_of_running_service(args, exc)
    rows = asyncio.run(admin.collect_jobs(setup))
    leader = asyncio.run(admin.leader_line(setup))  # replicas: which one leads
    if args.json:
        _print_json([row.to_json() for row in rows])
    else:
        print(views.format_jobs(rows))
    if leader is not None:
        print(leader, file=sys.stderr if args.json else sys.stdout)
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
        _print_json(rows)
    else:
        print(views.format_plugins(rows))
    return EXIT_OK


def _history(args: argparse.Namespace) -> int:
    setup = _load(args)
    ticks = asyncio.run(admin.history(setup, args.job, args.limit))
    if args.json:
        _print_json(ticks)
    else:
        zone = admin.find_job(setup, args.job).timezone.key
        print(views.format_history(args.job, ticks, zone))
    return EXIT_OK


def _tick(args: argparse.Namespace) -> int:
    setup = _load(args)
    from pollerd.service.runtime import tick_in_process

    run_locally = functools.partial(tick_in_process, environ=os.environ)
    result = asyncio.run(admin.tick(setup, args.job, dry_run=args.dry_run, run_locally=run_locally))
    _print_json(result)
    return EXIT_OK if result.get("status") == "ok" else EXIT_FAILED


def _pause(args: argparse.Namespace) -> int:
    setup = _load(args)
    state = asyncio.run(admin.pause(setup, args.job, True, args.reason))
    _print_state(args, state)
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    setup = _load(args)
    state = asyncio.run(admin.pause(setup, args.job, False, None))
    _print_state(args, state)
    return EXIT_OK


def _print_state(args: argparse.Namespace, state: str) -> None:
    if args.json:
        live = state.endswith(admin.APPLIED_BY_SERVICE)
        _print_json(
            {
                "job_id": args.job,
                "state": state.removesuffix(admin.APPLIED_BY_SERVICE),
                "applied_by_service": live,
            }
        )
    else:
        print(f"{args.job}: {state}")


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
    if args.json:
        _print_json({"job_id": args.job, "cursor": text or None})
    else:
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


def _nats_permissions(args: argparse.Namespace) -> int:
    from pollerd.ops import natsperms

    setup = _load(args)
    if args.env is not None:
        env = natsperms.embedded_plugin_env(setup, args.env)
        print(json.dumps(env, indent=2) if args.json else natsperms.env_text(env))
    elif args.json:
        _print_json(natsperms.permissions_json(setup))
    else:
        print(natsperms.permissions_text(setup), end="")
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


def _schema(args: argparse.Namespace) -> int:
    from pollerd.ops.schema import SCHEMAS

    _print_json(SCHEMAS[args.which]())
    return EXIT_OK


def _store(args: argparse.Namespace) -> int:
    from pollerd.ops.storecopy import copy_state

    setup = _load(args)
    print(asyncio.run(copy_state(setup, args.source, overwrite=args.overwrite)))
    return EXIT_OK


def _completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


_HANDLERS = {
    "run": _run,
    "check": _check,
    "jobs": _jobs,
    "plugins": _plugins,
    "history": _history,
    "tick": _tick,
    "pause": _pause,
    "resume": _resume,
    "cursor": _cursor,
    "reload": _reload,
    "events": _events,
    "nats-permissions": _nats_permissions,
    "new-plugin": _new_plugin,
    "completion": _completion,
    "schema": _schema,
    "store": _store,
}


if __name__ == "__main__":
    sys.exit(main())
