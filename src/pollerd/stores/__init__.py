"""Job state stores: one ABC, an in-memory store, SQLite and a NATS JetStream KV bucket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pollerd.errors import StoreError
from pollerd.stores.base import Store
from pollerd.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from nats.aio.client import Client

    from pollerd.config.pollers import ServiceConfig

STATE_DB = "state.db"


def open_store(
    config: ServiceConfig, *, connect: Callable[[], Awaitable[Client]] | None = None
) -> Store:
    """The store named by the config: ``<state_dir>/state.db``, or the ``nats-kv`` bucket
    reached through ``connect()`` (this package does not connect to NATS itself)."""
    options = config.store
    if options.type != "nats-kv":
        return SqliteStore(config.state_dir / STATE_DB)
    if connect is None:
        raise StoreError("the nats-kv store needs a NATS connection; none was given")
    from pollerd.stores.kv import KvStore

    return KvStore(connect, bucket=options.bucket, replicas=options.replicas)
