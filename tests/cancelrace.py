"""Cancel a call a few loop turns after it starts, many times: does every cancellation surface?

On Python 3.11, nats-py's calls (which wait with ``asyncio.wait_for``) lose a cancellation that
comes in the loop turn where their answer lands. Cancelled 0 to ``TURNS - 1`` loop turns after
each start, a call against a real nats-server is cancelled in every phase of its requests, that
one included; a few hundred rounds hit it several times on the old code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

ROUNDS = 300
TURNS = 40  # a request and its answer take a few loop turns
END_WAIT_S = 2.0  # a loop that lost its cancellation is still running then


async def lost_cancellations(
    start: Callable[[], Coroutine[Any, Any, object]],
    *,
    before_each: Callable[[], Awaitable[None]] | None = None,
    rounds: int = ROUNDS,
    end_wait_s: float = END_WAIT_S,
) -> list[str]:
    """How the rounds whose cancellation did not surface ended: ``running`` (still going after
    ``end_wait_s``), ``returned`` or the name of the exception raised instead. ``before_each``
    runs outside the cancelled task, before each round."""
    lost: list[str] = []
    for index in range(rounds):
        if before_each is not None:
            await before_each()
        task = asyncio.create_task(start())
        for _ in range(index % TURNS):
            await asyncio.sleep(0)
        if not task.cancel():
            continue  # it had ended before the cancellation: nothing to lose
        await asyncio.wait({task}, timeout=end_wait_s)
        if not task.done():
            lost.append("running")
            while not task.done():  # so that the test itself ends
                task.cancel()
                await asyncio.wait({task}, timeout=end_wait_s)
            if not task.cancelled():
                task.exception()  # retrieved: its end is not what is measured
        elif not task.cancelled():
            error = task.exception()
            lost.append("returned" if error is None else type(error).__name__)
    return lost
