"""Plugin: handler registration and Plugin.handle(), one request frame in, one reply frame out."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pollerd.sdk
from pollerd import wire
from pollerd.sdk import (
    ConfigError,
    Event,
    PermanentError,
    Plugin,
    Tick,
    TickResult,
    TransientError,
)
from pollerd.sdk._plugin import _is_coroutine_function

SCHEDULED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TICK_ID = wire.make_tick_id("job-1", SCHEDULED)
BARRIER_TIMEOUT_S = 5.0


def request(kind: str = "sync_kind", cursor: bytes | None = None, **config: Any) -> bytes:
    return wire.TickRequest(
        kind=kind,
        job_id="job-1",
        tick_id=TICK_ID,
        attempt=2,
        agent_id="agent-7",
        cursor=cursor,
        config=config,
        now=SCHEDULED + timedelta(milliseconds=12),
        scheduled_at=SCHEDULED,
        deadline=SCHEDULED + timedelta(seconds=20),
        interval_hint_secs=10,
    ).encode()


def frame_with(**params: Any) -> bytes:
    message = json.loads(request())
    message["params"].update(params)
    return json.dumps(message).encode()


def error_of(reply: bytes) -> tuple[int, str]:
    message = json.loads(reply)
    return message["error"]["code"], message["error"]["message"]


class Boom(Exception):
    pass


@pytest.fixture
def plugin() -> Plugin:
    plugin = Plugin("demo")

    @plugin.poller("sync_kind")
    def sync_kind(tick: Tick) -> TickResult:
        return TickResult(next_cursor=(tick.cursor or b"") + b"+", metrics={"n": 1})

    @plugin.poller("async_kind")
    async def async_kind(tick: Tick) -> TickResult:
        await asyncio.sleep(0)
        return TickResult(events=[Event(id="a", data={"job": tick.job_id})])

    @plugin.poller("nothing")
    def nothing(tick: Tick) -> None:
        return None

    @plugin.poller("crash")
    def crash(tick: Tick) -> TickResult:
        raise Boom("the disk is on fire")

    @plugin.poller("transient", "permanent", "config")
    async def fail(tick: Tick) -> TickResult:
        error = {"transient": TransientError, "permanent": PermanentError, "config": ConfigError}
        raise error[tick.kind](f"{tick.kind} trouble")

    @plugin.poller("bad_result")
    def bad_result(tick: Tick) -> Any:
        return tick.config["result"]

    return plugin


def test_the_sdk_exports_exactly_its_public_names() -> None:
    assert pollerd.sdk.__all__ == [
        "ConfigError",
        "Event",
        "PermanentError",
        "Plugin",
        "Tick",
        "TickResult",
        "TransientError",
    ]
    assert pollerd.sdk.Event is wire.Event


# What a one-shot plugin with a plain def handler must not load: the service's dependencies,
# asyncio, threads, logging, what the value types would cost as dataclasses (dataclasses, inspect)
# or with typing at run time (no standard module on the one-shot path imports typing), and the
# detours pollerd.wire avoids: base64 (and struct), contextlib, datetime's pure-Python twin.
NOT_FOR_ONE_SHOT = (
    "aiohttp",
    "apscheduler",
    "asyncio",
    "base64",
    "concurrent",
    "contextlib",
    "dataclasses",
    "datetime",
    "inspect",
    "logging",
    "nats",
    "pydantic",
    "struct",
    "typing",
    "yaml",
)
PRINT_LOADED = (
    f"print(sorted(m for m in {NOT_FOR_ONE_SHOT!r} if m in sys.modules), file=sys.stderr)"
)
ONE_SHOT_PLUGIN = (
    "from pollerd.sdk import Plugin, TickResult; "
    "plugin = Plugin('lean'); "
    "plugin.poller('sync_kind')(lambda tick: TickResult(next_cursor=tick.cursor)); "
    "plugin.run()"
)


def run_python(code: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        env={"POLLERD_MODE": "ephemeral"},
        capture_output=True,
        check=True,
        timeout=30,
    )


def test_importing_the_sdk_loads_no_heavy_module() -> None:
    done = run_python(f"import sys, pollerd.sdk; {PRINT_LOADED}")

    assert done.stderr.decode().strip() == "[]"


def test_a_one_shot_tick_with_a_plain_def_handler_loads_no_heavy_module() -> None:
    done = run_python(f"import sys; {ONE_SHOT_PLUGIN}; {PRINT_LOADED}", request(cursor=b"lean"))

    assert wire.decode_reply(done.stdout, tick_id=TICK_ID).next_cursor == b"lean"
    assert done.stderr.decode().strip() == "[]"


def test_kinds_lists_every_registered_kind(plugin: Plugin) -> None:
    assert set(plugin.kinds) == {
        "sync_kind",
        "async_kind",
        "nothing",
        "crash",
        "transient",
        "permanent",
        "config",
        "bad_result",
    }


@pytest.mark.parametrize(
    ("kinds", "problem"),
    [
        ((), "at least one kind"),
        (("Bad-Kind",), "must match"),
        (("sync_kind",), "already has a handler"),
    ],
)
def test_poller_refuses_bad_or_duplicate_kinds(
    plugin: Plugin, kinds: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(ValueError) as caught:
        plugin.poller(*kinds)

    assert problem in str(caught.value)


async def test_a_sync_handler_gets_the_tick_and_its_result_is_encoded(plugin: Plugin) -> None:
    reply = wire.decode_reply(await plugin.handle(request(cursor=b"\x00\xff")), tick_id=TICK_ID)

    assert reply.next_cursor == b"\x00\xff+"
    assert reply.metrics == {"n": 1.0}


async def test_an_async_handler_is_awaited(plugin: Plugin) -> None:
    reply = wire.decode_reply(await plugin.handle(request("async_kind")), tick_id=TICK_ID)

    assert reply.events == (Event(id="a", data={"job": "job-1"}),)


async def async_handler(tick: Tick) -> None:
    return None


def sync_handler(tick: Tick) -> None:
    return None


class Handlers:
    async def async_method(self, tick: Tick) -> None:
        return None

    def sync_method(self, tick: Tick) -> None:
        return None

    async def __call__(self, tick: Tick) -> None:
        return None


@pytest.mark.parametrize(
    ("handler", "is_async"),
    [
        (async_handler, True),
        (sync_handler, False),
        (functools.partial(async_handler), True),
        (functools.partial(functools.partial(async_handler)), True),
        (functools.partial(sync_handler), False),
        (Handlers().async_method, True),
        (Handlers().sync_method, False),
        (lambda tick: None, False),
        (Handlers(), False),  # an object with an async __call__: inspect says no as well
        (print, False),
    ],
)
def test_async_handlers_are_told_apart_as_inspect_does(handler: Any, is_async: bool) -> None:
    assert _is_coroutine_function(handler) is is_async
    assert inspect.iscoroutinefunction(handler) is is_async


async def test_the_tick_carries_every_request_field_decoded() -> None:
    plugin = Plugin("demo")
    seen: list[Tick] = []

    @plugin.poller("sync_kind")
    def record(tick: Tick) -> None:
        seen.append(tick)

    await plugin.handle(request(cursor=b"\x01\x02", path="/tmp/in"))

    assert seen == [
        Tick(
            kind="sync_kind",
            job_id="job-1",
            tick_id=TICK_ID,
            attempt=2,
            agent_id="agent-7",
            cursor=b"\x01\x02",
            config={"path": "/tmp/in"},
            now=SCHEDULED + timedelta(milliseconds=12),
            scheduled_at=SCHEDULED,
            deadline=SCHEDULED + timedelta(seconds=20),
            interval_hint_secs=10.0,
        )
    ]


async def test_a_handler_returning_none_keeps_the_cursor(plugin: Plugin) -> None:
    reply = wire.decode_reply(await plugin.handle(request("nothing")), tick_id=TICK_ID)

    assert reply == wire.TickReply()


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("transient", wire.CODE_TRANSIENT, "transient trouble"),
        ("permanent", wire.CODE_PERMANENT, "permanent trouble"),
        ("config", wire.CODE_CONFIG, "config trouble"),
        ("crash", wire.CODE_TRANSIENT, "Boom: the disk is on fire"),
    ],
)
async def test_handler_errors_become_error_replies_with_their_class(
    plugin: Plugin, kind: str, code: int, message: str
) -> None:
    reply = await plugin.handle(request(kind))

    assert error_of(reply) == (code, message)
    assert json.loads(reply)["id"] == TICK_ID


async def test_an_unexpected_exception_prints_its_traceback_to_stderr_only(
    plugin: Plugin, capsys: pytest.CaptureFixture[str]
) -> None:
    await plugin.handle(request("crash"))

    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" in err and "Boom: the disk is on fire" in err
    assert "handler for kind 'crash' failed on job 'job-1'" in err


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ("a string", "expected a TickResult or None, got str"),
        (TickResult(next_cursor="text"), "next_cursor must be bytes"),  # type: ignore[arg-type]
        (TickResult(next_interval_secs=0), "next_interval_secs must be a positive number"),
        (TickResult(metrics={"n": "1"}), "metric 'n' must be a number"),  # type: ignore[dict-item]
        (TickResult(events=[Event(id="", data=None)]), "events[0] needs a non-empty string id"),
        (TickResult(events=["x"]), "events[0] must be an Event"),  # type: ignore[list-item]
    ],
)
async def test_an_invalid_result_is_a_transient_error_saying_what_is_wrong(
    plugin: Plugin, result: object, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin._handlers["bad_result"] = lambda tick: result

    code, message = error_of(await plugin.handle(request("bad_result")))

    assert code == wire.CODE_TRANSIENT
    assert problem in message
    assert "handler for kind 'bad_result' returned an invalid result" in message
    assert problem in capsys.readouterr().err


async def test_events_may_be_given_as_mappings(plugin: Plugin) -> None:
    result = TickResult(events=[{"id": "e", "data": [1, 2]}])  # type: ignore[list-item]
    plugin._handlers["bad_result"] = lambda tick: result

    reply = wire.decode_reply(await plugin.handle(request("bad_result")), tick_id=TICK_ID)

    assert reply.events == (Event(id="e", data=[1, 2]),)


async def test_a_reply_over_the_size_cap_becomes_a_transient_error(plugin: Plugin) -> None:
    big = TickResult(events=[Event(id="e", data="x" * wire.MAX_REPLY_BYTES)])
    plugin._handlers["bad_result"] = lambda tick: big

    code, message = error_of(await plugin.handle(request("bad_result")))

    assert code == wire.CODE_TRANSIENT
    assert "over the 1048576-byte cap" in message


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        (b"not json", wire.CODE_PARSE_ERROR, "request is not JSON"),
        (b"\xff\xfe", wire.CODE_PARSE_ERROR, "request is not JSON"),
        (b"[]", wire.CODE_INVALID_REQUEST, "not a JSON-RPC 2.0 object"),
        (b'{"jsonrpc": "2.0", "id": "x", "method": "ping"}', wire.CODE_INVALID_REQUEST, "ping"),
        (b'{"jsonrpc": "2.0", "method": "poll_tick"}', wire.CODE_INVALID_REQUEST, "no 'params'"),
        (
            frame_with(protocol=2),
            wire.CODE_INVALID_REQUEST,
            "protocol version 2 is not supported (supported: 1)",
        ),
        (frame_with(kind=""), wire.CODE_INVALID_REQUEST, "params.kind must be a non-empty"),
        (frame_with(attempt=0), wire.CODE_INVALID_REQUEST, "params.attempt"),
        (frame_with(cursor="??"), wire.CODE_INVALID_REQUEST, "params.cursor"),
        (frame_with(config=[1]), wire.CODE_INVALID_REQUEST, "params.config must be an object"),
        (frame_with(now="yesterday"), wire.CODE_INVALID_REQUEST, "params.now"),
        (frame_with(interval_hint_secs="10s"), wire.CODE_INVALID_REQUEST, "interval_hint"),
        (frame_with(kind="rss"), wire.CODE_CONFIG, "does not serve kind 'rss'"),
    ],
)
async def test_a_request_that_cannot_be_served_gets_an_error_reply(
    plugin: Plugin, frame: bytes, code: int, message: str
) -> None:
    found_code, found_message = error_of(await plugin.handle(frame))

    assert found_code == code
    assert message in found_message


async def test_an_error_reply_to_a_bad_request_decodes_as_a_protocol_error_in_pollerd(
    plugin: Plugin,
) -> None:
    reply = await plugin.handle(frame_with(protocol=2))

    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_reply(reply, tick_id=TICK_ID, plugin="demo")

    assert "protocol version 2" in str(caught.value)


async def test_sync_handlers_run_in_threads_and_do_not_block_each_other() -> None:
    plugin = Plugin("demo")
    both_running = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)

    @plugin.poller("sync_kind")
    def meet(tick: Tick) -> TickResult:
        both_running.wait()  # breaks (and the tick fails) unless the other tick runs meanwhile
        return TickResult(next_cursor=b"met")

    replies = await asyncio.gather(plugin.handle(request()), plugin.handle(request()))

    assert [wire.decode_reply(r).next_cursor for r in replies] == [b"met", b"met"]


def test_run_without_any_poller_refuses_to_start() -> None:
    with pytest.raises(SystemExit) as caught:
        Plugin("empty").run(environ={})

    assert "registers no poller" in str(caught.value.code)


def test_run_refuses_an_unknown_mode(plugin: Plugin) -> None:
    with pytest.raises(SystemExit) as caught:
        plugin.run(environ={"POLLERD_MODE": "sideways"})

    assert "unknown POLLERD_MODE 'sideways'" in str(caught.value.code)


def test_long_lived_mode_without_the_service_module_says_what_is_missing(
    plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pollerd.sdk._service", None)

    with pytest.raises(SystemExit) as caught:
        plugin.run(environ={"POLLERD_MODE": "long_lived"})

    assert "long_lived mode needs the SDK's NATS service" in str(caught.value.code)


def test_the_plugin_id_comes_from_the_environment_when_not_given() -> None:
    plugin = Plugin()

    @plugin.poller("k")
    def handler(tick: Tick) -> None:
        return None

    with pytest.raises(SystemExit):
        plugin.run(environ={"POLLERD_PLUGIN_ID": "from-env", "POLLERD_MODE": "sideways"})

    assert plugin.plugin_id == "from-env"


@pytest.mark.parametrize("kind", ["sync_kind", "async_kind"])
async def test_a_tick_with_no_time_left_is_answered_without_calling_the_handler(
    plugin: Plugin, kind: str
) -> None:
    expired = frame_with(kind=kind, deadline=json.loads(request())["params"]["now"])
    code, message = error_of(await plugin.handle(expired))
    assert code == wire.CODE_TRANSIENT
    assert message == "plugin 'demo': the tick came with no time left before its deadline"


async def test_time_spent_waiting_for_a_slot_comes_off_the_budget(plugin: Plugin) -> None:
    code, message = error_of(await plugin.handle(request(), waited_s=60.0))
    assert code == wire.CODE_TRANSIENT
    assert "no free slot before the tick's deadline (waited 60.000s" in message
