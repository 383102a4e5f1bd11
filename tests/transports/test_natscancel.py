"""no_swallowed_cancel: a cancellation lost inside the block is raised at its end (no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from pollerd.transports.natscancel import no_swallowed_cancel


async def swallow_a_cancellation() -> None:
    """What nats-py does to a cancellation that comes as its answer lands."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass


async def test_wait_for_whose_answer_lands_with_the_cancellation_raises_it() -> None:
    # The race itself, deterministic: Python 3.11's wait_for returns the answer.
    answer = asyncio.get_running_loop().create_future()

    async def ask() -> object:
        with no_swallowed_cancel():
            return await asyncio.wait_for(answer, timeout=60)

    asking = asyncio.create_task(ask())
    await asyncio.sleep(0)
    answer.set_result("late")
    asking.cancel()
    await asyncio.wait({asking})

    assert asking.cancelled()


async def test_a_block_that_swallowed_a_cancellation_raises_it() -> None:
    with pytest.raises(asyncio.CancelledError):
        with no_swallowed_cancel():
            await swallow_a_cancellation()


async def test_a_cancellation_turned_into_another_error_is_raised_instead() -> None:
    with pytest.raises(asyncio.CancelledError) as raised:
        with no_swallowed_cancel():
            await swallow_a_cancellation()
            raise RuntimeError("too many stalled messages")

    assert isinstance(raised.value.__cause__, RuntimeError)


async def test_a_swallowed_timeout_still_times_out() -> None:
    # asyncio.timeout cancels the task: lost in the block, it would not time out at all.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            with no_swallowed_cancel():
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    pass


async def test_a_block_without_cancellation_keeps_its_result_and_its_errors() -> None:
    with no_swallowed_cancel():
        await asyncio.sleep(0)
    with pytest.raises(KeyError), no_swallowed_cancel():
        raise KeyError("x")


async def test_cleanup_after_a_cancellation_that_surfaced_runs_to_its_end() -> None:
    # A task that caught its cancellation on purpose may still call NATS (releasing a lease).
    await swallow_a_cancellation()
    with no_swallowed_cancel():
        await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.uncancel() == 0
