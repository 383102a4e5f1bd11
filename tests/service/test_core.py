"""The service's tick path with real plugin processes: cursor hand-back and the commit rule."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pollerd.config.setup import load_setup
from pollerd.engine.events import MemoryEventPublisher
from pollerd.engine.runner import TickOutcome
from pollerd.service.core import Service
from pollerd.stores.base import JobState, JobUpdate
from pollerd.wire import encode_cursor

CORE_PLUGINS = Path(__file__).parents[1] / "fixtures" / "core" / "plugins"
KEPT = b"\x00kept\xff"

# Cursors with the bytes base64url treats specially (0x00, 0xff, the "-" and "_" digits, padding)
# and one of several KB. The raw plugin walks this list, one step per tick.
CURSORS = [
    b"\x00",
    b"\xff",
    b"\xfb\xff",  # "-_8": both URL-safe digits
    b"-_",  # the digits themselves as bytes
    b"",  # an empty cursor, not a missing one
    b"\x00\xff\x00",
    bytes(range(256)) * 24 + b"\xff\x00",  # 6 KiB
]


def write_config(tmp_path: Path, jobs: list[dict[str, Any]]) -> Path:
    """A pollers.yaml with the core fixture plugins, no HTTP and no retries."""
    path = tmp_path / "pollers.yaml"
    lines = [
        "version: 1",
        "state_dir: state",
        f"plugins: [{CORE_PLUGINS}]",
        "http: off",
        "defaults:",
        "  retry: {attempts: 1}",
        "jobs:",
        *(f"  - {json.dumps(job)}" for job in jobs),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def service_for(tmp_path: Path, jobs: list[dict[str, Any]]) -> AsyncIterator[Service]:
    """A service that schedules nothing (ticks come from tick_now) and keeps events in memory."""
    setup = load_setup(write_config(tmp_path, jobs), os.environ)
    assert not setup.broken, setup.broken
    async with Service(
        setup, environ=os.environ, publisher=MemoryEventPublisher(), schedule=False, http=False
    ) as service:
        yield service


def faulty_job(job_id: str, **config: Any) -> dict[str, Any]:
    return {"id": job_id, "kind": "faulty", "schedule": {"every": "1h"}, "config": config}


async def tick(service: Service, job_id: str) -> TickOutcome:
    outcome = await service.tick_now(job_id)
    assert outcome is not None
    return outcome


async def state_of(service: Service, job_id: str) -> JobState:
    state = await service.store.get(job_id)
    assert state is not None
    return state


async def test_a_raw_plugin_gets_back_exactly_the_cursor_it_returned_on_every_tick(
    tmp_path: Path,
) -> None:
    # One cursor is handed out with padding: pollerd accepts it and sends it back without.
    wire_cursors = [encode_cursor(c) for c in CURSORS]
    wire_cursors[1] += "=="
    job = {
        "id": "raw-walk",
        "kind": "raw_cursor",
        "schedule": {"every": "1h"},
        "config": {"cursors": wire_cursors},
    }
    received: list[tuple[str | None, str | None]] = []
    stored: list[bytes | None] = []

    async with service_for(tmp_path, [job]) as service:
        for _ in range(len(CURSORS) + 1):
            outcome = await tick(service, "raw-walk")
            assert outcome.ok and outcome.reply is not None, outcome.error
            echo = outcome.reply.events[0].data
            received.append((echo["wire_cursor"], echo["cursor_hex"]))
            stored.append((await state_of(service, "raw-walk")).cursor)

    handed_back = [None, *CURSORS]
    assert received == [
        (None, None) if c is None else (encode_cursor(c), c.hex()) for c in handed_back
    ]
    # The last reply has next_cursor null: the stored cursor stays the last one handed out.
    assert stored == [*CURSORS, CURSORS[-1]]


@pytest.mark.parametrize(
    ("config", "status", "says"),
    [
        ({"mode": "bad_cursor"}, "protocol", "next_cursor"),
        ({"mode": "garbage"}, "protocol", "'faulty'"),
    ],
    ids=["malformed-next-cursor", "garbage-on-stdout"],
)
async def test_a_protocol_error_fails_the_tick_and_keeps_the_stored_cursor(
    tmp_path: Path, config: dict[str, Any], status: str, says: str
) -> None:
    async with service_for(tmp_path, [faulty_job("bad", **config)]) as service:
        await service.store.update("bad", JobUpdate(cursor=KEPT))
        outcome = await tick(service, "bad")
        state = await state_of(service, "bad")

    assert outcome.status == status
    assert says in (outcome.error or "")
    assert outcome.plugin == "faulty"
    assert state.cursor == KEPT
    assert (state.last_status, state.consecutive_errors) == (status, 1)
    assert state.last_success_at is None


async def test_a_timeout_fails_the_tick_and_keeps_the_stored_cursor(tmp_path: Path) -> None:
    job = {**faulty_job("slow", mode="hang"), "tick_timeout": "300ms"}

    async with service_for(tmp_path, [job]) as service:
        await service.store.update("slow", JobUpdate(cursor=KEPT))
        outcome = await tick(service, "slow")
        state = await state_of(service, "slow")

    assert outcome.status == "timeout"
    assert state.cursor == KEPT
    assert (state.last_status, state.consecutive_errors) == ("timeout", 1)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"next_cursor": encode_cursor(b"\x01\x02")}, lambda kept: b"\x01\x02"),
        ({"next_cursor": None}, lambda kept: kept),
        ({"next_cursor": ""}, lambda kept: b""),
    ],
    ids=["new-cursor", "null-keeps", "empty-stores-empty"],
)
async def test_a_successful_tick_through_the_service_commits_by_the_cursor_rules(
    tmp_path: Path, config: dict[str, Any], expected: Callable[[bytes], bytes]
) -> None:
    async with service_for(tmp_path, [faulty_job("good", **config)]) as service:
        await service.store.update("good", JobUpdate(cursor=KEPT, consecutive_errors=2))
        outcome = await tick(service, "good")
        state = await state_of(service, "good")

    assert outcome.ok and outcome.committed
    assert state.cursor == expected(KEPT)
    assert (state.last_status, state.consecutive_errors) == ("ok", 0)


async def test_a_refused_reload_names_the_config_as_the_operator_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, [faulty_job("good")])
    monkeypatch.chdir(tmp_path)
    setup = load_setup(Path("pollers.yaml"), os.environ)

    async with Service(
        setup, environ=os.environ, publisher=MemoryEventPublisher(), schedule=False, http=False
    ) as service:
        config = tmp_path / "pollers.yaml"
        config.write_text(config.read_text().replace("version: 1", "version: 7"))
        result = await service.reload()

    assert result["ok"] is False
    assert str(result["error"]).startswith("pollers.yaml:1: version: ")
