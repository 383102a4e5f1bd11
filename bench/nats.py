"""Long-lived plugins over NATS: pollerd's end-to-end tick throughput against raw request-reply.

Run: ``.venv/bin/python bench/nats.py [--concurrency C] [--seconds S] [--rounds R]``.

pollerd's side is the real path: a ``Service`` on its embedded nats-server (JetStream on), with the
SDK plugin ``bench/plugins/sdk_echo.py`` supervised as a subprocess from a throwaway plugin folder,
and C jobs of its kind. C workers call ``Service.tick_now`` on their own job in a loop, so C ticks
are in flight: each one reads the job's state from SQLite, sends the tick over NATS, decodes the
reply, publishes the events to JetStream (none, or one per tick on the second line) and commits
the cursor to SQLite.

The baseline is plain nats-py at the same concurrency against the same server: C workers send the
same kind of request frame to ``bench/plugins/raw_responder.py`` (a subprocess answering like
raw_echo.py, a task per message like the SDK), and on the second line also publish one message
to JetStream per request and wait for its acknowledgement.

For information, raw requests are also sent straight to the SDK plugin: that separates the SDK's
cost from pollerd's. The CPU each process (caller, responder, nats-server) spends per operation is
read from ``/proc`` around each window.

The variants run in windows of S seconds, interleaved (A, B, C, ..., C, B, A); throughput is the
median over the windows, latency percentiles are over every tick or request of a variant.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (  # first: it keeps bench/nats.py from shadowing the nats package
    CURSOR,
    MS,
    P50,
    P99,
    PLUGINS_DIR,
    child_pid,
    header,
    median,
    percentile,
    process_cpu_s,
    python,
    request_frame,
    section,
    verdict,
    write_config,
    write_plugin,
)
from nats.aio.client import Client
from nats.js import api

from pollerd.config.manifest import DEFAULT_SUBJECT_ROOT
from pollerd.config.setup import load_setup
from pollerd.natsio.auth import POLLERD_USER
from pollerd.natsio.connection import connect
from pollerd.service.core import Service
from pollerd.service.runtime import tune_gc
from pollerd.stores.base import JobUpdate
from pollerd.supervision.status import PluginState
from pollerd.transports.nats import tick_subject
from pollerd.transports.subprocess import pidfd_child_watcher

logger = logging.getLogger(__name__)

PLUGIN_ID = "bench"
PLAIN_KIND = "echo_async"
EVENT_KIND = "echo_event"
SDK_PROGRAM = "sdk_echo.py"
RAW_PROGRAM = "raw_responder.py"
RAW_SUBJECT = "bench.raw.tick"
RAW_EVENT_SUBJECT = "pollerd.events.raw.bench"  # inside POLLERD_EVENTS, like pollerd's events
DEFAULT_CONCURRENCY = 64
DEFAULT_SECONDS = 2.5
DEFAULT_ROUNDS = 4
WARMUP_SECONDS = 1.0
REQUEST_TIMEOUT_S = 30.0
GOAL = 0.5
CALLER = "caller"
RESPONDER = "responder"
SERVER = "server"
PROCESSES = (CALLER, RESPONDER, SERVER)
NATS_SERVER = "nats-server"
RAW = "raw request-reply -> raw responder"
RAW_TO_SDK = "raw request-reply -> SDK plugin (info)"
POLLERD = "pollerd ticks -> SDK plugin, events=[]"
RAW_JS = "raw req-reply + 1 JetStream publish"
POLLERD_JS = "pollerd ticks, 1 event each"
READY_TIMEOUT_S = 10.0

Op = Callable[[int], Awaitable[None]]


@dataclass
class Variant:
    label: str
    op: Op
    responder_pid: int | None
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # CPU seconds per operation, by process, one value per window
    cpu_per_op_s: dict[str, list[float]] = field(default_factory=dict)
    cores_busy: list[float] = field(default_factory=list)  # the three processes, over the window


@dataclass(frozen=True)
class Window:
    rate: float  # operations per second
    latencies: list[float]
    cpu_s: dict[str, float]  # CPU time of each process during the window
    wall_s: float


def cpu_snapshot(pids: dict[str, int | None]) -> dict[str, float]:
    found = {name: process_cpu_s(pid) if pid else None for name, pid in pids.items()}
    return {name: value for name, value in found.items() if value is not None}


async def window(op: Op, concurrency: int, seconds: float, pids: dict[str, int | None]) -> Window:
    """Run ``op`` from ``concurrency`` workers for ``seconds``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while (started := time.perf_counter()) < deadline:
            await op(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    cpu_before = cpu_snapshot(pids)
    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(worker(index))
    wall = time.perf_counter() - started
    cpu_after = cpu_snapshot(pids)
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before}
    return Window(len(latencies) / wall, latencies, cpu, wall)


async def measure(
    variants: Sequence[Variant], concurrency: int, seconds: float, rounds: int, server_pid: int
) -> None:
    def pids(variant: Variant) -> dict[str, int | None]:
        return {CALLER: os.getpid(), RESPONDER: variant.responder_pid, SERVER: server_pid}

    for variant in variants:  # warm-up: connections, caches, the plugin's first ticks
        await window(variant.op, concurrency, WARMUP_SECONDS, pids(variant))
    for index in range(rounds):
        order = variants if index % 2 == 0 else list(reversed(variants))
        for variant in order:
            result = await window(variant.op, concurrency, seconds, pids(variant))
            variant.rates.append(result.rate)
            variant.latencies.extend(result.latencies)
            ops = max(1, len(result.latencies))
            for name, cpu_s in result.cpu_s.items():
                variant.cpu_per_op_s.setdefault(name, []).append(cpu_s / ops)
            variant.cores_busy.append(sum(result.cpu_s.values()) / result.wall_s)


class RawResponder:
    """``raw_responder.py`` as a subprocess, for the time of an ``async with``."""

    def __init__(self, url: str, env: dict[str, str] | None = None) -> None:
        self._url = url
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def __aenter__(self) -> RawResponder:
        self._proc = await asyncio.create_subprocess_exec(
            python(),
            str(PLUGINS_DIR / RAW_PROGRAM),
            self._url,
            RAW_SUBJECT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=None if self._env is None else {**os.environ, **self._env},
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await self._proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"raw responder did not start: {line!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()


def pollerd_op(service: Service, job_ids: Sequence[str], events: int) -> Op:
    async def op(index: int) -> None:
        outcome = await service.tick_now(job_ids[index])
        if outcome is None or not outcome.ok or not outcome.committed:
            raise RuntimeError(f"pollerd tick failed: {outcome}")
        if outcome.reply is None or len(outcome.reply.events) != events:
            raise RuntimeError(f"expected {events} event(s): {outcome.reply}")

    return op


def raw_op(nc: Client, subject: str, frames: Sequence[bytes], *, publish: bool) -> Op:
    js = nc.jetstream()
    sequence = iter(range(sys.maxsize))

    async def op(index: int) -> None:
        await nc.request(subject, frames[index], timeout=REQUEST_TIMEOUT_S)
        if publish:
            msg_id = f"raw-{index}:{next(sequence)}"
            await js.publish(
                RAW_EVENT_SUBJECT,
                b'{"id":"%s","data":{}}' % msg_id.encode(),
                headers={api.Header.MSG_ID: msg_id},
            )

    return op


def write_setup(root: Path, concurrency: int) -> tuple[Path, list[str], list[str]]:
    write_plugin(
        root / "plugins" / PLUGIN_ID,
        plugin_id=PLUGIN_ID,
        program=SDK_PROGRAM,
        kinds=["echo", PLAIN_KIND, EVENT_KIND],
        lifecycle="long_lived",
        max_concurrent_ticks=concurrency,
    )
    plain = [f"plain-{index}" for index in range(concurrency)]
    with_event = [f"event-{index}" for index in range(concurrency)]
    jobs = [(job_id, PLAIN_KIND) for job_id in plain] + [(j, EVENT_KIND) for j in with_event]
    return write_config(root, jobs), plain, with_event


async def run(concurrency: int, seconds: float, rounds: int) -> list[Variant]:
    environ = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="pollerd-bench-") as tmp:
        path, plain, with_event = write_setup(Path(tmp), concurrency)
        setup = load_setup(path, environ)
        with pidfd_child_watcher(asyncio.get_running_loop()):  # as run_service does
            async with Service(setup, environ=environ, schedule=False, http=False) as service:
                assert service.supervisor is not None and service.nats_url is not None
                status = service.supervisor.status(PLUGIN_ID)
                if status is None or status.state is not PluginState.RUNNING:
                    raise RuntimeError(f"the SDK plugin is not running: {status}")
                tune_gc()  # as run_service does once the service is up
                server_pid = child_pid(NATS_SERVER)
                if server_pid is None:
                    raise RuntimeError("cannot find the embedded nats-server among the children")
                for job_id in plain + with_event:
                    await service.store.update(job_id, JobUpdate(cursor=CURSOR))
                # pollerd's own user: the raw responder serves a subject no plugin user may
                assert service.nats.credentials is not None
                login = {"user": POLLERD_USER, "password": service.nats.credentials.pollerd}
                nc = await connect(service.nats_url, name="bench-raw", **login)
                raw_env = {
                    "POLLERD_NATS_USER": login["user"],
                    "POLLERD_NATS_PASSWORD": login["password"],
                }
                try:
                    async with RawResponder(service.nats_url, raw_env) as raw:
                        variants = build_variants(
                            service, nc, plain, with_event, sdk_pid=status.pid, raw_pid=raw.pid
                        )
                        await measure(variants, concurrency, seconds, rounds, server_pid)
                finally:
                    await nc.close()
    return variants


def build_variants(
    service: Service,
    nc: Client,
    plain: Sequence[str],
    with_event: Sequence[str],
    *,
    sdk_pid: int | None,
    raw_pid: int | None,
) -> list[Variant]:
    frames = [request_frame(job_id, PLAIN_KIND) for job_id in plain]
    sdk_subject = tick_subject(f"{DEFAULT_SUBJECT_ROOT}.{PLUGIN_ID}")
    return [
        Variant(RAW, raw_op(nc, RAW_SUBJECT, frames, publish=False), raw_pid),
        Variant(RAW_TO_SDK, raw_op(nc, sdk_subject, frames, publish=False), sdk_pid),
        Variant(POLLERD, pollerd_op(service, plain, 0), sdk_pid),
        Variant(RAW_JS, raw_op(nc, RAW_SUBJECT, frames, publish=True), raw_pid),
        Variant(POLLERD_JS, pollerd_op(service, with_event, 1), sdk_pid),
    ]


def report(variants: Sequence[Variant], concurrency: int) -> None:
    found = {variant.label: variant for variant in variants}
    section(f"{concurrency} in flight: throughput (median of windows), latency, CPU per operation")
    print(f"  {'':<40}{'ops/s':>7}{'p50 ms':>8}{'p99 ms':>8}   CPU us/op: caller+responder+server")
    for variant in variants:
        cpu = [median(variant.cpu_per_op_s.get(name, [0.0])) * 1e6 for name in PROCESSES]
        print(
            f"  {variant.label:<40}{median(variant.rates):7.0f}"
            f"{percentile(variant.latencies, P50) * MS:8.2f}"
            f"{percentile(variant.latencies, P99) * MS:8.2f}"
            f"   {cpu[0]:4.0f} + {cpu[1]:4.0f} + {cpu[2]:4.0f} = {sum(cpu):4.0f}"
            f"  ({median(variant.cores_busy):.1f} cores)"
        )

    def ratio(a: str, b: str) -> float:
        return median(found[a].rates) / median(found[b].rates)

    print(f"  ratio pollerd / raw, events=[]:    {verdict(ratio(POLLERD, RAW), GOAL, True)}")
    print(f"  ratio pollerd / raw, 1 event each: {verdict(ratio(POLLERD_JS, RAW_JS), GOAL, True)}")
    print(
        f"  for information: raw requests to the SDK plugin / to the raw responder "
        f"{ratio(RAW_TO_SDK, RAW):.2f}; pollerd / raw requests, both to the SDK plugin "
        f"{ratio(POLLERD, RAW_TO_SDK):.2f}"
    )
    print(
        "  CPU per op, from /proc: caller = this process (pollerd, or the raw requester); "
        "responder = the SDK plugin or raw_responder.py; server = nats-server"
    )


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per window")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="windows per variant")
    args = parser.parse_args(argv)
    header("pollerd benchmark: long-lived plugins over NATS")
    print(
        f"{args.rounds} windows of {args.seconds:g} s per variant, interleaved; asyncio event loop "
        "(no uvloop) in pollerd, the plugin and the raw responder"
    )
    print(
        "pollerd: Service(schedule=False, http=False) on its embedded nats-server, SDK plugin "
        "supervised, Service.tick_now per tick (SQLite read + cursor commit); log lines off"
    )
    started = time.perf_counter()
    variants = await run(args.concurrency, args.seconds, args.rounds)
    report(variants, args.concurrency)
    print()
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
