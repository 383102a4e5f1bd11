"""A large read of the admin HTTP API does not hold the running service's event loop.

At 10,000 jobs a scrape of ``/metrics``, a ``GET /v1/jobs`` and the status page were 0.2–3 s
of Python done in one go on the event loop, and every tick that fell due meanwhile waited for
them (``pollerd.ops.slices``). Each test starts the real `pollerd run` with 5,000 or 20,000 jobs,
sends one large read, and sends ``/healthz`` requests one after another until the large read's
answer starts. Held, the loop answered only those that came before the large read's handler
began: 1 or 2 of them, on the code before the slices. Cut free between slices, it answers 17
(``/metrics``) to 72 (the status page) here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from conftest import free_port
from ops.test_operator import LOOPBACK, StartPollerd, count_job, start_pollerd, write_config

pytestmark = pytest.mark.slow

__all__ = ["start_pollerd"]  # the fixture, used by name

ANSWERED_AT_LEAST = 5  # held, the loop answered 1–3 (those sent before the handler began)


# Jobs enough for each read to take the time of a dozen health checks or more: per job, a
# scrape is the lightest of the three.
@pytest.mark.parametrize(("path", "jobs"), [("/v1/jobs", 5000), ("/metrics", 20_000), ("/", 5000)])
async def test_health_checks_are_answered_while_a_large_read_is_built(
    tmp_path: Path, start_pollerd: StartPollerd, path: str, jobs: int
) -> None:
    port = free_port()
    config = [count_job(f"job{index:05d}", every="1h") for index in range(jobs)]
    await start_pollerd(write_config(tmp_path, port, config), port)
    base = f"http://{LOOPBACK}:{port}"

    async with aiohttp.ClientSession() as session:
        async with session.get(base + path) as warm_up:  # the first read fills caches
            await warm_up.read()
        answered = 0
        large = asyncio.ensure_future(session.get(base + path))  # done when its answer starts
        while not large.done():
            async with session.get(base + "/healthz") as health:
                assert health.status == 200
                await health.read()
            answered += not large.done()
        async with large.result() as response:
            status, body = response.status, await response.read()

    assert status == 200
    assert len(body) > jobs * 50  # the read is as large as intended
    assert answered >= ANSWERED_AT_LEAST, f"{answered} health checks answered during {path}"
