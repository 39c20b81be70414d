"""A real `anning serve` for the benchmarks, and waiting until a server (anning or a peer of
benchmarks.lib.peers) answers.

`AnningServer` is the tests' server harness (`anning.testing.server.Server`: the command line,
a free loopback port, the log file, SIGTERM then SIGKILL of the process group) with what a
benchmark adds: a name for the table, the worker processes whose CPU and context switches are
counted (benchmarks.lib.machine), and how many of them are listening yet.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Protocol

from anning.testing.server import Server
from benchmarks.lib.machine import Accounted, process_tree

__all__ = ["CALL_TIMEOUT", "CHANNEL_OPTIONS", "HOST", "NO_CHECKPOINT", "AnningServer",
           "Served", "stop_all", "wait_ready"]

HOST = "127.0.0.1"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20)]
CALL_TIMEOUT = 30.0  # seconds: no single call may hang a run
NO_CHECKPOINT = ("--checkpoint-bytes", str(1 << 60))  # a server that never folds its own log


class Served(Protocol):
    """What the benchmarks ask of a server process, anning's or a peer's."""

    name: str
    port: int
    procs: int

    def alive(self) -> bool: ...
    def listening(self) -> int: ...
    def log_tail(self) -> str: ...
    def stop(self) -> None: ...
    def cpu(self) -> dict[int, float]: ...
    def switches(self) -> int: ...


class AnningServer(Server, Accounted):
    """`anning serve --data DATA --workers N --no-demo [extra]`, started at once."""

    def __init__(self, data: Path, workers: int = 1, extra: tuple[str, ...] = (),
                 name: str | None = None) -> None:
        super().__init__(data, workers=workers, demo=False, extra_args=list(extra))
        self.procs = workers
        self.name = name or f"anning w{workers}"
        self.start()

    def pids(self) -> list[int]:
        assert self.proc is not None
        tree = process_tree(self.proc.pid)
        return tree[1:] if self.procs > 1 else tree  # the workers, not the supervisor

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def listening(self) -> int:
        return self.output().count(" listening on ")

    def log_tail(self) -> str:
        return self.output()[-3000:]

    def stop(self, timeout: float = 20.0) -> int:  # type: ignore[override]
        """SIGTERM, then SIGKILL of the group after `timeout` (the harness's); a server slow
        to stop is not a wrong answer: its exit status is returned, never raised."""
        with contextlib.suppress(AssertionError):
            return super().stop(timeout)
        return -9


def wait_ready(server: Served, limit: float = 120.0) -> None:
    """Every process listening, then a Check answered (any answer: a peer's is constant)."""
    import grpc

    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    deadline = time.monotonic() + limit
    while server.listening() < server.procs:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited while starting:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not listening after {limit:.0f} s\n"
                               f"{server.log_tail()}")
        time.sleep(0.1)
    with grpc.insecure_channel(f"{HOST}:{server.port}") as channel:
        stub = rpc.SuppressionStub(channel)
        while True:
            try:
                stub.Check(pb.CheckRequest(sender="s", number="13800000000"), timeout=2.0)
                return
            except grpc.RpcError as exc:
                if time.monotonic() > deadline or not server.alive():
                    raise RuntimeError(f"{server.name} not answering: {exc.code()}\n"
                                       f"{server.log_tail()}") from None
                time.sleep(0.2)


def stop_all(servers: list[Any]) -> None:
    """Stop each server, whatever the others do."""
    for s in servers:
        with contextlib.suppress(Exception):
            s.stop()
