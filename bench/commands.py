"""The operator-facing commands at scale: start-up, reload, ``/metrics``, ``check``, ``jobs``.

Run: ``.venv/bin/python bench/commands.py [--jobs N] [--repeats R] [--keep DIR]``.

The same setup as ``bench/scale.py`` (N jobs ``every: 10s`` of the long-lived probe plugin, the
embedded nats-server, SQLite), without its measurement window and its APScheduler baseline: a
quicker loop while working on these commands. Each figure is the median of R runs, the service
ticking all along:

- start-up: from spawning ``pollerd run`` to ``/readyz`` answering 200 (one per service start);
- ``GET /metrics``; ``pollerd check``; ``pollerd jobs --json`` (whole commands);
- one-job reload: ``POST /v1/reload`` after changing one job's interval (and back).

``--keep DIR`` writes the setup to DIR and leaves it there (to profile a command against it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import header, median, python  # first: it keeps bench/ from shadowing packages
from scale import Pollerd, Scenario, config_text, free_port, timed, timed_http, write_setup

GOALS_S = {"start-up": 3.0, "check": 3.0, "jobs --json": 3.0, "reload": 1.0, "/metrics": 0.2}


def measure(root: Path, scenario: Scenario, repeats: int) -> dict[str, list[float]]:
    port = free_port()
    config = write_setup(root, scenario, port)
    figures: dict[str, list[float]] = {name: [] for name in GOALS_S}
    for _ in range(repeats):
        service = Pollerd(config, port)
        try:
            figures["start-up"].append(service.startup_s)
            figures["/metrics"].append(timed_http(port, "/metrics"))
            cli = [python(), "-m", "pollerd"]
            figures["check"].append(timed([*cli, "check", "-c", str(config)]))
            figures["jobs --json"].append(timed([*cli, "jobs", "--json", "-c", str(config)]))
            for changed in (True, False):
                config.write_text(config_text(scenario, port, changed=changed))
                figures["reload"].append(timed_http(port, "/v1/reload", "POST"))
        finally:
            service.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="number of jobs (every 10 s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--keep", type=Path, default=None, help="write the setup here, keep it")
    args = parser.parse_args()
    scenario = Scenario(args.jobs, 10.0)
    header(f"operator commands with {scenario.jobs:,} jobs every 10 s")
    if args.keep is not None:
        figures = measure(args.keep, scenario, args.repeats)
    else:
        with tempfile.TemporaryDirectory(prefix="pollerd-commands-") as tmp:
            figures = measure(Path(tmp), scenario, args.repeats)
    for name, samples in figures.items():
        value, goal = median(samples), GOALS_S[name]
        state = "met" if value <= goal else "MISSED"
        shown = ", ".join(f"{sample:.3f}" for sample in samples)
        print(f"  {name:<12} {value:7.3f} s  (goal <= {goal:g} s: {state})  [{shown}]")


if __name__ == "__main__":
    main()
