"""Access: bearer tokens and roles, every method against every principal."""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from anning.server.auth import new_token, required_role
from anning.testing import server as h
from anning.testing.server import (
    SNAPSHOT,
    T,
    write_main_snapshot,
)
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


# -- access ------------------------------------------------------------------------------------

METHOD_ROLES = {  # the roles a method takes (any one will do); None: open
    "/anning.v1.Suppression/Check": ("check",),
    "/anning.v1.Suppression/CheckBatch": ("check",),
    "/anning.v1.Suppression/CheckStream": ("check",),
    "/anning.v1.Suppression/CheckColumns": ("check",),
    "/anning.v1.Suppression/CheckBatchStream": ("check",),
    "/anning.v1.OptOuts/Explain": ("check",),
    "/anning.v1.OptOuts/OptOut": ("write",),
    "/anning.v1.OptOuts/OptIn": ("write",),
    "/anning.v1.OptOuts/Reassign": ("write",),
    "/anning.v1.OptOuts/WriteBatch": ("write",),
    "/anning.v1.OptOuts/ReportReply": ("write",),
    "/anning.v1.OptOuts/Changes": ("write", "admin"),
    "/anning.v1.Admin/LoadSnapshot": ("admin",),
    "/anning.v1.Admin/Status": ("admin",),
    "/grpc.health.v1.Health/Check": None,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
}
PRINCIPALS = {  # name -> roles (None: no token, or one the server does not know)
    "no token": None, "wrong token": None, "check": {"check"}, "write": {"write"},
    "admin": {"admin"}, "check,write": {"check", "write"},
}


def test_roles_of_methods():
    assert {m: required_role(m) for m in METHOD_ROLES} == METHOD_ROLES


def test_the_matrix_covers_every_method():
    """The expected roles above are written out by hand, apart from the server's table; this
    makes sure a method the contract gains cannot be left out of them (and of the matrix)."""
    services = [pb.DESCRIPTOR.services_by_name[s] for s in ("Suppression", "OptOuts", "Admin")]
    declared = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert declared == {m for m in METHOD_ROLES if m.startswith("/anning.")}


def _cli_token(roles: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "anning.cli", "token", "new", "--roles", roles],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    token = re.search(r"token \(give it to the client, once\): (\S+)", out).group(1)
    line = re.search(r"tokens-file line \(the server keeps only this\): (.+)", out).group(1)
    return token, line.strip()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    data = root / "data"
    write_main_snapshot(data)
    tokens, lines = {}, ["# anning tokens"]
    for name in ("check", "admin"):
        tokens[name], line = _cli_token(name)
        lines.append(line)
    for name in ("write", "check,write"):
        tokens[name], line = new_token(name.split(","))
        lines.append(line)
    tokens["wrong token"] = new_token(["admin"])[0]  # never written to the file
    (root / "tokens").write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv = root / "list.csv"
    csv.write_text("number,sender,category\n" + "".join(
        f"{n},{s},{c}\n" for n, s, c in SNAPSHOT), encoding="utf-8")
    server = h.Server(data, tokens=root / "tokens", reflection=True, load_dirs=[root])
    server.tokens = tokens
    server.csv = str(csv)
    with h.running(server):
        yield server


def _calls(s: h.Stubs, csv: str) -> dict:
    md = s.metadata
    check = pb.CheckRequest(sender="京东", number="13800000001")
    write = pb.OptOutRequest(number="13900000050", scope="京东")
    reflection = reflection_pb2_grpc.ServerReflectionStub(s.channel)
    return {
        "/anning.v1.Suppression/Check": lambda: s.suppression.Check(check, timeout=T,
                                                                    metadata=md),
        "/anning.v1.Suppression/CheckBatch": lambda: s.suppression.CheckBatch(
            pb.CheckBatchRequest(checks=[check]), timeout=T, metadata=md),
        "/anning.v1.Suppression/CheckStream": lambda: list(s.suppression.CheckStream(
            iter([check, check]), timeout=T, metadata=md)),
        "/anning.v1.Suppression/CheckColumns": lambda: s.suppression.CheckColumns(
            pb.CheckColumnsRequest(senders=["京东"], sender_index=bytes(4),
                                   numbers=np.array([8613800000001], "<u8").tobytes()),
            timeout=T, metadata=md),
        "/anning.v1.Suppression/CheckBatchStream": lambda: list(
            s.suppression.CheckBatchStream(iter([pb.CheckBatchRequest(checks=[check])]),
                                           timeout=T, metadata=md)),
        "/anning.v1.OptOuts/Explain": lambda: s.opt_outs.Explain(check, timeout=T, metadata=md),
        "/anning.v1.OptOuts/OptOut": lambda: s.opt_outs.OptOut(write, timeout=T, metadata=md),
        "/anning.v1.OptOuts/OptIn": lambda: s.opt_outs.OptIn(write, timeout=T, metadata=md),
        "/anning.v1.OptOuts/ReportReply": lambda: s.opt_outs.ReportReply(pb.ReplyRequest(
            sender="京东", number="13900000051", text="TD"), timeout=T, metadata=md),
        "/anning.v1.OptOuts/Reassign": lambda: s.opt_outs.Reassign(pb.ReassignRequest(
            number="13900000052"), timeout=T, metadata=md),
        "/anning.v1.OptOuts/WriteBatch": lambda: s.opt_outs.WriteBatch(pb.WriteBatchRequest(
            events=[pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number="13900000053",
                                  scope="京东")]), timeout=T, metadata=md),
        "/anning.v1.OptOuts/Changes": lambda: list(s.opt_outs.Changes(pb.ChangesRequest(
            since=0, until=1), timeout=T, metadata=md)),
        "/anning.v1.Admin/LoadSnapshot": lambda: s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
            paths=[csv], allow_shrink=True), timeout=60, metadata=md),
        "/anning.v1.Admin/Status": lambda: s.admin.Status(pb.StatusRequest(), timeout=T,
                                                          metadata=md),
        "/grpc.health.v1.Health/Check": lambda: s.health.Check(
            health_pb2.HealthCheckRequest(), timeout=T, metadata=md),
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": lambda: list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")]), timeout=T, metadata=md)),
    }


@pytest.mark.parametrize("principal", list(PRINCIPALS))
def test_auth_matrix(auth_server, principal):
    token = auth_server.tokens.get(principal)
    granted = PRINCIPALS[principal]
    with h.Stubs(auth_server.target, token) as s:
        calls = _calls(s, auth_server.csv)
        assert set(calls) == set(METHOD_ROLES)
        got, want = {}, {}
        for method, call in calls.items():
            role = METHOD_ROLES[method]
            if role is None:
                want[method] = Code.OK
            elif granted is None:
                want[method] = Code.UNAUTHENTICATED
            else:
                want[method] = Code.PERMISSION_DENIED if granted.isdisjoint(role) else Code.OK
            got[method] = h.code_of(call)
        assert got == want


def test_auth_header_forms(auth_server):
    check = pb.CheckRequest(sender="京东", number="13800000001")
    token = auth_server.tokens["check"]
    with h.Stubs(auth_server.target) as s:
        for value, code in ((f"Basic {token}", Code.UNAUTHENTICATED),
                            ("Bearer ", Code.UNAUTHENTICATED),
                            (f"bearer {token}", Code.OK),
                            (f"Bearer {token[:-1]}", Code.UNAUTHENTICATED)):
            assert h.code_of(s.suppression.Check, check, timeout=T,
                             metadata=(("authorization", value),)) == code, value
    c = h.recorded_client(auth_server.target, token, timeout=T)
    try:
        assert c.check("京东", "13800000001").scope == "SENDER"
        with pytest.raises(grpc.RpcError) as info:
            c.status()
        assert info.value.code() == Code.PERMISSION_DENIED
        assert "admin" in info.value.details()
    finally:
        c.close()
    closed = h.recorded_client(auth_server.target, "not-a-token", fail_closed=True, timeout=T)
    try:  # a wrong token is the caller's mistake: raised, not hidden behind fail-closed
        with pytest.raises(grpc.RpcError) as info:
            closed.check("京东", "13800000001")
        assert info.value.code() == Code.UNAUTHENTICATED
        for transport in ("stream", "unary"):  # and so do the coalescing checkers
            with closed.checker(transport=transport) as checker, \
                    pytest.raises(grpc.RpcError) as info:
                checker.check("京东", "13800000001")
            assert info.value.code() == Code.UNAUTHENTICATED, transport
    finally:
        closed.close()
