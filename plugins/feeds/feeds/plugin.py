"""The feeds plugin's tick handler: fetch, parse, emit the new entries, advance the cursor."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from feeds.config import FeedConfig, HttpSource, parse_config
from feeds.cursor import CursorError, FeedCursor, decode_cursor, encode_cursor, make_cursor
from feeds.errors import FeedError, TransientFeedError
from feeds.fetch import Document, fetch
from feeds.parse import Entry, Feed, parse_feed
from feeds.seen import order_oldest_first, select_new
from pollerd.sdk import (
    ConfigError,
    Event,
    PermanentError,
    Plugin,
    Tick,
    TickResult,
    TransientError,
)

logger = logging.getLogger(__name__)

PLUGIN_ID = "feeds"
KINDS = ("rss", "atom")
# Set by pollerd to the folder of pollers.yaml; relative feed paths resolve against it.
CONFIG_DIR_ENV = "POLLERD_CONFIG_DIR"
# Kept free between the end of the fetch and the tick deadline, to parse and reply.
REPLY_MARGIN_S = 0.5
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SDK_ERRORS: Mapping[str, type[Exception]] = {
    "transient": TransientError,
    "permanent": PermanentError,
    "config": ConfigError,
}

plugin = Plugin(PLUGIN_ID)


@plugin.poller(*KINDS)
async def poll(tick: Tick) -> TickResult:
    """The registered handler: the edge that reads the environment and the clock."""
    config_dir = os.environ.get(CONFIG_DIR_ENV)
    return await poll_feed(
        tick, config_dir=Path(config_dir) if config_dir else None, now=datetime.now(UTC)
    )


async def poll_feed(tick: Tick, *, config_dir: Path | None, now: datetime) -> TickResult:
    """One tick of a feeds job. Failures leave as the SDK's transient, permanent or config error."""
    try:
        return await _poll(tick, parse_config(tick.config, config_dir), now)
    except FeedError as exc:
        logger.info(
            "feed tick failed (%s): job_id=%s plugin=%s: %s",
            exc.error_class,
            tick.job_id,
            PLUGIN_ID,
            exc,
        )
        raise SDK_ERRORS[exc.error_class](str(exc)) from None


async def _poll(tick: Tick, config: FeedConfig, now: datetime) -> TickResult:
    url = config.source.url
    previous = _read_cursor(tick)
    timeout_s = fetch_timeout_s(tick.deadline, now)
    document = await fetch(config.source, previous.validators_for(url), timeout_s)
    if document is None:
        logger.debug("feed not modified: job_id=%s plugin=%s url=%s", tick.job_id, PLUGIN_ID, url)
        return TickResult(next_cursor=None, metrics={"not_modified": 1.0})
    feed = _parse(document, url)
    selection = select_new(order_oldest_first(feed.entries), previous.seen, config.max_seen)
    cursor = encode_cursor(make_cursor(selection.seen, url, document.validators))
    logger.debug(
        "feed polled: job_id=%s plugin=%s url=%s entries=%d new=%d",
        tick.job_id,
        PLUGIN_ID,
        url,
        len(feed.entries),
        len(selection.new),
    )
    return TickResult(
        next_cursor=None if cursor == tick.cursor else cursor,
        metrics={
            "entries": float(len(feed.entries)),
            "new_entries": float(len(selection.new)),
            "feed_bytes": float(len(document.body)),
            "not_modified": 0.0,
        },
        events=[entry_event(entry, feed, config) for entry in selection.new],
    )


def fetch_timeout_s(deadline: datetime, now: datetime) -> float:
    """The time the fetch may take: what is left before the deadline, less a reply margin."""
    budget = (deadline - now).total_seconds() - REPLY_MARGIN_S
    if budget <= 0:
        raise TransientFeedError(
            f"the tick deadline {deadline.isoformat()} leaves no time to fetch the feed"
        )
    return budget


def entry_event(entry: Entry, feed: Feed, config: FeedConfig) -> Event:
    """The event for a new entry; relative links are resolved against an http(s) feed url."""
    link = entry.link
    if link and isinstance(config.source, HttpSource):
        link = urljoin(config.source.url, link)
    data: dict[str, Any] = {
        "title": entry.title,
        "link": link,
        "published": entry.published.strftime(TIME_FORMAT) if entry.published else None,
        "feed": feed.title,
        "kind": feed.format,
    }
    return Event(id=entry.id, data=data)


def _read_cursor(tick: Tick) -> FeedCursor:
    try:
        return decode_cursor(tick.cursor)
    except CursorError as exc:
        logger.warning(
            "unreadable cursor, starting from an empty one (current entries are emitted again):"
            " job_id=%s plugin=%s: %s",
            tick.job_id,
            PLUGIN_ID,
            exc,
        )
        return FeedCursor()


def _parse(document: Document, url: str) -> Feed:
    try:
        return parse_feed(document.body)
    except FeedError as exc:
        served_as = f" (served as {document.content_type})" if document.content_type else ""
        raise type(exc)(f"{url}: {exc}{served_as}") from None
