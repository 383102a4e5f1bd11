"""The feeds plugin: parsing, the seen set, the cursor, fetching over HTTP and files, and the
plugin run for real in ephemeral and long-lived mode."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from pollerd import wire
from pollerd.errors import ErrorClass, PluginReplyError
from pollerd.natsio.server import EmbeddedNatsServer
from pollerd.sdk import ConfigError, PermanentError, Tick, TransientError

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins" / "feeds"
DATA = REPO / "tests" / "data" / "feeds"
SAMPLE = REPO / "samples" / "feeds" / "pollerd-news.xml"
sys.path.insert(0, str(PLUGIN_DIR))

from feeds import plugin as feeds_plugin  # noqa: E402
from feeds.config import (  # noqa: E402
    MAX_MAX_SEEN,
    FeedConfig,
    FileSource,
    HttpSource,
    parse_config,
)
from feeds.cursor import (  # noqa: E402
    CursorError,
    FeedCursor,
    decode_cursor,
    encode_cursor,
    hash_id,
    make_cursor,
)
from feeds.errors import FeedConfigError, PermanentFeedError, TransientFeedError  # noqa: E402
from feeds.fetch import Validators, request_headers, status_error  # noqa: E402
from feeds.parse import Entry, entry_id, parse_date, parse_feed  # noqa: E402
from feeds.plugin import entry_event, fetch_timeout_s, poll, poll_feed  # noqa: E402
from feeds.seen import order_oldest_first, select_new  # noqa: E402

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TICK_BUDGET_S = 20.0
SUBPROCESS_TIMEOUT_S = 30.0
SERVER_POLL_S = 0.02  # how soon the test HTTP server notices shutdown()
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
SAMPLE_IDS = [f"pollerd-news-0.{minor}.0" for minor in (1, 2, 3, 4)]


def make_tick(
    config: dict[str, Any],
    cursor: bytes | None = None,
    *,
    budget_s: float = TICK_BUDGET_S,
    now: datetime = NOW,
) -> Tick:
    return Tick(
        kind="rss",
        job_id="news",
        tick_id=f"news@{wire.format_time(NOW)}",
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config,
        now=NOW,
        scheduled_at=NOW,
        deadline=now + timedelta(seconds=budget_s),
    )


def rss(*items: tuple[str, str], title: str = "Feed") -> bytes:
    """An RSS 2.0 document with (guid, pubDate) items, in the given (document) order."""
    body = "".join(
        f"<item><title>{guid}</title><guid>{guid}</guid><pubDate>{date}</pubDate></item>"
        for guid, date in items
    )
    return f"<rss version='2.0'><channel><title>{title}</title>{body}</channel></rss>".encode()


def entries(*ids: str) -> list[Entry]:
    return [Entry(id=entry) for entry in ids]


# -- parsing -------------------------------------------------------------------------------------


def test_an_rss_2_feed_parses_into_entries_with_ids_links_and_utc_dates() -> None:
    feed = parse_feed((DATA / "rss2.xml").read_bytes())

    assert (feed.format, feed.title) == ("rss", "Example RSS feed")
    third, second, first = feed.entries
    assert (third.id, third.title, third.link) == (
        "urn:example:3",
        "Third & last",
        "https://example.org/3",
    )
    assert third.published == datetime(2024, 1, 3, 9, 0, tzinfo=UTC)
    assert second.id == "https://example.org/2"  # no guid: the link
    assert second.published == datetime(2024, 1, 2, 9, 0, tzinfo=UTC)  # dc:date
    assert first.id.startswith("h:") and first.link is None  # neither: a digest


def test_an_atom_feed_prefers_the_alternate_link_and_the_published_date() -> None:
    feed = parse_feed((DATA / "atom.xml").read_bytes())

    assert (feed.format, feed.title) == ("atom", "Example Atom feed")
    older, newer = feed.entries
    assert (older.id, older.link) == ("tag:example.org,2024:older", "/posts/older")
    assert older.published == datetime(2024, 2, 1, 12, 0, tzinfo=UTC)  # only <updated>
    assert (newer.title, newer.link) == ("Newer entry", "https://example.org/posts/newer")
    assert newer.published == datetime(2024, 2, 2, 12, 0, tzinfo=UTC)


def test_an_rss_1_0_feed_takes_its_ids_from_rdf_about() -> None:
    feed = parse_feed((DATA / "rss1.xml").read_bytes())

    assert (feed.format, feed.title) == ("rss", "Example RSS 1.0 feed")
    assert [entry.id for entry in feed.entries] == ["https://example.org/rdf/1"]


def test_the_sample_feed_is_valid_rss_with_four_releases() -> None:
    feed = parse_feed(SAMPLE.read_bytes())

    assert feed.format == "rss"
    assert [entry.id for entry in order_oldest_first(feed.entries)] == SAMPLE_IDS


@pytest.mark.parametrize(
    ("document", "error", "words"),
    [
        ((DATA / "entities.xml").read_bytes(), PermanentFeedError, "<!ENTITY lol"),
        (b"<rss><channel><item>", TransientFeedError, "not well-formed"),
        (b"", TransientFeedError, "not well-formed"),
        (b"<html><body>hello</body></html>", PermanentFeedError, "root element is <html>"),
        (b"<rss version='2.0'/>", PermanentFeedError, "without a <channel>"),
    ],
    ids=["entity-declarations", "truncated", "empty", "html", "rss-without-channel"],
)
def test_documents_that_are_not_usable_feeds_fail_with_their_class(
    document: bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        parse_feed(document)

    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("raw_id", "link", "expected"),
    [
        ("urn:a", "https://x/a", "urn:a"),
        (None, "https://x/a", "https://x/a"),
        ("x" * 600, None, "h:"),
        ("bad\x01id", None, "h:"),
        (None, None, "h:"),
    ],
    ids=["guid", "link", "too-long", "control-character", "digest"],
)
def test_an_entry_id_is_the_guid_else_the_link_else_a_digest(
    raw_id: str | None, link: str | None, expected: str
) -> None:
    assert entry_id(raw_id, link, "title", "date").startswith(expected)


def test_entries_without_guid_or_link_differ_by_title_or_date() -> None:
    ids = {entry_id(None, None, t, d) for t, d in [("a", "1"), ("a", "2"), ("b", "1")]}

    assert len(ids) == 3
    assert entry_id(None, None, "a", "1") == entry_id(None, None, "a", "1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wed, 03 Jan 2024 10:00:00 +0100", datetime(2024, 1, 3, 9, 0, tzinfo=UTC)),
        ("Mon, 01 Jan 2024 09:00:00 GMT", datetime(2024, 1, 1, 9, 0, tzinfo=UTC)),
        ("2024-02-02T13:00:00+01:00", datetime(2024, 2, 2, 12, 0, tzinfo=UTC)),
        ("2024-02-02T13:00:00Z", datetime(2024, 2, 2, 13, 0, tzinfo=UTC)),
        ("2024-02-02T13:00:00", datetime(2024, 2, 2, 13, 0, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_dates_are_read_as_rfc_822_or_rfc_3339_in_utc(
    text: str | None, expected: datetime | None
) -> None:
    assert parse_date(text) == expected


# -- ordering and the seen set -------------------------------------------------------------------


def test_entries_are_ordered_by_date_when_every_entry_has_one() -> None:
    dated = [
        Entry("b", published=datetime(2024, 1, 2, tzinfo=UTC)),
        Entry("c", published=datetime(2024, 1, 3, tzinfo=UTC)),
        Entry("a", published=datetime(2024, 1, 1, tzinfo=UTC)),
    ]

    assert [entry.id for entry in order_oldest_first(dated)] == ["a", "b", "c"]


def test_without_dates_document_order_is_read_as_newest_first_and_duplicates_drop() -> None:
    assert [entry.id for entry in order_oldest_first(entries("c", "b", "c", "a"))] == [
        "a",
        "b",
        "c",
    ]


@pytest.mark.parametrize(
    ("document", "seen", "max_seen", "new", "remembered"),
    [
        (["a", "b", "c"], [], 500, ["a", "b", "c"], ["a", "b", "c"]),
        (["a", "b", "c"], ["a", "b", "c"], 500, [], ["a", "b", "c"]),
        (["b", "c", "d"], ["a", "b", "c"], 500, ["d"], ["a", "b", "c", "d"]),
        (["b", "c", "d"], ["a", "b", "c"], 3, ["d"], ["b", "c", "d"]),
        (["a", "b", "c", "d"], [], 2, ["c", "d"], ["c", "d"]),
        (["a", "b", "c", "d", "e"], ["c", "d"], 2, ["e"], ["d", "e"]),
        (["x", "y"], ["a", "b", "c"], 4, ["x", "y"], ["b", "c", "x", "y"]),
    ],
    ids=[
        "first-tick-emits-all",
        "nothing-new",
        "one-new",
        "bounded",
        "first-tick-bounded-to-newest",
        "old-entries-past-the-bound-never-replay",
        "vanished-ids-kept-while-room",
    ],
)
def test_select_new_emits_unseen_entries_and_remembers_at_most_max_seen(
    document: list[str],
    seen: list[str],
    max_seen: int,
    new: list[str],
    remembered: list[str],
) -> None:
    selection = select_new(entries(*document), [hash_id(i) for i in seen], max_seen)

    assert [entry.id for entry in selection.new] == new
    assert selection.seen == tuple(hash_id(i) for i in remembered)


# -- cursor --------------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_stays_small() -> None:
    seen = [hash_id(str(n)) for n in range(500)]
    cursor = make_cursor(seen, "https://x/feed", Validators('"abc"', "Mon, 01 Jan 2024"))

    raw = encode_cursor(cursor)

    assert decode_cursor(raw) == cursor
    assert json.loads(raw)["v"] == 1
    assert len(raw) < 6_000


def test_the_validators_of_a_cursor_belong_to_its_url() -> None:
    cursor = make_cursor([], "https://x/feed", Validators('"abc"', "Mon, 01 Jan 2024"))

    assert cursor.validators_for("https://x/feed") == Validators('"abc"', "Mon, 01 Jan 2024")
    assert cursor.validators_for("https://y/feed") == Validators()


@pytest.mark.parametrize("raw", [None, b""])
def test_no_cursor_is_a_fresh_start(raw: bytes | None) -> None:
    assert decode_cursor(raw) == FeedCursor()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v":2,"seen":""}', "version 2"),
        (b'{"seen":""}', "version None"),
        (b'{"v":1,"seen":"!!"}', "not base64"),
        (b'{"v":1,"seen":"' + base64.b64encode(b"123").decode().encode() + b'"}', "8-byte"),
        (b'{"v":1,"seen":"","etag":3}', "'etag'"),
    ],
)
def test_a_cursor_this_plugin_cannot_read_is_a_cursor_error(raw: bytes, words: str) -> None:
    with pytest.raises(CursorError) as caught:
        decode_cursor(raw)

    assert words in str(caught.value)


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "config_dir", "expected"),
    [
        ({"url": "https://x.org/f.xml"}, None, FeedConfig(HttpSource("https://x.org/f.xml"))),
        (
            {"url": "http://x.org:8080/f", "max_seen": 5},
            None,
            FeedConfig(HttpSource("http://x.org:8080/f"), 5),
        ),
        ({"url": "file:///srv/f.xml"}, None, FeedConfig(FileSource(Path("/srv/f.xml")))),
        (
            {"url": "file://localhost/srv/a%20b.xml"},
            None,
            FeedConfig(FileSource(Path("/srv/a b.xml"))),
        ),
        ({"url": "/srv/f.xml"}, None, FeedConfig(FileSource(Path("/srv/f.xml")))),
        (
            {"url": "feeds/f.xml"},
            Path("/etc/pollerd"),
            FeedConfig(FileSource(Path("/etc/pollerd/feeds/f.xml"))),
        ),
    ],
)
def test_valid_configs_name_an_http_source_or_a_file(
    raw: dict[str, Any], config_dir: Path | None, expected: FeedConfig
) -> None:
    assert parse_config(raw, config_dir) == expected


@pytest.mark.parametrize(
    ("raw", "config_dir", "words"),
    [
        ({}, None, "config.url is required"),
        ({"url": "https://x.org/f", "urls": 1}, None, "unknown key(s) 'urls'"),
        ({"url": ""}, None, "non-empty string"),
        ({"url": 5}, None, "non-empty string"),
        ({"url": "https://x.org/a b"}, None, "spaces"),
        ({"url": "ftp://x.org/f"}, None, "unsupported scheme 'ftp'"),
        ({"url": "https:///f"}, None, "no host"),
        ({"url": "https://x.org:http/f"}, None, "invalid port"),
        ({"url": "file://host/f.xml"}, None, "local path"),
        ({"url": "feeds/f.xml"}, None, "POLLERD_CONFIG_DIR"),
        ({"url": "feeds/f.xml"}, Path("relative"), "must be an absolute path"),
        ({"url": "/f", "max_seen": 0}, None, "between 1 and"),
        ({"url": "/f", "max_seen": MAX_MAX_SEEN + 1}, None, "between 1 and"),
        ({"url": "/f", "max_seen": True}, None, "must be an integer"),
    ],
)
def test_invalid_configs_are_config_errors_that_say_what_to_fix(
    raw: dict[str, Any], config_dir: Path | None, words: str
) -> None:
    with pytest.raises(FeedConfigError) as caught:
        parse_config(raw, config_dir)

    assert words in str(caught.value)


# -- fetch decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentFeedError),
        (401, PermanentFeedError),
        (404, PermanentFeedError),
        (410, PermanentFeedError),
        (408, TransientFeedError),
        (429, TransientFeedError),
        (500, TransientFeedError),
        (503, TransientFeedError),
        (300, TransientFeedError),
    ],
)
def test_http_statuses_map_to_error_classes(status: int, error: type[Exception]) -> None:
    found = status_error(status, "Reason", "https://x/f")

    assert type(found) is error
    assert f"https://x/f answered {status} Reason" in str(found)


def test_conditional_headers_come_from_the_validators() -> None:
    assert "If-None-Match" not in request_headers(Validators())
    headers = request_headers(Validators('"v1"', "Mon, 01 Jan 2024 00:00:00 GMT"))
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize(("left_s", "budget_s"), [(30.0, 29.5), (1.0, 0.5)])
def test_the_fetch_timeout_is_what_the_deadline_leaves_less_a_reply_margin(
    left_s: float, budget_s: float
) -> None:
    assert fetch_timeout_s(NOW + timedelta(seconds=left_s), NOW) == budget_s


@pytest.mark.parametrize("left_s", [0.5, 0.0, -3.0])
def test_a_deadline_with_no_time_left_is_a_transient_error(left_s: float) -> None:
    with pytest.raises(TransientFeedError):
        fetch_timeout_s(NOW + timedelta(seconds=left_s), NOW)


def test_events_carry_the_entry_and_resolve_relative_links_against_http_feeds() -> None:
    feed = parse_feed((DATA / "atom.xml").read_bytes())
    config = FeedConfig(HttpSource("https://example.org/feeds/atom.xml"))

    event = entry_event(feed.entries[0], feed, config)

    assert event.id == "tag:example.org,2024:older"
    assert event.data == {
        "title": "Older entry",
        "link": "https://example.org/posts/older",
        "published": "2024-02-01T12:00:00Z",
        "feed": "Example Atom feed",
        "kind": "atom",
    }


# -- the handler on files ------------------------------------------------------------------------


async def test_a_file_feed_emits_every_entry_oldest_first_then_nothing_until_it_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(
        rss(("b", "Tue, 02 Jan 2024 00:00:00 GMT"), ("a", "Mon, 01 Jan 2024 00:00:00 GMT"))
    )
    config = {"url": path.as_uri()}

    first = await poll_feed(make_tick(config), config_dir=None, now=NOW)
    unchanged = await poll_feed(make_tick(config, first.next_cursor), config_dir=None, now=NOW)
    path.write_bytes(
        rss(
            ("c", "Wed, 03 Jan 2024 00:00:00 GMT"),
            ("b", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("a", "Mon, 01 Jan 2024 00:00:00 GMT"),
        )
    )
    changed = await poll_feed(make_tick(config, first.next_cursor), config_dir=None, now=NOW)

    assert [event.id for event in first.events] == ["a", "b"]
    assert first.events[0].data == {
        "title": "a",
        "link": None,
        "published": "2024-01-01T00:00:00Z",
        "feed": "Feed",
        "kind": "rss",
    }
    assert first.next_cursor is not None
    assert (unchanged.events, unchanged.next_cursor) == ([], None)
    assert unchanged.metrics["not_modified"] == 1
    assert [event.id for event in changed.events] == ["c"]
    assert changed.metrics == {
        "entries": 3,
        "new_entries": 1,
        "feed_bytes": path.stat().st_size,
        "not_modified": 0,
    }


async def test_the_seen_set_stays_bounded_by_max_seen_across_ticks(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    items = [(f"id{n}", f"Mon, 0{n} Jan 2024 00:00:00 GMT") for n in range(1, 6)]
    path.write_bytes(rss(*reversed(items[:3])))
    config = {"url": str(path), "max_seen": 2}

    first = await poll_feed(make_tick(config), config_dir=None, now=NOW)
    path.write_bytes(rss(*reversed(items)))
    second = await poll_feed(make_tick(config, first.next_cursor), config_dir=None, now=NOW)

    assert [event.id for event in first.events] == ["id2", "id3"]
    assert [event.id for event in second.events] == ["id4", "id5"]
    assert second.next_cursor is not None
    assert decode_cursor(second.next_cursor).seen == (hash_id("id4"), hash_id("id5"))


async def test_the_registered_handler_resolves_relative_paths_against_pollerd_config_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLLERD_CONFIG_DIR", str(REPO))
    tick = make_tick({"url": "samples/feeds/pollerd-news.xml"}, now=datetime.now(UTC))

    result = await poll(tick)

    assert [event.id for event in result.events] == SAMPLE_IDS


async def test_an_unreadable_cursor_starts_afresh_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(rss(("a", "Mon, 01 Jan 2024 00:00:00 GMT")))

    with caplog.at_level(logging.WARNING, logger="feeds"):
        result = await poll_feed(
            make_tick({"url": str(path)}, b"not a cursor"), config_dir=None, now=NOW
        )

    assert [event.id for event in result.events] == ["a"]
    assert "unreadable cursor" in caplog.text and "job_id=news" in caplog.text


@pytest.mark.parametrize(
    ("config", "error", "words"),
    [
        ({"url": "ftp://x/f"}, ConfigError, "unsupported scheme"),
        ({"url": "/nonexistent/feed.xml"}, PermanentError, "/nonexistent/feed.xml"),
        ({"url": str(DATA)}, PermanentError, "cannot read feed file"),
        ({"url": str(DATA / "entities.xml")}, PermanentError, "ENTITY"),
    ],
    ids=["bad-scheme", "missing-file", "directory", "entities"],
)
async def test_handler_failures_leave_as_the_sdk_error_of_their_class(
    config: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        await poll_feed(make_tick(config), config_dir=None, now=NOW)

    assert words in str(caught.value)


async def test_a_truncated_file_is_transient_because_it_may_be_mid_update(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(rss(("a", "Mon, 01 Jan 2024 00:00:00 GMT"))[:40])

    with pytest.raises(TransientError) as caught:
        await poll_feed(make_tick({"url": str(path)}), config_dir=None, now=NOW)

    assert "not well-formed XML" in str(caught.value)
    assert str(path) in str(caught.value)


# -- the handler over HTTP -----------------------------------------------------------------------


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # never answer: wait for the server's release, then hang up


@dataclass
class FeedServer:
    """A real HTTP server on loopback; ``routes`` maps paths to responses."""

    base_url: str = ""
    routes: dict[str, Response] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return self.base_url + path


class _FeedHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: FeedServer = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, dict(self.headers)))
        response = state.routes.get(self.path, Response(404))
        if response.hold:
            state.release.wait(SUBPROCESS_TIMEOUT_S)
            return
        etag = response.headers.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def feed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FeedServer]:
    """A real HTTP server on a free loopback port, reached without any proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    state = FeedServer(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever, args=(SERVER_POLL_S,), name="feed-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(SUBPROCESS_TIMEOUT_S)


async def test_http_feeds_use_conditional_get_and_a_304_keeps_the_cursor(
    feed_server: FeedServer,
) -> None:
    validators = {"ETag": '"v1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
    feed_server.routes["/feed.xml"] = Response(body=SAMPLE.read_bytes(), headers=validators)
    config = {"url": feed_server.url("/feed.xml")}

    first = await poll_feed(make_tick(config), config_dir=None, now=NOW)
    second = await poll_feed(make_tick(config, first.next_cursor), config_dir=None, now=NOW)

    assert [event.id for event in first.events] == SAMPLE_IDS
    assert first.events[0].data["feed"] == "pollerd news"
    (_, sent_first), (_, sent_second) = feed_server.requests
    assert "If-None-Match" not in sent_first
    assert sent_second["If-None-Match"] == '"v1"'
    assert sent_second["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert (second.events, second.next_cursor) == ([], None)
    assert second.metrics["not_modified"] == 1


async def test_a_server_without_validators_is_fetched_in_full_and_only_new_entries_count(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/feed.xml"] = Response(body=SAMPLE.read_bytes())
    config = {"url": feed_server.url("/feed.xml")}

    first = await poll_feed(make_tick(config), config_dir=None, now=NOW)
    second = await poll_feed(make_tick(config, first.next_cursor), config_dir=None, now=NOW)

    assert len(first.events) == 4
    assert (second.events, second.next_cursor) == ([], None)  # same cursor: nothing to store
    assert second.metrics["entries"] == 4


async def test_validators_of_another_url_are_not_sent(feed_server: FeedServer) -> None:
    feed_server.routes["/new.xml"] = Response(body=SAMPLE.read_bytes(), headers={"ETag": '"v1"'})
    old = encode_cursor(
        make_cursor([hash_id(i) for i in SAMPLE_IDS[:3]], "https://old/", Validators('"v1"'))
    )

    result = await poll_feed(
        make_tick({"url": feed_server.url("/new.xml")}, old), config_dir=None, now=NOW
    )

    assert "If-None-Match" not in feed_server.requests[0][1]
    assert [event.id for event in result.events] == SAMPLE_IDS[3:]  # the seen ids carried over


async def test_a_gzip_encoded_feed_is_decompressed(feed_server: FeedServer) -> None:
    body = gzip.compress(SAMPLE.read_bytes())
    feed_server.routes["/feed.xml.gz"] = Response(body=body, headers={"Content-Encoding": "gzip"})

    result = await poll_feed(
        make_tick({"url": feed_server.url("/feed.xml.gz")}), config_dir=None, now=NOW
    )

    assert feed_server.requests[0][1]["Accept-Encoding"] == "gzip"
    assert len(result.events) == 4


async def test_redirects_are_followed_over_http_only(feed_server: FeedServer) -> None:
    feed_server.routes["/feed.xml"] = Response(body=SAMPLE.read_bytes())
    feed_server.routes["/moved"] = Response(301, headers={"Location": "/feed.xml"})
    feed_server.routes["/to-file"] = Response(302, headers={"Location": SAMPLE.as_uri()})
    feed_server.routes["/to-ftp"] = Response(302, headers={"Location": "ftp://127.0.0.1/f"})

    moved = await poll_feed(make_tick({"url": feed_server.url("/moved")}), config_dir=None, now=NOW)
    for path in ("/to-file", "/to-ftp"):
        with pytest.raises(TransientError):
            await poll_feed(make_tick({"url": feed_server.url(path)}), config_dir=None, now=NOW)

    assert len(moved.events) == 4
    assert [path for path, _ in feed_server.requests] == [
        "/moved",
        "/feed.xml",
        "/to-file",
        "/to-ftp",
    ]


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, PermanentError), (410, PermanentError), (500, TransientError), (429, TransientError)],
)
async def test_http_errors_name_the_status_and_url_and_map_to_their_class(
    feed_server: FeedServer, status: int, error: type[Exception]
) -> None:
    feed_server.routes["/feed.xml"] = Response(status=status, body=b"nope")
    url = feed_server.url("/feed.xml")

    with pytest.raises(error) as caught:
        await poll_feed(make_tick({"url": url}), config_dir=None, now=NOW)

    assert f"GET {url} answered {status}" in str(caught.value)


async def test_an_html_page_served_as_a_feed_is_a_transient_error_naming_its_content_type(
    feed_server: FeedServer,
) -> None:
    page = b"<!DOCTYPE html><html><body><p>Maintenance<br></body></html>"
    feed_server.routes["/feed.xml"] = Response(body=page, headers={"Content-Type": "text/html"})

    with pytest.raises(TransientError) as caught:
        await poll_feed(make_tick({"url": feed_server.url("/feed.xml")}), config_dir=None, now=NOW)

    assert "not well-formed XML" in str(caught.value)
    assert "served as text/html" in str(caught.value)


async def test_a_server_that_does_not_answer_in_time_is_a_transient_error(
    feed_server: FeedServer,
) -> None:
    feed_server.routes["/slow.xml"] = Response(body=SAMPLE.read_bytes(), hold=True)

    with pytest.raises(TransientError) as caught:
        await poll_feed(
            make_tick({"url": feed_server.url("/slow.xml")}, budget_s=1.0),
            config_dir=None,
            now=NOW,
        )

    assert "no answer within 0.5s" in str(caught.value)


async def test_a_refused_connection_is_a_transient_error(feed_server: FeedServer) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/feed.xml"

    with pytest.raises(TransientError) as caught:
        await poll_feed(make_tick({"url": url}), config_dir=None, now=NOW)

    assert url in str(caught.value)


# -- the plugin as a process ---------------------------------------------------------------------


def _manifest() -> dict[str, Any]:
    with (PLUGIN_DIR / "plugin.toml").open("rb") as handle:
        manifest: dict[str, Any] = tomllib.load(handle)["plugin"]
    return manifest


def _entrypoint() -> list[str]:
    entrypoint = _manifest()["entrypoint"]
    command = sys.executable if entrypoint["command"] == "python" else entrypoint["command"]
    return [command, *entrypoint["args"]]


def _request(config: dict[str, Any], cursor: bytes | None = None) -> wire.TickRequest:
    now = datetime.now(UTC)
    return wire.TickRequest(
        kind="rss",
        job_id="pollerd-news",
        tick_id=wire.make_tick_id("pollerd-news", now),
        attempt=1,
        agent_id="",
        cursor=cursor,
        config=config,
        now=now,
        scheduled_at=now,
        deadline=now + timedelta(seconds=TICK_BUDGET_S),
        interval_hint_secs=15,
    )


def test_the_manifest_declares_what_the_plugin_serves() -> None:
    manifest = _manifest()

    assert manifest["id"] == feeds_plugin.PLUGIN_ID
    assert manifest["poller"]["kinds"] == list(feeds_plugin.plugin.kinds)
    assert manifest["poller"]["lifecycle"] == "long_lived"
    assert manifest["entrypoint"]["env"] == ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"]


def _run_once(request: wire.TickRequest, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        _entrypoint(),
        input=request.encode(),
        capture_output=True,
        cwd=PLUGIN_DIR,
        env={"POLLERD_PROTOCOL": "1", "POLLERD_MODE": "ephemeral", **env},
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def test_the_plugin_answers_one_tick_in_ephemeral_mode_as_a_real_process() -> None:
    request = _request({"url": "samples/feeds/pollerd-news.xml"})

    done = _run_once(request, {"POLLERD_PLUGIN_ID": "feeds", "POLLERD_CONFIG_DIR": str(REPO)})

    assert done.returncode == 0, done.stderr.decode()
    reply = wire.decode_reply(done.stdout, tick_id=request.tick_id)
    assert [event.id for event in reply.events] == SAMPLE_IDS
    assert reply.next_cursor is not None
    assert decode_cursor(reply.next_cursor).seen == tuple(hash_id(i) for i in SAMPLE_IDS)


def test_a_relative_path_without_pollerd_config_dir_is_a_config_error_over_the_wire() -> None:
    request = _request({"url": "samples/feeds/pollerd-news.xml"})

    done = _run_once(request, {"POLLERD_PLUGIN_ID": "feeds"})

    with pytest.raises(PluginReplyError) as caught:
        wire.decode_reply(done.stdout, tick_id=request.tick_id)

    assert caught.value.error_class is ErrorClass.CONFIG
    assert "POLLERD_CONFIG_DIR" in str(caught.value)


@pytest.fixture
async def long_lived_plugin(
    nats_server: EmbeddedNatsServer,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The plugin started the way pollerd supervises it, stopped with SIGTERM after the test."""
    process = await asyncio.create_subprocess_exec(
        *_entrypoint(),
        cwd=PLUGIN_DIR,
        env={
            "POLLERD_PROTOCOL": "1",
            "POLLERD_MODE": "long_lived",
            "POLLERD_PLUGIN_ID": "feeds",
            "POLLERD_NATS_URL": nats_server.url,
            "POLLERD_SUBJECT_PREFIX": _manifest()["poller"]["subject_prefix"],
            "POLLERD_CONFIG_DIR": str(REPO),
            "POLLERD_PARENT_PID": str(os.getpid()),
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT_S)


async def test_the_plugin_serves_ticks_over_nats_in_long_lived_mode(
    long_lived_plugin: asyncio.subprocess.Process, nats_client: Client
) -> None:
    subject = _manifest()["poller"]["subject_prefix"] + ".tick"
    request = _request({"url": "samples/feeds/pollerd-news.xml"})
    async with asyncio.timeout(SUBPROCESS_TIMEOUT_S):
        while True:  # until the plugin has subscribed
            try:
                message = await nats_client.request(subject, request.encode(), timeout=5)
                break
            except NoRespondersError:
                await asyncio.sleep(0.05)

    reply = wire.decode_reply(message.data, tick_id=request.tick_id)
    assert [event.id for event in reply.events] == SAMPLE_IDS
