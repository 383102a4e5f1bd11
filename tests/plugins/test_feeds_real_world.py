"""The feeds plugin on feeds as they are found in the wild: HTML entities XML does not define,
dates without a time or a weekday, Latin-1, a byte order mark, HTML titles, xml:base."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pollerd import wire

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins" / "feeds"
DATA = REPO / "tests" / "data" / "feeds"
SUBPROCESS_TIMEOUT_S = 30.0
sys.path.insert(0, str(PLUGIN_DIR))

from feeds.parse import parse_feed  # noqa: E402


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def test_html_entities_and_loose_dates_are_read() -> None:
    feed = parse_feed((DATA / "nbsp.xml").read_bytes())

    assert feed.title == "Café News — daily"
    assert [(entry.id, entry.title, entry.published) for entry in feed.entries] == [
        ("news-4411", "Budget vote – “final” reading", utc(2026, 11, 30)),
        ("news-4410", "Snow closes the pass", utc(2026, 11, 29, 17, 5)),
        ("news-4409", "Market & prices", utc(2026, 11, 28)),
        ("news-4408", "Night train returns", utc(2026, 11, 27, 8, 0)),
    ]


def test_a_latin_1_feed_is_decoded_by_its_declaration() -> None:
    feed = parse_feed((DATA / "latin1.xml").read_bytes())

    assert feed.title == "Gazette de l'été"
    assert [(entry.title, entry.published) for entry in feed.entries] == [
        ("Fête du village", utc(2026, 11, 30, 17, 0)),
        ("Marché de Noël", utc(2026, 11, 28, 15, 0)),
    ]


def test_an_atom_feed_with_a_bom_html_titles_and_xml_base() -> None:
    feed = parse_feed((DATA / "bom-atom.xml").read_bytes())

    assert (feed.format, feed.title) == ("atom", "Notes & drafts")
    moved, undated = feed.entries
    assert (moved.title, moved.link) == ("Why we moved", "https://blog.example.net/2026/moved")
    assert moved.published == utc(2026, 11, 30, 7, 0)
    assert (undated.link, undated.published) == ("https://blog.example.net/2026/undated", None)


@pytest.mark.parametrize("name", ["nbsp.xml", "latin1.xml", "bom-atom.xml"])
def test_the_plugin_process_emits_every_entry_of_a_real_world_feed(name: str) -> None:
    now = datetime.now(UTC)
    request = wire.TickRequest(
        kind="rss",
        job_id="wild",
        tick_id=wire.make_tick_id("wild", now),
        attempt=1,
        agent_id="",
        cursor=None,
        config={"url": str(DATA / name)},
        now=now,
        scheduled_at=now,
        deadline=now + timedelta(seconds=SUBPROCESS_TIMEOUT_S),
    )

    done = subprocess.run(
        [sys.executable, "-m", "feeds"],
        input=request.encode(),
        capture_output=True,
        cwd=PLUGIN_DIR,
        env={"POLLERD_PROTOCOL": "1", "POLLERD_MODE": "ephemeral", "POLLERD_PLUGIN_ID": "feeds"},
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )

    reply = wire.decode_reply(done.stdout, tick_id=request.tick_id)
    expected = parse_feed((DATA / name).read_bytes()).entries
    assert len(reply.events) == len(expected) >= 2, done.stderr.decode()
    assert {event.id for event in reply.events} == {entry.id for entry in expected}
