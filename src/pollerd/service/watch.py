"""Watches pollers.yaml and the plugin manifests, and the store's health, while the service runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pollerd.natsio.connection import cancel_until_done

if TYPE_CHECKING:
    from pollerd.service.core import Service

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
MANIFEST_NAME = "plugin.toml"


def config_fingerprint(config_path: Path, plugin_dirs: tuple[Path, ...]) -> tuple[object, ...]:
    """Modification times and sizes of pollers.yaml and every plugin.toml (new ones included)."""
    entries: list[object] = [_stat(config_path)]
    for folder in plugin_dirs:
        with contextlib.suppress(OSError):
            for child in sorted(folder.iterdir()):
                manifest = child / MANIFEST_NAME
                if manifest.is_file():
                    entries.append((str(manifest), _stat(manifest)))
    return tuple(entries)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ConfigWatcher:
    """Reloads on a file change or a reload request; refreshes the store's readiness."""

    def __init__(self, service: Service, *, interval_s: float = POLL_INTERVAL_S) -> None:
        self._service = service
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop(), name="config-watcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        # check_store and the gauges read a nats-kv store over NATS.
        await cancel_until_done(task)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fingerprint(self) -> tuple[object, ...]:
        config = self._service.config
        return config_fingerprint(config.path, config.plugin_dirs)

    async def _loop(self) -> None:
        service = self._service
        seen = self._fingerprint()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await service.reload_requested.wait()
            await service.check_store()
            await service.refresh_job_gauges()
            current = self._fingerprint()
            if current == service.loaded_fingerprint:
                seen = current  # a reload asked for (POST /v1/reload) read these files already
            if current != seen or service.reload_requested.is_set():
                if current != seen:
                    logger.info("config files changed on disk: reloading")
                service.reload_requested.clear()
                seen = current
                try:
                    await service.reload()
                except Exception:  # a reload bug must not stop the service
                    logger.exception("config reload failed unexpectedly")
