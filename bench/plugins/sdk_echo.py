"""The same plugin as raw_echo.py, written with the SDK.

- ``echo``: a plain ``def`` handler, the usual one-shot style (the SDK then never imports asyncio);
- ``echo_async``: the same as ``async def`` (one-shot: pays for importing asyncio);
- ``echo_event``: ``async def``, and one event per tick (for the JetStream line of bench/nats.py).
"""

import itertools

from pollerd.sdk import Event, Plugin, Tick, TickResult

plugin = Plugin("bench")
_sequence = itertools.count()


@plugin.poller("echo")
def echo(tick: Tick) -> TickResult:
    return TickResult(next_cursor=tick.cursor)


@plugin.poller("echo_async")
async def echo_async(tick: Tick) -> TickResult:
    return TickResult(next_cursor=tick.cursor)


@plugin.poller("echo_event")
async def echo_event(tick: Tick) -> TickResult:
    event = Event(f"{tick.tick_id}#{next(_sequence)}", {"job": tick.job_id})
    return TickResult(next_cursor=tick.cursor, events=[event])


if __name__ == "__main__":
    plugin.run()
