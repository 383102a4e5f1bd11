"""The config watcher does not read again the files that a requested reload has just read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pollerd.service.watch import ConfigWatcher, config_fingerprint

POLLS = 5  # watcher rounds to let pass after the edit


class CountingService:
    """What the watcher uses of a Service; ``reload`` records the files' fingerprint as the
    service does, and counts the reloads the watcher starts."""

    def __init__(self, path: Path) -> None:
        self.config = SimpleNamespace(path=path, plugin_dirs=())
        self.reload_requested = asyncio.Event()
        self.loaded_fingerprint: tuple[object, ...] | None = None
        self.reloads = 0
        self.rounds = 0
        self.round_done = asyncio.Condition()

    async def check_store(self) -> None:
        await asyncio.sleep(0)

    async def refresh_job_gauges(self) -> None:
        async with self.round_done:
            self.rounds += 1
            self.round_done.notify_all()

    async def reload(self) -> dict[str, Any]:
        self.reloads += 1
        self.loaded_fingerprint = config_fingerprint(self.config.path, ())
        return {}

    async def rounds_pass(self, count: int) -> None:
        async with self.round_done:
            target = self.rounds + count
            await self.round_done.wait_for(lambda: self.rounds >= target)


async def test_an_edit_reloaded_on_request_is_not_reloaded_again_by_the_watcher(
    tmp_path: Path,
) -> None:
    config = tmp_path / "pollers.yaml"
    config.write_text("version: 1\n")
    service = CountingService(config)
    async with ConfigWatcher(service, interval_s=0.01):  # type: ignore[arg-type]
        await service.rounds_pass(1)
        config.write_text("version: 1\njobs: []\n")
        await service.reload()  # POST /v1/reload, before the watcher's next look
        await service.rounds_pass(POLLS)

    assert service.reloads == 1


async def test_an_edit_nobody_reloaded_is_reloaded_by_the_watcher(tmp_path: Path) -> None:
    config = tmp_path / "pollers.yaml"
    config.write_text("version: 1\n")
    service = CountingService(config)
    async with ConfigWatcher(service, interval_s=0.01):  # type: ignore[arg-type]
        await service.rounds_pass(1)
        config.write_text("version: 1\njobs: []\n")
        await service.rounds_pass(POLLS)

    assert service.reloads == 1
