"""Load generators: tasks that run in a pool of spawned client processes, call a server on
loopback with pre-serialised requests, check every answer and return what they measured.

- `task_latency`: sequential unary Check calls with the generated stub (latencies in ns);
- `task_paced_futures`: open loop from one thread, call i sent at start + i / rate as a
  future, its latency counted from that scheduled time (a stall counts against every call it
  delays);
- `task_pipelined`: closed loop of one unary method, `depth` calls in flight over a few
  connections (checks/s over [first send, last answer]);
- `task_stream`: one CheckStream with at most `window` unanswered messages;
- `task_closed`: closed loop from `threads` threads, one call at a time each, credited by the
  overlap of each call with the window (writes/s);
- `task_paced_threads`: open loop on one channel, call i due at start + i / rate and sent by
  thread i % threads (one slow call holds up only its own thread).

Every task compares each answer with the expected one (`Answers`; a constant servicer's are
constant) and counts the wrong ones and the failed calls; writes keep (payload, sequence) of
every acknowledgement so that the caller can check afterwards that each one is there. Every loop
stops by count and by time, and every call has a deadline.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.lib.servers import CALL_TIMEOUT, CHANNEL_OPTIONS, HOST

__all__ = ["CHECK", "OPT_OUT", "SERVICE", "WRITE_BATCH", "Answers", "channels", "same",
           "sleep_until", "task_closed", "task_latency", "task_paced_futures",
           "task_paced_threads", "task_pipelined", "task_stream"]

SERVICE = "/anning.v1.Suppression/"
CHECK = SERVICE + "Check"
OPT_OUT = "/anning.v1.OptOuts/OptOut"
WRITE_BATCH = "/anning.v1.OptOuts/WriteBatch"


def identity(x: bytes) -> bytes:
    return x


def channels(port: int, count: int) -> list[Any]:
    """`count` channels, each with its own TCP connection (a local subchannel pool), so that
    SO_REUSEPORT can spread them over a server's processes."""
    import grpc

    return [grpc.insecure_channel(f"{HOST}:{port}", options=[
        *CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", i)])
        for i in range(count)]


def same(method: str, got: bytes, want: bytes) -> bool:
    """Equal answers: byte for byte, or else as protobuf messages."""
    if got == want:
        return True
    from anning.v1 import anning_pb2 as pb

    cls: Any = {"Check": pb.CheckResponse, "CheckStream": pb.CheckResponse,
           "CheckBatch": pb.CheckBatchResponse, "CheckColumns": pb.CheckColumnsResponse}[method]
    try:
        return bool(cls.FromString(got) == cls.FromString(want))
    except Exception:
        return False


def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


class Answers:
    """Whether the answer to payload k is right, and what is kept of acknowledged writes.

    OptOut: a WriteAck with a sequence; WriteBatch: a WriteBatchAck with a sequence that counts
    the `items` events of the batch; both keep (k, sequence), which the caller checks after
    the run (distinct sequences; every acknowledged write suppressed). Anything else: the
    expected bytes of payload k."""

    def __init__(self, path: str, items: int = 1, expected: list[bytes] | None = None) -> None:
        from anning.v1 import anning_pb2 as pb

        self.path, self.items, self.expected = path, items, expected
        self.ack: Any = {OPT_OUT: pb.WriteAck, WRITE_BATCH: pb.WriteBatchAck}.get(path)
        self.acked: list[tuple[int, int]] = []  # list.append: safe from several threads

    def ok(self, got: bytes, k: int) -> bool:
        if self.ack is not None:
            ack = self.ack.FromString(got)
            self.acked.append((k, ack.sequence))
            return ack.sequence > 0 and (self.path == OPT_OUT or ack.events == self.items)
        assert self.expected is not None
        want = self.expected[k]
        return got == want or same(self.path.rsplit("/", 1)[1], got, want)

    def kept(self) -> dict[str, np.ndarray]:
        pairs = np.array(self.acked, dtype=np.uint64).reshape(-1, 2)
        return {"acked": pairs[:, 0].astype(np.int64), "sequences": pairs[:, 1]}


# -- the service's tasks ----------------------------------------------------------------------


def _check_stub(port: int, pairs: list[tuple[str, str]], warmup: int) -> tuple[Any, Any, list]:
    """A channel, the generated Suppression stub and a CheckRequest a pair, after `warmup`
    calls (connection made, first calls behind it)."""
    import grpc

    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    channel = grpc.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS)
    stub = rpc.SuppressionStub(channel)
    requests = [pb.CheckRequest(sender=s, number=n) for s, n in pairs]
    for i in range(warmup):
        stub.Check(requests[i % len(requests)], timeout=CALL_TIMEOUT)
    return channel, stub, requests


def task_latency(port: int, pairs: list[tuple[str, str]], expected: list[int], calls: int,
                 limit_s: float, warmup: int) -> dict:
    """Sequential unary Check calls with the generated stub: latencies in ns."""
    import grpc

    channel, stub, requests = _check_stub(port, pairs, warmup)
    r = len(requests)
    lat = np.zeros(calls, np.int64)
    scopes = np.zeros(calls, np.int16)
    errors: list[str] = []
    clock = time.perf_counter_ns
    cpu0, started = time.process_time(), clock()
    stop = started + int(limit_s * 1e9)
    n = 0
    while n < calls:
        t0 = clock()
        if t0 > stop:
            break
        try:
            response = stub.Check(requests[n % r], timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            errors.append(f"{exc.code()}: {exc.details()}")
            if len(errors) > 10:
                break
            continue
        lat[n] = clock() - t0
        scopes[n] = response.scope
        n += 1
    elapsed = (clock() - started) / 1e9
    cpu = time.process_time() - cpu0
    channel.close()
    want = np.resize(np.asarray(expected, np.int16), n)
    wrong = int((scopes[:n] != want).sum())
    return {"lat_ns": lat[:n], "calls": n, "elapsed": elapsed, "cpu": cpu,
            "wrong": wrong, "errors": errors, "pid": os.getpid()}


def task_paced_futures(port: int, pairs: list[tuple[str, str]], expected: list[int],
                       rate: float, seconds: float, warmup: int) -> dict:
    """Open loop: call i is sent at start + i / rate (futures, whatever is still in flight);
    its latency runs from that scheduled time to its answer."""
    import grpc

    channel, stub, requests = _check_stub(port, pairs, warmup)
    r = len(requests)
    n = max(1, int(rate * seconds))
    lat = np.full(n, -1, np.int64)
    scopes = np.full(n, -1, np.int16)
    errors: list[str] = []
    finished = threading.Semaphore(0)
    clock = time.perf_counter_ns

    def done(i: int, scheduled: int, future: Any) -> None:
        now = clock()
        try:
            scopes[i] = future.result().scope
            lat[i] = now - scheduled
        except grpc.RpcError as exc:
            errors.append(f"{exc.code()}: {exc.details()}")
        finished.release()

    period = 1e9 / rate
    start = clock() + 20_000_000
    hard_stop = start + int((seconds * 2 + 5) * 1e9)
    late = sent = 0
    keep = []
    cpu0 = time.process_time()
    for i in range(n):
        scheduled = start + int(i * period)
        now = clock()
        if now > hard_stop:
            break
        if scheduled > now:
            time.sleep((scheduled - now) / 1e9)
        elif now - scheduled > 1_000_000:
            late += 1
        future = stub.Check.future(requests[i % r], timeout=CALL_TIMEOUT)
        future.add_done_callback(functools.partial(done, i, scheduled))
        keep.append(future)
        sent += 1
    for _ in range(sent):
        if not finished.acquire(timeout=CALL_TIMEOUT):
            errors.append("an answer never came")
            break
    elapsed = (clock() - start) / 1e9
    cpu = time.process_time() - cpu0
    channel.close()
    answered = lat[:sent] >= 0
    want = np.resize(np.asarray(expected, np.int16), sent)
    wrong = int((scopes[:sent][answered] != want[answered]).sum())
    return {"lat_ns": lat[:sent][answered], "calls": sent, "late_sends": late,
            "elapsed": elapsed, "cpu": cpu, "wrong": wrong, "errors": errors,
            "pid": os.getpid()}


def task_pipelined(port: int, method: str, payloads: list[bytes], expected: list[bytes],
                   items: int, depth: int, n_channels: int, seconds: float, max_calls: int,
                   start_at: float, warmup: int) -> dict:
    """Closed loop of one unary method with pre-serialised requests: `depth` calls in flight,
    round robin over `n_channels` connections. Every answer is compared with its expected
    bytes. Counts checks (`items` a call) over [first send, last answer]."""
    import grpc

    chans = channels(port, n_channels)
    calls = [c.unary_unary(SERVICE + method, request_serializer=identity,
                           response_deserializer=identity) for c in chans]
    p = len(payloads)
    for i in range(warmup):
        got = calls[i % len(calls)](payloads[i % p], timeout=CALL_TIMEOUT)
        if not same(method, got, expected[i % p]):
            return {"error": f"{method}: warm-up answer {i} differs from the expected one",
                    "pid": os.getpid()}
    sleep_until(start_at)
    clock = time.perf_counter
    inflight: deque = deque()
    wrong = done = sent = 0
    errors: list[str] = []
    cpu0, wall0, t0 = time.process_time(), time.time(), clock()
    stop = t0 + seconds
    while True:
        while len(inflight) < depth and sent < max_calls and clock() < stop:
            k = sent % p
            inflight.append((k, calls[sent % len(calls)].future(payloads[k],
                                                               timeout=CALL_TIMEOUT)))
            sent += 1
        if not inflight:
            break
        k, future = inflight.popleft()
        try:
            got = future.result(timeout=CALL_TIMEOUT)
        except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
            errors.append(repr(exc)[:300])
            if len(errors) > 10:
                break
            continue
        if got != expected[k] and not same(method, got, expected[k]):
            wrong += 1
        done += 1
    t1 = clock()
    cpu = time.process_time() - cpu0
    for c in chans:
        c.close()
    return {"calls": done, "checks": done * items, "elapsed": t1 - t0, "wall0": wall0,
            "wall1": wall0 + (t1 - t0), "cpu": cpu, "wrong": wrong, "errors": errors,
            "pid": os.getpid()}


def task_stream(port: int, payloads: list[bytes], expected: list[bytes], window: int,
                seconds: float, max_msgs: int, start_at: float) -> dict:
    """One CheckStream: a generator sends pre-serialised requests while at most `window` are
    unanswered; the answers are read in order and compared with the expected bytes."""
    import grpc

    (channel,) = channels(port, 1)
    call = channel.stream_stream(SERVICE + "CheckStream", request_serializer=identity,
                                 response_deserializer=identity)
    warm = list(call(iter(payloads[:200]), timeout=CALL_TIMEOUT))
    for i, got in enumerate(warm):
        if not same("CheckStream", got, expected[i]):
            return {"error": f"CheckStream: warm-up answer {i} differs", "pid": os.getpid()}
    sleep_until(start_at)
    p = len(payloads)
    credit = threading.Semaphore(window)
    clock = time.perf_counter
    t0 = clock()
    stop = t0 + seconds

    def requests():
        for i in range(max_msgs):
            while not credit.acquire(timeout=0.5):
                if clock() > stop + CALL_TIMEOUT:
                    return
            if clock() > stop:
                return
            yield payloads[i % p]

    cpu0, wall0 = time.process_time(), time.time()
    wrong = received = 0
    errors: list[str] = []
    try:
        for got in call(requests(), timeout=seconds + CALL_TIMEOUT):
            want = expected[received % p]
            if got != want and not same("CheckStream", got, want):
                wrong += 1
            received += 1
            credit.release()
    except grpc.RpcError as exc:
        errors.append(f"{exc.code()}: {exc.details()}")
    t1 = clock()
    cpu = time.process_time() - cpu0
    channel.close()
    return {"calls": received, "checks": received, "elapsed": t1 - t0, "wall0": wall0,
            "wall1": wall0 + (t1 - t0), "cpu": cpu, "wrong": wrong, "errors": errors,
            "pid": os.getpid()}


# -- the write side's tasks -------------------------------------------------------------------

WARM = 0.5  # seconds of closed-loop load before a window opens


def in_threads(loop: Callable[[int], None], n: int) -> None:
    threads = [threading.Thread(target=loop, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def task_closed(port: int | list[int], path: str, payloads: list[bytes], items: int,
                threads: int, n_channels: int, start_at: float, seconds: float) -> dict:
    """Closed loop: `threads` threads, one call at a time each, from start_at. The window is
    [start_at + WARM, + seconds] (connections and first calls behind it); a call is credited
    with the share of its items its span has in the window (a 10,000-event batch straddling
    an edge counts in part, not all or nothing). Several ports (replicas): `n_channels` to
    each, thread t calling port t % len(port)."""
    import grpc

    chans = [c for p in ([port] if isinstance(port, int) else port)
             for c in channels(p, n_channels)]
    calls = [c.unary_unary(path, request_serializer=identity,
                           response_deserializer=identity) for c in chans]
    answers = Answers(path, items)
    w0 = start_at + WARM
    w1 = w0 + seconds
    credit, total, wrong = [0.0] * threads, [0] * threads, [0] * threads
    errors: list[str] = []

    def loop(t: int) -> None:
        call, p = calls[t % len(calls)], len(payloads)
        k = t * (p // threads)  # payload t * (p // threads) is written by thread t first
        sleep_until(start_at)
        while (sent := time.time()) < w1 and len(errors) <= 10:
            try:
                got = call(payloads[k % p], timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
                continue
            done = time.time()
            if (overlap := min(done, w1) - max(sent, w0)) > 0:
                credit[t] += items * overlap / max(done - sent, 1e-9)
            total[t] += 1
            wrong[t] += not answers.ok(got, k % p)
            k += 1

    cpu0 = time.process_time()
    in_threads(loop, threads)
    for c in chans:
        c.close()
    return {"calls": sum(total), "rate": sum(credit) / seconds,
            "wrong": sum(wrong), "errors": errors, "cpu": time.process_time() - cpu0,
            "pid": os.getpid(), **answers.kept()}


def task_paced_threads(port: int, path: str, payloads: list[bytes],
                       expected: list[bytes] | None, rate: float, seconds: float, threads: int,
                       start_at: float) -> dict:
    """Open loop on one channel: call i is due at start_at + i / rate and sent by thread
    i % threads; its latency runs from the due time, so a stall counts against every call it
    delays, and one slow call holds up only its own thread."""
    import grpc

    (channel,) = channels(port, 1)
    call = channel.unary_unary(path, request_serializer=identity,
                               response_deserializer=identity)
    answers = Answers(path, 1, expected)
    p = len(payloads)
    offset = 7919 * os.getpid() % p  # paced writes start away from the closed loops' numbers
    for i in range(20):  # connected and warm before the schedule starts
        k = (offset + i) % p
        if not answers.ok(call(payloads[k], timeout=CALL_TIMEOUT), k):
            return {"error": f"{path}: warm-up answer {i} is wrong", "pid": os.getpid()}
    n = max(1, int(rate * seconds))
    lat = np.full(n, -1, np.int64)
    late, wrong = [0] * threads, [0] * threads
    errors: list[str] = []
    clock = time.perf_counter_ns
    start = clock() + int((start_at - time.time()) * 1e9)

    def loop(t: int) -> None:
        for i in range(t, n, threads):
            due = start + int(i * 1e9 / rate)
            if (ahead := due - clock()) > 0:
                time.sleep(ahead / 1e9)
            elif ahead < -1_000_000:
                late[t] += 1
            k = (offset + i) % p
            try:
                got = call(payloads[k], timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
                continue
            lat[i] = clock() - due
            wrong[t] += not answers.ok(got, k)

    in_threads(loop, threads)
    channel.close()
    done = lat[lat >= 0]
    return {"lat_ns": done, "calls": len(done), "late": sum(late), "wrong": sum(wrong),
            "errors": errors, "pid": os.getpid(), **answers.kept()}
