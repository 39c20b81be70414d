"""Abuse at the transport (issue 16 item 4), against a real server: idle connections, streams
never read, 100 MB of metadata, 10,000 calls at once, streams left half-open. Throughout, a
fresh client's checks are answered within their usual latency (its median before the abuse,
a generous factor: not a timing benchmark), the server's memory (VmRSS) stays bounded, and
limits answer RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import queue
import resource
import statistics
import struct
import threading
import time
from collections import Counter

import grpc
import pytest

from anning.testing import server as h
from anning.testing.rawh2 import CONTINUATION, END_HEADERS, HEADERS, RawH2, frame, hpack_int
from anning.v1 import anning_pb2 as pb
from anning.v1 import anning_pb2_grpc as rpc

Code = grpc.StatusCode
MB = 1 << 20
CHECK = pb.CheckRequest(sender="京东", number="13800000001")


def latency(target: str, n: int = 200) -> float:
    """The median time of `n` Checks, one after another, from a client of its own."""
    with grpc.insecure_channel(target) as channel:
        check = rpc.SuppressionStub(channel).Check
        check(CHECK, timeout=h.T)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            check(CHECK, timeout=h.T)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def assert_usual_latency(server: h.Server, before: float) -> None:
    after = latency(server.target)
    assert after <= max(10 * before, before + 0.005), f"{after * 1e3:.2f} ms a check, " \
        f"{before * 1e3:.2f} ms before"


def settle(server: h.Server, window: float = 0.5, limit: float = 20.0) -> float:
    """Wait until the server is idle (under 10% of a core over `window`); the seconds it
    took. Fails when it is still busy after `limit`: something keeps it working."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        used = server.cpu_seconds()
        time.sleep(window)
        if server.cpu_seconds() - used < 0.1 * window:
            return time.monotonic() - started
    raise AssertionError(f"the server was still busy after {limit}s")


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    srv = h.Server(data)
    with h.running(srv):
        yield srv


def test_a_thousand_idle_connections(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"1,000 sockets need more than the {hard} files this process may open")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    before, rss = latency(server.target), server.rss()
    idle = []
    try:
        for i in range(1000):  # half say nothing at all, half the HTTP/2 preface, then nothing
            conn = RawH2(server.port)
            if i % 2:
                conn.start()
            idle.append(conn)
        time.sleep(0.5)
        assert server.health() == h.SERVING
        assert_usual_latency(server, before)
        assert server.rss() - rss < 100 * MB  # measured: +12 MB
    finally:
        for conn in idle:
            conn.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_streams_that_are_never_read(server):
    """A caller that opens streams and never reads their answers (CheckStream still sending,
    Changes following from the start) costs the server a bounded amount of memory and no
    work once the windows are full; when it cancels, nothing is logged."""
    with grpc.insecure_channel(server.target) as channel:
        for b in range(10):  # a feed to send
            rpc.OptOutsStub(channel).WriteBatch(pb.WriteBatchRequest(events=[pb.WriteEvent(
                kind=pb.EVENT_KIND_OPT_OUT, number=str(13900000000 + 1000 * b + i),
                scope="京东") for i in range(1000)]), timeout=h.T)
    before, rss = latency(server.target), server.rss()
    bad = pb.CheckRequest(sender="京东", number="1" * 1000)  # each answer ~1 KB: an error

    def forever():
        while True:
            yield bad

    # BDP probing off: the client's windows stay as small as they start, as a reader's that
    # never reads (with it, its transport takes in answers on its own)
    slow = [grpc.insecure_channel(server.target, options=[("grpc.http2.bdp_probe", 0)])
            for _ in range(10)]
    calls = []
    try:
        for channel in slow:
            for _ in range(5):
                calls.append(rpc.OptOutsStub(channel).Changes(pb.ChangesRequest(since=0),
                                                               timeout=120))
                calls.append(rpc.SuppressionStub(channel).CheckStream(forever(), timeout=120))
        settle(server)  # measured: 3-5 s; with the server's own BDP probing on, never
        held = server.rss()
        time.sleep(2)
        assert server.rss() - held < 10 * MB  # no more taken in (was ~10 MB/s)
        assert held - rss < 300 * MB  # measured: +70 MB
        assert_usual_latency(server, before)
    finally:
        for call in calls:
            call.cancel()
        for channel in slow:
            channel.close()
    time.sleep(0.5)
    assert server.health() == h.SERVING
    # h.running checks the log: not a traceback for the 100 cancelled streams (was one each)


def test_a_hundred_megabytes_of_metadata(server):
    before, rss = latency(server.target), server.rss()
    with grpc.insecure_channel(server.target) as channel:
        exc = h.rpc_error(rpc.SuppressionStub(channel).Check, CHECK, timeout=30,
                          metadata=(("x-big", "a" * (100 * MB)),))
    assert exc.code() == Code.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
    assert "metadata size" in exc.details(), exc.details()
    # the same, frame by frame: a header value said to be 100 MB, sent in CONTINUATION frames
    conn = RawH2(server.port).start()
    try:
        value = b"\x00" + hpack_int(5, 7) + b"x-big" + hpack_int(100 * MB, 7)
        conn.sock.sendall(frame(HEADERS, 0, 1, conn.headers_block(
            "/anning.v1.Suppression/Check") + value))
        chunk = frame(CONTINUATION, 0, 1, b"a" * 16384)
        for _ in range(100 * MB // 16384 - 1):
            conn.sock.sendall(chunk)
        conn.sock.sendall(frame(CONTINUATION, END_HEADERS, 1, b"a" * 16384))
        assert _stream_ended(conn, 1)  # answered (RESOURCE_EXHAUSTED), the rest thrown away
    finally:
        conn.close()
    # measured: +4 MB, nothing of it was kept; on a loaded machine the connections' buffers may
    # take a moment to be let go, so the bound is asked of the RSS within a few seconds
    deadline, grown = time.monotonic() + 10, server.rss() - rss
    while grown >= 50 * MB and time.monotonic() < deadline:
        time.sleep(0.2)
        grown = server.rss() - rss
    assert grown < 50 * MB, grown
    assert_usual_latency(server, before)


def _stream_ended(conn: RawH2, stream: int) -> bool:
    """Read frames until one ends `stream` (HEADERS or DATA with END_STREAM)."""
    conn.sock.settimeout(10)
    buffer = b""
    while True:
        while len(buffer) >= 9:
            size = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + size:
                break
            kind, flags = buffer[3], buffer[4]
            sid = struct.unpack(">I", buffer[5:9])[0] & 0x7FFFFFFF
            buffer = buffer[9 + size:]
            if sid == stream and kind in (0, HEADERS) and flags & 0x1:
                return True
        data = conn.sock.recv(1 << 16)
        if not data:
            return False
        buffer += data


@pytest.mark.parametrize("limit", [None, 64], ids=["unlimited", "max-64"])
def test_ten_thousand_calls_at_once(tmp_path, limit):
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    args = [] if limit is None else ["--max-concurrent-rpcs", str(limit)]
    server = h.Server(data, extra_args=args)
    with h.running(server):
        before, rss = latency(server.target), server.rss()
        peak = [rss]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], server.rss())
                time.sleep(0.02)

        async def calls() -> Counter:
            channels = [grpc.aio.insecure_channel(server.target) for _ in range(10)]
            stubs = [rpc.SuppressionStub(c) for c in channels]

            async def one(i: int) -> Code:
                try:
                    await stubs[i % 10].Check(CHECK, timeout=60)
                except grpc.RpcError as exc:
                    return exc.code()
                return Code.OK

            try:
                return Counter(await asyncio.gather(*(one(i) for i in range(10_000))))
            finally:
                for channel in channels:
                    await channel.close()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            codes = asyncio.run(calls())
        finally:
            done.set()
            watcher.join()
        # CANCELLED here was grpc shedding a backlog of over 1,000 calls (see app.py)
        assert set(codes) <= {Code.OK, Code.RESOURCE_EXHAUSTED}, codes
        if limit is None:
            assert codes[Code.OK] == 10_000, codes
        assert codes[Code.OK] >= 1, codes
        assert peak[0] - rss < 400 * MB  # measured: +124 MB
        assert_usual_latency(server, before)


class HalfOpen:
    """A CheckStream whose caller sends when it likes and never says it is done."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.answers = rpc.SuppressionStub(channel).CheckStream(iter(self.requests.get, None),
                                                                timeout=120)

    def check(self) -> int:
        self.requests.put(CHECK)
        return next(self.answers).scope

    def close(self) -> None:
        self.requests.put(None)


def test_streams_left_half_open(server):
    before, rss = latency(server.target), server.rss()
    channels = [grpc.insecure_channel(server.target) for _ in range(10)]
    streams = [HalfOpen(channels[i % 10]) for i in range(1000)]
    try:
        assert {s.check() for s in streams} == {h.SENDER}  # each one open and answered
        settle(server)
        used = server.cpu_seconds()
        time.sleep(1)
        assert server.cpu_seconds() - used < 0.1  # 1,000 open streams cost no work (1 tick)
        assert server.rss() - rss < 100 * MB  # measured: +24 MB
        assert_usual_latency(server, before)
        assert [s.check() for s in streams[::100]] == [h.SENDER] * 10  # still there
    finally:
        for s in streams:
            s.close()
        for channel in channels:
            channel.close()


def test_a_full_call_limit_answers_resource_exhausted(tmp_path):
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    server = h.Server(data, extra_args=["--max-concurrent-rpcs", "4"])
    with h.running(server), grpc.insecure_channel(server.target) as channel:
        streams = [HalfOpen(channel) for _ in range(4)]
        try:
            assert [s.check() for s in streams] == [h.SENDER] * 4  # the four places taken
            exc = h.rpc_error(rpc.SuppressionStub(channel).Check, CHECK, timeout=h.T)
            assert exc.code() == Code.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
        finally:
            for s in streams:
                s.close()
        for s in streams:  # each ends, answered
            assert list(s.answers) == []
        deadline = time.monotonic() + 5
        while h.code_of(rpc.SuppressionStub(channel).Check, CHECK, timeout=h.T) != Code.OK:
            assert time.monotonic() < deadline, "the places never came free"
            time.sleep(0.05)
