"""A cancellation that nats-py swallows, raised again once the call returns.

On Python 3.11 ``asyncio.wait_for`` returns the inner result when its task is cancelled in the
loop turn where that result lands, and the ``CancelledError`` is lost. nats-py's
``Client.request`` waits that way, and so does every JetStream publish and KV call made through
it, ``Subscription.next_msg`` and ``publish_async``'s wait for a free slot (which even turns
the cancellation into ``TooManyStalledMsgsError``). A task cancelled there goes on as if nothing
had happened: a loop keeps running, a cancelled tick commits. pollerd's own requests go through
``natsmux``, whose answered future never swallows a cancellation; the calls that must use
nats-py's run inside ``no_swallowed_cancel()``.

The task's count of cancellation requests (``Task.cancelling``) is not undone when a
cancellation is swallowed, so it tells: a count that grew during the call means a cancellation
came and did not surface, and it is raised in place of what the call returned or raised. Only
the standard library is used here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_swallowed_cancel() -> Iterator[None]:
    """Raise ``CancelledError`` at the end of the block if the current task was asked to cancel
    during it and the block ended otherwise (returned, or raised something else)."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception as exc:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from exc
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
