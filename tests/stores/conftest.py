"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from natscluster import NatsCluster


@pytest.fixture(scope="module")
def kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One nats-server for a test module; each nats-kv store gets a bucket of its own."""
    with NatsCluster(tmp_path_factory.mktemp("kv-nats"), size=1) as server:
        yield server
