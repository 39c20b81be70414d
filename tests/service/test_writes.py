"""Writes over the wire: OptOut, OptIn, ReportReply, Explain; reflection; a client
failing closed when the server is down."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from anning.testing import server as h
from anning.testing.server import (
    AS_OF_MS,
    ENTITY,
    GLOBAL,
    NONE,
    NOW_MS,
    SENDER,
    T,
)
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


# -- writes, replies, explain ------------------------------------------------------------------


def test_opt_out_opt_in_and_explain(stubs, client):
    number, e164 = "13900000010", 8613900000010
    at = NOW_MS - 60_000
    ack = client.opt_out(number, "entity:京东集团", "all", at_ms=at, source="customer_service")
    assert ack.sequence > 0 and ack.at_ms == at
    assert client.check("京东超市", number).scope == "ENTITY"
    assert client.check("京东", number, "notification").scope == "ENTITY"
    assert client.check("淘宝", number).scope == "NONE"
    why = client.explain("京东", number)
    assert (why.suppressed, why.scope, why.matched) == (True, ENTITY, "entity:京东集团")
    assert list(why.categories) == ["marketing", "notification"]
    assert (why.origin, why.source, why.at_ms) == ("event", "customer_service", at)
    assert why.snapshot_as_of == h.iso(AS_OF_MS)
    # an opt-in of marketing only, later: a tombstone for that category alone
    back = client.opt_in(number, "entity:京东集团", "marketing", at_ms=at + 1)
    assert back.sequence > ack.sequence and back.at_ms == at + 1
    assert client.check("京东", number).scope == "NONE"
    assert client.check("京东", number, "notification").scope == "ENTITY"
    # an older opt-out arriving late does not undo the newer opt-in
    late = client.opt_out(number, "entity:京东集团", at_ms=at - 10_000, source="regulator")
    assert late.sequence > back.sequence
    assert client.check("京东", number).scope == "NONE"
    assert client.check_batch([("京东", number)])[0].scope == "NONE"
    assert client.check_columns(["京东"], np.zeros(1, np.uint32),
                                np.array([e164], np.uint64)).tolist() == [NONE]
    assert client.explain("京东", number).suppressed is False
    # a snapshot entry opted back in by a newer event
    assert client.check("京东", "13800000006").scope == "SENDER"
    client.opt_in("13800000006", "【京东】")
    assert client.check("京东", "13800000006").scope == "NONE"
    assert client.check_batch([("京东", "13800000006")])[0].scope == "NONE"


def test_explain_snapshot_origin(client):
    why = client.explain("京东超市", "13800000002", "notification")
    assert (why.suppressed, why.scope, why.matched, why.origin) == \
        (True, ENTITY, "entity:京东集团", "snapshot")
    assert list(why.categories) == ["marketing", "notification"]
    assert why.snapshot_as_of == h.iso(AS_OF_MS)
    glob = client.explain("someone", "+8613800000003")
    assert (glob.scope, glob.matched, list(glob.categories), glob.origin) == \
        (GLOBAL, "*", ["marketing"], "snapshot")
    sender = client.explain("【京东】", "13800000001")
    assert (sender.scope, sender.matched, sender.origin) == (SENDER, "京东", "snapshot")
    nothing = client.explain("京东", "13800000009")
    assert (nothing.suppressed, nothing.scope, nothing.matched, nothing.origin) == \
        (False, NONE, "", "")


def test_opt_out_of_a_sender_the_list_does_not_know(stubs, client):
    """Real-time opt-outs against senders (and entities) absent from the snapshot are seen by
    every form of check, not by Check alone (no false negative, SPEC §2)."""
    client.opt_out("13900000030", "新商家")
    client.opt_out("13900000031", "【新商家】", "notification")
    checks = [("新商家", "13900000030", ""), ("【新商家】", "13900000031", "notification"),
              ("别家", "13900000030", ""), ("新商家", "13900000031", "")]
    want = [SENDER, SENDER, NONE, NONE]
    assert [stubs.suppression.Check(pb.CheckRequest(sender=s, number=n, category=c),
                                    timeout=T).scope for s, n, c in checks] == want
    batch = stubs.suppression.CheckBatch(pb.CheckBatchRequest(checks=[
        pb.CheckRequest(sender=s, number=n, category=c) for s, n, c in checks]), timeout=T)
    assert [r.scope for r in batch.results] == want
    for category in ("", "notification"):
        rows = [(s, n) for s, n, c in checks if c == category]
        got = client.check_columns([s for s, _ in rows], np.arange(len(rows), dtype=np.uint32),
                                   np.array([86 * 10**11 + int(n) for _, n in rows], np.uint64),
                                   category)
        assert got.tolist() == [w for w, (_, _, c) in zip(want, checks, strict=True)
                                if c == category]
    stream = list(stubs.suppression.CheckStream(iter([
        pb.CheckRequest(sender=s, number=n, category=c) for s, n, c in checks]), timeout=T))
    assert [r.scope for r in stream] == want


def test_report_reply(stubs, client):
    r = client.report_reply("【京东超市】", "13900000020", "退订谢谢")
    assert (r.recognised, r.action, r.scope, r.keyword) == (True, "opt_out", "entity:京东集团",
                                                            "退订")
    assert r.ack.sequence > 0 and abs(r.ack.at_ms - time.time() * 1000) < 60_000
    # the merchant's other signature stops too; another merchant does not
    assert client.check("【京东】", "13900000020").scope == "ENTITY"
    assert client.check("淘宝", "13900000020").scope == "NONE"
    assert client.check_batch([("京东", "13900000020")])[0].scope == "ENTITY"
    r = client.report_reply("淘宝", "13900000021", "TD!")
    assert (r.recognised, r.scope) == (True, "entity:阿里巴巴")
    r = client.report_reply("无名小店", "13900000022", "Stop. Thank you")
    assert (r.recognised, r.action, r.scope) == (True, "opt_out", "无名小店")
    assert client.check("无名小店", "13900000022").scope == "SENDER"
    assert client.check_batch([("无名小店", "13900000022")])[0].scope == "SENDER"
    assert client.check("京东", "13900000022").scope == "NONE"
    # free text: unrecognised, nothing written, nothing changes
    events = client.status().events
    r = client.report_reply("京东", "13900000023", "不要退订")
    assert (r.recognised, r.action, r.scope, r.keyword) == (False, "none", "", "")
    assert r.ack.sequence == 0
    assert client.status().events == events
    assert client.check("京东", "13900000023").scope == "NONE"
    r = client.report_reply("【京东超市】", "13900000020", "不要退订")
    assert not r.recognised and client.check("京东", "13900000020").scope == "ENTITY"
    # opting back in by reply, and a global opt-out by reply
    r = client.report_reply("京东超市", "13900000020", "START", at_ms=int(time.time() * 1000)
                            + 1000)
    assert (r.recognised, r.action, r.scope) == (True, "opt_in", "entity:京东集团")
    assert client.check("京东", "13900000020").scope == "NONE"
    r = client.report_reply("京东", "13900000024", "全部退订")
    assert r.recognised and r.scope == "*" and r.keyword == "全部退订"
    assert client.check("anyone", "13900000024").scope == "GLOBAL"


# -- reflection ---------------------------------------------------------------------------------


def test_reflection_generic_client(main_server):
    with grpc.insecure_channel(main_server.target) as ch:
        database = ProtoReflectionDescriptorDatabase(ch)
        services = set(database.get_services())
        assert {"anning.v1.Suppression", "anning.v1.OptOuts", "anning.v1.Admin",
                "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("anning.v1.Suppression")
        assert set(service.methods_by_name) == {"Check", "CheckBatch", "CheckStream",
                                                "CheckColumns", "CheckBatchStream"}
        method = service.methods_by_name["Check"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
    with h.Stubs(main_server.target) as s:
        call = s.channel.unary_unary(f"/{service.full_name}/{method.name}",
                                     request_serializer=request_class.SerializeToString,
                                     response_deserializer=response_class.FromString)
        answer = call(request_class(sender="【京东】", number="13800000001"), timeout=T)
        scope = pool.FindEnumTypeByName("anning.v1.Scope")
        assert answer.suppressed and answer.scope == scope.values_by_name["SCOPE_SENDER"].number
        with pytest.raises(grpc.RpcError) as info:
            call(request_class(sender="京东", number="abc"), timeout=T)
        assert info.value.code() == Code.INVALID_ARGUMENT


# -- failing closed ----------------------------------------------------------------------------


def test_fail_closed_when_the_server_is_down():
    target = f"127.0.0.1:{h.free_port()}"  # nothing listens there
    closed = h.recorded_client(target, fail_closed=True, timeout=0.5, backoff=0.01)
    try:
        result = closed.check("京东", "13800000001")
        assert result.suppressed and result.failed_closed and result.scope == "UNKNOWN"
        assert all(r.suppressed and r.failed_closed
                   for r in closed.check_batch([("京东", "13800000001")] * 3))
        assert closed.check_columns(["京东"], np.zeros(2, np.uint32),
                                    np.full(2, 8613800000001, np.uint64)).tolist() == [255, 255]
    finally:
        closed.close()
    open_ = h.recorded_client(target, timeout=0.5, backoff=0.01)
    try:
        with pytest.raises(grpc.RpcError) as info:
            open_.check("京东", "13800000001")
        assert info.value.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
    finally:
        open_.close()
