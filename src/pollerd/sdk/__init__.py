"""The plugin SDK: write a poller handler, call ``plugin.run()``, and pollerd does the rest.

::

    from pollerd.sdk import Event, Plugin, Tick, TickResult

    plugin = Plugin("hello")

    @plugin.poller("hello")
    def hello(tick: Tick) -> TickResult:
        seen = int(tick.cursor or b"0")
        return TickResult(next_cursor=str(seen + 1).encode(), events=[Event(str(seen), {})])

    if __name__ == "__main__":
        plugin.run()

Handlers are plain functions (run in a worker thread) or ``async def``. Raise ``TransientError``
(retried), ``PermanentError`` (the job is paused) or ``ConfigError`` (the job is broken until its
config changes); any other exception counts as transient. ``run()`` serves one tick over stdio
(``POLLERD_MODE=ephemeral``) or ticks over NATS (``POLLERD_MODE=long_lived``).

Imports only the standard library and ``pollerd.wire``/``pollerd.errors``, and not ``asyncio``
until an async handler or the NATS mode needs it: a one-shot plugin starts fast.
"""

from __future__ import annotations

from pollerd.sdk._plugin import Plugin
from pollerd.sdk._tick import (
    ConfigError,
    Event,
    PermanentError,
    Tick,
    TickResult,
    TransientError,
)

__all__ = [
    "ConfigError",
    "Event",
    "PermanentError",
    "Plugin",
    "Tick",
    "TickResult",
    "TransientError",
]
