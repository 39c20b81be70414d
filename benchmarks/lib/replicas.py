"""Client tasks of the replica benchmark (benchmarks/replica_bench.py): write-to-visible with
its raw JetStream peer, writing a backlog, callers writing through every replica while NATS
nodes are killed, and reading back what was written.

Every task checks what it times: each acknowledgement carries a sequence of its own, a check
answers only NONE (not yet seen) or SENDER (seen) for a fresh number and never goes back, the
replica that took a write answers SENDER at once, and afterwards every acknowledged write is
read back from every replica (`suppressed`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.lib.servers import CALL_TIMEOUT, CHANNEL_OPTIONS, HOST

__all__ = ["COLUMNS", "FailoverWriters", "scopes", "suppressed", "task_visible",
           "task_write_batches"]

COLUMNS = 100_000  # numbers a CheckColumns call of the read-backs
SENDER, NONE = 1, 0


def _stubs(port: int) -> tuple[Any, Any, Any]:
    import grpc

    from anning.v1 import anning_pb2_grpc as rpc

    channel = grpc.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS)
    return channel, rpc.SuppressionStub(channel), rpc.OptOutsStub(channel)


def task_visible(ports: Sequence[int], urls: str, raw_stream: str, raw_subject: str,
                 pairs: list[tuple[str, str]], raw_payloads: list[bytes],
                 limit_s: float) -> dict:
    """Write-to-visible. Two threads poll replicas B and C (ports[1], ports[2]) with unary
    Check in a tight loop, each asking about the number of the current write. The writer
    makes the next number current, lets the pollers ask about it a few times, sends its
    OptOut to replica A (ports[0]), and waits until both pollers have seen it; then the raw
    peer: one event published on one NATS connection and delivered to a push consumer on
    another (DeliveryProbe), while the pollers go on. Times in perf_counter ns: each write's
    send and acknowledgement, the end of the first Check on B and on C that answered SENDER;
    each probe's send, acknowledgement and delivery."""
    from anning.v1 import anning_pb2 as pb
    from benchmarks.lib.jetstream import DeliveryProbe

    n = len(pairs)
    checks = [pb.CheckRequest(sender=s, number=num) for s, num in pairs]
    writes = [pb.OptOutRequest(scope=s, number=num) for s, num in pairs]
    clock = time.perf_counter_ns
    current = [-1]
    seen = np.full((2, n), -1, np.int64)
    polls = [0, 0]
    wrong: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll(j: int, port: int) -> None:
        channel, stub, _ = _stubs(port)
        check = stub.Check
        try:
            while not stop.is_set():
                i = current[0]
                if i < 0:
                    time.sleep(0.001)
                    continue
                try:
                    scope = check(checks[i], timeout=CALL_TIMEOUT).scope
                except Exception as exc:
                    errors.append(f"poll of {'BC'[j]}: {exc!r}"[:300])
                    if len(errors) > 10:
                        return
                    continue
                t = clock()
                polls[j] += 1
                if scope == SENDER:
                    if seen[j, i] < 0:
                        seen[j, i] = t
                elif scope != NONE or seen[j, i] >= 0:
                    wrong.append(f"{'BC'[j]} answered {scope} for {pairs[i]} "
                                 f"(seen {'before' if seen[j, i] >= 0 else 'not yet'})")
        finally:
            channel.close()

    a_channel, a_stub, a_writes = _stubs(ports[0])
    a_check = a_stub.Check
    probe = DeliveryProbe(urls, raw_stream, raw_subject)
    pollers = [threading.Thread(target=poll, args=(j, p)) for j, p in enumerate(ports[1:3])]
    for th in pollers:
        th.start()
    sent = np.zeros(n, np.int64)
    acked = np.zeros(n, np.int64)
    sequences = np.zeros(n, np.uint64)
    probes = np.zeros((n, 3), np.int64)
    rng = np.random.default_rng(7)
    deadline = time.monotonic() + limit_s
    done = 0
    try:
        for w in range(3):  # warm: connections made, first calls behind them
            a_check(checks[w], timeout=CALL_TIMEOUT)
            probe.publish(raw_payloads[w])
        for i in range(n):
            if time.monotonic() > deadline or len(errors) > 10 or wrong:
                break
            current[0] = i
            time.sleep(0.002 + rng.random() * 0.002)  # the pollers are asking about it
            sent[i] = clock()
            ack = a_writes.OptOut(writes[i], timeout=CALL_TIMEOUT)
            acked[i] = clock()
            sequences[i] = ack.sequence
            # the replica that took the write answers from it at once (SPEC §6)
            if (own := a_check(checks[i], timeout=CALL_TIMEOUT).scope) != SENDER:
                wrong.append(f"A answered {own} for its own acknowledged write {pairs[i]}")
            limit = time.monotonic() + 30
            while (seen[:, i] < 0).any() and time.monotonic() < limit and not errors:
                time.sleep(0.0002)
            if (seen[:, i] < 0).any():
                errors.append(f"write {i} {pairs[i]} not seen on "
                              f"{'BC'[int(np.flatnonzero(seen[:, i] < 0)[0])]} in 30 s")
                break
            probes[i] = probe.publish(raw_payloads[i % len(raw_payloads)])
            done = i + 1
    except Exception as exc:
        errors.append(repr(exc)[:500])
    finally:
        stop.set()
        for th in pollers:
            th.join(CALL_TIMEOUT)
        probe.close()
        a_channel.close()
    return {"calls": done, "sent": sent[:done], "acked": acked[:done],
            "sequences": sequences[:done], "seen": seen[:, :done], "probes": probes[:done],
            "polls": polls, "wrong": len(wrong), "wrong_first": wrong[:3], "errors": errors,
            "pid": os.getpid()}


def task_write_batches(port: int, senders: list[str], index: np.ndarray, numbers: list[str],
                       size: int, callers: int) -> dict:
    """Opt-outs of (senders[index[i]], numbers[i]), all of them, in WriteBatch calls of
    `size` from `callers` threads; each batch's acknowledgement kept (its last sequence)."""
    from anning.v1 import anning_pb2 as pb

    starts = list(range(0, len(numbers), size))
    acks: list[tuple[int, int, int]] = []  # (first row, events, sequence of the last)
    errors: list[str] = []
    turn = itertools.count()

    def loop() -> None:
        channel, _, writes = _stubs(port)
        try:
            while (j := next(turn)) < len(starts) and not errors:
                lo = starts[j]
                hi = min(lo + size, len(numbers))
                request = pb.WriteBatchRequest(events=[
                    pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, scope=senders[index[i]],
                                  number=numbers[i]) for i in range(lo, hi)])
                try:
                    ack = writes.WriteBatch(request, timeout=CALL_TIMEOUT)
                except Exception as exc:
                    errors.append(repr(exc)[:300])
                    return
                if ack.events != hi - lo:
                    errors.append(f"a batch of {hi - lo} acknowledged as {ack.events}")
                acks.append((lo, hi - lo, ack.sequence))
        finally:
            channel.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"acks": acks, "errors": errors, "seconds": time.perf_counter() - t0,
            "pid": os.getpid()}


def scopes(port: int, senders: list[str], index: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """What a replica answers for (senders[index[i]], numbers[i]) (E.164 uint64), by
    CheckColumns, COLUMNS numbers a call."""
    from anning.client import Client

    with Client(f"{HOST}:{port}", timeout=600.0) as client:
        return np.concatenate([np.asarray(client.check_columns(
            senders, index[i:i + COLUMNS], numbers[i:i + COLUMNS]))
            for i in range(0, len(numbers), COLUMNS)] or [np.empty(0, np.uint8)])


def suppressed(port: int, pairs: Sequence[tuple[str, str]]) -> tuple[int, str]:
    """How many of the (sender, national number) opt-outs do not answer SENDER, and the
    first of them."""
    if not pairs:
        return 0, ""
    names = sorted({s for s, _ in pairs})
    where = {s: i for i, s in enumerate(names)}
    index = np.array([where[s] for s, _ in pairs], np.uint32)
    numbers = np.array([8_600_000_000_000 + int(n) for _, n in pairs], np.uint64)
    got = scopes(port, names, index, numbers)
    bad = np.flatnonzero(got != SENDER)
    return int(bad.size), (f"{pairs[int(bad[0])]} answers {int(got[bad[0]])}" if bad.size
                           else "")


class FailoverWriters:
    """Callers writing opt-outs of fresh numbers through every replica in turn (caller k
    starts at replica k), one call at a time each. Acknowledged writes are kept with when they
    were sent and acknowledged (monotonic seconds) and their sequence; a failed call
    (UNAVAILABLE or a deadline while a node is down) is counted by its code, and the caller
    goes on with its next number after 20 ms."""

    def __init__(self, ports: Sequence[int], pairs: list[tuple[str, str]], start: int,
                 callers: int, timeout: float) -> None:
        self.ports, self.pairs, self.timeout = list(ports), pairs, timeout
        self.acked: list[tuple[int, float, float, int]] = []  # (pair, sent, acked, seq)
        self.failed: dict[str, int] = {}
        self.unexpected: list[str] = []
        self.failed_at: list[float] = []
        self.lock = threading.Lock()
        self.numbers = itertools.count(start)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in range(callers)]

    def run(self, k: int) -> None:
        import grpc

        from anning.v1 import anning_pb2 as pb

        stubs = [_stubs(p) for p in self.ports]
        try:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                with self.lock:
                    j = next(self.numbers)
                if j >= len(self.pairs):
                    self.unexpected.append("out of fresh numbers")
                    return
                sender, number = self.pairs[j]
                sent = time.monotonic()
                try:
                    ack = stubs[(i + k) % len(stubs)][2].OptOut(
                        pb.OptOutRequest(number=number, scope=sender), timeout=self.timeout)
                except grpc.RpcError as exc:
                    code = exc.code()
                    with self.lock:
                        self.failed[code.name] = self.failed.get(code.name, 0) + 1
                        self.failed_at.append(time.monotonic())
                    if code not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                        self.unexpected.append(f"{code.name}: {exc.details()}")
                    time.sleep(0.02)
                    continue
                with self.lock:
                    self.acked.append((j, sent, time.monotonic(), ack.sequence))
        finally:
            for channel, _, _ in stubs:
                channel.close()

    def first_ack_sent_after(self, t: float) -> float | None:
        with self.lock:
            after = [acked for _, sent, acked, _ in self.acked if sent > t]
        return min(after) if after else None

    def first_ack_after(self, t: float) -> float | None:
        with self.lock:
            after = [acked for _, _, acked, _ in self.acked if acked > t]
        return min(after) if after else None

    def __enter__(self) -> FailoverWriters:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(self.timeout + 10)
