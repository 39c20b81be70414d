"""The peers anning's figures are set beside, measured in the same run.

In process (the core's benchmarks): numpy `searchsorted` membership over the sorted numbers,
`np.save` made durable; a Python set is used inline. The exact numpy model of the list
(benchmarks.lib.oracle) is a peer too.

Servers (the service's benchmarks), each a minimal gRPC server of anning's own proto in
processes of its own (`ConstantServer`):

- `constant`: a synchronous server (a thread pool) whose Check returns a constant
  CheckResponse, CheckBatch builds the answers in a Python loop, CheckColumns answers zeros,
  CheckStream yields the constant, and OptOut / WriteBatch acknowledge at once with nothing made
  durable: the floor of grpc-python and protobuf, what any servicer in this stack pays before
  it does any work;
- `constant-aio`: the same on grpc.aio, one event loop, as anning's workers are;
- `durable floor`: the synchronous constant whose OptOut first appends its request to a file
  and waits for an fsync covering it (`GroupCommit`): what durability alone costs in this
  stack on this disk, with no validation, encoding, checksum or visibility;
- `constant stream` (`StreamServer`): a grpc.aio server whose OptOuts.Changes yields given
  messages, already serialised, one after the other: the floor of a server stream of those
  bytes in anning's stack.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from anning.testing.server import free_port
from benchmarks.lib.machine import Accounted
from benchmarks.lib.servers import CHANNEL_OPTIONS, HOST

__all__ = ["ConstantServer", "GroupCommit", "StreamServer", "np_save_durable",
           "run_constant_server", "run_stream_server", "searchsorted_member", "write_messages"]


# -- in process -----------------------------------------------------------------------------


def searchsorted_member(sorted_numbers: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Whether each number is on the list, by one binary search (numbers only, no scope)."""
    i = np.searchsorted(sorted_numbers, numbers)
    np.minimum(i, len(sorted_numbers) - 1, out=i)
    return sorted_numbers[i] == numbers


def np_save_durable(path: Path, array: np.ndarray) -> None:
    """np.save, then fsync, as anning's snapshot write does."""
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


# -- the constant servicers (each runs in a spawned process of its own) ----------------------


class GroupCommit:
    """Appends made durable by an fsync shared with those that queued behind the one running:
    the textbook group commit, with nothing else (no checksum, no index, no visibility)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Condition()
        self.appended = self.synced = 0
        self.syncing = False

    def append(self, data: bytes) -> None:
        with self.lock:
            os.write(self.fd, data)
            self.appended += 1
            mine = self.appended
            while self.synced < mine:
                if self.syncing:  # an fsync that began before our write: wait for the next
                    self.lock.wait()
                    continue
                self.syncing, target = True, self.appended
                self.lock.release()
                try:
                    os.fsync(self.fd)
                finally:
                    self.lock.acquire()
                    self.syncing = False
                self.synced = target
                self.lock.notify_all()


def run_constant_server(port: int, reuseport: bool, ready: Any, threads: int,
                        flavour: str = "sync", durable_dir: str | None = None) -> None:
    """The constant servicer: synchronous (`flavour` "sync", a pool of `threads`) or grpc.aio
    ("aio"). With `durable_dir`, OptOut first appends its request to a file there and waits
    for an fsync that covers it."""
    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    constant = pb.CheckResponse()  # SCOPE_NONE: the size of anning's commonest answer
    # An acknowledgement of anning's size (a sequence past segment 1, a time in ms).
    ack = pb.WriteAck(sequence=(1 << 40) | 1_000_000, at_ms=1_700_000_000_000)
    log = GroupCommit(Path(durable_dir) / f"floor-{os.getpid()}.log") if durable_dir else None

    def check_batch(request: Any) -> Any:
        return pb.CheckBatchResponse(results=[
            pb.CheckResponse(suppressed=False, scope=pb.SCOPE_NONE) for _ in request.checks])

    def opt_out(request: Any) -> Any:
        if log is not None:
            log.append(request.SerializeToString())
        return ack

    if flavour == "aio":
        _serve_aio(port, reuseport, ready, constant, ack, check_batch, opt_out)
        return

    from concurrent import futures

    import grpc

    class Constant(rpc.SuppressionServicer):
        def Check(self, request, context):
            return constant

        def CheckBatch(self, request, context):
            return check_batch(request)

        def CheckColumns(self, request, context):
            return pb.CheckColumnsResponse(scopes=bytes(len(request.numbers) // 8))

        def CheckStream(self, requests, context):
            for _ in requests:
                yield constant

    class ConstantWrites(rpc.OptOutsServicer):
        def OptOut(self, request, context):
            return opt_out(request)

        def WriteBatch(self, request, context):
            return pb.WriteBatchAck(sequence=ack.sequence, events=len(request.events))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        options=[("grpc.so_reuseport", 1 if reuseport else 0), *CHANNEL_OPTIONS],
        maximum_concurrent_rpcs=threads * 64,
    )
    rpc.add_SuppressionServicer_to_server(Constant(), server)
    rpc.add_OptOutsServicer_to_server(ConstantWrites(), server)
    if server.add_insecure_port(f"{HOST}:{port}") == 0:
        raise SystemExit(f"constant servicer: cannot listen on {HOST}:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(1))
    ready.set()
    server.wait_for_termination()


def _serve_aio(port: int, reuseport: bool, ready: Any, constant: Any, ack: Any,
               check_batch: Any, opt_out: Any) -> None:
    """The constant servicer on grpc.aio: anning's stack with nothing to do. A durable OptOut
    waits in a thread of a pool, so the loop goes on meanwhile (anning's writes wait on a
    future the same way)."""
    import asyncio

    import grpc

    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    class Constant(rpc.SuppressionServicer):
        async def Check(self, request, context):
            return constant

        async def CheckBatch(self, request, context):
            return check_batch(request)

        async def CheckColumns(self, request, context):
            return pb.CheckColumnsResponse(scopes=bytes(len(request.numbers) // 8))

        async def CheckStream(self, requests, context):
            async for _ in requests:
                yield constant

    class ConstantWrites(rpc.OptOutsServicer):
        async def OptOut(self, request, context):
            return await asyncio.to_thread(opt_out, request)

        async def WriteBatch(self, request, context):
            return pb.WriteBatchAck(sequence=ack.sequence, events=len(request.events))

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuseport else 0),
                                          *CHANNEL_OPTIONS])
        rpc.add_SuppressionServicer_to_server(Constant(), server)
        rpc.add_OptOutsServicer_to_server(ConstantWrites(), server)
        if server.add_insecure_port(f"{HOST}:{port}") == 0:
            raise SystemExit(f"constant servicer: cannot listen on {HOST}:{port}")
        await server.start()
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: asyncio.ensure_future(server.stop(1)))
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


class ConstantServer(Accounted):
    """A constant servicer in `procs` spawned processes sharing one port (SO_REUSEPORT, as
    anning's workers do), each with `threads` threads (a synchronous one) and anning's message
    limits."""

    def __init__(self, ctx: Any, procs: int, threads: int, flavour: str = "sync",
                 durable_dir: Path | None = None) -> None:
        self.port = free_port()
        self.procs = procs
        self.name = f"constant{'' if flavour == 'sync' else '-' + flavour}" \
                    f"{'-durable' if durable_dir else ''} x{procs}"
        self.events = [ctx.Event() for _ in range(procs)]
        self.processes = [ctx.Process(target=run_constant_server,
                                      args=(self.port, procs > 1, ev, threads, flavour,
                                            str(durable_dir) if durable_dir else None),
                                      daemon=True)
                          for ev in self.events]
        for p in self.processes:
            p.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid]

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.processes)

    def listening(self) -> int:
        return sum(ev.is_set() for ev in self.events)

    def stop(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)

    def log_tail(self) -> str:
        return ""


# -- a constant server stream ----------------------------------------------------------------


def write_messages(path: Path, messages: list[bytes]) -> None:
    """Serialised messages to a file, each after its u32 length."""
    with open(path, "wb") as f:
        for m in messages:
            f.write(len(m).to_bytes(4, "little"))
            f.write(m)


def _read_messages(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "little")
        out.append(data[at + 4:at + 4 + size])
        at += 4 + size
    return out


def run_stream_server(port: int, ready: Any, messages_path: str) -> None:
    """OptOuts.Changes on grpc.aio (one event loop, as anning's workers): every call is
    answered with the messages of the file, as they are, then the stream ends."""
    import asyncio

    import grpc

    from anning.v1 import anning_pb2 as pb

    messages = _read_messages(Path(messages_path))

    async def changes(request: Any, context: Any) -> Any:
        for m in messages:
            yield m

    handler = grpc.method_handlers_generic_handler("anning.v1.OptOuts", {
        "Changes": grpc.unary_stream_rpc_method_handler(
            changes, request_deserializer=pb.ChangesRequest.FromString,
            response_serializer=lambda m: m)})

    async def main() -> None:
        server = grpc.aio.server(options=CHANNEL_OPTIONS)
        server.add_generic_rpc_handlers((handler,))
        if server.add_insecure_port(f"{HOST}:{port}") == 0:
            raise SystemExit(f"stream servicer: cannot listen on {HOST}:{port}")
        await server.start()
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: asyncio.ensure_future(server.stop(1)))
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


class StreamServer(ConstantServer):
    """`run_stream_server` in a spawned process of its own."""

    def __init__(self, ctx: Any, messages_path: Path) -> None:
        self.port = free_port()
        self.procs = 1
        self.name = "constant stream"
        self.events = [ctx.Event()]
        self.processes = [ctx.Process(target=run_stream_server,
                                      args=(self.port, self.events[0], str(messages_path)),
                                      daemon=True)]
        self.processes[0].start()
