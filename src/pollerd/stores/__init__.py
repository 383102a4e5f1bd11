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
# The running service's group-commit window (SqliteStore): its ticks' commits arrive one by one
# (1,000 a second with 10,000 jobs every 10 s), and sharing a transaction saves CPU; a tick's
# commit waits at most this long. The CLI's stores write at once.
SERVICE_COMMIT_WINDOW_S = 0.005
# The running service's WAL checkpoints (SqliteStore, stores/_sqlite_checkpoint.py): every 2 s
# in a worker thread rather than every 1,000 pages on the loop's thread. The CLI's stores keep
# SQLite's default.
SERVICE_CHECKPOINT_EVERY_S = 2.0


def open_store(
    config: ServiceConfig,
    *,
    connect: Callable[[], Awaitable[Client]] | None = None,
    commit_window_s: float = 0.0,
    checkpoint_every_s: float = 0.0,
) -> Store:
    """The store named by the config: ``<state_dir>/state.db`` (with ``commit_window_s`` and
    ``checkpoint_every_s``, see ``SqliteStore``), or the ``nats-kv`` bucket reached through
    ``connect()`` (this package does not connect to NATS itself)."""
    options = config.store
    if options.type != "nats-kv":
        return SqliteStore(
            config.state_dir / STATE_DB,
            commit_window_s=commit_window_s,
            checkpoint_every_s=checkpoint_every_s,
        )
    if connect is None:
        raise StoreError("the nats-kv store needs a NATS connection; none was given")
    from pollerd.stores.kv import KvStore

    return KvStore(connect, bucket=options.bucket, replicas=options.replicas)
