"""The config watcher ends when asked even if a store call swallows the first cancellation.

nats-py drops a CancelledError that lands while it flushes a request; with the nats-kv store the
watcher's store calls go over NATS, and a single cancel left the watcher (and SIGTERM) hanging.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pollerd.service.watch import ConfigWatcher

STOP_DEADLINE_S = 5.0  # a deadline for the failure, not a measurement: it ends in ~0.1 s


class SwallowingService:
    """What the watcher uses of a Service; ``check_store`` swallows one cancellation, as
    nats-py does when the cancel lands in its flush."""

    def __init__(self, path: Path) -> None:
        self.config = SimpleNamespace(path=path, plugin_dirs=())
        self.reload_requested = asyncio.Event()
        self.loaded_fingerprint = None
        self.checking = asyncio.Event()
        self.swallowed = 0

    async def check_store(self) -> None:
        self.checking.set()
        if self.swallowed:
            return
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed += 1  # swallowed once, as nats-py's _send_command does

    async def refresh_job_gauges(self) -> None:
        await asyncio.sleep(0)

    async def reload(self) -> dict[str, Any]:
        return {}


async def test_leaving_the_watcher_ends_it_even_when_a_cancellation_is_swallowed(
    tmp_path: Path,
) -> None:
    (tmp_path / "pollers.yaml").write_text("version: 1\n")
    service = SwallowingService(tmp_path / "pollers.yaml")
    watcher = ConfigWatcher(service, interval_s=0.01)  # type: ignore[arg-type]
    await watcher.__aenter__()
    await service.checking.wait()

    leaving = asyncio.create_task(watcher.__aexit__(None, None, None))
    done, _ = await asyncio.wait({leaving}, timeout=STOP_DEADLINE_S)

    assert leaving in done, "the watcher kept running after a swallowed cancellation"
    assert service.swallowed == 1
