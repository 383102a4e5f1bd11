"""The files plugin (plugins/files): dir_watch reports new and changed files once each."""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pollerd import wire
from pollerd.config.manifest import load_manifest
from pollerd.supervision.supervisor import Supervisor
from pollerd.transports.prefork import PreforkTransport
from pollerd.transports.subprocess import SubprocessTransport

PLUGIN_FOLDER = Path(__file__).parents[2] / "plugins" / "files"
SCHEDULED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TICK_ID = wire.make_tick_id("inbox", SCHEDULED)
T0_NS = 1_763_800_000_123_456_789  # 2025-11-22T08:26:40.123456789Z
TIMEOUT_S = 30.0


def load_plugin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("files_dir_watch", PLUGIN_FOLDER / "dir_watch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


dir_watch = load_plugin_module()


def request(cursor: bytes | None, interval_hint_secs: float | None = 10, **config: Any) -> bytes:
    return wire.TickRequest(
        kind="dir_watch",
        job_id="inbox",
        tick_id=TICK_ID,
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config,
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=TIMEOUT_S),
        interval_hint_secs=interval_hint_secs,
    ).encode()


async def tick(cursor: bytes | None, **config: Any) -> wire.TickReply:
    return wire.decode_reply(await dir_watch.plugin.handle(request(cursor, **config)))


class Watcher:
    """Ticks the plugin over one directory, keeping the cursor like pollerd does."""

    def __init__(self, folder: Path, **config: Any) -> None:
        self.folder = folder
        self.config = {"path": str(folder), **config}
        self.cursor: bytes | None = None

    async def tick(self) -> wire.TickReply:
        reply = await tick(self.cursor, **self.config)
        if reply.next_cursor is not None:
            self.cursor = reply.next_cursor
        return reply

    async def ids(self) -> list[str]:
        return [event.id for event in (await self.tick()).events]

    def write(self, relpath: str, content: bytes, mtime_ns: int) -> str:
        path = self.folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        return f"{relpath}:{mtime_ns}:{len(content)}"


async def test_a_new_file_is_reported_once_with_its_path_size_and_time(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path)
    assert await watcher.ids() == []
    watcher.write("a.txt", b"hello", T0_NS)

    reply = await watcher.tick()

    assert [(e.id, e.data) for e in reply.events] == [
        (
            f"a.txt:{T0_NS}:5",
            {"path": "a.txt", "size": 5, "mtime": "2025-11-22T08:26:40.123456Z"},
        )
    ]
    assert reply.metrics["files_seen"] == 1.0


async def test_a_modified_file_is_reported_again_with_a_new_id(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path)
    first = watcher.write("a.txt", b"v1", T0_NS)
    assert await watcher.ids() == [first]

    second = watcher.write("a.txt", b"v2", T0_NS + 1)

    assert await watcher.ids() == [second]


async def test_an_unchanged_directory_reports_nothing_and_keeps_the_cursor(
    tmp_path: Path,
) -> None:
    watcher = Watcher(tmp_path)
    watcher.write("a.txt", b"v1", T0_NS)
    await watcher.tick()

    reply = await watcher.tick()

    assert reply.events == ()
    assert reply.next_cursor is None


async def test_the_first_tick_reports_existing_files_oldest_first(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path)
    newer = watcher.write("a.txt", b"a", T0_NS + 10)
    older = watcher.write("b.txt", b"b", T0_NS)

    assert await watcher.ids() == [older, newer]


async def test_with_report_existing_off_the_first_tick_only_takes_note(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path, report_existing=False)
    watcher.write("old.txt", b"old", T0_NS)
    assert await watcher.ids() == []

    new = watcher.write("new.txt", b"new", T0_NS)

    assert await watcher.ids() == [new]


async def test_pattern_matches_names_and_recursive_adds_subdirectories(tmp_path: Path) -> None:
    flat = Watcher(tmp_path, pattern="*.csv")
    deep = Watcher(tmp_path, pattern="*.csv", recursive=True)
    top = flat.write("top.csv", b"1", T0_NS)
    flat.write("notes.txt", b"2", T0_NS)
    nested = flat.write("2026/11/day.csv", b"3", T0_NS + 1)

    assert await flat.ids() == [top]
    assert await deep.ids() == [top, nested]


async def test_a_deleted_file_is_forgotten_without_an_event(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path)
    watcher.write("a.txt", b"a", T0_NS)
    watcher.write("b.txt", b"b", T0_NS)
    await watcher.tick()
    (tmp_path / "a.txt").unlink()

    reply = await watcher.tick()

    assert reply.events == ()
    assert reply.next_cursor is not None
    assert dir_watch.decode_seen(reply.next_cursor).keys() == {"b.txt"}


async def test_a_backlog_is_reported_a_slice_per_tick_and_asks_for_a_quick_next_tick(
    tmp_path: Path,
) -> None:
    watcher = Watcher(tmp_path, max_events=2)
    ids = [watcher.write(f"f{n}.txt", b"x", T0_NS + n) for n in range(5)]

    first = await watcher.tick()
    second = await watcher.tick()
    third = await watcher.tick()

    assert [e.id for e in first.events + second.events + third.events] == ids
    assert (first.next_interval_secs, first.metrics["files_pending"]) == (1.0, 3.0)
    assert (third.next_interval_secs, third.metrics["files_pending"]) == (None, 0.0)


async def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(wire.PluginReplyError) as caught:
        await tick(None, path=str(tmp_path / "nowhere"))

    assert caught.value.code == wire.CODE_CONFIG
    assert f"directory {tmp_path / 'nowhere'} does not exist" in caught.value.plugin_message


async def test_a_cursor_from_something_else_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(wire.PluginReplyError) as caught:
        await tick(b"\x07garbage", path=str(tmp_path))

    assert caught.value.code == wire.CODE_PERMANENT
    assert "pollerd cursor reset" in caught.value.plugin_message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({}, "'path' is required"),
        ({"path": "/x", "patern": "*"}, "unknown config key(s) patern"),
        ({"path": "/x", "pattern": ""}, "'pattern' must be a glob"),
        ({"path": "/x", "recursive": "yes"}, "'recursive' must be true or false"),
        ({"path": "/x", "max_events": 0}, "'max_events' must be within 1..5000"),
        ({"path": "/x", "max_events": "10"}, "'max_events' must be an integer"),
        ({"path": "inbox"}, "is relative but POLLERD_CONFIG_DIR is not set"),
    ],
)
def test_bad_config_is_refused_naming_the_key(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(dir_watch.ConfigError) as caught:
        dir_watch.parse_config(config, None)

    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("path", "config_dir", "root"),
    [
        ("/srv/inbox", None, "/srv/inbox"),
        ("/srv/inbox", "/etc/pollerd", "/srv/inbox"),
        ("inbox", "/etc/pollerd", "/etc/pollerd/inbox"),
        ("../data/inbox", "/etc/pollerd", "/etc/pollerd/../data/inbox"),
    ],
)
def test_a_relative_path_resolves_against_the_config_folder(
    path: str, config_dir: str | None, root: str
) -> None:
    assert dir_watch.resolve_root(path, config_dir) == Path(root)


def test_the_cursor_for_ten_thousand_files_stays_well_under_the_cap() -> None:
    rng = random.Random(1)
    seen = {
        f"incoming/2026-11-{1 + n % 28:02d}/report-{n:05d}.csv": dir_watch.fingerprint(
            (T0_NS + rng.randrange(10**15), rng.randrange(10**8))
        )
        for n in range(10_000)
    }

    cursor = dir_watch.encode_seen(seen)

    assert len(cursor) < 100 * 1024  # measured: about 69 KB, 27 % of the 256 KiB cap
    assert dir_watch.decode_seen(cursor) == seen


async def test_the_shipped_manifest_runs_the_plugin_with_a_path_relative_to_the_config_folder(
    tmp_path: Path,
) -> None:
    entrypoint = tomllib.loads((PLUGIN_FOLDER / "plugin.toml").read_text())["plugin"]["entrypoint"]
    transport = SubprocessTransport(
        plugin_id="files",
        command=entrypoint["command"],
        args=entrypoint["args"],
        cwd=PLUGIN_FOLDER,
        env_allow=entrypoint["env"],
        environ={"HOME": "/nowhere"},
        extra_env={"POLLERD_CONFIG_DIR": str(tmp_path)},  # what the service passes every plugin
    )
    inbox = Watcher(tmp_path / "inbox")
    expected = inbox.write("drop.txt", b"payload", T0_NS)
    tick_request = wire.TickRequest(
        kind="dir_watch",
        job_id="inbox",
        tick_id=TICK_ID,
        attempt=1,
        agent_id="",
        cursor=None,
        config={"path": "inbox"},
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=TIMEOUT_S),
    )

    reply = await transport.send(tick_request, TIMEOUT_S)

    assert [event.id for event in reply.events] == [expected]
    assert reply.next_cursor is not None
    assert dir_watch.decode_seen(reply.next_cursor).keys() == {"drop.txt"}


async def test_the_shipped_plugin_is_pre_forked_and_answers_as_a_spawned_one_does(
    tmp_path: Path,
) -> None:
    manifest = load_manifest(PLUGIN_FOLDER / "plugin.toml")
    environ = {"HOME": "/nowhere"}
    extra_env = {"POLLERD_CONFIG_DIR": str(tmp_path)}
    inbox = Watcher(tmp_path / "inbox")
    expected = inbox.write("drop.txt", b"payload", T0_NS)
    tick_request = wire.TickRequest(
        kind="dir_watch",
        job_id="inbox",
        tick_id=TICK_ID,
        attempt=1,
        agent_id="",
        cursor=None,
        config={"path": "inbox"},
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=TIMEOUT_S),
    )
    spawned = await SubprocessTransport.from_manifest(manifest, environ, extra_env=extra_env).send(
        tick_request, TIMEOUT_S
    )
    async with Supervisor(
        [manifest], nc=None, nats_url="", environ=environ, extra_env=extra_env
    ) as supervisor:
        transport = PreforkTransport.from_manifest(
            manifest,
            environ,
            extra_env=extra_env,
            connect=functools.partial(supervisor.zygote_channel, manifest.id),
        )
        forked = await transport.send(tick_request, TIMEOUT_S)

    assert manifest.prefork
    assert [event.id for event in forked.events] == [expected]
    assert forked == spawned
