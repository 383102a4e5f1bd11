"""The wire codec: its value types behave as frozen dataclasses, and frames survive a round trip."""

from __future__ import annotations

import base64
import copy
import inspect
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pollerd import wire
from pollerd.errors import ErrorClass, PluginReplyError, ProtocolError
from pollerd.sdk import Tick, TickResult
from pollerd.wire import Event, Record, TickReply, TickRequest

NOW = datetime(2026, 11, 22, 8, 0, 0, 12_000, tzinfo=UTC)
TICK_ID = wire.make_tick_id("inbox", NOW)


def tick_request(**changes: Any) -> TickRequest:
    fields: dict[str, Any] = {
        "kind": "dir_watch",
        "job_id": "inbox",
        "tick_id": TICK_ID,
        "attempt": 2,
        "agent_id": "agent-7",
        "cursor": b"\x00\xff",
        "config": {"path": "samples/inbox"},
        "now": NOW,
        "scheduled_at": NOW,
        "deadline": NOW + timedelta(seconds=20),
        "interval_hint_secs": 10.0,
    }
    return TickRequest(**(fields | changes))


def tick(**changes: Any) -> Tick:
    request = tick_request(**changes)
    return Tick(**{name: getattr(request, name) for name in Tick.__slots__})


def tick_reply(**changes: Any) -> TickReply:
    fields: dict[str, Any] = {
        "next_cursor": b"c",
        "next_interval_secs": 5.0,
        "metrics": {"seen": 3.0},
        "events": (Event("e1", {"path": "a"}),),
    }
    return TickReply(**(fields | changes))


def tick_result(**changes: Any) -> TickResult:
    fields: dict[str, Any] = {
        "next_cursor": b"c",
        "next_interval_secs": 5.0,
        "metrics": {"seen": 3.0},
        "events": [Event("e1", {"path": "a"})],
    }
    return TickResult(**(fields | changes))


def event(**changes: Any) -> Event:
    fields: dict[str, Any] = {"id": "e1", "data": {"path": "a"}}
    return Event(**(fields | changes))


# Each value type: a factory taking field overrides, and one field with another value.
VALUE_TYPES = [
    pytest.param(tick_request, ("attempt", 3), id="TickRequest"),
    pytest.param(event, ("id", "e2"), id="Event"),
    pytest.param(tick_reply, ("next_cursor", None), id="TickReply"),
    pytest.param(tick, ("attempt", 3), id="Tick"),
    pytest.param(tick_result, ("next_cursor", None), id="TickResult"),
]
FROZEN_TYPES = VALUE_TYPES[:4]


@pytest.mark.parametrize(("make", "change"), VALUE_TYPES)
def test_the_fields_of_a_value_type_are_its_constructor_parameters_in_order(
    make: Any, change: tuple[str, object]
) -> None:
    value = make()
    parameters = list(inspect.signature(type(value)).parameters)

    assert isinstance(value, Record)
    assert list(type(value).__slots__) == parameters
    assert type(value).__match_args__ == type(value).__slots__
    assert not hasattr(value, "__dict__")


@pytest.mark.parametrize(("make", "change"), VALUE_TYPES)
def test_values_are_equal_when_their_class_and_every_field_are(
    make: Any, change: tuple[str, object]
) -> None:
    name, other_value = change

    assert make() == make()
    assert make() != make(**{name: other_value})
    assert make() != tuple(getattr(make(), field) for field in type(make()).__slots__)


@pytest.mark.parametrize(("make", "change"), VALUE_TYPES)
def test_the_repr_shows_the_class_and_every_field(make: Any, change: tuple[str, object]) -> None:
    value = make()
    fields = ", ".join(f"{name}={getattr(value, name)!r}" for name in type(value).__slots__)

    assert repr(value) == f"{type(value).__name__}({fields})"


@pytest.mark.parametrize(("make", "change"), VALUE_TYPES)
def test_values_survive_copy_deepcopy_and_pickle(make: Any, change: tuple[str, object]) -> None:
    value = make()

    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value
    assert pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize(("make", "change"), FROZEN_TYPES)
def test_a_frozen_value_refuses_assignment_and_deletion(
    make: Any, change: tuple[str, object]
) -> None:
    value = make()
    name, other_value = change

    with pytest.raises(AttributeError) as assigned:
        setattr(value, name, other_value)
    with pytest.raises(AttributeError) as deleted:
        delattr(value, name)
    with pytest.raises(AttributeError):
        value.extra = 1

    assert f"cannot assign to {name!r}" in str(assigned.value)
    assert f"cannot delete {name!r}" in str(deleted.value)
    assert value == make()


def test_frozen_values_hash_by_their_fields_when_the_fields_are_hashable() -> None:
    assert hash(Event("e1", 1)) == hash(Event("e1", 1)) == hash(("e1", 1))
    assert len({Event("e1", 1), Event("e1", 1), Event("e2", 1)}) == 2
    assert hash(tick_request(config=frozenset())) == hash(tick_request(config=frozenset()))


@pytest.mark.parametrize("make", [tick, tick_request, tick_reply, TickReply])
def test_a_frozen_value_with_a_dict_field_is_unhashable_as_before(make: Any) -> None:
    value = make()

    with pytest.raises(TypeError) as raised:
        hash(value)

    assert "dict" in str(raised.value)


def test_a_tick_result_is_mutable_unhashable_and_gets_fresh_defaults() -> None:
    first, second = TickResult(), TickResult()
    first.events.append(Event("e1", None))
    first.next_cursor = b"x"

    assert second == TickResult(next_cursor=None, next_interval_secs=None, metrics={}, events=[])
    assert first.next_cursor == b"x" and first.events == [Event("e1", None)]
    with pytest.raises(TypeError):
        hash(first)


def test_a_tick_reply_defaults_to_keep_the_cursor_with_no_events() -> None:
    reply = TickReply()

    assert (reply.next_cursor, reply.next_interval_secs, reply.metrics, reply.events) == (
        None,
        None,
        {},
        (),
    )


def test_value_types_match_positionally() -> None:
    match event(), tick_reply():
        case Event(event_id, data), TickReply(cursor, interval):
            matched = (event_id, data, cursor, interval)

    assert matched == ("e1", {"path": "a"}, b"c", 5.0)


@pytest.mark.parametrize(
    "cursor",
    [b"", b"\x00", b"\xfb\xff", b"\xfb\xff\xfe", bytes(range(256)), b"bench-cursor"],
)
def test_cursors_are_url_safe_base64_without_padding_and_decode_back(cursor: bytes) -> None:
    text = wire.encode_cursor(cursor)

    assert text == base64.urlsafe_b64encode(cursor).decode().rstrip("=")
    assert wire.decode_cursor(text) == cursor
    assert wire.decode_cursor(text + "=" * (-len(text) % 4)) == cursor


@pytest.mark.parametrize("text", ["a", "ab+c", "ab/c", "a b", "é", "abcde", 7])
def test_a_cursor_that_is_not_url_safe_base64_is_a_value_error(text: Any) -> None:
    with pytest.raises(ValueError) as raised:
        wire.decode_cursor(text)

    assert "base64" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected", "formatted"),
    [
        ("2026-11-22T08:00:00Z", NOW.replace(microsecond=0), "2026-11-22T08:00:00Z"),
        ("2026-11-22T08:00:00.012Z", NOW, "2026-11-22T08:00:00.012Z"),
        ("2026-11-22T09:00:00.012+01:00", NOW, "2026-11-22T08:00:00.012Z"),
        ("2026-11-22T08:00:00.012", NOW, "2026-11-22T08:00:00.012Z"),  # no offset: UTC
    ],
)
def test_a_time_parses_to_an_aware_datetime_and_formats_in_utc(
    text: str, expected: datetime, formatted: str
) -> None:
    parsed = wire.parse_time(text)

    assert parsed == expected
    assert parsed.tzinfo is not None
    assert wire.format_time(parsed) == formatted


def test_a_request_is_one_json_line_with_every_field_encoded() -> None:
    frame = tick_request().encode()
    message = json.loads(frame)

    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert message == {
        "jsonrpc": "2.0",
        "id": TICK_ID,
        "method": wire.METHOD,
        "params": {
            "protocol": wire.PROTOCOL,
            "kind": "dir_watch",
            "job_id": "inbox",
            "tick_id": TICK_ID,
            "attempt": 2,
            "agent_id": "agent-7",
            "cursor": "AP8",
            "config": {"path": "samples/inbox"},
            "now": "2026-11-22T08:00:00.012Z",
            "scheduled_at": "2026-11-22T08:00:00.012Z",
            "deadline": "2026-11-22T08:00:20.012Z",
            "interval_hint_secs": 10.0,
        },
    }


def test_an_encoded_result_decodes_to_an_equal_reply() -> None:
    reply = tick_reply()

    assert wire.decode_reply(wire.encode_result(TICK_ID, reply), tick_id=TICK_ID) == reply


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (wire.CODE_TRANSIENT, ErrorClass.TRANSIENT),
        (wire.CODE_PERMANENT, ErrorClass.PERMANENT),
        (wire.CODE_CONFIG, ErrorClass.CONFIG),
        (-1, ErrorClass.TRANSIENT),
    ],
)
def test_an_error_reply_raises_a_plugin_reply_error_of_its_class(
    code: int, error_class: ErrorClass
) -> None:
    frame = wire.encode_error(TICK_ID, code, "disk gone")

    with pytest.raises(PluginReplyError) as raised:
        wire.decode_reply(frame, tick_id=TICK_ID, plugin="files", job_id="inbox")

    assert (raised.value.code, raised.value.error_class) == (code, error_class)
    assert raised.value.plugin_message == "disk gone"


@pytest.mark.parametrize(
    ("result", "complaint"),
    [
        ({"next_cursor": "a"}, "next_cursor"),
        ({"next_interval_secs": "5"}, "number or null"),
        ({"next_interval_secs": float("inf")}, "must be > 0"),
        ({"next_interval_secs": 0}, "must be > 0"),
        ({"metrics": {"n": True}}, "metrics"),
        ({"events": {"id": "e1"}}, "events must be a list"),
        ({"events": [{"data": 1}]}, "events[0]"),
    ],
)
def test_a_malformed_result_is_a_protocol_error_naming_the_field(
    result: dict[str, Any], complaint: str
) -> None:
    frame = json.dumps({"jsonrpc": "2.0", "id": TICK_ID, "result": result})

    with pytest.raises(ProtocolError) as raised:
        wire.decode_reply(frame, tick_id=TICK_ID, plugin="files", job_id="inbox")

    assert complaint in str(raised.value)
    assert (raised.value.plugin, raised.value.job_id) == ("files", "inbox")


@pytest.mark.parametrize(
    "interval", [10**400, 1e400, -1, 0, 400 * 24 * 3600, float("nan"), "5", True]
)
def test_a_next_interval_that_is_not_a_sane_positive_number_is_a_protocol_error(
    interval: object,
) -> None:
    frame = json.dumps(
        {"jsonrpc": "2.0", "id": "t", "result": {"next_interval_secs": interval}}
    ).encode()
    with pytest.raises(wire.ProtocolError) as refused:
        wire.decode_reply(frame, tick_id="t", plugin="p")
    assert "next_interval_secs" in str(refused.value)


def test_a_metric_too_large_for_a_float_is_a_protocol_error() -> None:
    frame = json.dumps(
        {"jsonrpc": "2.0", "id": "t", "result": {"metrics": {"seen": 10**400}}}
    ).encode()
    with pytest.raises(wire.ProtocolError) as refused:
        wire.decode_reply(frame, tick_id="t", plugin="p")
    assert "metrics" in str(refused.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cursor": None, "epoch": 7, "interval_hint_secs": None},
        {"kind": "fe\u00e9ds", "job_id": 'a"quoted\\job', "agent_id": "agent-\u2603"},
        {"config": {"url": "https://example.com/?q=\u00e9", "n": [1, 2.5, None, True]}},
        {"attempt": 3, "interval_hint_secs": 0.1, "cursor": b"\x00\xff" * 40},
    ],
)
def test_the_written_out_frame_is_the_generic_encoding(changes: dict[str, object]) -> None:
    moment = datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC)
    fields: dict[str, object] = {
        "kind": "feeds",
        "job_id": "job-1",
        "tick_id": wire.make_tick_id("job-1", moment),
        "attempt": 1,
        "agent_id": "",
        "cursor": b"abc",
        "config": {},
        "now": moment,
        "scheduled_at": moment.replace(microsecond=0),
        "deadline": moment + timedelta(seconds=30),
        "interval_hint_secs": 10.0,
        "epoch": None,
    }
    request = wire.TickRequest(**{**fields, **changes})  # type: ignore[arg-type]
    params: dict[str, object] = {
        "protocol": wire.PROTOCOL,
        "kind": request.kind,
        "job_id": request.job_id,
        "tick_id": request.tick_id,
        "attempt": request.attempt,
        "agent_id": request.agent_id,
        "cursor": None if request.cursor is None else wire.encode_cursor(request.cursor),
        "config": dict(request.config),
        "now": wire.format_time(request.now),
        "scheduled_at": wire.format_time(request.scheduled_at),
        "deadline": wire.format_time(request.deadline),
        "interval_hint_secs": request.interval_hint_secs,
    }
    if request.epoch is not None:
        params["epoch"] = request.epoch
    frame = {"jsonrpc": "2.0", "id": request.tick_id, "method": wire.METHOD, "params": params}
    assert request.encode() == json.dumps(frame, separators=(",", ":")).encode() + b"\n"
