"""The examples/ folder: every replica config of the documented cluster passes `pollerd check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pollerd.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"
REPLICAS = sorted((EXAMPLES / "replicas").glob("replica-*.yaml"))


def test_the_replicas_example_has_three_replicas_and_three_nats_nodes() -> None:
    assert [path.name for path in REPLICAS] == [
        "replica-a.yaml",
        "replica-b.yaml",
        "replica-c.yaml",
    ]
    assert len(list((EXAMPLES / "replicas" / "nats").glob("n*.conf"))) == 3


@pytest.mark.parametrize("config", REPLICAS, ids=lambda path: path.stem)
def test_each_replica_config_passes_check(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "-c", str(config)])

    assert code == 0, capsys.readouterr()
