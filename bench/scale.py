"""Many jobs on one pollerd: lateness, throughput, CPU per tick, memory, start-up and reload.

Run: ``.venv/bin/python bench/scale.py [--quick] [--jobs N[@EVERY] ...] [--window S]``.

For each scenario (by default 1,000, 10,000 and 20,000 jobs every 10 s, and 10,000 every 1 s) a
real ``pollerd run`` starts on a throwaway config: the embedded nats-server, HTTP on a free
loopback port, INFO logging off, and N jobs of the long-lived SDK plugin
``bench/plugins/probe.py``, whose handler records its lateness (handler start − the tick's
``scheduled_at``). After a warm-up of one interval, a window of S seconds measures:

- ticks/s achieved (handled by the plugin) against expected (N / interval);
- lateness p50 / p99 / max as the plugin sees it, and the mean of pollerd's own lateness metric
  (``*_lateness_seconds`` sum / count) next to the plugin's mean: they should agree;
- pollerd's CPU per tick (its own process, from ``/proc``, not the plugin's nor nats-server's);
- RSS per job: (pollerd's RSS − the RSS of a one-job pollerd) / N; beside it the RSS of the child
  kept to read a pollers.yaml over 256 KiB (``pollerd.service.reloading``), after the reloads;
- start-up: from spawning ``pollerd run`` to ``/readyz`` answering 200;
- reload: ``POST /v1/reload`` after changing one job's interval in pollers.yaml (the median of
  three, the interval changed and changed back);
- ``pollerd check`` and ``pollerd jobs --json`` (whole commands), and ``GET /metrics``.

A floor, in the same run: plain nats-py requests (``Client.request``) at the same rate, sent in
batches on pollerd's scheduler grid (``BATCH_S``), to ``bench/plugins/raw_responder.py`` on a
nats-server of their own: the requester's CPU per request is what the NATS round trip alone
costs a process on this machine, before any scheduling, state or bookkeeping. Then the same
requests again, each reply followed by the SQL a tick's commit runs (its job's row updated, a
history record inserted; one transaction a grid step, SQLite in WAL mode with
``synchronous=NORMAL`` on a store pollerd created), on a plain ``sqlite3`` connection: the floor
of the work the contract asks of every tick (one request, one commit), with no pollerd code in
the loop.

The baseline, in the same run: APScheduler 3's ``AsyncIOScheduler`` alone in a subprocess, with
the same N of no-op ``async`` jobs on interval triggers spread over the interval, measured over
the same window (lateness = run start − the job's grid slot; CPU per run). The ratio printed is
pollerd's CPU per tick / APScheduler's CPU per no-op run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchlib import (  # first: it keeps bench/ from shadowing installed packages
    MS,
    P50,
    P99,
    header,
    median,
    percentile,
    process_cpu_s,
    python,
    section,
    verdict,
    write_plugin,
)

DEFAULT_SCENARIOS = ("1000@10", "10000@10", "20000@10", "10000@1")
QUICK_SCENARIOS = ("1000@10",)
DEFAULT_WINDOW_S = 30.0
QUICK_WINDOW_S = 10.0
START_TIMEOUT_S = 300.0
MAX_CONCURRENT_TICKS = 32
CPU_RATIO_GOAL = 1.5
US = 1e6
KIB = 1024
POLL_S = 0.05
HTTP_TIMEOUT_S = 60.0
TIMED_REPEATS = 3
READING_CHILD = b"pollerd.service.reloading"  # in the argv of the child that reads a large file


@dataclass
class Scenario:
    jobs: int
    every_s: float

    @classmethod
    def parse(cls, text: str) -> Scenario:
        count, _, every = text.partition("@")
        return cls(int(count), float(every or 10))

    @property
    def expected_per_s(self) -> float:
        return self.jobs / self.every_s


@dataclass
class Tally:
    ticks: int
    lateness_s: list[float]
    cpu_s: float
    window_s: float

    def per_s(self) -> float:
        return self.ticks / self.window_s

    def cpu_per_tick_us(self) -> float:
        return self.cpu_s / max(self.ticks, 1) * US

    def lateness_line(self) -> str:
        if not self.lateness_s:
            return "no ticks"
        late = sorted(self.lateness_s)
        return (
            f"p50 {percentile(late, P50) * MS:8.2f} ms  p99 {percentile(late, P99) * MS:8.2f} ms"
            f"  max {late[-1] * MS:8.2f} ms"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_setup(root: Path, scenario: Scenario, port: int) -> Path:
    write_plugin(
        root / "plugins" / "probe",
        plugin_id="probe",
        program="probe.py",
        kinds=["probe"],
        lifecycle="long_lived",
        max_concurrent_ticks=MAX_CONCURRENT_TICKS,
    )
    config = root / "pollers.yaml"
    config.write_text(config_text(scenario, port, changed=False))
    return config


def config_text(scenario: Scenario, port: int, *, changed: bool) -> str:
    every = f"{scenario.every_s:g}s"
    lines = [
        "version: 1",
        "nats: embedded",
        "state_dir: state",
        "plugins: [plugins]",
        f"http: 127.0.0.1:{port}",
        "jobs:",
    ]
    for index in range(scenario.jobs):
        job_every = f"{scenario.every_s * 2:g}s" if changed and index == 0 else every
        lines.append(f"  - {{id: {job_id(index)}, kind: probe, schedule: {{every: {job_every}}}}}")
    return "\n".join(lines) + "\n"


def http(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"} if method == "POST" else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Pollerd:
    """A ``pollerd run`` subprocess on ``config``; stopped with SIGTERM."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log = (config.parent / "pollerd.log").open("w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [python(), "-m", "pollerd", "--log-level", "warning", "run", "-c", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = started + START_TIMEOUT_S
        while http(port, "/readyz")[0] != 200:
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                self.stop()
                log = (config.parent / "pollerd.log").read_text()[-3000:]
                raise SystemExit(f"pollerd did not become ready:\n{log}")
            time.sleep(POLL_S)
        self.startup_s = time.perf_counter() - started

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid) or 0.0

    def rss_bytes(self) -> int:
        return rss_bytes(self.proc.pid)

    def reading_child_rss_bytes(self) -> int | None:
        """The RSS of the child kept to read a large pollers.yaml (None: the file is small)."""
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if READING_CHILD in argv:
                    return rss_bytes(int(child))
        return None

    def lateness_metric(self) -> tuple[float, float]:
        """(sum, count) of pollerd's lateness histogram, all kinds."""
        total = count = 0.0
        for line in http(self.port, "/metrics")[1].decode().splitlines():
            name, _, value = line.rpartition(" ")
            if "lateness_seconds_sum" in name:
                total += float(value)
            elif "lateness_seconds_count" in name:
                count += float(value)
        return total, count

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    return 0


def read_probe(path: Path, start: float, end: float) -> list[float]:
    """Lateness of the ticks whose handler started in ``[start, end)``."""
    lateness = []
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 3 and start <= float(fields[0]) < end:
                lateness.append(float(fields[1]))
    return lateness


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started


def measure_pollerd(scenario: Scenario, window_s: float, base_rss: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pollerd-scale-") as tmp:
        root = Path(tmp)
        port = free_port()
        config = write_setup(root, scenario, port)
        service = Pollerd(config, port)
        try:
            time.sleep(scenario.every_s + 1)  # warm-up: one interval, every job has ticked once
            late_before = service.lateness_metric()
            cpu_before, start = service.cpu_s(), time.time()
            time.sleep(window_s)
            cpu_after, end = service.cpu_s(), time.time()
            late_after = service.lateness_metric()
            rss = service.rss_bytes()
            metrics_s = median([timed_http(port, "/metrics") for _ in range(TIMED_REPEATS)])
            check_s = timed([python(), "-m", "pollerd", "check", "-c", str(config)])
            jobs_s = timed([python(), "-m", "pollerd", "jobs", "--json", "-c", str(config)])
            reload_s = median(
                [timed_reload(config, scenario, port, n) for n in range(TIMED_REPEATS)]
            )
            time.sleep(1.0)  # the probe's last records reach its file; the child has compacted
            child_rss = service.reading_child_rss_bytes()
            tally = Tally(0, read_probe(root / "plugins" / "probe" / "probe.out", start, end), 0, 0)
        finally:
            service.stop()
    tally.ticks, tally.cpu_s, tally.window_s = (
        len(tally.lateness_s),
        cpu_after - cpu_before,
        end - start,
    )
    metric_count = late_after[1] - late_before[1]
    metric_mean = (late_after[0] - late_before[0]) / metric_count if metric_count else 0.0
    plugin_mean = sum(tally.lateness_s) / len(tally.lateness_s) if tally.lateness_s else 0.0
    print(f"  pollerd   {tally.per_s():8.1f} ticks/s (expected {scenario.expected_per_s:.1f})")
    print(f"            lateness (plugin side) {tally.lateness_line()}")
    print(
        f"            lateness mean: pollerd metric {metric_mean * MS:.2f} ms, "
        f"plugin {plugin_mean * MS:.2f} ms"
    )
    per_job_kib = (rss - base_rss) / scenario.jobs / KIB
    print(
        f"            CPU per tick {tally.cpu_per_tick_us():7.1f} µs; RSS {rss / KIB / KIB:.0f} MiB"
        f" = {per_job_kib:.2f} KiB per job over a one-job pollerd; "
        + (
            f"reading child {child_rss / KIB / KIB:.0f} MiB after the reloads"
            if child_rss is not None
            else "no reading child (a small file)"
        )
    )
    print(
        f"            start-up {service.startup_s:.2f} s; one-job reload {reload_s:.3f} s; "
        f"check {check_s:.2f} s; jobs --json {jobs_s:.2f} s; /metrics {metrics_s * MS:.1f} ms"
    )
    return {
        "per_s": tally.per_s(),
        "cpu_per_tick_us": tally.cpu_per_tick_us(),
        "p99_ms": percentile(sorted(tally.lateness_s), P99) * MS if tally.lateness_s else 0.0,
    }


def timed_reload(config: Path, scenario: Scenario, port: int, repeat: int) -> float:
    """``POST /v1/reload`` after changing one job: its interval goes back and forth."""
    config.write_text(config_text(scenario, port, changed=repeat % 2 == 0))
    return timed_http(port, "/v1/reload", "POST")


def timed_http(port: int, path: str, method: str = "GET") -> float:
    started = time.perf_counter()
    status, body = http(port, path, method)
    elapsed = time.perf_counter() - started
    if status != 200:
        print(f"  {method} {path} answered {status}: {body[:300]!r}")
    return elapsed


def wait_cpu_us(waits: int = 100) -> float:
    """CPU charged for one blocking ``epoll`` wait of 10 ms. Every loop that sleeps pays it per
    wake-up: APScheduler once per run when runs are spread, pollerd once per batch of ticks."""
    import select

    poller = select.epoll()
    started = time.process_time()
    for _ in range(waits):
        poller.poll(0.01)
    poller.close()
    return (time.process_time() - started) / waits * US


def one_job_rss() -> int:
    with tempfile.TemporaryDirectory(prefix="pollerd-scale-") as tmp:
        port = free_port()
        service = Pollerd(write_setup(Path(tmp), Scenario(1, 10), port), port)
        try:
            time.sleep(1.0)
            return service.rss_bytes()
        finally:
            service.stop()


def measure_apscheduler(scenario: Scenario, window_s: float) -> dict[str, float]:
    argv = [python(), __file__, "--apscheduler-child", f"{scenario.jobs}@{scenario.every_s:g}"]
    done = subprocess.run(
        [*argv, "--window", str(window_s)], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tally = Tally(result["runs"], result["lateness_s"], result["cpu_s"], result["window_s"])
    print(f"  APScheduler {tally.per_s():6.1f} runs/s; lateness {tally.lateness_line()}")
    print(f"            CPU per no-op run {tally.cpu_per_tick_us():7.1f} µs")
    return {"per_s": tally.per_s(), "cpu_per_tick_us": tally.cpu_per_tick_us()}


def measure_raw(scenario: Scenario, window_s: float, *, store: bool) -> dict[str, float]:
    argv = [python(), __file__, "--raw-child", f"{scenario.jobs}@{scenario.every_s:g}"]
    done = subprocess.run(
        [*argv, "--window", str(window_s), *(["--raw-store"] if store else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tally = Tally(result["runs"], [], result["cpu_s"], result["window_s"])
    what = (
        "a request and its commit in plain sqlite3: the floor of a tick"
        if store
        else "the requester alone: the NATS round trip's floor"
    )
    print(
        f"  raw nats-py {tally.per_s():6.1f} requests/s; CPU per request "
        f"{tally.cpu_per_tick_us():7.1f} µs ({what})"
    )
    return {"per_s": tally.per_s(), "cpu_per_tick_us": tally.cpu_per_tick_us()}


class RawCommits:
    """The SQL of a tick's successful commit, on a plain ``sqlite3`` connection to a store that
    pollerd created with the scenario's jobs: the job's row updated (the columns a success
    sets), a history record inserted, the store version bumped, one transaction a grid step."""

    def __init__(self, path: Path, jobs: int) -> None:
        import asyncio
        import sqlite3

        from pollerd.stores.base import JobSeed
        from pollerd.stores.sqlite import SqliteStore

        async def create() -> None:
            store = SqliteStore(path)
            await store.open()
            try:
                await store.ensure_many([JobSeed(job_id(i), "probe", False) for i in range(jobs)])
            finally:
                await store.close()

        asyncio.run(create())
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._updates: list[tuple[object, ...]] = []
        self._records: list[tuple[object, ...]] = []
        self._numbers: dict[str, int] = {}

    def add(self, job: str, tick_id: str, slot: float) -> None:
        now = datetime.now(UTC)
        text = now.isoformat()
        self._updates.append((b"cursor", "ok", None, text, text, text, 0, None, None, job))
        number = self._numbers[job] = self._numbers.get(job, 0) + 1
        finished = now.timestamp()
        self._records.append((job, number, tick_id, slot, finished, "ok", 1, 0.001, 0, None, ""))

    def commit(self) -> None:
        if not self._updates:
            return
        conn = self._conn
        conn.execute("BEGIN")
        conn.executemany(
            "UPDATE jobs SET cursor = ?, last_status = ?, last_error = ?, last_run_at = ?, "
            "last_success_at = ?, last_scheduled_at = ?, consecutive_errors = ?, "
            "breaker_open_until = ?, breaker_cooldown_s = ?, revision = revision + 1 "
            "WHERE job_id = ?",
            self._updates,
        )
        conn.executemany(
            "INSERT INTO tick_history (job_id, n, tick_id, slot, finished_at, status, attempts, "
            "duration_s, events, error, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self._records,
        )
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
        conn.execute("COMMIT")
        self._updates, self._records = [], []

    def close(self) -> None:
        self._conn.close()


def job_id(index: int) -> str:
    return f"job{index:05d}"


def raw_child(scenario: Scenario, window_s: float, *, store: bool) -> None:
    """Plain nats-py requests at the scenario's rate, in batches on pollerd's scheduler grid,
    with the SQL of each tick's commit when ``store``; prints one JSON line."""
    import asyncio

    import nats

    from pollerd import wire
    from pollerd.engine.scheduler import BATCH_S
    from pollerd.natsio.server import EmbeddedNatsServer

    step_s, subject = BATCH_S, "bench.raw.tick"
    now = datetime.now(UTC)
    frame = wire.TickRequest(
        "probe", "job00000", wire.make_tick_id("job00000", now), 1, "", b"cursor", {}, now, now, now
    ).encode()

    async def main(store_dir: Path, commits: RawCommits | None) -> dict[str, float]:
        async with EmbeddedNatsServer(store_dir) as server:
            responder = await asyncio.create_subprocess_exec(
                python(),
                str(Path(__file__).parent / "plugins" / "raw_responder.py"),
                server.url,
                subject,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert responder.stdout is not None
                await responder.stdout.readline()  # "ready"
                nc = await nats.connect(server.url)
                done = [0]

                async def one(index: int, slot: float) -> None:
                    await nc.request(subject, frame, timeout=30)
                    if commits is not None:
                        job = job_id(index)
                        commits.add(job, f"{job}@{slot}", slot)
                    done[0] += 1

                loop, tasks, sent = asyncio.get_running_loop(), set(), 0
                credit, next_step = 0.0, loop.time()
                started = loop.time()
                measuring = False
                cpu_before = count_before = wall_before = 0.0
                while loop.time() - started < 2.0 + window_s:
                    if not measuring and loop.time() - started >= 2.0:
                        measuring = True
                        cpu_before, count_before = time.process_time(), done[0]
                        wall_before = time.time()
                    if commits is not None:
                        commits.commit()  # the previous step's replies, as the group commit does
                    credit += scenario.expected_per_s * step_s
                    while credit >= 1:
                        credit -= 1
                        sent += 1
                        task = asyncio.create_task(one(sent % scenario.jobs, time.time()))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    next_step += step_s
                    await asyncio.sleep(max(0.0, next_step - loop.time()))
                cpu_s, runs = time.process_time() - cpu_before, done[0] - count_before
                wall_s = time.time() - wall_before
                await asyncio.gather(*tasks, return_exceptions=True)
                await nc.close()
                return {"runs": runs, "cpu_s": cpu_s, "window_s": wall_s}
            finally:
                responder.terminate()
                await responder.wait()

    with tempfile.TemporaryDirectory(prefix="pollerd-scale-raw-") as tmp:
        commits = RawCommits(Path(tmp) / "state.db", scenario.jobs) if store else None
        try:
            print(json.dumps(asyncio.run(main(Path(tmp) / "nats", commits))))
        finally:
            if commits is not None:
                commits.close()


def apscheduler_child(scenario: Scenario, window_s: float) -> None:
    """APScheduler alone: N no-op jobs spread over the interval; prints one JSON line."""
    import asyncio
    import logging
    from datetime import timedelta

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    records: list[tuple[float, float]] = []
    every = scenario.every_s

    async def main() -> None:
        t0 = time.time() + 1.0
        scheduler = AsyncIOScheduler(timezone=UTC)

        async def no_op(phase: float) -> None:
            now = time.time()
            records.append((now, (now - phase) % every))

        for index in range(scenario.jobs):
            phase = t0 + every * index / scenario.jobs
            scheduler.add_job(
                no_op,
                "interval",
                seconds=every,
                start_date=datetime.fromtimestamp(phase, UTC) - timedelta(seconds=every),
                args=[phase],
                misfire_grace_time=None,
                coalesce=False,
            )
        scheduler.start()
        await asyncio.sleep(every + 1.0)
        cpu_before, start = time.process_time(), time.time()
        await asyncio.sleep(window_s)
        cpu_after, end = time.process_time(), time.time()
        scheduler.shutdown(wait=False)
        late = [lateness for at, lateness in records if start <= at < end]
        result = {"runs": len(late), "lateness_s": late, "cpu_s": cpu_after - cpu_before}
        print(json.dumps({**result, "window_s": end - start}))

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 10 s window")
    parser.add_argument("--jobs", action="append", help="N or N@EVERY_S (repeatable)")
    parser.add_argument("--window", type=float, default=None, help="measurement window, s")
    parser.add_argument("--apscheduler-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw-store", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    window_s = args.window or (QUICK_WINDOW_S if args.quick else DEFAULT_WINDOW_S)
    if args.raw_child:
        raw_child(Scenario.parse(args.raw_child), window_s, store=args.raw_store)
        return
    if args.apscheduler_child:
        apscheduler_child(Scenario.parse(args.apscheduler_child), window_s)
        return
    specs = args.jobs or (QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    header("pollerd at scale: many jobs on one process, against APScheduler alone")
    print(
        f"  window {window_s:g} s after one interval of warm-up; plugin max_concurrent_ticks "
        f"{MAX_CONCURRENT_TICKS}"
    )
    print(f"  a blocking 10 ms wait costs this process {wait_cpu_us():.0f} µs of CPU (the wake-up)")
    base_rss = one_job_rss()
    print(f"  a one-job pollerd: RSS {base_rss / KIB / KIB:.1f} MiB")
    for spec in specs:
        scenario = Scenario.parse(spec)
        section(f"{scenario.jobs:,} jobs every {scenario.every_s:g} s")
        ours = measure_pollerd(scenario, window_s, base_rss)
        theirs = measure_apscheduler(scenario, window_s)
        floor = measure_raw(scenario, window_s, store=False)
        with_store = measure_raw(scenario, window_s, store=True)
        ratio = ours["cpu_per_tick_us"] / max(theirs["cpu_per_tick_us"], 1e-9)
        print(f"  CPU per tick / APScheduler CPU per run: {verdict(ratio, CPU_RATIO_GOAL, False)}")
        print(
            "  CPU per tick / raw nats-py CPU per request: "
            f"{ours['cpu_per_tick_us'] / max(floor['cpu_per_tick_us'], 1e-9):.2f}; "
            "/ the same with plain sqlite3 commits: "
            f"{ours['cpu_per_tick_us'] / max(with_store['cpu_per_tick_us'], 1e-9):.2f}"
        )
        kept_up = ours["per_s"] >= scenario.expected_per_s * 0.99
        print(f"  kept up: {'yes' if kept_up else 'NO'}")
    print()
    print("machine load after the run: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
