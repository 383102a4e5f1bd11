"""The files plugin: reports the files created or changed in a directory since the last tick.

Run by pollerd as a one-shot process per tick (see plugin.toml and README.md). The cursor is what
was seen so far: for each path, sorted, a 32-bit fingerprint of its (mtime_ns, size). Layout:
``b"\\x01"`` + zlib(count as 4 bytes, the fingerprints as 4 bytes each, the paths NUL-separated),
about 7 bytes per file for everyday names (10,000 files: about 70 KB of the 256 KiB cap).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pollerd.sdk import ConfigError, Event, PermanentError, Plugin, Tick, TickResult, TransientError

KIND = "dir_watch"
ENV_CONFIG_DIR = "POLLERD_CONFIG_DIR"
CURSOR_VERSION = 1
MAX_CURSOR_BYTES = 256 * 1024  # pollerd's default cap
MAX_LISTING_BYTES = 64 * 1024 * 1024  # refuse a cursor that inflates past this
DEFAULT_MAX_EVENTS = 1000
MAX_EVENTS_LIMIT = 5000
EVENTS_BUDGET_BYTES = 512 * 1024  # keeps the reply well under pollerd's 1 MiB cap
EVENT_OVERHEAD_BYTES = 120  # an event's JSON besides its path, which appears twice
BACKLOG_INTERVAL_S = 1.0
CONFIG_KEYS = ("path", "pattern", "recursive", "report_existing", "max_events")

FINGERPRINT_BYTES = 4
COUNT_BYTES = 4

Stamp = tuple[int, int]  # (mtime_ns, size)
Listing = dict[str, Stamp]  # what a scan found: relative path ("/"-separated) -> stamp
Seen = dict[str, int]  # what the cursor remembers: relative path -> fingerprint of its stamp

plugin = Plugin("files")


@dataclass(frozen=True)
class WatchConfig:
    root: Path
    pattern: str = "*"
    recursive: bool = False
    report_existing: bool = True
    max_events: int = DEFAULT_MAX_EVENTS


@dataclass(frozen=True)
class Changes:
    reported: list[str]  # paths to report this tick, oldest first
    seen: Seen  # what the next cursor remembers
    pending: int  # changed files left for the next tick


def parse_config(config: Mapping[str, Any], config_dir: str | None) -> WatchConfig:
    """The job config, checked. Raises ``ConfigError`` saying which key is wrong and how."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}"
        )
    path = config.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("config 'path' is required: the directory to watch")
    pattern = config.get("pattern", "*")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"config 'pattern' must be a glob such as '*.csv', got {pattern!r}")
    max_events = config.get("max_events", DEFAULT_MAX_EVENTS)
    if isinstance(max_events, bool) or not isinstance(max_events, int):
        raise ConfigError(f"config 'max_events' must be an integer, got {max_events!r}")
    if not 1 <= max_events <= MAX_EVENTS_LIMIT:
        raise ConfigError(
            f"config 'max_events' must be within 1..{MAX_EVENTS_LIMIT}, got {max_events}"
        )
    return WatchConfig(
        root=resolve_root(path, config_dir),
        pattern=pattern,
        recursive=_flag(config, "recursive", False),
        report_existing=_flag(config, "report_existing", True),
        max_events=max_events,
    )


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"config {key!r} must be true or false, got {value!r}")
    return value


def resolve_root(path: str, config_dir: str | None) -> Path:
    """An absolute path as is; a relative one against the folder of pollers.yaml."""
    root = Path(path)
    if root.is_absolute():
        return root
    if not config_dir:
        raise ConfigError(
            f"config 'path' {path!r} is relative but {ENV_CONFIG_DIR} is not set to resolve it; "
            "give an absolute path"
        )
    return Path(config_dir) / root


def scan(config: WatchConfig) -> Listing:
    """The regular files under ``config.root`` whose name matches the pattern."""
    listing: Listing = {}
    folders = [""]
    while folders:
        prefix = folders.pop()
        try:
            entries = list(os.scandir(config.root / prefix))
        except OSError as exc:
            if not prefix:
                raise _root_error(config.root, exc) from None
            print(f"files: skipping {config.root / prefix}: {exc.strerror}", file=sys.stderr)
            continue
        for entry in entries:
            relpath = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if config.recursive:
                    folders.append(relpath + "/")
            elif fnmatch.fnmatchcase(entry.name, config.pattern):
                stamp = _stamp(entry)
                if stamp is not None:
                    listing[relpath] = stamp
    return listing


def _stamp(entry: os.DirEntry[str]) -> Stamp | None:
    try:
        info = entry.stat()  # follows a symlink to its file
    except OSError:  # gone since the listing, or a dangling symlink
        return None
    return (info.st_mtime_ns, info.st_size) if stat.S_ISREG(info.st_mode) else None


def _root_error(root: Path, exc: OSError) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return ConfigError(f"directory {root} does not exist; create it or fix config 'path'")
    if isinstance(exc, NotADirectoryError):
        return ConfigError(f"{root} is not a directory; fix config 'path'")
    if isinstance(exc, PermissionError):
        return PermanentError(f"cannot read directory {root}: permission denied")
    return TransientError(f"cannot read directory {root}: {exc.strerror or exc}")


def fingerprint(stamp: Stamp) -> int:
    return zlib.crc32(b"%d %d" % stamp)


def diff(previous: Seen | None, current: Listing, config: WatchConfig) -> Changes:
    """What to report now and what to remember. ``previous`` None: the first tick."""
    stamps = {relpath: fingerprint(stamp) for relpath, stamp in current.items()}
    if previous is None and not config.report_existing:
        return Changes(reported=[], seen=stamps, pending=0)
    known = previous or {}
    changed = sorted(
        (relpath for relpath, print_ in stamps.items() if known.get(relpath) != print_),
        key=lambda relpath: (current[relpath][0], relpath),
    )
    reported: list[str] = []
    budget = EVENTS_BUDGET_BYTES
    for relpath in changed:
        budget -= 2 * len(relpath.encode("utf-8", "surrogateescape")) + EVENT_OVERHEAD_BYTES
        if len(reported) == config.max_events or (reported and budget < 0):
            break
        reported.append(relpath)
    seen = {relpath: known[relpath] for relpath in current if relpath in known}
    seen.update((relpath, stamps[relpath]) for relpath in reported)
    return Changes(reported=reported, seen=seen, pending=len(changed) - len(reported))


def encode_seen(seen: Seen) -> bytes:
    paths = sorted(seen)
    body = b"".join(
        [
            len(paths).to_bytes(COUNT_BYTES, "big"),
            *(seen[path].to_bytes(FINGERPRINT_BYTES, "big") for path in paths),
            b"\0".join(os.fsencode(path) for path in paths),
        ]
    )
    return bytes([CURSOR_VERSION]) + zlib.compress(body, 9)


def decode_seen(cursor: bytes) -> Seen:
    """What a cursor remembers; an empty cursor remembers nothing. Raises ``PermanentError``."""
    if not cursor:
        return {}
    if cursor[0] != CURSOR_VERSION:
        raise _bad_cursor(f"version {cursor[0]}, this plugin reads version {CURSOR_VERSION}")
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(cursor[1:], MAX_LISTING_BYTES)
    except zlib.error as exc:
        raise _bad_cursor(str(exc)) from None
    if inflater.unconsumed_tail:
        raise _bad_cursor(f"it inflates past {MAX_LISTING_BYTES} bytes")
    count = int.from_bytes(body[:COUNT_BYTES], "big")
    names_at = COUNT_BYTES + count * FINGERPRINT_BYTES
    paths = body[names_at:].split(b"\0") if count else []
    if len(body) < names_at or len(paths) != count:
        raise _bad_cursor(f"it lists {len(paths)} paths for {count} fingerprints")
    prints = body[COUNT_BYTES:names_at]
    return {
        os.fsdecode(path): int.from_bytes(
            prints[i * FINGERPRINT_BYTES : (i + 1) * FINGERPRINT_BYTES]
        )
        for i, path in enumerate(paths)
    }


def _bad_cursor(why: str) -> PermanentError:
    return PermanentError(
        f"the cursor is not a files-plugin cursor ({why}); reset it with `pollerd cursor reset`"
    )


def to_event(relpath: str, stamp: Stamp) -> Event:
    mtime_ns, size = stamp
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    mtime = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    return Event(
        id=f"{relpath}:{mtime_ns}:{size}",
        data={"path": relpath, "size": size, "mtime": mtime.isoformat().replace("+00:00", "Z")},
    )


@plugin.poller(KIND)
def dir_watch(tick: Tick) -> TickResult:
    config = parse_config(tick.config, os.environ.get(ENV_CONFIG_DIR))
    previous = None if tick.cursor is None else decode_seen(tick.cursor)
    current = scan(config)
    changes = diff(previous, current, config)
    cursor = None if changes.seen == previous else encode_seen(changes.seen)
    if cursor is not None and len(cursor) > MAX_CURSOR_BYTES:
        raise PermanentError(
            f"{len(changes.seen)} files need a {len(cursor)}-byte cursor, over the "
            f"{MAX_CURSOR_BYTES}-byte cap; narrow 'pattern' or watch smaller directories"
        )
    hint = tick.interval_hint_secs
    hurry = changes.pending and (hint is None or hint > BACKLOG_INTERVAL_S)
    return TickResult(
        next_cursor=cursor,
        next_interval_secs=BACKLOG_INTERVAL_S if hurry else None,
        metrics={
            "files_seen": len(current),
            "files_reported": len(changes.reported),
            "files_pending": changes.pending,
        },
        events=[to_event(relpath, current[relpath]) for relpath in changes.reported],
    )


if __name__ == "__main__":
    plugin.run()
