"""Hostile bytes on the wire (issue 16): random and mutated protobuf sent to every method of a
real server is answered only OK, INVALID_ARGUMENT (naming what was wrong), RESOURCE_EXHAUSTED,
FAILED_PRECONDITION, PERMISSION_DENIED or UNAUTHENTICATED - never UNKNOWN or INTERNAL - and
the server's log stays a few lines a second, never a traceback per call."""

from __future__ import annotations

import random
import re
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from anning.testing import server as h
from anning.testing.server import SENDER, T, write_main_snapshot
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
CLEAN = {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION,
         Code.PERMISSION_DENIED, Code.UNAUTHENTICATED}
CHECK = pb.CheckRequest(sender="京东", number="13800000001")
EVENT = pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number="13900000001", scope="京东")

# every method, its kind, and requests it takes (mutated below)
METHODS: dict[str, tuple[str, list]] = {
    "/anning.v1.Suppression/Check": ("unary", [CHECK, pb.CheckRequest(
        sender="淘宝", number="+86 139 0000 0002", category="notification")]),
    "/anning.v1.Suppression/CheckBatch": ("unary", [pb.CheckBatchRequest(checks=[CHECK] * 3)]),
    "/anning.v1.Suppression/CheckStream": ("stream", [CHECK]),
    "/anning.v1.Suppression/CheckBatchStream": ("batches", [pb.CheckBatchRequest(
        checks=[CHECK] * 3)]),
    "/anning.v1.Suppression/CheckColumns": ("unary", [pb.CheckColumnsRequest(
        senders=["京东", "淘宝"], sender_index=np.array([0, 1], "<u4").tobytes(),
        numbers=np.array([8613800000001, 8613800000004], "<u8").tobytes())]),
    "/anning.v1.OptOuts/OptOut": ("unary", [pb.OptOutRequest(
        number="13900000001", scope="京东", category="all", source="reply")]),
    "/anning.v1.OptOuts/OptIn": ("unary", [pb.OptOutRequest(number="13900000002", scope="*")]),
    "/anning.v1.OptOuts/Reassign": ("unary", [pb.ReassignRequest(number="13900000003")]),
    "/anning.v1.OptOuts/WriteBatch": ("unary", [pb.WriteBatchRequest(events=[EVENT] * 2)]),
    "/anning.v1.OptOuts/ReportReply": ("unary", [pb.ReplyRequest(
        sender="京东", number="13900000004", text="退订")]),
    "/anning.v1.OptOuts/Explain": ("unary", [CHECK]),
    "/anning.v1.OptOuts/Changes": ("feed", [pb.ChangesRequest(since=0, until=2)]),
    "/anning.v1.Admin/LoadSnapshot": ("unary", [pb.LoadSnapshotRequest(
        paths=["/nonexistent.csv"], as_of="2024-01-01T00:00:00+08:00", allow_shrink=True)]),
    "/anning.v1.Admin/Status": ("unary", [pb.StatusRequest()]),
    "/grpc.health.v1.Health/Check": ("unary", [health_pb2.HealthCheckRequest(service="")]),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ("reflect", [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="anning.v1.Admin")]),
}


def test_every_method_is_covered():
    services = [pb.DESCRIPTOR.services_by_name[s] for s in ("Suppression", "OptOuts", "Admin")]
    declared = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert declared <= set(METHODS)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """What a fuzzer makes of a good request: flipped, cut, inserted, duplicated bytes, a
    field of random bytes or an absurd length spliced in, or nothing of it at all."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice((0, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del b[at:]
        elif op == 3:
            b[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:
            b += b[rng.randrange(len(b) + 1):]
        elif op == 5:  # a string field with bytes that are not UTF-8, or a NUL
            value = rng.choice((b"\xff\xfe", b"\xc3", b"ab\x00cd", b"\xed\xa0\x80", b"\x00"))
            b[at:at] = bytes([(rng.randint(1, 7) << 3) | 2, len(value)]) + value
        elif op == 6:  # a length that claims far more than there is
            b[at:at] = bytes([(rng.randint(1, 7) << 3) | 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x07])
        elif op == 7:  # a field of any wire type, groups and the two that do not exist too
            b[at:at] = bytes([(rng.randint(1, 31) << 3) | rng.randrange(8)]) + \
                rng.randbytes(rng.randint(0, 9))
        else:
            b = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(b)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("hostile") / "data"
    write_main_snapshot(data)
    srv = h.Server(data, metrics=True, reflection=True)
    with h.running(srv):
        yield srv


def _call(channel: grpc.Channel, method: str, kind: str, body: bytes,
          good: bytes) -> tuple[grpc.StatusCode, str, list[bytes]]:
    try:
        if kind == "unary":
            return Code.OK, "", [channel.unary_unary(method)(body, timeout=T)]
        if kind == "feed":  # the suffix sets `until` (mostly): the stream ends
            return Code.OK, "", list(channel.unary_stream(method)(body + b"\x10\x01",
                                                                  timeout=1.0))
        if kind in ("reflect", "batches"):  # a bad batch ends its stream with its code
            return Code.OK, "", list(channel.stream_stream(method)(iter([body]), timeout=T))
        # a bad message in a stream is answered in its turn, and the stream goes on
        return Code.OK, "", list(channel.stream_stream(method)(iter([body, good]), timeout=T))
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def _follows(body: bytes) -> bool:
    """Whether `body` is a ChangesRequest that follows the feed live (no `until`)."""
    try:
        return pb.ChangesRequest.FromString(body).until == 0
    except Exception:
        return False


def test_random_and_mutated_bytes_to_every_method(server):
    rng = random.Random(16)
    lines_before = len(server.output().splitlines())
    started = time.monotonic()
    undecodable: dict[str, int] = {}
    answers: dict[tuple[str, str], int] = {}
    with grpc.insecure_channel(server.target) as channel:
        for i in range(120):
            for method, (kind, requests) in METHODS.items():
                good = rng.choice(requests).SerializeToString()
                body = mutate(rng, good) if i % 8 else rng.randbytes(rng.randint(0, 200))
                code, details, got = _call(channel, method, kind, body, good)
                answers[(method, code.name)] = answers.get((method, code.name), 0) + 1
                if method == "/grpc.health.v1.Health/Check" and code == Code.NOT_FOUND:
                    continue  # a service name it does not know: what Health answers
                if kind == "feed" and code == Code.DEADLINE_EXCEEDED and \
                        _follows(body + b"\x10\x01"):
                    continue  # the garbage took the suffix in: a good request to follow live
                assert code in CLEAN, (method, body, code, details)
                if code == Code.INVALID_ARGUMENT:
                    assert details and len(details.encode()) <= 1100, (method, details)
                    if details.startswith("request: not a valid "):
                        undecodable[method] = undecodable.get(method, 0) + 1
                if kind == "stream" and code == Code.OK:
                    assert len(got) == 2, (body, got)  # the good request after it answered
                    assert pb.CheckResponse.FromString(got[1]).scope == SENDER
                    error = pb.CheckResponse.FromString(got[0]).error
                    if error.startswith("request: not a valid "):
                        undecodable[method] = undecodable.get(method, 0) + 1
    elapsed = time.monotonic() - started
    assert sum(undecodable.values()) > 500, answers  # the bytes did reach the decoders
    assert server.health() == h.SERVING
    # the log: a few lines a second in total, with what was held back counted, no traceback
    time.sleep(1.2)  # the count of lines held back comes a second after the last one
    text = server.output()
    new = text.splitlines()[lines_before:]
    assert len(new) <= 10 + 3 * elapsed, "\n".join(new[:50])
    assert "Traceback" not in text and "Exception" not in text, text[-5000:]
    held = sum(int(n.replace(",", "")) for n in re.findall(r"([\d,]+) lines", "\n".join(new)))
    assert held + len(new) >= sum(undecodable.values())  # each one counted, if not shown
    # and in the metric, each undecodable request once, by method
    counted = h.samples(h.metrics_text(server.metrics_port), "anning_bad_requests_total")
    for method, n in undecodable.items():
        name = method.rsplit("/", 1)[1]
        label = {"/grpc.health.v1.Health/Check": "Health.Check",
                 "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo":
                     "Reflection.ServerReflectionInfo"}.get(method, name)
        assert counted[(("method", label), ("reason", "undecodable"))] == n, method


def _invalid(call, *args, **kwargs) -> str:
    exc = h.rpc_error(call, *args, **kwargs)
    assert exc.code() == Code.INVALID_ARGUMENT, (exc.code(), exc.details())
    return exc.details()


def _raw(server: h.Server, method: str, body: bytes) -> str:
    with grpc.insecure_channel(server.target) as channel:
        return _invalid(channel.unary_unary(method), body, timeout=T)


@pytest.mark.parametrize(("method", "body", "says"), [
    ("/anning.v1.Suppression/Check", b"\x12\x03\xff\xfe\xfd",
     "anning.v1.CheckRequest: number at byte 2: not UTF-8"),
    ("/anning.v1.Suppression/Check", pb.CheckRequest(sender="京东").SerializeToString()[:-2],
     "anning.v1.CheckRequest: sender at byte 0: 6 bytes said, 4 there"),
    ("/anning.v1.OptOuts/WriteBatch",
     pb.WriteBatchRequest(events=[EVENT]).SerializeToString() + b"\x0a\x04\x1a\x02\xc3\x28",
     "anning.v1.WriteBatchRequest: events[1].scope at byte 29: not UTF-8"),
    ("/anning.v1.OptOuts/OptOut", b"\x08\xff\xff", "at byte 0: a number cut off"),
    ("/anning.v1.Admin/Status", b"\x0f", "wire type 7, which does not exist"),
    ("/anning.v1.Admin/LoadSnapshot", b"\x0a\xff\xff\xff\xff\x07/etc",
     "paths[0] at byte 0: 2147483647 bytes said, 4 there"),
    ("/anning.v1.Suppression/CheckBatch", b"\x0a\x05\x0a\x04\xe4\xba\x28",
     "checks[0].sender at byte 2: 4 bytes said, 3 there"),
    ("/grpc.health.v1.Health/Check", b"\x0a\x01\x80", "service at byte 2: not UTF-8"),
])
def test_a_corrupt_request_is_named(server, method, body, says):
    details = _raw(server, method, body)
    assert details.startswith("request: not a valid ") and says in details, details


def test_field_values_are_named(server):
    with h.Stubs(server.target) as s:
        nul = _invalid(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(paths=["/tmp/x\0.csv"]),
                       timeout=T)
        assert nul.startswith("paths[0]: ") and "NUL" in nul, nul
        kind = _invalid(s.opt_outs.WriteBatch, pb.WriteBatchRequest(events=[
            EVENT, pb.WriteEvent(kind=9, number="13900000009", scope="京东")]), timeout=T)
        assert kind.startswith("events[1].kind: 9 "), kind  # an enum value it does not know
        # oversized fields: named, and the answer still fits in a trailer
        for request, field in ((pb.CheckRequest(sender="京" * 1_000_000, number="13800000001"),
                                "sender"),
                               (pb.CheckRequest(sender="京东", number="1" * 3_000_000),
                                "number")):
            details = _invalid(s.suppression.Check, request, timeout=T)
            assert details.startswith(f"{field}: ") and len(details.encode()) <= 1100
            assert "characters]" in details, details
        text = _invalid(s.opt_outs.ReportReply, pb.ReplyRequest(
            sender="京东", number="13900000005", text="退订" * 40_000), timeout=T)
        assert text.startswith("text: 80,000 characters, more than a reply"), text
        senders = h.rpc_error(s.suppression.CheckColumns, pb.CheckColumnsRequest(
            senders=["s"] * 1_000_001), timeout=T)
        assert senders.code() == Code.RESOURCE_EXHAUSTED
        assert senders.details().startswith("senders: "), senders.details()
        # a batch answers a sender that is not UTF-8 in that item, and checks the rest
        with grpc.insecure_channel(server.target) as channel:
            raw = channel.unary_unary("/anning.v1.Suppression/CheckBatch")(
                b"\x0a\x05\x0a\x03\xe4\xba\x28" + pb.CheckBatchRequest(
                    checks=[CHECK]).SerializeToString(), timeout=T)
        bad, good = pb.CheckBatchResponse.FromString(raw).results
        assert bad.error.startswith("checks[0].sender: ") and good.scope == SENDER, bad
        # in a stream, the bad message is answered with its error and the stream goes on
        with grpc.insecure_channel(server.target) as channel:
            got = list(channel.stream_stream("/anning.v1.Suppression/CheckStream")(
                iter([b"\x12\x02\xc3\x28", CHECK.SerializeToString()]), timeout=T))
        first, second = (pb.CheckResponse.FromString(g) for g in got)
        assert first.error.startswith("request: not a valid anning.v1.CheckRequest: number")
        assert second.scope == SENDER and not second.error
    assert server.health() == h.SERVING


def test_health_is_decoded_like_the_rest_and_still_answers(server):
    with grpc.insecure_channel(server.target) as channel:
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        with pytest.raises(grpc.RpcError) as info:
            list(watch(b"\x0a\x01\xff", timeout=T))
        assert info.value.code() == Code.INVALID_ARGUMENT
        first = next(iter(watch(health_pb2.HealthCheckRequest().SerializeToString(),
                                timeout=T)))
        assert health_pb2.HealthCheckResponse.FromString(first).status == h.SERVING
