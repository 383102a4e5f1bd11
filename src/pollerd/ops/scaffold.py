"""`pollerd new-plugin`: writes a small working plugin folder (manifest, handler, its test)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import get_args

from pollerd.config.manifest import (
    DEFAULT_SUBJECT_ROOT,
    KIND_PATTERN,
    MANIFEST_NAME,
    PLUGIN_ID_PATTERN,
    Lifecycle,
)
from pollerd.errors import PollerdError

logger = logging.getLogger(__name__)

LIFECYCLES: tuple[str, ...] = get_args(Lifecycle)
HANDLER_SUFFIX = "_plugin.py"  # never shadows a standard library module the SDK imports
TEST_PREFIX = "test_"
STAGING_PREFIX = ".new-plugin-"  # dot folders are ignored by plugin discovery
EPHEMERAL_MAX_CONCURRENT_TICKS = 4
LONG_LIVED_MAX_CONCURRENT_TICKS = 8
TICK_TIMEOUT = "10s"


class ScaffoldError(PollerdError):
    """A plugin folder could not be generated (bad name, folder exists, unwritable)."""


@dataclass(frozen=True, slots=True)
class PluginSkeleton:
    """What ``new-plugin`` writes: file name → text, for the plugin ``name`` serving ``kind``."""

    name: str
    kind: str
    lifecycle: str
    module: str  # the handler's module name, also in the test file's name
    files: dict[str, str]

    @property
    def handler_file(self) -> str:
        return self.module + ".py"

    @property
    def test_file(self) -> str:
        return f"{TEST_PREFIX}{self.name.replace('-', '_')}.py"


def default_kind(name: str) -> str:
    """The kind a plugin serves when none is given: its name with ``-`` turned into ``_``."""
    return name.replace("-", "_")


def check_names(name: str, lifecycle: str, kind: str | None) -> str:
    """The kind to use; ``ScaffoldError`` naming the rule a bad name breaks."""
    if not PLUGIN_ID_PATTERN.fullmatch(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: it becomes the plugin id and must match "
            f"^{PLUGIN_ID_PATTERN.pattern}$ (lowercase letter first, then letters, digits, _ or -)"
        )
    if lifecycle not in LIFECYCLES:
        raise ScaffoldError(
            f"invalid lifecycle {lifecycle!r}: choose one of {', '.join(LIFECYCLES)}"
        )
    chosen = default_kind(name) if kind is None else kind
    if not KIND_PATTERN.fullmatch(chosen):
        raise ScaffoldError(
            f"invalid kind {chosen!r}: poller kinds must match ^{KIND_PATTERN.pattern}$ "
            "(lowercase letter first, then letters, digits or _)"
        )
    return chosen


def render_plugin(name: str, lifecycle: str, kind: str | None = None) -> PluginSkeleton:
    """The files of a new plugin, without touching the disk."""
    chosen = check_names(name, lifecycle, kind)
    module = default_kind(name) + HANDLER_SUFFIX.removesuffix(".py")
    values = {
        "name": name,
        "kind": chosen,
        "lifecycle": lifecycle,
        "module": module,
        "handler_file": module + ".py",
        "subject_prefix": f"{DEFAULT_SUBJECT_ROOT}.{name}",
        "tick_timeout": TICK_TIMEOUT,
    }
    long_lived = lifecycle == "long_lived"
    manifest = Template(_LONG_LIVED_MANIFEST if long_lived else _EPHEMERAL_MANIFEST)
    how = _LONG_LIVED_HOW if long_lived else _EPHEMERAL_HOW
    skeleton = PluginSkeleton(name, chosen, lifecycle, module, {})
    skeleton.files[MANIFEST_NAME] = manifest.substitute(
        values,
        max_concurrent_ticks=LONG_LIVED_MAX_CONCURRENT_TICKS
        if long_lived
        else EPHEMERAL_MAX_CONCURRENT_TICKS,
    )
    skeleton.files[skeleton.handler_file] = Template(_HANDLER).substitute(
        values, how=Template(how).substitute(values)
    )
    skeleton.files[skeleton.test_file] = Template(_TEST).substitute(values)
    return skeleton


def write_plugin(skeleton: PluginSkeleton, plugins_dir: Path) -> Path:
    """Write ``skeleton`` as ``<plugins_dir>/<name>/``; refuses to touch an existing one.

    The files are written to a hidden folder next to it first and renamed into place, so a
    failure leaves no half-written plugin behind.
    """
    target = plugins_dir / skeleton.name
    if target.exists() or target.is_symlink():
        raise ScaffoldError(
            f"{target} already exists: new-plugin never overwrites a plugin; choose another "
            "name or --dir, or remove that folder first"
        )
    try:
        plugins_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=plugins_dir))
    except OSError as exc:
        raise ScaffoldError(
            f"cannot create the plugin folder in {plugins_dir}: {exc.strerror or exc}; "
            "check --dir and its permissions"
        ) from exc
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a plugin folder is an ordinary folder
        for file_name, text in skeleton.files.items():
            (staging / file_name).write_text(text, encoding="utf-8")
        os.rename(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            raise ScaffoldError(f"{target} appeared while writing it; nothing was changed") from exc
        raise ScaffoldError(f"cannot write the plugin {target}: {exc.strerror or exc}") from exc
    logger.debug("plugin=%s written to %s", skeleton.name, target)
    return target


def new_plugin(
    name: str, lifecycle: str, *, plugins_dir: Path, kind: str | None = None
) -> tuple[PluginSkeleton, Path]:
    """Render and write a new plugin; the skeleton and the folder it went to."""
    skeleton = render_plugin(name, lifecycle, kind)
    return skeleton, write_plugin(skeleton, plugins_dir)


def next_steps(skeleton: PluginSkeleton, folder: Path) -> list[str]:
    """What `pollerd new-plugin` prints after writing ``folder``."""
    files = [folder / name for name in skeleton.files]
    return [
        f"created {skeleton.lifecycle} plugin {skeleton.name!r} (kind {skeleton.kind!r}):",
        *(f"  {path}" for path in files),
        "next:",
        f"  1. make sure {folder.parent} is listed under 'plugins:' in pollers.yaml",
        "  2. add a job of this kind to pollers.yaml:",
        f"       - id: {skeleton.name}",
        f"         kind: {skeleton.kind}",
        "         schedule: {every: 10s}",
        "         config: {label: hello}",
        f"  3. pollerd check && pollerd tick {skeleton.name}",
        f"  4. pytest {folder}",
    ]


# -- templates -------------------------------------------------------------------------------

_EPHEMERAL_MANIFEST = """\
# The $name plugin, generated by `pollerd new-plugin`: edit it to make it yours.
[plugin]
id = "$name"
version = "0.1.0"
description = "Counts its ticks: one event per tick with the count"

[plugin.entrypoint]
command = "python"                # the interpreter running pollerd
args = ["$handler_file"]          # run from this folder, one process per tick
env = []                          # variables passed through; every other one is removed

[plugin.poller]
kinds = ["$kind"]
lifecycle = "ephemeral"
max_concurrent_ticks = $max_concurrent_ticks
tick_timeout = "$tick_timeout"
"""

_LONG_LIVED_MANIFEST = """\
# The $name plugin, generated by `pollerd new-plugin`: edit it to make it yours.
[plugin]
id = "$name"
version = "0.1.0"
description = "Counts its ticks: one event per tick with the count"

[plugin.entrypoint]
command = "python"                # the interpreter running pollerd
args = ["$handler_file"]          # run from this folder; pollerd keeps it running
env = []                          # variables passed through; every other one is removed

[plugin.poller]
kinds = ["$kind"]
lifecycle = "long_lived"
subject_prefix = "$subject_prefix"   # ticks arrive on <prefix>.tick over NATS
max_concurrent_ticks = $max_concurrent_ticks
tick_timeout = "$tick_timeout"
"""

_EPHEMERAL_HOW = """\
pollerd runs this file once per tick (lifecycle "ephemeral" in plugin.toml): it reads one request
line on stdin and writes one reply line on stdout."""

_LONG_LIVED_HOW = """\
pollerd starts this file once and keeps it running (lifecycle "long_lived" in plugin.toml): it
serves ticks over NATS on <subject_prefix>.tick, and pollerd restarts it if it crashes."""

_HANDLER = '''\
"""A plugin that counts the ticks of each job and reports every tick as an event.

$how

Each job's cursor is the number of ticks so far, as ASCII digits: pollerd stores it and hands it
back on the next tick, and keeps the old one when a tick fails. The job's ``config`` may set
``label`` (a string, default: the job id), copied into every event.
"""

from __future__ import annotations

from pollerd.sdk import ConfigError, Event, PermanentError, Plugin, Tick, TickResult

KIND = "$kind"

plugin = Plugin("$name")


def parse_count(cursor: bytes | None) -> int:
    """The number of ticks counted so far: 0 for a new job (no cursor yet)."""
    if not cursor:
        return 0
    text = cursor.decode("ascii", "replace")
    if not text.isdigit():
        raise PermanentError(
            f"the cursor {text[:40]!r} is not a tick count; reset it with `pollerd cursor reset`"
        )
    return int(text)


@plugin.poller(KIND)
def count_ticks(tick: Tick) -> TickResult:
    label = tick.config.get("label", tick.job_id)
    if not isinstance(label, str):
        raise ConfigError(f"config.label must be a string, got {label!r}")
    count = parse_count(tick.cursor) + 1
    data = {
        "label": label,
        "count": count,
        "scheduled_at": tick.scheduled_at.isoformat(),
    }
    # The tick id is stable across the retries of one slot: consumers drop duplicates.
    event = Event(id=tick.tick_id, data=data)
    return TickResult(
        next_cursor=str(count).encode("ascii"), metrics={"count": count}, events=[event]
    )


if __name__ == "__main__":
    plugin.run()
'''

_TEST = '''\
"""Tests of this plugin: ``pytest`` in this folder calls its handler with real frames."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from $module import KIND, plugin

from pollerd import wire
from pollerd.errors import ErrorClass, PluginReplyError

SCHEDULED = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def request(cursor: bytes | None, **config: Any) -> bytes:
    """A tick request frame, as pollerd sends it."""
    return wire.TickRequest(
        kind=KIND,
        job_id="job-1",
        tick_id=wire.make_tick_id("job-1", SCHEDULED),
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config,
        now=SCHEDULED,
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=10),
    ).encode()


def tick(cursor: bytes | None, **config: Any) -> wire.TickReply:
    """Send one frame to the plugin and decode its reply like pollerd does."""
    return wire.decode_reply(asyncio.run(plugin.handle(request(cursor, **config))))


def test_a_new_job_counts_its_first_tick() -> None:
    reply = tick(None, label="hello")

    assert reply.next_cursor == b"1"
    assert [event.data["count"] for event in reply.events] == [1]
    assert reply.events[0].data["label"] == "hello"


def test_the_count_continues_from_the_cursor() -> None:
    reply = tick(b"41")

    assert reply.next_cursor == b"42"
    assert reply.events[0].data == {
        "label": "job-1",
        "count": 42,
        "scheduled_at": SCHEDULED.isoformat(),
    }


def test_a_label_that_is_not_text_is_a_config_error() -> None:
    with pytest.raises(PluginReplyError) as caught:
        tick(None, label=3)

    assert caught.value.error_class is ErrorClass.CONFIG


def test_a_cursor_that_is_not_a_count_pauses_the_job() -> None:
    with pytest.raises(PluginReplyError) as caught:
        tick(b"garbage")

    assert caught.value.error_class is ErrorClass.PERMANENT
'''
