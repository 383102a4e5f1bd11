"""The cost of reading a large pollers.yaml: `pollerd check` and `pollerd jobs --json` at N jobs.

Run: ``.venv/bin/python bench/config.py [--jobs N] [--rounds N]``. It writes a config of N feeds
jobs (the shipped plugins, so each job's config is also checked against the plugin's schema) and
times, as real processes, ``pollerd check``, ``pollerd jobs --json`` and the baseline: a Python
process that only imports PyYAML and loads the same file with libyaml (what reading the file
costs before pollerd validates anything). Variants alternate within each round; the figures are
medians of wall time and of CPU time (user + system of the child), measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)"


def write_config(folder: Path, jobs: int) -> Path:
    lines = ["version: 1", f"plugins: [{REPO / 'plugins'}]", "state_dir: state", "http: off"]
    lines.append("jobs:")
    for index in range(jobs):
        lines += [
            f"  - id: feed-{index}",
            "    kind: rss",
            "    schedule: {every: 10s}" if index % 10 else "    schedule: {cron: '*/5 * * * *'}",
            f"    config: {{url: https://example.org/{index}.xml, max_seen: 50}}",
        ]
    path = folder / "pollers.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (which must succeed or exit 1)."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pollerd = [sys.executable, "-m", "pollerd"]
    with tempfile.TemporaryDirectory() as folder:
        path = write_config(Path(folder), args.jobs)
        size_bytes = path.stat().st_size
        variants = {
            "baseline: libyaml load in a bare process": [sys.executable, "-c", BASELINE, str(path)],
            "pollerd check": [*pollerd, "check", "-c", str(path)],
            "pollerd jobs --json": [*pollerd, "jobs", "--json", "-c", str(path)],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for round_number in range(args.rounds):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                results[name].append(timed(variants[name], Path(folder)))
    print(f"pollerd benchmark: reading a pollers.yaml of {args.jobs:,} jobs")
    print(f"  {size_bytes:,} bytes; load average {os.getloadavg()[0]:.1f} (2 cores)")
    base_wall = statistics.median(wall for wall, _ in results[next(iter(variants))])
    base_cpu = statistics.median(cpu for _, cpu in results[next(iter(variants))])
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(
            f"  {name:44s} wall {wall:6.2f} s ({wall / base_wall:4.1f}x)  "
            f"cpu {cpu:6.2f} s ({cpu / base_cpu:4.1f}x)"
        )


if __name__ == "__main__":
    main()
