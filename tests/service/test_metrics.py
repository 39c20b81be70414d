"""The server's metrics as exact deltas, on a server of this module's own: scrape, send a known
mix of checks through every RPC form (and the coalescing checker), scrape again: the checks
by scope, the errors by method and code (a bad item of a batch or a stream is an error of its
own, not a check that answered none), the calls per method, refusals +1 after a refused load,
and the snapshot's age against its real age."""

from __future__ import annotations

import time
from collections import Counter

import grpc
import numpy as np
import pytest

from anning import normalize_number
from anning.testing import server as h
from anning.testing.server import AS_OF_MS, CASES, T, metrics_text, samples
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
SCOPES = ("none", "sender", "entity", "global")
BAD = [("京东", "abc", ""), ("", "13800000001", ""), ("京东", "13800000001", "bogus")]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("metrics") / "data"
    h.write_main_snapshot(data)
    with h.running(h.Server(data, metrics=True, max_batch=64,
                            load_dirs=[data.parent])) as server:
        yield server


class Scrape:
    def __init__(self, port: int) -> None:
        self.text = metrics_text(port)
        self.checks = Counter({dict(k)["scope"]: v
                               for k, v in samples(self.text, "anning_checks_total").items()})
        self.errors = Counter({(dict(k)["method"], dict(k)["code"]): v
                               for k, v in samples(self.text, "anning_errors_total").items()})
        self.calls = Counter({dict(k)["method"]: v for k, v in
                              samples(self.text, "anning_request_seconds_count").items()})
        self.refusals = samples(self.text, "anning_snapshot_refusals_total").get((), 0.0)


def _delta(after: Counter, before: Counter) -> dict:
    return {k: after[k] - before[k] for k in after.keys() | before.keys()
            if after[k] != before[k]}


def _scopes(cases) -> Counter:
    return Counter(SCOPES[want] for *_, want in cases)


def test_check_counts_and_errors_are_exact(own_server):
    want_checks: Counter = Counter()
    want_errors: Counter = Counter()
    want_calls: Counter = Counter()
    before = Scrape(own_server.metrics_port)
    with h.Stubs(own_server.target) as s:
        # Check: every case, and each bad one answered INVALID_ARGUMENT
        for sender, number, category, want in CASES:
            got = s.suppression.Check(pb.CheckRequest(sender=sender, number=number,
                                                      category=category), timeout=T)
            assert got.scope == want
        for sender, number, category in BAD:
            assert h.code_of(s.suppression.Check, pb.CheckRequest(
                sender=sender, number=number, category=category), timeout=T) == \
                Code.INVALID_ARGUMENT
        want_checks += _scopes(CASES)
        want_errors[("Check", "INVALID_ARGUMENT")] += len(BAD)
        want_calls["Check"] += len(CASES) + len(BAD)

        # CheckBatch: the cases twice and the bad items in one batch; one batch over the limit
        items = [*CASES, *CASES] + [(*b, None) for b in BAD]
        request = pb.CheckBatchRequest(checks=[pb.CheckRequest(sender=a, number=b, category=c)
                                               for a, b, c, _ in items])
        results = s.suppression.CheckBatch(request, timeout=T).results
        assert sum(1 for r in results if r.error) == len(BAD)
        over = pb.CheckBatchRequest(checks=[pb.CheckRequest(sender="京东",
                                                            number="13800000001")] * 65)
        assert h.code_of(s.suppression.CheckBatch, over, timeout=T) == \
            Code.RESOURCE_EXHAUSTED
        want_checks += _scopes(CASES) + _scopes(CASES)
        want_errors[("CheckBatch", "INVALID_ARGUMENT")] += len(BAD)
        want_errors[("CheckBatch", "RESOURCE_EXHAUSTED")] += 1
        want_calls["CheckBatch"] += 2

        # CheckStream: the cases and the bad ones, one answer each
        stream = [pb.CheckRequest(sender=a, number=b, category=c) for a, b, c, _ in CASES]
        stream += [pb.CheckRequest(sender=a, number=b, category=c) for a, b, c in BAD]
        answers = list(s.suppression.CheckStream(iter(stream), timeout=T))
        assert [a.scope for a in answers[:len(CASES)]] == [w for *_, w in CASES]
        want_checks += _scopes(CASES)
        want_errors[("CheckStream", "INVALID_ARGUMENT")] += len(BAD)

        # CheckColumns: the cases of the default category, as E.164 numbers
        plain = [(a, b, w) for a, b, c, w in CASES if c == ""]
        senders = sorted({a for a, _, _ in plain})
        columns = pb.CheckColumnsRequest(
            senders=senders,
            sender_index=np.array([senders.index(a) for a, _, _ in plain], "<u4").tobytes(),
            numbers=np.array([normalize_number(b) for _, b, _ in plain], "<u8").tobytes())
        got = s.suppression.CheckColumns(columns, timeout=T)
        assert list(got.scopes) == [w for *_, w in plain]
        bad_columns = pb.CheckColumnsRequest(senders=["京东"], sender_index=b"\0\0\0\0",
                                             numbers=b"1234")
        assert h.code_of(s.suppression.CheckColumns, bad_columns, timeout=T) == \
            Code.INVALID_ARGUMENT
        want_checks += Counter(SCOPES[w] for *_, w in plain)
        want_errors[("CheckColumns", "INVALID_ARGUMENT")] += 1
        want_calls["CheckColumns"] += 2

        # CheckBatchStream: three messages, the bad items in the last
        messages = [pb.CheckBatchRequest(checks=request.checks[:len(CASES)]),
                    pb.CheckBatchRequest(checks=request.checks[len(CASES):])]
        answers = list(s.suppression.CheckBatchStream(iter(messages), timeout=T))
        assert len(answers) == 2
        want_checks += _scopes(CASES) + _scopes(CASES)
        want_errors[("CheckBatchStream", "INVALID_ARGUMENT")] += len(BAD)
        want_calls["CheckBatchStream"] += 2

    # the coalescing checker of the client: its checks count once each
    client = h.recorded_client(own_server.target, timeout=T)
    with client.checker(max_batch=64) as checker:
        for sender, number, category, want in CASES:
            assert checker.check(sender, number, category).scope == SCOPES[want].upper()
        want_checks += _scopes(CASES)
        want_calls["CheckBatchStream"] += checker.batches
    client.close()

    after = Scrape(own_server.metrics_port)
    assert _delta(after.checks, before.checks) == dict(want_checks)
    assert _delta(after.errors, before.errors) == dict(want_errors)
    assert _delta(after.calls, before.calls) == dict(want_calls)
    assert after.refusals == before.refusals


def test_refused_load_counts_once(own_server):
    small = own_server.data.parent / "small.csv"  # one row: the list would shrink from 6 to 1
    small.write_text("number,sender\n13800000001,京东\n", encoding="utf-8")
    before = Scrape(own_server.metrics_port)
    with h.Stubs(own_server.target) as s:
        exc = h.rpc_error(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(paths=[str(small)]),
                          timeout=60)
        assert exc.code() == Code.FAILED_PRECONDITION and "shrink" in exc.details()
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert "shrink" in status.last_refusal
    after = Scrape(own_server.metrics_port)
    assert after.refusals == before.refusals + 1
    assert _delta(after.errors, before.errors) == {("LoadSnapshot", "FAILED_PRECONDITION"): 1}
    assert _delta(after.checks, before.checks) == {}


def test_gauges_say_what_is_served(own_server):
    """Entries as loaded, the snapshot's age as its real age (the gauges are refreshed four
    times a second), writes ok."""
    deadline = time.monotonic() + 5
    while True:
        scrape = Scrape(own_server.metrics_port)
        age = samples(scrape.text, "anning_snapshot_age_seconds").get(())
        real = time.time() - AS_OF_MS / 1000
        if (age is not None and abs(age - real) < 1.0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert age is not None and abs(age - real) < 1.0, (age, real)
    assert samples(scrape.text, "anning_entries") == {(): len(h.SNAPSHOT)}
    assert samples(scrape.text, "anning_writes_ok") == {(): 1.0}
