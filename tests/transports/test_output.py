"""A plugin's output reaches pollerd's log within bounds: per tick, per line, per second."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import pytest

from conftest import FIXTURES_DIR, make_tick_request
from pollerd.supervision.plugin_process import PluginProcess
from pollerd.transports.output import OutputLimiter, RateBudget, TickBudget
from pollerd.transports.subprocess import SubprocessTransport

EDGES_DIR = FIXTURES_DIR / "edges"
LOG_BOUND_BYTES = 200 * 1024  # of the ~6 MB flood.py writes, what may reach the log


@dataclass
class ManualClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(
    budget: TickBudget | RateBudget, max_line_bytes: int = 10
) -> tuple[OutputLimiter, list[str]]:
    lines: list[str] = []
    return OutputLimiter(lines.append, budget, max_line_bytes=max_line_bytes), lines


# --- pure: the limiter and its budgets -------------------------------------------------------


def test_lines_split_across_chunks_are_joined_and_the_last_unterminated_one_is_kept() -> None:
    output, lines = limiter(TickBudget())
    for chunk in (b"al", b"pha\nbe", b"ta\n\ngam", b"ma"):
        output.feed(chunk)
    output.close()
    assert lines == ["alpha", "beta", "gamma"]
    assert list(output.tail) == ["alpha", "beta", "gamma"]


def test_an_over_long_line_is_cut_and_says_how_much_was_cut() -> None:
    output, lines = limiter(TickBudget(), max_line_bytes=10)
    output.feed(b"0123456789" * 3)
    output.feed(b"abc\nshort\n")
    output.close()
    assert lines == ["0123456789 … (23 more bytes of this line cut)", "short"]


def test_past_the_tick_budget_lines_are_counted_and_reported_once_at_the_end() -> None:
    output, lines = limiter(TickBudget(max_lines=2, max_bytes=1000), max_line_bytes=100)
    output.feed(b"one\ntwo\nthree\nfour\nfive\n")
    output.close()
    assert lines[:2] == ["one", "two"]
    assert (
        lines[2] == "… 13 more bytes (3 lines) of stderr dropped (limit 2 lines / 0 KiB per tick)"
    )
    assert len(lines) == 3
    assert list(output.tail)[-1] == "five"  # the tail still has the last words


def test_the_byte_budget_counts_too_and_stays_closed_once_exceeded() -> None:
    output, lines = limiter(TickBudget(max_lines=100, max_bytes=8), max_line_bytes=100)
    output.feed(b"12345\n123456\n1\n")
    output.close()
    assert lines[0] == "12345"
    assert lines[1].startswith("… 7 more bytes (2 lines)")


def test_a_rate_budget_drops_a_burst_and_reports_it_before_the_next_line_that_passes() -> None:
    clock = ManualClock()
    budget = RateBudget(clock, lines_per_s=2, bytes_per_s=1000, burst_s=1)
    output, lines = limiter(budget, max_line_bytes=100)
    output.feed(b"a\nb\nc\nd\n")
    clock.advance(1.0)
    output.feed(b"e\n")
    output.close()
    assert lines == [
        "a",
        "b",
        "… 2 more bytes (2 lines) of stderr dropped (limit 2 lines / 0.976562 KiB a second)",
        "e",
    ]


# --- real processes that flood ---------------------------------------------------------------


def plugin_log_bytes(caplog: pytest.LogCaptureFixture) -> int:
    return sum(len(r.getMessage()) for r in caplog.records if r.name == "pollerd.plugin")


def plugin_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pollerd.plugin"]


async def test_an_ephemeral_plugin_flooding_stderr_logs_a_bounded_amount_per_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    transport = SubprocessTransport(
        plugin_id="flood",
        command="python",
        args=["flood.py"],
        cwd=EDGES_DIR,
        env_allow=[],
        environ={},
    )
    replies = [await transport.send(make_tick_request(kind="flood"), 30.0) for _ in range(3)]

    messages = plugin_messages(caplog)
    dropped = [m for m in messages if "of stderr dropped (limit" in m]
    assert [r.next_cursor for r in replies] == [b"flooded"] * 3
    assert plugin_log_bytes(caplog) < LOG_BOUND_BYTES  # of 3 × 6 MB written
    assert len(dropped) == 3  # one summary per tick
    assert all(m.startswith("plugin=flood job_id=inbox: … ") for m in dropped)
    assert any("more bytes of this line cut" in m for m in messages)


async def test_a_supervised_plugin_flooding_stderr_is_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.plugin")
    # Long-lived mode without a NATS URL: it floods at start, then exits (no server to serve on).
    process = await PluginProcess.spawn(
        "flood",
        [sys.executable, "flood.py"],
        cwd=EDGES_DIR,
        env={"POLLERD_MODE": "long_lived"},
    )
    await process.exited
    await process.stop(grace_s=1.0)

    messages = plugin_messages(caplog)
    assert plugin_log_bytes(caplog) < LOG_BOUND_BYTES
    assert any("of stderr dropped (limit 100 lines / 64 KiB a second)" in m for m in messages)
    assert process.stderr_tail  # the last words survive the limit, for a crash's reason
