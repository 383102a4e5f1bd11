"""`pollerd store copy`: a SQLite state moves into a nats-kv bucket, cursors, state and ticks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natscluster import NatsCluster
from pollerd.cli import main
from pollerd.config.setup import load_setup
from pollerd.errors import PollerdError
from pollerd.ops.admin import open_setup_store
from pollerd.ops.storecopy import copy_state
from pollerd.stores.base import JobUpdate, TickRecord
from pollerd.stores.sqlite import SqliteStore

pytestmark = pytest.mark.nats

MOMENT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
PLUGINS = Path(__file__).parents[1] / "fixtures" / "replicas" / "plugins"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=1) as node:
        yield node


def write_config(tmp_path: Path, url: str) -> Path:
    jobs = [{"id": job, "kind": "chain", "schedule": {"every": "1h"}} for job in ("a", "b")]
    document = {
        "version": 1,
        "nats": {"url": url},
        "store": {"type": "nats-kv", "bucket": "COPIED"},
        "state_dir": str(tmp_path / "state"),
        "plugins": [str(PLUGINS)],
        "jobs": jobs,
    }
    path = tmp_path / "replicas.yaml"
    path.write_text(json.dumps(document))
    return path


async def old_state(path: Path) -> None:
    tick = TickRecord("a@1", MOMENT, MOMENT, "ok", 1, 0.5, 2, None, "old-host")
    async with SqliteStore(path) as store:
        await store.ensure("a", "chain")
        await store.update(
            "a", JobUpdate(cursor=b"\x00cursor", last_scheduled_at=MOMENT, tick=tick)
        )
        await store.ensure("b", "chain", paused=True)
        await store.update("b", JobUpdate(pause_reason="maintenance", consecutive_errors=3))


async def test_copy_moves_every_job_with_its_cursor_state_and_ticks(
    tmp_path: Path, server: NatsCluster
) -> None:
    source = tmp_path / "old" / "state.db"
    await old_state(source)
    setup = load_setup(write_config(tmp_path, server.urls), {})

    said = await copy_state(setup, source)

    async with SqliteStore(source) as old, open_setup_store(setup) as new:
        for job in ("a", "b"):
            before, after = await old.get(job), await new.get(job)
            assert before is not None and after is not None
            fields = ("cursor", "last_scheduled_at", "paused", "pause_reason", "consecutive_errors")
            assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
        assert await new.history("a", 5) == await old.history("a", 5)
    assert said.startswith("copied 2 job(s)")


async def test_a_second_copy_is_refused_unless_told_to_overwrite(
    tmp_path: Path, server: NatsCluster
) -> None:
    source = tmp_path / "old" / "state.db"
    await old_state(source)
    config = write_config(tmp_path, server.urls)
    setup = load_setup(config, {})
    await copy_state(setup, source)

    with pytest.raises(PollerdError) as refused:
        await copy_state(setup, source)

    assert "already holds 2 of these jobs (a, b)" in str(refused.value)
    assert "--overwrite" in str(refused.value)
    assert (await copy_state(setup, source, overwrite=True)).startswith("copied 2")


def test_the_cli_copies_and_names_a_missing_file(tmp_path: Path, server: NatsCluster) -> None:
    source = tmp_path / "old" / "state.db"
    config = write_config(tmp_path, server.urls)

    missing = main(["store", "copy", "--from", str(source), "-c", str(config)])

    assert missing == 1
