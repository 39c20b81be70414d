"""Unary gRPC calls timed by a native load generator: `h2load` (Debian's nghttp2-client).

A gRPC request is an HTTP/2 POST to /PACKAGE.SERVICE/METHOD with `content-type:
application/grpc` and `te: trailers`, whose body is the message with a 5-byte prefix (a zero
compression flag and the big-endian length). h2load sends the same body again and again, on one
connection (`-c1`), and with `--log-file` writes every request's start and its time until the
end of the response (the trailers): the server's latency as a C client sees it, without the
Python client's own microseconds in it.

h2load knows nothing of gRPC: a call answered with an error status is an HTTP 200 like any
other. The caller checks the answers otherwise (anning's metrics count every check by scope).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["H2Run", "available", "grpc_body", "run"]


def available() -> str | None:
    return shutil.which("h2load")


def grpc_body(message: bytes) -> bytes:
    """One uncompressed gRPC message as it travels in a request body."""
    return b"\0" + struct.pack(">I", len(message)) + message


@dataclass
class H2Run:
    latencies_us: np.ndarray  # every request's, in the order they ended
    statuses: dict[int, int]  # HTTP status -> requests (-1: failed streams)
    seconds: float  # the run's wall time, from h2load's "finished in"
    output: str

    @property
    def succeeded(self) -> int:
        return self.statuses.get(200, 0)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_us, q)) if len(self.latencies_us) else 0.0


def run(port: int, path: str, body: bytes, *, requests: int | None = None,
        seconds: float | None = None, rate: int | None = None, streams: int = 1,
        warmup: float = 0.0, timeout: float = 600.0) -> H2Run:
    """h2load with one client on one thread: `requests` calls one after the other (`streams`
    in flight), or for `seconds` at `rate` a second (`--rps`: h2load sends each when it is due,
    up to `streams` in flight)."""
    tool = available()
    if tool is None:
        raise RuntimeError("h2load is not installed (Debian: apt-get install nghttp2-client)")
    with tempfile.TemporaryDirectory(prefix="anning-h2load-") as tmp:
        data, log = Path(tmp) / "body", Path(tmp) / "log.tsv"
        data.write_bytes(body)
        args = [tool, "-c1", "-t1", f"-m{streams}", "-d", str(data),
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "--log-file", str(log)]
        if requests is not None:
            args += ["-n", str(requests)]
        if seconds is not None:
            args += ["-D", f"{seconds:g}"]
            if warmup:
                args += [f"--warm-up-time={warmup:g}"]
        if rate is not None:
            args += [f"--rps={rate}"]
        args.append(f"http://127.0.0.1:{port}{path}")
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr[-2000:]}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    statuses: dict[int, int] = {}
    for row in rows:
        statuses[int(row[1])] = statuses.get(int(row[1]), 0) + 1
    latencies = np.array([int(row[2]) for row in rows], dtype=np.int64)
    seconds_taken = 0.0
    for line in out.stdout.splitlines():
        if line.startswith("finished in "):
            text = line.split()[2].rstrip(",")
            seconds_taken = float(text[:-2]) / 1e3 if text.endswith("ms") else float(text[:-1])
    return H2Run(latencies, statuses, seconds_taken, out.stdout)
