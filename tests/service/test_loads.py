"""Not ready until a list is loaded (UNAVAILABLE, never "not suppressed"); Admin.LoadSnapshot
and batches answered whole through snapshot swaps."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest

from anning.testing import server as h
from anning.testing.server import (
    ENTITY,
    GLOBAL,
    NONE,
    SENDER,
    T,
)
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


# -- not ready, snapshot loads -----------------------------------------------------------------

FILLER = [f"{13700000000 + j},f{j % 10},marketing" for j in range(100)]


def _csv(path: Path, rows: list[str], header: str = "number,sender,category") -> str:
    path.write_text("\n".join([header, *FILLER, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("empty") / "data"
    # the tests' files are in their own temporary directories, all under the base one
    server = h.Server(data, demo=False, load_dirs=[tmp_path_factory.getbasetemp()])
    with h.running(server, h.NOT_SERVING):
        yield server


def test_not_ready_then_loaded(empty_server, tmp_path):
    server = empty_server
    s = h.Stubs(server.target)
    try:
        assert server.first_health == h.NOT_SERVING  # from its very first answer
        for service in ("", "anning.v1.Suppression", "anning.v1.OptOuts", "anning.v1.Admin"):
            assert server.health(service) == h.NOT_SERVING, service
        request = pb.CheckRequest(sender="shop", number="13600000001")
        unavailable = {
            "Check": lambda: s.suppression.Check(request, timeout=T),
            "CheckBatch": lambda: s.suppression.CheckBatch(pb.CheckBatchRequest(
                checks=[request]), timeout=T),
            "CheckStream": lambda: list(s.suppression.CheckStream(iter([request]), timeout=T)),
            "CheckColumns": lambda: s.suppression.CheckColumns(pb.CheckColumnsRequest(
                senders=["shop"], sender_index=bytes(4),
                numbers=np.array([8613600000001], "<u8").tobytes()), timeout=T),
            "Explain": lambda: s.opt_outs.Explain(request, timeout=T),
        }
        for name, call in unavailable.items():
            exc = h.rpc_error(call)
            assert exc.code() == Code.UNAVAILABLE and "not ready" in exc.details(), name
        assert not s.admin.Status(pb.StatusRequest(), timeout=T).ready
        closed = h.recorded_client(server.target, fail_closed=True, timeout=0.3)
        try:
            assert closed.check("shop", "13600000001").failed_closed
            assert all(r.failed_closed for r in closed.check_batch([("shop", "13600000009")]))
        finally:
            closed.close()
        # writes are taken before the list: both stay in force through the load, which is
        # silent on them, whatever their times (SPEC §4-§5)
        now = int(time.time() * 1000)
        s.opt_outs.OptOut(pb.OptOutRequest(number="13600000009", scope="shop", at_ms=now),
                          timeout=T)
        s.opt_outs.OptOut(pb.OptOutRequest(number="13600000008", scope="shop",
                                           at_ms=now - 3 * 3_600_000), timeout=T)
        assert server.health() == h.NOT_SERVING

        entities = tmp_path / "entities.csv"
        entities.write_text("sender,entity\nshop,grp\nshop2,grp\n", encoding="utf-8")
        first = _csv(tmp_path / "a.csv", ["13600000001,shop,marketing",
                                          "13600000002,entity:grp,all",
                                          "13600000003,*,marketing"])
        as_of_a = h.iso(now - 2 * 3_600_000)
        report = s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
            paths=[first], entities=str(entities), as_of=as_of_a), timeout=60)
        assert (report.rows, report.loaded, report.rejected, report.refused) == (103, 103, 0, "")
        # the list's rows and the two events taken before it, folded in
        assert (report.entries_after, report.entries_before, report.events_folded) == (105, 0, 2)
        assert datetime.fromisoformat(report.as_of) == datetime.fromisoformat(as_of_a)
        server.wait_health(h.SERVING, timeout=10)
        check = s.suppression.Check
        assert check(request, timeout=T).scope == SENDER
        assert check(pb.CheckRequest(sender="shop2", number="13600000002"),
                     timeout=T).scope == ENTITY
        assert check(pb.CheckRequest(sender="x", number="13600000003"), timeout=T).scope == GLOBAL
        assert check(pb.CheckRequest(sender="shop", number="13600000009"),
                     timeout=T).scope == SENDER
        assert check(pb.CheckRequest(sender="shop", number="13600000008"),
                     timeout=T).scope == SENDER
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert status.ready and status.entries == 105 and not status.last_refusal
        assert (status.last_sequence, status.events_through, status.folded_through,
                status.feed_lag) == (2, 0, 2, 2)

        # a second list swaps in; the newer real-time opt-out stays on top
        second = _csv(tmp_path / "b.csv", ["13500000001,shop,marketing",
                                           "13600000003,*,marketing"])
        report = s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
            paths=[second], entities=str(entities), as_of=h.iso(now - 3_600_000)), timeout=60)
        assert report.entries_before == 105 and report.entries_after == 104
        assert check(pb.CheckRequest(sender="shop", number="13500000001"),
                     timeout=T).scope == SENDER
        assert check(request, timeout=T).scope == NONE
        assert check(pb.CheckRequest(sender="shop", number="13600000009"),
                     timeout=T).scope == SENDER

        # refused loads: FAILED_PRECONDITION with the reason, the old list still served
        bad_rows = _csv(tmp_path / "c.csv", [f"abc{i},shop,marketing" for i in range(10)])
        exc = h.rpc_error(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(paths=[bad_rows]),
                          timeout=60)
        assert exc.code() == Code.FAILED_PRECONDITION, (exc.code(), exc.details())
        assert "10 of 110 rows rejected" in exc.details(), exc.details()
        small = tmp_path / "d.csv"
        small.write_text("number,sender\n13400000001,shop\n", encoding="utf-8")
        exc = h.rpc_error(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(paths=[str(small)]),
                          timeout=60)
        assert exc.code() == Code.FAILED_PRECONDITION and "shrink" in exc.details()
        exc = h.rpc_error(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(
            paths=[str(tmp_path / "missing.csv")]), timeout=60)
        assert exc.code() == Code.FAILED_PRECONDITION and "missing.csv" in exc.details()
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert status.entries == 104 and "missing.csv" in status.last_refusal
        assert check(pb.CheckRequest(sender="shop", number="13500000001"),
                     timeout=T).scope == SENDER
        assert check(pb.CheckRequest(sender="shop", number="13400000001"),
                     timeout=T).scope == NONE
        assert server.health() == h.SERVING
    finally:
        s.close()


def test_batches_during_snapshot_swaps(tmp_path):
    """Two lists whose sender tables run in opposite orders, swapped again and again by
    Admin.LoadSnapshot while CheckBatch and CheckColumns run: every batch is answered from one
    whole list (sender ids of one list never meet the other), so a sender's own opt-out,
    present in both lists, is always found."""
    senders = [f"shop{k}" for k in range(20)]
    sentinels = [13500000000 + k for k in range(20)]
    paths = []
    for name, order in (("a", senders), ("b", senders[::-1])):
        rows = [f"{13700000000 + j},{order[j % 20]}" for j in range(400)]  # the table's order
        rows += [f"{n},{s}" for n, s in zip(sentinels, senders, strict=True)]
        path = tmp_path / f"{name}.csv"
        path.write_text("number,sender\n" + "\n".join(rows) + "\n", encoding="utf-8")
        paths.append(str(path))
    server = h.Server(tmp_path / "data", demo=False, load_dirs=[tmp_path])
    stop = threading.Event()
    wrong: list = []
    counts = [0, 0]

    def batches() -> None:
        request = pb.CheckBatchRequest(checks=[
            pb.CheckRequest(sender=senders[i % 20], number=str(sentinels[i % 20]))
            for i in range(4000)])
        with h.Stubs(server.target) as s:
            while not stop.is_set():
                got = [r.scope for r in s.suppression.CheckBatch(request, timeout=T).results]
                if got != [SENDER] * 4000:
                    wrong.append(("CheckBatch", got.count(SENDER)))
                counts[0] += 1

    def columns() -> None:
        which = np.arange(4000, dtype=np.uint32) % 20
        numbers = np.array([86 * 10**11 + n for n in sentinels], np.uint64)[which]
        with h.Stubs(server.target) as s:
            while not stop.is_set():
                got = s.suppression.CheckColumns(pb.CheckColumnsRequest(
                    senders=senders, sender_index=which.astype("<u4").tobytes(),
                    numbers=numbers.astype("<u8").tobytes()), timeout=T).scopes
                if got != bytes([SENDER]) * 4000:
                    wrong.append(("CheckColumns", got.count(SENDER)))
                counts[1] += 1

    with h.running(server, h.NOT_SERVING), h.Stubs(server.target) as s:
        s.admin.LoadSnapshot(pb.LoadSnapshotRequest(paths=paths[:1]), timeout=60)
        server.wait_health(h.SERVING, timeout=10)
        threads = [threading.Thread(target=f) for f in (batches, batches, columns)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 2.0
            swaps = 0
            while time.monotonic() < deadline and not wrong:
                swaps += 1
                s.admin.LoadSnapshot(pb.LoadSnapshotRequest(paths=[paths[swaps % 2]]),
                                     timeout=60)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not wrong, wrong[:5]
    assert swaps > 10 and min(counts) > 10, (swaps, counts)
