"""What a tick leaves running outside its process group is killed (``setsid`` escapes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import FIXTURES_DIR, make_tick_request, process_exists, wait_for_condition
from pollerd.transports.leftovers import MARK_VARIABLE, leftover_pids
from pollerd.transports.subprocess import SubprocessTransport

TICKS = 5
GONE_WITHIN_S = 10.0


def environ(**variables: str) -> bytes:
    return b"".join(f"{k}={v}\0".encode() for k, v in variables.items())


@pytest.mark.parametrize(
    ("entry", "left"),
    [
        (environ(PATH="/bin", **{MARK_VARIABLE: "tok-3"}), True),  # an ended tick's process
        (environ(**{MARK_VARIABLE: "tok-7"}), False),  # a running tick's: left alone
        (environ(**{MARK_VARIABLE: "other-3"}), False),  # another sweeper's (another pollerd)
        (environ(X=f"{MARK_VARIABLE}=tok-3"), False),  # only a whole variable counts
        (environ(**{MARK_VARIABLE: "tok-3x"}), False),
        (environ(PATH="/bin"), False),  # no mark at all
        (b"", False),  # unreadable or empty (a zombie)
    ],
)
def test_only_processes_marked_by_an_ended_tick_of_this_sweeper_are_leftovers(
    entry: bytes, left: bool
) -> None:
    assert leftover_pids([(42, entry)], "tok", running={7}, newest=7) == ([42] if left else [])


def test_a_tick_begun_while_a_sweep_reads_proc_is_not_taken_for_a_leftover() -> None:
    # The sweep took its snapshot when tick 4 was the newest; tick 5 began while it read /proc,
    # so 5 is in neither the snapshot's running set nor the ended ticks. Killing it failed a
    # healthy tick with "killed by SIGKILL without a reply" (seen in the breaker test under load).
    started_during_sweep = environ(**{MARK_VARIABLE: "tok-5"})
    ended = environ(**{MARK_VARIABLE: "tok-3"})
    found = leftover_pids([(50, started_during_sweep), (30, ended)], "tok", running={4}, newest=4)
    assert found == [30]


def helper_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
async def test_helpers_that_left_the_process_group_with_setsid_are_killed_after_their_ticks(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    transport = SubprocessTransport(
        plugin_id="escaping",
        command="python",
        args=["escaping.py"],
        cwd=FIXTURES_DIR / "edges",
        env_allow=[],
        environ={},
    )
    try:
        for _ in range(TICKS):
            await transport.send(make_tick_request(config={"pids": str(pids)}), 10.0)
        left = helper_pids(pids)
        await wait_for_condition(
            lambda: not any(process_exists(pid) for pid in left), GONE_WITHIN_S
        )
    finally:
        await transport.aclose()
        for pid in helper_pids(pids):  # do not leak them if the test fails
            if process_exists(pid):
                os.kill(pid, 9)

    assert len(left) == TICKS  # each tick left one behind, and none is running now
