"""NATS over TLS with client certificates: pollerd's `nats.tls` files reach a supervised plugin,
whose SDK connects with them (a real nats-server that requires a client certificate)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port
from pollerd.config.setup import load_setup
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.natsio.serverfiles import find_executable
from pollerd.service.core import Service
from service.test_longlived import FAST_SUPERVISOR, SDK_PLUGIN, job, tick, write_plugin

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.nats

READY_S = 10.0


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("pollerd-client")
    files = {
        "ca": tmp_path / "ca.pem",
        "server": tmp_path / "server.pem",
        "server_key": tmp_path / "server-key.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    return files


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: dict[str, Path]) -> Iterator[str]:
    """A nats-server with JetStream that requires TLS and a client certificate; its URL."""
    port = free_port()
    conf = tmp_path / "tls-server.conf"
    conf.write_text(
        "tls {\n"
        f"  cert_file: {json.dumps(str(tls_files['server']))}\n"
        f"  key_file: {json.dumps(str(tls_files['server_key']))}\n"
        f"  ca_file: {json.dumps(str(tls_files['ca']))}\n"
        "  verify: true\n"
        "}\n"
    )
    data = tmp_path / "tls-data"
    argv = [find_executable(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port), "-js"]
    process = subprocess.Popen(
        [*argv, "-sd", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield f"tls://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def wait_serving(url: str, files: dict[str, Path]) -> None:
    async with asyncio.timeout(READY_S):
        while True:
            try:
                nc = await natsconn.connect(
                    url,
                    name="probe",
                    tls_ca=files["ca"],
                    tls_cert=files["cert"],
                    tls_key=files["key"],
                )
            except NatsError:
                await asyncio.sleep(0.05)
                continue
            await nc.close()
            return


async def test_a_supervised_plugin_connects_with_pollerds_tls_files(
    tmp_path: Path, tls_server: str, tls_files: dict[str, Path]
) -> None:
    await wait_serving(tls_server, tls_files)
    write_plugin(tmp_path, "alpha", "count", script=SDK_PLUGIN)
    tls = {"ca": str(tls_files["ca"]), "cert": str(tls_files["cert"]), "key": str(tls_files["key"])}
    config = tmp_path / "pollers.yaml"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "nats": {"url": tls_server, "tls": tls},
                "state_dir": str(tmp_path / "state"),
                "plugins": [str(tmp_path / "plugins")],
                "http": "off",
                "jobs": [job("a1", "count")],
            }
        )
    )

    async with Service(
        load_setup(config, os.environ),
        environ=os.environ,
        schedule=False,
        http=False,
        supervisor_options=FAST_SUPERVISOR,
    ) as service:
        outcome = await tick(service, "a1")

    assert outcome.status == "ok"
