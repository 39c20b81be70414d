"""Checks over the wire: health and status, Check, CheckBatch, CheckStream, CheckColumns;
bad input named per field and per item; limits and deadlines."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from anning.testing import server as h
from anning.testing.server import (
    AS_OF_MS,
    CASES,
    NONE,
    NOW_MS,
    SENDER,
    SNAPSHOT,
    T,
)
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


# -- health, status, checks --------------------------------------------------------------------


def test_health_and_status(main_server, stubs):
    for service in ("", "anning.v1.Suppression", "anning.v1.OptOuts", "anning.v1.Admin"):
        got = stubs.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=T)
        assert got.status == h.SERVING, service
    status = stubs.admin.Status(pb.StatusRequest(), timeout=T)
    assert status.ready and status.writes_ok and not status.writes_error
    assert status.entries == len(SNAPSHOT)
    assert status.snapshot_as_of == h.iso(AS_OF_MS)
    assert 3590 < status.snapshot_age_seconds < 3600 + 600
    assert status.workers == 1 and status.version


@pytest.mark.parametrize(("sender", "number", "category", "scope"), CASES)
def test_check(stubs, sender, number, category, scope):
    got = stubs.suppression.Check(pb.CheckRequest(sender=sender, number=number,
                                                  category=category), timeout=T)
    assert (got.scope, got.suppressed, got.error) == (scope, scope != NONE, "")


def test_client_check(client):
    for sender, number, category, scope in CASES:
        result = client.check(sender, number, category)
        assert result.scope == pb.Scope.Name(scope).removeprefix("SCOPE_")
        assert result.suppressed == bool(result) == (scope != NONE)
        assert not result.failed_closed


BAD_ITEMS = [  # (sender, number, category, the start of the item's error)
    ("京东", "abc", "", "number: 'abc'"),
    ("", "13800000001", "", "sender: '' is empty"),
    ("京\x01东", "13800000001", "", "sender: '京\\x01东'"),
    ("京东", "13800000001", "bogus", "category: 'bogus'"),
    ("京东", "", "", "number: '' is empty"),
    ("x" * 65, "13800000001", "", "sender: 'xxx"),
]


def _mixed_batch() -> list[tuple[str, str, str, int | str]]:
    """CASES with the bad items between them, in a fixed shuffled order."""
    items: list[tuple[str, str, str, int | str]] = [*CASES, *BAD_ITEMS]
    order = np.random.default_rng(7).permutation(len(items))
    return [items[i] for i in order]


def test_check_batch_in_order_with_item_errors(stubs):
    items = _mixed_batch()
    request = pb.CheckBatchRequest(checks=[pb.CheckRequest(sender=s, number=n, category=c)
                                           for s, n, c, _ in items])
    results = stubs.suppression.CheckBatch(request, timeout=T).results
    assert len(results) == len(items)
    for i, ((sender, number, category, want), got) in enumerate(zip(items, results,
                                                                    strict=True)):
        if isinstance(want, str):  # a bad item: its error, not a failed batch
            assert got.error.startswith(f"checks[{i}].{want}"), (i, got.error)
            assert (got.suppressed, got.scope) == (False, NONE)
        else:
            assert (got.scope, got.suppressed, got.error) == (want, want != NONE, ""), \
                (i, sender, number, category)


def test_client_check_batch(client):
    items = _mixed_batch()
    results = client.check_batch([(s, n, c) for s, n, c, _ in items])
    for i, ((_, _, _, want), got) in enumerate(zip(items, results, strict=True)):
        if isinstance(want, str):
            assert got.error.startswith(f"checks[{i}].{want}") and not got.suppressed
        else:
            assert got.scope == pb.Scope.Name(want).removeprefix("SCOPE_") and not got.error
    assert client.check_batch([]) == []


def test_check_stream(stubs, client):
    items = _mixed_batch()
    requests = [pb.CheckRequest(sender=s, number=n, category=c) for s, n, c, _ in items]
    answers = list(stubs.suppression.CheckStream(iter(requests), timeout=T))
    assert len(answers) == len(items)
    for (_, _, _, want), got in zip(items, answers, strict=True):
        if isinstance(want, str):  # the stream goes on after a bad item
            assert got.error.startswith(want) and not got.suppressed, got.error
        else:
            assert (got.scope, got.error) == (want, "")
    with client.stream() as stream:
        assert stream.check("京东", "13800000001").scope == "SENDER"
        many = stream.check_many([(s, n) for s, n, c, _ in CASES if not c])
        assert [r.scope for r in many] == [pb.Scope.Name(w).removeprefix("SCOPE_")
                                           for _, _, c, w in CASES if not c]


def test_check_columns(stubs, client):
    senders = ["京东", "京东超市", "nobody-knows-me", "淘宝", "【京东】"]
    numbers = np.array([8613800000001, 8613800000002, 8613800000003, 8613800000004,
                        8613800000009], np.uint64)
    which = np.array([0, 1, 2, 3, 4, 4, 1, 0, 2, 3], np.uint32)
    nums = np.concatenate([numbers, numbers])
    want = []
    for s, n in zip(which, nums, strict=True):
        want.append(stubs.suppression.Check(pb.CheckRequest(sender=senders[s], number=str(n)),
                                            timeout=T).scope)
    assert want.count(NONE) < len(want)  # the columns mean something
    got = stubs.suppression.CheckColumns(pb.CheckColumnsRequest(
        senders=senders, sender_index=which.astype("<u4").tobytes(),
        numbers=nums.astype("<u8").tobytes()), timeout=T)
    assert list(got.scopes) == want
    assert client.check_columns(senders, which, nums).tolist() == want
    notification = client.check_columns(senders, which, nums, "notification").tolist()
    assert notification == [stubs.suppression.Check(pb.CheckRequest(
        sender=senders[s], number=str(n), category="notification"), timeout=T).scope
        for s, n in zip(which, nums, strict=True)]
    empty = stubs.suppression.CheckColumns(pb.CheckColumnsRequest(senders=["a"]), timeout=T)
    assert empty.scopes == b""


# -- bad input ---------------------------------------------------------------------------------

BAD_CHECKS = [  # (field, sender, number, category)
    ("number", "京东", "abc", ""),
    ("number", "京东", "", ""),
    ("number", "京东", "+", ""),
    ("number", "京东", "123", ""),
    ("number", "京东", "1380000\x000001", ""),
    ("number", "京东", "138abc00001", ""),
    ("sender", "", "13800000001", ""),
    ("sender", "京\x01东", "13800000001", ""),
    ("sender", "x" * 65, "13800000001", ""),
    ("category", "京东", "13800000001", "bogus"),
]


def _assert_invalid(exc: grpc.RpcError, field: str, value: str | None = None) -> None:
    assert exc.code() == Code.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().startswith(f"{field}: "), exc.details()
    if value is not None:
        assert repr(value) in exc.details(), exc.details()


@pytest.mark.parametrize(("field", "sender", "number", "category"), BAD_CHECKS)
def test_bad_check_input_names_the_field(stubs, field, sender, number, category):
    request = pb.CheckRequest(sender=sender, number=number, category=category)
    value = {"number": number, "sender": sender, "category": category}[field]
    for method in (stubs.suppression.Check, stubs.opt_outs.Explain):
        _assert_invalid(h.rpc_error(method, request, timeout=T), field, value)


BAD_WRITES = [  # (field, OptOutRequest fields)
    ("number", {"number": "abc", "scope": "京东"}),
    ("number", {"number": "", "scope": "京东"}),
    ("scope", {"number": "13900000001", "scope": ""}),
    ("scope", {"number": "13900000001", "scope": "京\x01东"}),
    ("scope", {"number": "13900000001", "scope": "entity:"}),
    ("scope", {"number": "13900000001", "scope": "y" * 65}),
    ("category", {"number": "13900000001", "scope": "京东", "category": "bogus"}),
    ("at_ms", {"number": "13900000001", "scope": "京东", "at_ms": 5}),
    ("at_ms", {"number": "13900000001", "scope": "京东", "at_ms": -5}),
    ("at_ms", {"number": "13900000001", "scope": "京东", "at_ms": NOW_MS + 7 * 86_400_000}),
    ("source", {"number": "13900000001", "scope": "京东", "source": "bogus"}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_WRITES)
def test_bad_write_input_names_the_field(stubs, field, fields):
    request = pb.OptOutRequest(**fields)
    before = stubs.admin.Status(pb.StatusRequest(), timeout=T).events
    for method in (stubs.opt_outs.OptOut, stubs.opt_outs.OptIn):
        _assert_invalid(h.rpc_error(method, request, timeout=T), field)
    assert stubs.admin.Status(pb.StatusRequest(), timeout=T).events == before


@pytest.mark.parametrize(("field", "fields"), [
    ("sender", {"sender": "", "number": "13900000001", "text": "TD"}),
    ("sender", {"sender": "a\x01", "number": "13900000001", "text": "hello"}),
    ("number", {"sender": "京东", "number": "abc", "text": "TD"}),
    ("number", {"sender": "京东", "number": "abc", "text": "free text"}),
    ("at_ms", {"sender": "京东", "number": "13900000001", "text": "TD", "at_ms": 5}),
])
def test_bad_reply_input_names_the_field(stubs, field, fields):
    _assert_invalid(h.rpc_error(stubs.opt_outs.ReportReply, pb.ReplyRequest(**fields),
                                timeout=T), field)


@pytest.mark.parametrize(("field", "fields"), [
    ("numbers", {"senders": ["a"], "sender_index": b"\0\0\0\0", "numbers": b"1234"}),
    ("sender_index", {"senders": ["a"], "sender_index": b"\0" * 8, "numbers": b"\0" * 8}),
    ("sender_index", {"senders": ["a"], "sender_index": b"\1\0\0\0",
                      "numbers": np.array([8613800000001], "<u8").tobytes()}),
    ("senders[0]", {"senders": ["a\x01"], "sender_index": b"\0\0\0\0",
                    "numbers": np.array([8613800000001], "<u8").tobytes()}),
    ("senders[0]", {"senders": [""], "sender_index": b"\0\0\0\0",
                    "numbers": np.array([8613800000001], "<u8").tobytes()}),
    ("numbers[1]", {"senders": ["a"], "sender_index": b"\0" * 8,
                    "numbers": np.array([8613800000001, 0], "<u8").tobytes()}),
    ("category", {"senders": ["a"], "sender_index": b"\0\0\0\0", "category": "bogus",
                  "numbers": np.array([8613800000001], "<u8").tobytes()}),
])
def test_bad_columns_input_names_the_field(stubs, field, fields):
    exc = h.rpc_error(stubs.suppression.CheckColumns, pb.CheckColumnsRequest(**fields),
                      timeout=T)
    assert exc.code() == Code.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().split(":")[0].split(" / ")[0] == field, exc.details()


@pytest.mark.parametrize(("field", "fields"), [
    ("paths", {}),
    ("as_of", {"paths": ["/nonexistent.csv"], "as_of": "yesterday"}),
    ("max_reject_ratio", {"paths": ["/nonexistent.csv"], "max_reject_ratio": -0.5}),
    ("max_reject_ratio", {"paths": ["/nonexistent.csv"], "max_reject_ratio": 2.0}),
    ("max_reject_ratio", {"paths": ["/nonexistent.csv"], "max_reject_ratio": math.nan}),
])
def test_bad_load_input_names_the_field(stubs, field, fields):
    _assert_invalid(h.rpc_error(stubs.admin.LoadSnapshot, pb.LoadSnapshotRequest(**fields),
                                timeout=T), field)


def test_malformed_batch_bytes(main_server):
    with h.Stubs(main_server.target) as s:
        raw = s.channel.unary_unary("/anning.v1.Suppression/CheckBatch")
        for garbage in (b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05\x12\x10abc", b"\xff"):
            exc = h.rpc_error(raw, garbage, timeout=T)
            assert exc.code() == Code.INVALID_ARGUMENT, (garbage, exc.code(), exc.details())


# -- limits, deadlines -------------------------------------------------------------------------


def test_oversized_batch(stubs, client):
    item = pb.CheckRequest(sender="京东", number="13800000001")
    ok = stubs.suppression.CheckBatch(pb.CheckBatchRequest(checks=[item] * 64), timeout=T)
    assert [r.scope for r in ok.results] == [SENDER] * 64
    exc = h.rpc_error(stubs.suppression.CheckBatch, pb.CheckBatchRequest(checks=[item] * 65),
                      timeout=T)
    assert exc.code() == Code.RESOURCE_EXHAUSTED and "64" in exc.details(), exc.details()
    with pytest.raises(grpc.RpcError) as info:
        client.check_batch([("京东", "13800000001")] * 65)
    assert info.value.code() == Code.RESOURCE_EXHAUSTED


def test_too_many_columns(stubs):
    n = 1_000_001
    request = pb.CheckColumnsRequest(senders=["京东"], sender_index=bytes(4 * n),
                                     numbers=np.full(n, 8613800000001, "<u8").tobytes())
    exc = h.rpc_error(stubs.suppression.CheckColumns, request, timeout=T)
    assert exc.code() == Code.RESOURCE_EXHAUSTED and exc.details().startswith("numbers:")


def test_oversized_message(main_server, client):
    """Past the server's 64 MiB limit: RESOURCE_EXHAUSTED from gRPC itself, the server goes on."""
    huge = pb.CheckColumnsRequest(senders=["京东"], numbers=bytes((64 << 20) + 8))
    with h.Stubs(main_server.target, max_send_message_length=-1) as s:
        exc = h.rpc_error(s.suppression.CheckColumns, huge, timeout=30)
        assert exc.code() == Code.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
        assert s.suppression.Check(pb.CheckRequest(sender="京东", number="13800000001"),
                                   timeout=T).scope == SENDER
    with pytest.raises(grpc.RpcError) as info:  # the client's own limit says the same
        client.check_columns(["京东"], np.zeros(9 << 20, np.uint32),
                             np.zeros(9 << 20, np.uint64))
    assert info.value.code() == Code.RESOURCE_EXHAUSTED


def test_expired_deadline(main_server, stubs, client):
    """A deadline that passes while the call is on its way or with the server (gRPC's timers
    are too coarse for a tiny deadline on a quick Check to fail reliably, so big calls)."""
    n = 1_000_000
    big = pb.CheckColumnsRequest(senders=["京东"], sender_index=bytes(4 * n),
                                 numbers=np.full(n, 8613800000001, "<u8").tobytes())
    for timeout in (0.001, 0.005):
        assert h.code_of(stubs.suppression.CheckColumns, big, timeout=timeout) == \
            Code.DEADLINE_EXCEEDED
    which, numbers = np.zeros(n, np.uint32), np.full(n, 8613800000001, np.uint64)
    with pytest.raises(grpc.RpcError) as info:
        client.check_columns(["京东"], which, numbers, timeout=0.001)
    assert info.value.code() == Code.DEADLINE_EXCEEDED
    closed = h.recorded_client(main_server.target, fail_closed=True)
    try:
        assert (closed.check_columns(["京东"], which, numbers, timeout=0.001) == 255).all()
        assert closed.check("京东", "13800000009").scope == "NONE"
    finally:
        closed.close()
    # the server keeps serving, big calls included
    assert main_server.health() == h.SERVING
    request = pb.CheckRequest(sender="京东", number="13800000001")
    assert stubs.suppression.Check(request, timeout=T).scope == SENDER
    assert stubs.suppression.CheckColumns(big, timeout=30).scopes == bytes([SENDER]) * n
