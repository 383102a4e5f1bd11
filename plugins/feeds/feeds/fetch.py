"""Fetching a feed document over HTTP(S) or from a local file, with conditional requests."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from feeds.config import FileSource, Source
from feeds.errors import FeedError, PermanentFeedError, TransientFeedError

logger = logging.getLogger(__name__)

USER_AGENT = "pollerd-feeds/0.1"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
MAX_FEED_BYTES = 10 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
STATUS_NOT_MODIFIED = 304
# Client errors that say "later", not "never".
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True, slots=True)
class Validators:
    """What the last successful fetch said about the document, for a conditional request."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    body: bytes
    validators: Validators
    content_type: str | None = None


class _Readable(Protocol):
    def read(self, amt: int, /) -> bytes: ...


def request_headers(validators: Validators) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip"}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def status_error(status: int, reason: str, url: str) -> FeedError:
    """The error for a non-2xx answer other than 304: 4xx is permanent, unless it says "later"."""
    message = f"GET {url} answered {status} {reason}".rstrip()
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES:
        return PermanentFeedError(f"{message}: fix the job's url, then resume the job")
    return TransientFeedError(message)


def file_validators(mtime_ns: int, size: int) -> Validators:
    """Validators of a local file, shaped like HTTP ones so the cursor treats both alike."""
    return Validators(
        etag=f'"{mtime_ns:x}-{size:x}"',
        last_modified=formatdate(mtime_ns / 1e9, usegmt=True),
    )


async def fetch(source: Source, validators: Validators, timeout_s: float) -> Document | None:
    """The document, or None when it has not changed since ``validators`` were taken."""
    if isinstance(source, FileSource):
        return await asyncio.to_thread(read_file, source.path, validators)
    return await asyncio.to_thread(fetch_http, source.url, validators, timeout_s)


def http_opener() -> urllib.request.OpenerDirector:
    """HTTP(S) only (proxies from the environment, redirects followed): a redirect to ftp:// or
    file:// fails instead of being followed."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch_http(url: str, validators: Validators, timeout_s: float) -> Document | None:
    """Blocking GET (run it in a thread); every failure is raised as a ``FeedError``."""
    request = urllib.request.Request(url, headers=request_headers(validators))
    finish_by = time.monotonic() + timeout_s
    try:
        with http_opener().open(request, timeout=timeout_s) as response:
            body = _read_body(response, url, finish_by)
            headers = response.headers
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == STATUS_NOT_MODIFIED:
            return None
        raise status_error(exc.code, str(exc.reason), url) from None
    except urllib.error.URLError as exc:
        raise TransientFeedError(f"GET {url} failed: {exc.reason}") from None
    except TimeoutError:
        raise TransientFeedError(f"GET {url}: no answer within {timeout_s:.1f}s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise TransientFeedError(f"GET {url} failed: {exc!r}") from None
    if headers.get("Content-Encoding", "").strip().lower() == "gzip":
        body = _gunzip(body, url)
    return Document(
        body=body,
        validators=Validators(headers.get("ETag"), headers.get("Last-Modified")),
        content_type=headers.get("Content-Type"),
    )


def _read_body(response: _Readable, url: str, finish_by: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := response.read(CHUNK_BYTES):
        total += len(chunk)
        if total > MAX_FEED_BYTES:
            raise PermanentFeedError(f"GET {url}: the feed is larger than {MAX_FEED_BYTES} bytes")
        if time.monotonic() > finish_by:
            raise TransientFeedError(f"GET {url}: the feed did not arrive before the deadline")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, url: str) -> bytes:
    inflater = zlib.decompressobj(GZIP_WBITS)
    try:
        plain = inflater.decompress(body, MAX_FEED_BYTES + 1)
    except zlib.error as exc:
        raise TransientFeedError(f"GET {url}: the gzip body does not decompress: {exc}") from None
    if len(plain) > MAX_FEED_BYTES:
        raise PermanentFeedError(f"GET {url}: the feed is larger than {MAX_FEED_BYTES} bytes")
    return plain


def read_file(path: Path, validators: Validators) -> Document | None:
    """Blocking read of a local feed; None when its mtime and size match ``validators``."""
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            current = file_validators(stat.st_mtime_ns, stat.st_size)
            if current == validators:
                return None
            body = handle.read(MAX_FEED_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise PermanentFeedError(
            f"cannot read feed file {path}: {exc.strerror}; fix the job's url, then resume the job"
        ) from None
    except OSError as exc:
        raise TransientFeedError(f"cannot read feed file {path}: {exc}") from None
    if len(body) > MAX_FEED_BYTES:
        raise PermanentFeedError(f"feed file {path} is larger than {MAX_FEED_BYTES} bytes")
    return Document(body=body, validators=current)
