"""What the benchmarks share: statistics, report lines, and a throwaway pollerd setup."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pollerd.wire import TickRequest

logger = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent


def _bench_dir_last() -> None:
    """Move this folder to the end of ``sys.path``: ``python bench/nats.py`` puts it first, and
    ``bench/nats.py`` would then stand in for the nats package for everyone who imports it.
    Import ``benchlib`` before anything that imports nats."""
    ours = [entry for entry in sys.path if Path(entry or ".").resolve() == BENCH_DIR]
    for entry in ours:
        sys.path.remove(entry)
    sys.path.append(str(BENCH_DIR))


_bench_dir_last()
PLUGINS_DIR = BENCH_DIR / "plugins"
PERCENTILES = 100
P50 = 50
P99 = 99
MS = 1000.0
RULE_WIDTH = 78
CURSOR = b"bench-cursor"


def percentile(samples: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile, interpolated between the closest ranks."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=PERCENTILES, method="inclusive")[pct - 1]


def machine_line() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"machine: {usable} usable cores (os.cpu_count() = {os.cpu_count()}), load average "
        f"{load}; Python {platform.python_version()} on {platform.system()} {platform.machine()}"
    )


def header(title: str) -> None:
    print(title)
    print("=" * RULE_WIDTH)
    print(machine_line())


def section(title: str) -> None:
    print()
    print(title)
    print("-" * RULE_WIDTH)


def times_line(label: str, samples_s: Sequence[float], width: int = 44) -> str:
    """``label  p50 x ms  p99 y ms  (n)`` for a list of durations in seconds."""
    return (
        f"  {label:<{width}} p50 {percentile(samples_s, P50) * MS:7.2f} ms"
        f"   p99 {percentile(samples_s, P99) * MS:7.2f} ms   (n={len(samples_s)})"
    )


def verdict(ratio: float, goal: float, higher_is_better: bool) -> str:
    met = ratio >= goal if higher_is_better else ratio <= goal
    sign = ">=" if higher_is_better else "<="
    return f"{ratio:.2f}  (goal {sign} {goal:g}: {'met' if met else 'MISSED'})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_plugin(
    folder: Path,
    *,
    plugin_id: str,
    program: str,
    kinds: Sequence[str],
    lifecycle: str,
    max_concurrent_ticks: int,
    tick_timeout: str = "30s",
) -> Path:
    """A plugin folder with a copy of ``bench/plugins/<program>`` and its plugin.toml."""
    folder.mkdir(parents=True)
    shutil.copy(PLUGINS_DIR / program, folder / program)
    kinds_toml = ", ".join(f'"{kind}"' for kind in kinds)
    (folder / "plugin.toml").write_text(
        f"""[plugin]
id = "{plugin_id}"
version = "0.1.0"
description = "benchmark plugin"

[plugin.entrypoint]
command = "python"
args = ["{program}"]
env = []

[plugin.poller]
kinds = [{kinds_toml}]
lifecycle = "{lifecycle}"
max_concurrent_ticks = {max_concurrent_ticks}
tick_timeout = "{tick_timeout}"
"""
    )
    return folder / program


def write_config(root: Path, jobs: Sequence[tuple[str, str]]) -> Path:
    """``pollers.yaml`` in ``root``: embedded NATS, no HTTP, plugins in ``root/plugins``.

    ``jobs`` are ``(job id, kind)`` pairs, scheduled hourly (the benchmarks tick them by hand).
    """
    lines = [
        "version: 1",
        "nats: embedded",
        "state_dir: state",
        "plugins: [plugins]",
        "http: off",
        "jobs:",
    ]
    for job_id, kind in jobs:
        lines += [f"  - id: {job_id}", f"    kind: {kind}", "    schedule: {every: 1h}"]
    path = root / "pollers.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def python() -> str:
    return sys.executable


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(name: str) -> int | None:
    """The pid of a child of this process whose command line mentions ``name`` (Linux)."""
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if name.encode() in cmdline:
                return int(pid)
    return None


def request_frame(job_id: str, kind: str, now: datetime | None = None) -> bytes:
    """A request line of the kind pollerd writes for a job (same fields and sizes)."""
    return tick_request(job_id, kind, now).encode()


def tick_request(job_id: str, kind: str, now: datetime | None = None) -> TickRequest:
    """The request pollerd sends for a job (same fields and sizes as ``request_frame``)."""
    from pollerd.wire import TickRequest  # after _bench_dir_last: see the module docstring

    now = now or datetime.now(UTC)
    return TickRequest(
        kind=kind,
        job_id=job_id,
        tick_id=f"{job_id}@{now.isoformat()}",
        attempt=1,
        agent_id="",
        cursor=CURSOR,
        config={},
        now=now,
        scheduled_at=now,
        deadline=now + timedelta(seconds=30),
        interval_hint_secs=3600.0,
    )
