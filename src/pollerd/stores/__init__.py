"""Job state stores: one ABC, an in-memory store and SQLite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pollerd.stores.base import Store
from pollerd.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pollerd.config.pollers import ServiceConfig

STATE_DB = "state.db"


def open_store(config: ServiceConfig) -> Store:
    """The store named by the config (only ``sqlite`` today): ``<state_dir>/state.db``."""
    return SqliteStore(config.state_dir / STATE_DB)
