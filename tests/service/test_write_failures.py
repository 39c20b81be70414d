"""Write failures over gRPC, on a real server whose disk really fails (SPEC §6): a full disk
(a tiny tmpfs where mounting is permitted, and a file-size limit set on the running process,
RLIMIT_FSIZE) answers RESOURCE_EXHAUSTED and writes go on once there is space; a failed fsync
(EIO from a preloaded shim) answers UNAVAILABLE and stops writes until a restart, while
checks go on. The same faults below the server are tests/crash/test_durability.py."""

from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path

import grpc
import pytest

from anning.testing import faults
from anning.testing import server as h
from anning.testing.server import NONE, SENDER, T, write_main_snapshot
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
SHOP = "京东"


def _opt_out(number: str) -> pb.OptOutRequest:
    return pb.OptOutRequest(number=number, scope=SHOP)


def _writes(s: h.Stubs, base: int) -> dict:
    """One call of every write method, on numbers from `base` on."""
    return {
        "OptOut": lambda: s.opt_outs.OptOut(_opt_out(str(base)), timeout=T),
        "OptIn": lambda: s.opt_outs.OptIn(_opt_out(str(base + 1)), timeout=T),
        "Reassign": lambda: s.opt_outs.Reassign(pb.ReassignRequest(number=str(base + 2)),
                                                timeout=T),
        "ReportReply": lambda: s.opt_outs.ReportReply(pb.ReplyRequest(
            sender=SHOP, number=str(base + 3), text="TD"), timeout=T),
        "WriteBatch": lambda: s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number=str(base + 10 + i), scope=SHOP)
            for i in range(300)]), timeout=T),  # ~20 KB: more than any page left over
    }


def _scope(s: h.Stubs, number: str) -> int:
    return s.suppression.Check(pb.CheckRequest(sender=SHOP, number=number), timeout=T).scope


def _wait(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what} within {timeout}s")
        time.sleep(0.05)


def _writes_ok_metric(server: h.Server) -> float:
    values = h.samples(h.metrics_text(server.metrics_port), "anning_writes_ok")
    return next(iter(values.values()))


def _last_segment(data: Path) -> Path:
    return max(data.glob("events-*.log"))


@pytest.mark.parametrize("how", ["tmpfs", "fsize"])
def test_a_full_disk_fails_writes_then_they_resume(tmp_path, how):
    data = tmp_path / "data"
    with contextlib.ExitStack() as stack:
        if how == "tmpfs" and not stack.enter_context(faults.tmpfs(data, 2 << 20)):
            pytest.skip("mounting a tmpfs is not permitted here (not root); fsize covers it")
        write_main_snapshot(data)
        server = h.Server(data, metrics=True, demo=False)
        with h.running(server), h.Stubs(server.target) as s:
            s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=[  # a log bigger than the
                pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number=str(13900000000 + i),
                              scope=SHOP) for i in range(1000)]), timeout=T)  # server's own
            acked = ["13900000000", "13900000999"]
            if how == "tmpfs":
                filler = faults.fill_up(data)
                # what is left of the log's last page still takes a few small writes
                for i in range(200):
                    number = str(13910000000 + i)
                    code = h.code_of(s.opt_outs.OptOut, _opt_out(number), timeout=T)
                    if code == Code.RESOURCE_EXHAUSTED:
                        break
                    assert code == Code.OK, code
                    acked.append(number)
                else:
                    raise AssertionError("200 writes fitted on a full tmpfs")
                failing = {"OptOut": lambda: s.opt_outs.OptOut(_opt_out(number), timeout=T),
                           "WriteBatch": _writes(s, 13920000000)["WriteBatch"]}
            else:  # not a byte more for the log: the process's file-size limit
                pid = server.proc.pid
                limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)
                resource.prlimit(pid, resource.RLIMIT_FSIZE,
                                 (_last_segment(data).stat().st_size, limits[1]))
                failing = _writes(s, 13920000000)
            size = _last_segment(data).stat().st_size
            for name, write in failing.items():
                for _ in range(2):  # and again while the disk is still full
                    exc = h.rpc_error(write)
                    assert exc.code() == Code.RESOURCE_EXHAUSTED, (name, exc.code())
                    assert "disk full" in exc.details() and "nothing written" in \
                        exc.details(), exc.details()
            assert _last_segment(data).stat().st_size == size  # cut back: nothing kept
            # a full disk fails only the write: nothing stops, nothing says unhealthy
            assert s.admin.Status(pb.StatusRequest(), timeout=T).writes_ok
            assert server.health("anning.v1.OptOuts") == h.SERVING
            time.sleep(0.3)  # the gauges are set every 0.25 s
            assert _writes_ok_metric(server) == 1
            assert [_scope(s, n) for n in acked] == [SENDER] * len(acked)
            assert _scope(s, "13920000000") == NONE  # the failed writes are not in force
            # space again
            if how == "tmpfs":
                filler.unlink()
            else:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
            for name, write in _writes(s, 13930000000).items():
                assert h.code_of(write) == Code.OK, name
            acked += ["13930000000", "13930000010", "13930000309"]
            assert [_scope(s, n) for n in acked] == [SENDER] * len(acked)
        # after a restart: what was acknowledged, and nothing of what was refused
        with h.running(server), h.Stubs(server.target) as s:
            assert [_scope(s, n) for n in acked] == [SENDER] * len(acked)
            assert _scope(s, "13920000000") == _scope(s, "13920000010") == NONE


def test_a_failed_fsync_stops_writes_and_checks_go_on(tmp_path):
    shim = faults.build_fsync_shim(tmp_path)
    if shim is None:
        pytest.skip("no C compiler for the fsync shim")
    flag = tmp_path / "fail-fsync"
    data = tmp_path / "data"
    write_main_snapshot(data)
    server = h.Server(data, metrics=True, demo=False,
                      env={"LD_PRELOAD": str(shim), faults.FAIL_FSYNC_ENV: str(flag)})
    with h.running(server), h.Stubs(server.target) as s:
        s.opt_outs.OptOut(_opt_out("13900000001"), timeout=T)
        flag.touch()  # the disk fails from now on
        exc = h.rpc_error(s.opt_outs.OptOut, _opt_out("13900000002"), timeout=T)
        assert exc.code() == Code.UNAVAILABLE and "writes stopped" in exc.details(), exc
        assert "fsync" in exc.details(), exc.details()
        flag.unlink()  # the disk works again, but a failed fsync is never retried
        for name, write in _writes(s, 13900000100).items():
            exc = h.rpc_error(write)
            assert exc.code() == Code.UNAVAILABLE and "writes stopped" in exc.details(), name
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert not status.writes_ok and "fsync" in status.writes_error, status
        _wait(lambda: server.health("anning.v1.OptOuts") == h.NOT_SERVING,
              "health of anning.v1.OptOuts NOT_SERVING")
        for service in ("", "anning.v1.Suppression", "anning.v1.Admin"):
            assert server.health(service) == h.SERVING, service
        _wait(lambda: _writes_ok_metric(server) == 0, "anning_writes_ok 0")
        # checks go on, with what was acknowledged
        assert _scope(s, "13900000001") == SENDER
        assert _scope(s, "13900000100") == NONE
        batch = s.suppression.CheckBatch(pb.CheckBatchRequest(checks=[
            pb.CheckRequest(sender=SHOP, number=n) for n in ("13900000001", "13900000100")]),
            timeout=T)
        assert [r.scope for r in batch.results] == [SENDER, NONE]
    assert "writes stopped until a restart" in server.output()
    with h.running(server), h.Stubs(server.target) as s:  # an operator restarts it
        assert s.admin.Status(pb.StatusRequest(), timeout=T).writes_ok
        assert server.health("anning.v1.OptOuts") == h.SERVING
        s.opt_outs.OptOut(_opt_out("13900000003"), timeout=T)
        assert _scope(s, "13900000001") == _scope(s, "13900000003") == SENDER
        assert _scope(s, "13900000101") == NONE
