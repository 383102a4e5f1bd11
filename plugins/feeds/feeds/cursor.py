"""The feeds cursor: hashes of the entry ids already emitted, plus the feed's HTTP validators.

On the wire it is compact JSON, version 1::

    {"v":1,"src":"<hash of the url>","seen":"<base64 of 8-byte ids>","etag":..,"last_modified":..}

``seen`` holds 8-byte BLAKE2b hashes of entry ids, oldest first, so 500 ids cost about 5 KiB.
``src`` ties the validators to the url they came from: when a job's url changes, the validators
are dropped (the seen ids are kept, so a feed that only moved does not replay its entries).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feeds.fetch import Validators

logger = logging.getLogger(__name__)

CURSOR_VERSION = 1
ID_HASH_BYTES = 8
SOURCE_HASH_BYTES = 8


class CursorError(ValueError):
    """A cursor that this version of the plugin cannot read."""


@dataclass(frozen=True, slots=True)
class FeedCursor:
    seen: tuple[bytes, ...] = ()
    source: str | None = None
    etag: str | None = None
    last_modified: str | None = None

    def validators_for(self, url: str) -> Validators:
        """The stored validators, if they belong to ``url``."""
        if self.source != source_key(url):
            return Validators()
        return Validators(self.etag, self.last_modified)


def hash_id(entry_id: str) -> bytes:
    return hashlib.blake2b(entry_id.encode(), digest_size=ID_HASH_BYTES).digest()


def source_key(url: str) -> str:
    return hashlib.blake2b(url.encode(), digest_size=SOURCE_HASH_BYTES).hexdigest()


def make_cursor(seen: Sequence[bytes], url: str, validators: Validators) -> FeedCursor:
    return FeedCursor(tuple(seen), source_key(url), validators.etag, validators.last_modified)


def encode_cursor(cursor: FeedCursor) -> bytes:
    record = {
        "v": CURSOR_VERSION,
        "src": cursor.source,
        "seen": base64.b64encode(b"".join(cursor.seen)).decode("ascii"),
        "etag": cursor.etag,
        "last_modified": cursor.last_modified,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def decode_cursor(raw: bytes | None) -> FeedCursor:
    """Read a stored cursor; ``None`` or empty is a fresh start. Raises ``CursorError``."""
    if not raw:
        return FeedCursor()
    try:
        record = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise CursorError("the cursor is not JSON") from None
    if not isinstance(record, dict):
        raise CursorError("the cursor is not a JSON object")
    version = record.get("v")
    if version != CURSOR_VERSION:
        raise CursorError(f"cursor version {version!r}; this plugin reads version {CURSOR_VERSION}")
    return FeedCursor(
        seen=_decode_seen(record.get("seen")),
        source=_optional_str(record, "src"),
        etag=_optional_str(record, "etag"),
        last_modified=_optional_str(record, "last_modified"),
    )


def _decode_seen(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, str):
        raise CursorError("cursor 'seen' must be a base64 string")
    try:
        packed = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CursorError("cursor 'seen' is not base64") from None
    if len(packed) % ID_HASH_BYTES:
        raise CursorError(f"cursor 'seen' is not a whole number of {ID_HASH_BYTES}-byte hashes")
    return tuple(packed[i : i + ID_HASH_BYTES] for i in range(0, len(packed), ID_HASH_BYTES))


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise CursorError(f"cursor {key!r} must be a string or null")
    return value
