"""A real `anning serve` process on loopback ports for tests and benchmarks, clients whose
every call's status code is recorded (so a module can assert that none was UNKNOWN or
INTERNAL), and small snapshots."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anning.client import Client
from anning.index import SuppressionIndex
from anning.storage.layout import DataDir
from anning.storage.snapshot import write_snapshot as save_snapshot
from anning.v1 import anning_pb2 as pb
from anning.v1 import anning_pb2_grpc as rpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Every status code a test call got, (method, code); checked per module for UNKNOWN / INTERNAL.
CODES: list[tuple[str, grpc.StatusCode]] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def write_snapshot(data: Path, numbers: Sequence[int | str], scopes: list[str],
                   categories: Any = None,
                   entities: dict[str, str] | None = None, as_of_ms: int | None = None) -> Path:
    """A binary snapshot in `data` (what `anning serve` maps at start)."""
    as_of_ms = as_of_ms if as_of_ms is not None else int(time.time() * 1000) - 3_600_000
    data.mkdir(parents=True, exist_ok=True)
    index = SuppressionIndex.build(numbers, scopes, categories, entities,
                                   meta={"as_of_ms": as_of_ms, "as_of": iso(as_of_ms)})
    path = DataDir(data).snapshot
    save_snapshot(index, path)
    return path


# -- recorded channels ------------------------------------------------------------------------


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
                grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = continuation(details, request)
        with contextlib.suppress(Exception):
            CODES.append((details.method, call.code()))
        return call

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        call = continuation(details, requests)
        with contextlib.suppress(Exception):
            CODES.append((details.method, call.code()))
        return call

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return _RecordedStream(details.method, continuation(details, request))

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return _RecordedStream(details.method, continuation(details, requests))


class _RecordedStream:
    """A response stream that records its final code when it ends or fails."""

    def __init__(self, method: str, call: Any) -> None:
        self._method = method
        self._call = call

    def __iter__(self) -> _RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            CODES.append((self._method, self._call.code()))
            raise
        except grpc.RpcError as exc:
            CODES.append((self._method, exc.code()))
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def channel(target: str, **options: Any) -> grpc.Channel:
    opts = [(f"grpc.{k}", v) for k, v in options.items()]
    return grpc.intercept_channel(grpc.insecure_channel(target, options=opts), _Recorder())


class Stubs:
    """Raw stubs over one recorded channel, with optional bearer metadata."""

    def __init__(self, target: str, token: str | None = None, **options: Any) -> None:
        self.raw_channel = grpc.insecure_channel(
            target, options=[(f"grpc.{k}", v) for k, v in options.items()])
        self.channel = grpc.intercept_channel(self.raw_channel, _Recorder())
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.suppression = rpc.SuppressionStub(self.channel)
        self.opt_outs = rpc.OptOutsStub(self.channel)
        self.admin = rpc.AdminStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.raw_channel.close()

    def __enter__(self) -> Stubs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recorded_client(target: str, token: str | None = None, **kwargs: Any) -> Client:
    """An anning.client.Client whose calls go through the recorder."""
    client = Client(target, token, **kwargs)
    recorded = grpc.intercept_channel(client.channel, _Recorder())
    client.suppression = rpc.SuppressionStub(recorded)
    client.opt_outs = rpc.OptOutsStub(recorded)
    client.admin = rpc.AdminStub(recorded)
    from anning.v1 import anning_pb2 as pb

    client._check_batch_raw = recorded.unary_unary(
        "/anning.v1.Suppression/CheckBatch",
        request_serializer=pb.CheckBatchRequest.SerializeToString,
        response_deserializer=pb.CheckBatchResponse.FromString,
    )
    client._check_batch_bytes = recorded.unary_unary("/anning.v1.Suppression/CheckBatch")
    client._check_batch_stream = recorded.stream_stream(
        "/anning.v1.Suppression/CheckBatchStream")
    return client


def code_of(call: Any, *args: Any, **kwargs: Any) -> grpc.StatusCode:
    """The status code of a unary call (OK when it returns)."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError a call raises (failing the test when it returns)."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{call} returned instead of failing")


# -- the server process -----------------------------------------------------------------------


class Server:
    """`python -m anning.cli serve` on a free loopback port; stderr kept in a file."""

    def __init__(self, data: Path, *, workers: int = 1, tokens: Path | None = None,
                 reflection: bool = False, metrics: bool = False, demo: bool = True,
                 demo_entries: int = 2000, max_batch: int | None = None,
                 threads: int | None = None, load_dirs: Sequence[Path] = (),
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.data = Path(data)
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port() if metrics else None
        self.args = [sys.executable, "-m", "anning.cli", "serve", "--data", str(self.data),
                     "--listen", self.target, "--workers", str(workers),
                     "--demo-entries", str(demo_entries)]
        if tokens is not None:
            self.args += ["--tokens", str(tokens)]
        if reflection:
            self.args.append("--reflection")
        if metrics:
            self.args += ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        if not demo:
            self.args.append("--no-demo")
        if max_batch is not None:
            self.args += ["--max-batch", str(max_batch)]
        if threads is not None:
            self.args += ["--threads", str(threads)]
        for directory in load_dirs:  # where Admin.LoadSnapshot may read, besides the data
            self.args += ["--load-dir", str(directory)]
        self.args += extra_args or []  # e.g. ["--checkpoint-bytes", "4096"]
        self.log_path = self.data.parent / f"{self.data.name}-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.first_health: int | None = None  # the first answer of the health service
        self.env = env or {}  # added to the environment, e.g. LD_PRELOAD
        self.credentials = credentials  # of the harness's own channels (health), for TLS

    def start(self) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop(); a restart appends
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.data.parent, env=env, start_new_session=True)
        return self

    def serve(self, timeout: float = 30.0) -> Server:
        """Start (again, after a stop: same port, same data) and wait until it serves."""
        self.start()
        self.wait_health(SERVING, timeout)
        return self

    def channel(self) -> grpc.Channel:
        """A plain channel to the server (TLS with `credentials`)."""
        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials)
        return grpc.insecure_channel(self.target)

    def health(self, service: str = "", timeout: float = 1.0) -> int | None:
        with self.channel() as ch:
            try:
                status: int = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
                return status
            except grpc.RpcError:
                return None

    def wait_health(self, status: int = SERVING, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            got = self.health(timeout=0.5)
            if self.first_health is None:
                self.first_health = got
            if got == status:
                return
            time.sleep(0.01)
        raise AssertionError(f"health never became {status} within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss(self) -> int:
        """The resident memory of the server process now, in bytes (VmRSS; one worker)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User and system CPU time the server process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError(f"the server did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.output()}") from None
        finally:
            self._log.close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the exit; returns its status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.terminate()
        return self.wait(timeout)

    def sigkill(self) -> None:
        """kill -9 of the whole process group (every worker at once), as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._log.close()

    def kill(self) -> None:
        """For a failed fixture: make sure nothing is left behind."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@contextlib.contextmanager
def running(server: Server, status: int = SERVING) -> Iterator[Server]:
    """Start, wait for health `status`, yield; at the end SIGTERM, exit 0, no traceback."""
    server.start()
    try:
        server.wait_health(status)
        yield server
        code = server.stop()
        assert code == 0, f"exit status {code}:\n{server.output()}"
        assert_clean_log(server)
    finally:
        server.kill()


def assert_clean_log(server: Server) -> None:
    """No traceback, no exception escaping a handler, no call answered INTERNAL."""
    text = server.output()
    assert "Traceback" not in text, text
    assert "Exception calling application" not in text, text
    assert "Exception iterating responses" not in text, text
    assert not re.search(r"anning\.server \w+ failed: ", text), text  # _rpc's INTERNAL


# -- the main list of the service tests ----------------------------------------------------

T = 10.0  # a generous deadline for calls that must be answered
NOW_MS = int(time.time() * 1000)
AS_OF_MS = NOW_MS - 3_600_000

ENTITIES = {"京东": "京东集团", "京东超市": "京东集团", "淘宝": "阿里巴巴"}
SNAPSHOT = [  # (number, scope, category)
    (8613800000001, "【京东】", "marketing"),
    (8613800000002, "entity:京东集团", "all"),
    (8613800000003, "*", "marketing"),
    (8613800000004, "淘宝", "notification"),
    (8613800000005, "1069012345", "marketing"),
    (8613800000006, "京东", "marketing"),  # opted back in by an event in a test
]
NONE, SENDER, ENTITY, GLOBAL = (pb.SCOPE_NONE, pb.SCOPE_SENDER, pb.SCOPE_ENTITY,
                                pb.SCOPE_GLOBAL)
# (sender, number, category, the scope a check must answer): none of these numbers is written to
CASES = [
    ("【京东】", "13800000001", "", SENDER),
    ("京东", "+86 138-0000-0001", "marketing", SENDER),
    ("京东", "008613800000001", "", SENDER),
    (" [京东] ", "１３８００００００01", "", SENDER),
    ("京东", "13800000001", "notification", NONE),
    ("京东超市", "13800000001", "", NONE),
    ("京东超市", "13800000002", "", ENTITY),
    ("京东", "8613800000002", "notification", ENTITY),
    ("淘宝", "13800000002", "", NONE),
    ("nobody-knows-me", "13800000003", "", GLOBAL),
    ("京东", "13800000003", "marketing", GLOBAL),
    ("nobody-knows-me", "13800000003", "notification", NONE),
    ("淘宝", "13800000004", "notification", SENDER),
    ("淘宝", "13800000004", "", NONE),
    ("1069012345", "tel:+8613800000005", "", SENDER),
    ("京东", "13800000009", "", NONE),
]


def write_main_snapshot(data: Path) -> None:
    numbers, scopes, categories = zip(*SNAPSHOT, strict=True)
    write_snapshot(data, list(numbers), list(scopes), list(categories), ENTITIES, AS_OF_MS)


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample `name` of a Prometheus exposition: {sorted label items: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


