"""The config of a feeds job: where the feed is and how many entry ids to remember."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from feeds.errors import FeedConfigError

DEFAULT_MAX_SEEN = 500
# 8 bytes per remembered id, base64 inside JSON: 20,000 ids stay under pollerd's 256 KiB cursor cap.
MAX_MAX_SEEN = 20_000
CONFIG_KEYS = ("max_seen", "url")
HTTP_SCHEMES = ("http", "https")
LOCAL_FILE_HOSTS = ("", "localhost")


@dataclass(frozen=True, slots=True)
class HttpSource:
    """A feed fetched over HTTP or HTTPS."""

    url: str


@dataclass(frozen=True, slots=True)
class FileSource:
    """A feed read from a local file (absolute path)."""

    path: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()


Source = HttpSource | FileSource


@dataclass(frozen=True, slots=True)
class FeedConfig:
    source: Source
    max_seen: int = DEFAULT_MAX_SEEN


def parse_config(raw: Mapping[str, Any], config_dir: Path | None) -> FeedConfig:
    """Validate a job's ``config``; relative paths resolve against ``config_dir``."""
    if not isinstance(raw, Mapping):
        raise FeedConfigError(f"config must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise FeedConfigError(f"config: unknown key(s) {names}; known: {', '.join(CONFIG_KEYS)}")
    if "url" not in raw:
        raise FeedConfigError("config.url is required: an http(s):// URL, a file:// URL or a path")
    return FeedConfig(
        source=resolve_source(raw["url"], config_dir),
        max_seen=_max_seen(raw.get("max_seen", DEFAULT_MAX_SEEN)),
    )


def resolve_source(url: object, config_dir: Path | None) -> Source:
    """Turn ``config.url`` into a source; raises ``FeedConfigError`` naming what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise FeedConfigError(f"config.url must be a non-empty string, got {url!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise FeedConfigError(f"config.url must not contain spaces or control characters: {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in HTTP_SCHEMES:
        return _http_source(url)
    if scheme == "file":
        if parts.netloc not in LOCAL_FILE_HOSTS:
            raise FeedConfigError(f"config.url {url!r}: file URLs must name a local path")
        path = Path(url2pathname(parts.path))
        if not path.is_absolute():
            raise FeedConfigError(f"config.url {url!r}: a file URL needs an absolute path")
        return FileSource(path)
    if scheme:
        raise FeedConfigError(
            f"config.url {url!r}: unsupported scheme {scheme!r} (use http, https, file or a path)"
        )
    return FileSource(_resolve_path(Path(url), config_dir))


def _http_source(url: str) -> HttpSource:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise FeedConfigError(f"config.url {url!r} has an invalid port") from None
    if not parts.hostname:
        raise FeedConfigError(f"config.url {url!r} has no host")
    return HttpSource(url)


def _resolve_path(path: Path, config_dir: Path | None) -> Path:
    if path.is_absolute():
        return path
    if config_dir is None:
        raise FeedConfigError(
            f"config.url {str(path)!r} is a relative path but pollerd did not say where "
            "pollers.yaml is (POLLERD_CONFIG_DIR): use an absolute path or a file:// URL"
        )
    if not config_dir.is_absolute():
        raise FeedConfigError(f"POLLERD_CONFIG_DIR must be an absolute path, got {config_dir}")
    return config_dir / path


def _max_seen(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeedConfigError(f"config.max_seen must be an integer, got {value!r}")
    if not 1 <= value <= MAX_MAX_SEEN:
        raise FeedConfigError(f"config.max_seen must be between 1 and {MAX_MAX_SEEN}, got {value}")
    return value
