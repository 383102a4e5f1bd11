"""Ephemeral plugins: pollerd's one-shot tick against a bare spawn, and SDK against stdlib start-up.

Run: ``.venv/bin/python bench/ephemeral.py [--ticks N] [--startups N]``. Every figure is measured
in this run, with the variants interleaved (A, B, B, A, ...) so that drift in the machine's load
hits them alike; ratios are of medians.

1. Per-tick wall time of pollerd's real ephemeral path (``Service.tick_now``: SQLite read, one
   subprocess of ``raw_echo.py`` through the subprocess transport, cursor commit) against a bare
   ``asyncio.create_subprocess_exec`` of the same program with the same environment and the same
   one-line exchange. Both run under the pidfd child watcher that ``run_service`` installs; the
   default watcher of Python 3.11 (a thread per child) is measured too, for information.
2. Start-up, as one full stdio exchange, of the same plugin written with the SDK against the
   stdlib-only one.
3. Pre-forked ticks (``prefork = true``): the transport's tick through the plugin's zygote against a
   plain spawn of the same plugin (the subprocess transport) and against the floor, a bare
   ``os.fork()`` of a warmed Python parent whose child answers the frame and exits
   (``bench/plugins/fork_floor.py``, timed inside that parent). Once for a plugin importing only
   ``json`` (``sdk_json.py``), once for one importing pydantic (``sdk_heavy.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchlib import (  # first: it keeps bench/nats.py from shadowing the nats package
    CURSOR,
    P50,
    PLUGINS_DIR,
    header,
    percentile,
    python,
    request_frame,
    section,
    tick_request,
    times_line,
    verdict,
    write_config,
    write_plugin,
)

from pollerd.config.manifest import load_manifest
from pollerd.config.setup import load_setup
from pollerd.engine.events import MemoryEventPublisher
from pollerd.service.core import Service
from pollerd.stores.base import JobUpdate
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.prefork import PreforkTransport
from pollerd.transports.subprocess import (
    SubprocessTransport,
    pidfd_child_watcher,
    plugin_environ,
)

logger = logging.getLogger(__name__)

JOB_ID = "bench"
KIND = "echo"
PLUGIN_ID = "echo"
RAW_PROGRAM = "raw_echo.py"
SDK_PROGRAM = "sdk_echo.py"
DEFAULT_TICKS = 150
DEFAULT_STARTUPS = 100
WARMUP = 5
TICK_GOAL = 1.15
STARTUP_GOAL = 1.3
IMPORT_RUNS = 7
IMPORT_ORDER = {  # module → who needs it
    "json": "all that raw_echo.py imports",
    "pollerd.sdk": "the SDK: errors, wire (slotted value types, binascii, _datetime), its modules",
    "asyncio": "only for an async def handler",
}
EXCHANGE_TIMEOUT_S = 30.0
PREFORK_PLUGINS = {  # program → label
    "sdk_json.py": "json-only plugin (sdk_json.py)",
    "sdk_heavy.py": "heavy plugin, imports pydantic (sdk_heavy.py)",
}
HEAVY_ROUNDS_DIVISOR = 5  # a spawn of the heavy plugin costs ~10x more: fewer rounds
FLOOR_PROGRAM = "fork_floor.py"
PREFORK_FLOOR_GOAL = 2.0
PREFORK_SPAWN_GOAL = 5.0


@dataclass
class Variant:
    """``run`` returns None (its wall time is measured) or the seconds it measured itself."""

    label: str
    run: Callable[[], Awaitable[float | None]]
    pidfd: bool = True
    samples: list[float] = field(default_factory=list)


async def bare_exchange(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], frame: bytes
) -> bytes:
    """Spawn, write one request line, read one reply line, wait for the exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=dict(env),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(frame)
    proc.stdin.close()
    async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
        line = await proc.stdout.readline()
        await proc.wait()
    if not line.startswith(b'{"jsonrpc"'):
        raise RuntimeError(f"{argv}: unexpected reply {line!r} (exit code {proc.returncode})")
    return line


async def measure(variants: Sequence[Variant], rounds: int) -> None:
    """Run each variant ``rounds`` times, interleaved, reversing the order every other round."""
    loop = asyncio.get_running_loop()
    for index in range(WARMUP + rounds):
        order = variants if index % 2 == 0 else list(reversed(variants))
        for variant in order:
            watcher = pidfd_child_watcher(loop) if variant.pidfd else contextlib.nullcontext()
            with watcher:
                started = time.perf_counter()
                measured = await variant.run()
                elapsed = time.perf_counter() - started if measured is None else measured
            if index >= WARMUP:
                variant.samples.append(elapsed)


async def bench_ticks(root: Path, environ: Mapping[str, str], ticks: int) -> list[Variant]:
    folder = root / "plugins" / PLUGIN_ID
    write_plugin(
        folder,
        plugin_id=PLUGIN_ID,
        program=RAW_PROGRAM,
        kinds=[KIND],
        lifecycle="ephemeral",
        max_concurrent_ticks=4,
    )
    setup = load_setup(write_config(root, [(JOB_ID, KIND)]), environ)
    # The same environment the transport builds (allow-list empty, plus POLLERD_CONFIG_DIR).
    env = plugin_environ(PLUGIN_ID, [], environ, {"POLLERD_CONFIG_DIR": str(root)})
    argv = [python(), RAW_PROGRAM]
    frame = request_frame(JOB_ID, KIND)
    service = Service(
        setup, environ=environ, schedule=False, http=False, publisher=MemoryEventPublisher()
    )
    async with service:
        await service.store.update(JOB_ID, JobUpdate(cursor=CURSOR))

        async def pollerd_tick() -> None:
            outcome = await service.tick_now(JOB_ID)
            if outcome is None or not outcome.ok or not outcome.committed:
                raise RuntimeError(f"pollerd tick failed: {outcome}")

        async def bare_spawn() -> None:
            await bare_exchange(argv, cwd=folder, env=env, frame=frame)

        variants = [
            Variant("bare spawn, pidfd watcher", bare_spawn),
            Variant("pollerd tick_now, pidfd watcher", pollerd_tick),
            Variant("bare spawn, default watcher", bare_spawn, pidfd=False),
            Variant("pollerd tick_now, default watcher", pollerd_tick, pidfd=False),
        ]
        await measure(variants, ticks)
        state = await service.store.get(JOB_ID)
        assert state is not None and state.cursor == CURSOR and state.last_status == "ok"
    return variants


async def bench_startup(root: Path, environ: Mapping[str, str], startups: int) -> list[Variant]:
    folder = root / "startup"
    folder.mkdir()
    for program in (RAW_PROGRAM, SDK_PROGRAM):
        (folder / program).write_bytes((Path(__file__).parent / "plugins" / program).read_bytes())
    env = plugin_environ("bench", [], environ, {"POLLERD_CONFIG_DIR": str(root)})
    now = datetime.now(UTC)
    sync_frame = request_frame(JOB_ID, KIND, now)
    async_frame = sync_frame.replace(b'"kind":"echo"', b'"kind":"echo_async"')

    def exchange(program: str, frame: bytes) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await bare_exchange([python(), program], cwd=folder, env=env, frame=frame)

        return run

    variants = [
        Variant("stdlib-only plugin (raw_echo.py)", exchange(RAW_PROGRAM, sync_frame)),
        Variant("SDK plugin, def handler", exchange(SDK_PROGRAM, sync_frame)),
        Variant("SDK plugin, async def handler (info)", exchange(SDK_PROGRAM, async_frame)),
    ]
    loop = asyncio.get_running_loop()
    with pidfd_child_watcher(loop):
        await measure(variants, startups)
    return variants


async def bench_prefork(
    root: Path, environ: Mapping[str, str], program: str, rounds: int
) -> list[Variant]:
    """Spawn, pre-forked tick and bare-fork floor of one plugin, interleaved."""
    folder = root / "prefork" / Path(program).stem
    write_plugin(
        folder,
        plugin_id=PLUGIN_ID,
        program=program,
        kinds=[KIND],
        lifecycle="ephemeral",
        max_concurrent_ticks=4,
    )
    manifest_path = folder / "plugin.toml"
    manifest_path.write_text(manifest_path.read_text() + "prefork = true\n")
    manifest = load_manifest(manifest_path)
    extra_env = {"POLLERD_CONFIG_DIR": str(root)}
    request = tick_request(JOB_ID, KIND)
    spawned = SubprocessTransport.from_manifest(manifest, environ, extra_env=extra_env)
    floor = await asyncio.create_subprocess_exec(
        python(),
        str(PLUGINS_DIR / FLOOR_PROGRAM),
        program,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=folder,
        env=plugin_environ(PLUGIN_ID, [], environ, extra_env),
    )
    assert floor.stdin is not None and floor.stdout is not None
    floor_in, floor_out = floor.stdin, floor.stdout
    async with Supervisor(
        [manifest], nc=None, nats_url="", environ=environ, extra_env=extra_env
    ) as supervisor:
        forked = PreforkTransport.from_manifest(
            manifest,
            environ,
            extra_env=extra_env,
            connect=functools.partial(supervisor.zygote_channel, PLUGIN_ID),
        )

        async def spawn_tick() -> None:
            await spawned.send(request, EXCHANGE_TIMEOUT_S)

        async def prefork_tick() -> None:
            await forked.send(request, EXCHANGE_TIMEOUT_S)

        async def bare_fork() -> float:
            floor_in.write(request.encode())
            return float(await floor_out.readline())

        variants = [
            Variant("plain spawn (subprocess transport)", spawn_tick),
            Variant("pre-forked tick (prefork transport)", prefork_tick),
            Variant("bare os.fork() of a warmed parent (floor)", bare_fork),
        ]
        with pidfd_child_watcher(asyncio.get_running_loop()):
            await measure(variants, rounds)
    floor_in.close()
    await floor.wait()
    return variants


def ratio(a: Variant, b: Variant) -> float:
    return percentile(a.samples, P50) / percentile(b.samples, P50)


def import_costs(modules: Sequence[str], env: Mapping[str, str], runs: int) -> dict[str, float]:
    """Median ms each of ``modules`` adds when imported in this order in a fresh interpreter
    (``python -X importtime``: a module's cost includes what it imports that is not loaded yet)."""
    found: dict[str, list[float]] = {module: [] for module in modules}
    code = "; ".join(f"import {module}" for module in modules)
    for _ in range(runs):
        done = subprocess.run(
            [python(), "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            env=dict(env),
            check=True,
        )
        for line in done.stderr.splitlines():
            parts = line.split("|")
            name = parts[-1][1:]
            if len(parts) == 3 and name in found and parts[1].strip().isdigit():
                found[name].append(int(parts[1]) / 1000.0)
    return {module: percentile(values, P50) for module, values in found.items() if values}


def report_ticks(variants: list[Variant]) -> None:
    bare, pollerd, bare_default, pollerd_default = variants
    section("1. per-tick wall time: pollerd's ephemeral path against a bare spawn of the plugin")
    print("  plugin: bench/plugins/raw_echo.py; pollerd: Service.tick_now (SQLite read, subprocess")
    print("  transport, cursor commit); events go to an in-memory publisher: no NATS here")
    for variant in variants:
        print(times_line(variant.label, variant.samples))
    result = verdict(ratio(pollerd, bare), TICK_GOAL, higher_is_better=False)
    print(f"  ratio pollerd / bare (pidfd watcher, as run_service): {result}")
    if sys.version_info < (3, 12):
        print(
            "  for information, Python 3.11's default child watcher (a thread per child): "
            f"pollerd / bare {ratio(pollerd_default, bare_default):.2f}; "
            f"pollerd with it / bare with pidfd {ratio(pollerd_default, bare):.2f}"
        )


def report_startup(variants: list[Variant], env: Mapping[str, str]) -> None:
    raw, sdk, sdk_async = variants
    section("2. plugin start-up (one full stdio exchange): SDK plugin against stdlib-only plugin")
    for variant in variants:
        print(times_line(variant.label, variant.samples))
    result = verdict(ratio(sdk, raw), STARTUP_GOAL, higher_is_better=False)
    print(f"  ratio SDK (def handler) / stdlib: {result}")
    print(f"  ratio SDK (async def handler) / stdlib, for information: {ratio(sdk_async, raw):.2f}")
    costs = import_costs(list(IMPORT_ORDER), env, IMPORT_RUNS)
    print(f"  where the SDK's start-up goes (python -X importtime, median of {IMPORT_RUNS} runs,")
    print("  imported in this order in a fresh interpreter, each with what it pulls in first):")
    for module, why in IMPORT_ORDER.items():
        print(f"    {costs.get(module, float('nan')):6.1f} ms  {module:<12} {why}")


def report_prefork(label: str, variants: list[Variant], spawn_goal: bool) -> None:
    spawn, prefork, floor = variants
    print(f"  {label}:")
    for variant in variants:
        print(times_line(variant.label, variant.samples))
    floor_verdict = verdict(ratio(prefork, floor), PREFORK_FLOOR_GOAL, higher_is_better=False)
    print(f"  ratio pre-forked / bare fork: {floor_verdict}")
    speedup = ratio(spawn, prefork)
    shown = verdict(speedup, PREFORK_SPAWN_GOAL, True) if spawn_goal else f"{speedup:.1f}"
    print(f"  ratio spawn / pre-forked: {shown}")


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=DEFAULT_TICKS, help="ticks per variant")
    parser.add_argument("--startups", type=int, default=DEFAULT_STARTUPS, help="per variant")
    parser.add_argument(
        "--only-prefork", action="store_true", help="run section 3 (pre-forked ticks) alone"
    )
    args = parser.parse_args(argv)
    header("pollerd benchmark: ephemeral plugins")
    environ = dict(os.environ)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pollerd-bench-") as tmp:
        root = Path(tmp)
        print(f"{args.ticks} ticks and {args.startups} start-ups per variant, interleaved")
        if not args.only_prefork:
            ticks = await bench_ticks(root, environ, args.ticks)
            report_ticks(ticks)
            startup = await bench_startup(root, environ, args.startups)
            env = plugin_environ("bench", [], environ)
            report_startup(startup, env)
        section("3. pre-forked ticks: through the zygote, against a spawn and a bare fork")
        for program, label in PREFORK_PLUGINS.items():
            heavy = program != "sdk_json.py"
            rounds = max(args.ticks // HEAVY_ROUNDS_DIVISOR, 10) if heavy else args.ticks
            report_prefork(label, await bench_prefork(root, environ, program, rounds), not heavy)
    print()
    print(f"done in {time.perf_counter() - started:.1f} s; ratios are of p50 (median) times")


if __name__ == "__main__":
    asyncio.run(main())
