"""A real `anning serve` process on a free loopback port, for tests and benchmarks of what
stands in front of it (the SMPP gate): start, wait until it serves, stop, restart on the same
port and data directory.

    with AnningProcess(tmp_path / "data") as server:
        server.target  # "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["AnningProcess", "free_port", "write_snapshot"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_snapshot(data: Path, numbers: list[str], scopes: list[str],
                   entities: dict[str, str] | None = None) -> Path:
    """A binary snapshot in `data`, as of an hour ago (what `anning serve` maps at start)."""
    from datetime import datetime, timezone

    from anning import SuppressionIndex
    from anning.demo import SNAPSHOT_NAME

    as_of_ms = int(time.time() * 1000) - 3_600_000
    data.mkdir(parents=True, exist_ok=True)
    index = SuppressionIndex.build(numbers, scopes, None, entities, meta={
        "as_of_ms": as_of_ms,
        "as_of": datetime.fromtimestamp(as_of_ms / 1000, timezone.utc).isoformat()})
    path = data / SNAPSHOT_NAME
    index.save(path)
    return path


class AnningProcess:
    """`python -m anning.cli serve` on a free loopback port; its output kept in a file."""

    def __init__(self, data: Path, workers: int = 1, extra: list[str] | None = None) -> None:
        self.data = Path(data)
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.workers = workers
        self.extra = extra or []
        self.log_path = self.data.parent / f"{self.data.name}-anning-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, wait: bool = True) -> AnningProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anning.cli", "serve", "--data", str(self.data),
             "--listen", self.target, "--workers", str(self.workers), "--demo-entries", "1000",
             *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self.wait_serving()
        return self

    def serving(self, timeout: float = 0.5) -> bool:
        with grpc.insecure_channel(self.target) as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout).status
            except grpc.RpcError:
                return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"anning serve exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            if self.serving():
                return
            time.sleep(0.02)
        raise AssertionError(f"anning serve did not serve within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL of the group if it does not go."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def restart(self) -> AnningProcess:
        """Stop, then start again on the same port and data directory."""
        self.stop()
        return self.start()

    def __enter__(self) -> AnningProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
