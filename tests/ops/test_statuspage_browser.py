"""The status page of a running `pollerd run`, loaded in a real headless Chromium.

The service runs a healthy, a failing and a paused job; the browser's DOM must show each with
its state and the two that ran with a strip of recent ticks, and a screenshot of the page is
saved in the test's tmp folder (``status.png``) for a person to look at.
"""

from __future__ import annotations

import asyncio
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import free_port
from ops.test_operator import StartPollerd, start_pollerd, wait_until, write_config
from ops.test_service_logs import MOODS, mood_job
from system_tools import require_tool

pytestmark = pytest.mark.slow

BROWSER_TIMEOUT_S = 60.0
WINDOW = "1400,700"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

__all__ = ["start_pollerd"]  # the fixture, used by name


class _Rows(HTMLParser):
    """The job and plugin rows of the page: data-* attributes and the bars of each strip."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict[str, str]] = {}
        self.plugins: list[str] = []
        self._job: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "tr" and "data-job" in found:
            self._job = found["data-job"]
            self.jobs[self._job] = {"state": found["data-state"], "bars": "0"}
        elif tag == "tr" and "data-plugin" in found:
            self.plugins.append(found["data-plugin"])
        elif tag == "span" and self._job and found.get("class") in ("ok", "fail", "slow", "fatal"):
            job = self.jobs[self._job]
            job["bars"] = str(int(job["bars"]) + 1)
            job.setdefault("first_bar", found["class"] or "")


def browser(chromium: str, profile: Path, *args: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
        *args,
    ]


async def run_browser(command: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(BROWSER_TIMEOUT_S):
        out, _ = await process.communicate()
    assert process.returncode == 0, f"{command[0]} exited with {process.returncode}"
    return out.decode()


async def test_the_status_page_shows_a_healthy_a_failing_and_a_paused_job_in_a_browser(
    tmp_path: Path, start_pollerd: StartPollerd
) -> None:
    chromium = require_tool("chromium")
    port = free_port()
    jobs = [
        mood_job("healthy", events=1, sleep_ms=30),
        mood_job("failing", outcome="transient", sleep_ms=5),
        {**mood_job("held"), "paused": True},
    ]
    pollerd = await start_pollerd(write_config(tmp_path, port, jobs, plugins=MOODS), port)

    async def both_ran_a_few_times() -> bool:
        counts = []
        for job_id in ("healthy", "failing"):
            _, ticks = await pollerd.get(f"/v1/jobs/{job_id}/history?limit=5")
            counts.append(len(ticks))
        return min(counts) >= 4

    await wait_until(both_ran_a_few_times, 30.0)
    url = f"http://127.0.0.1:{port}/"
    dom = await run_browser(browser(chromium, tmp_path / "profile", "--dump-dom", url))
    screenshot = tmp_path / "status.png"
    await run_browser(browser(chromium, tmp_path / "profile", f"--screenshot={screenshot}", url))
    filtered = await run_browser(
        browser(chromium, tmp_path / "profile", "--dump-dom", url + "?state=paused")
    )

    rows, only_paused = _Rows(), _Rows()
    rows.feed(dom)
    only_paused.feed(filtered)
    assert {job: row["state"] for job, row in rows.jobs.items()} == {
        "healthy": "active",
        "failing": "failing",
        "held": "paused",
    }
    assert int(rows.jobs["healthy"]["bars"]) >= 4
    assert int(rows.jobs["failing"]["bars"]) >= 4
    assert rows.jobs["healthy"]["first_bar"] == "ok"
    assert rows.jobs["failing"]["first_bar"] == "fail"
    assert rows.jobs["held"]["bars"] == "0"
    assert "upstream answered 503" in dom
    assert rows.plugins == ["moods"]
    assert list(only_paused.jobs) == ["held"]
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
