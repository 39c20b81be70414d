"""Clients that batch by themselves, against a real server: CheckBatchStream on the wire, and
the coalescing checkers (`Client.checker()` from many threads, `anning.aio` from many tasks),
whose every answer must be the one unary Check gives, every error its own caller's, and whose
callers each fail closed (or get the client's error) when the server is down."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import grpc
import numpy as np
import pytest

from anning import aio
from anning.client import FAILED_CLOSED, CheckError, Client
from anning.testing import server as h
from anning.testing.server import CASES, T
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
BAD = [  # (sender, number, category): each one a caller's own error
    ("京东", "abc", ""),
    ("", "13800000001", ""),
    ("京东", "13800000001", "bogus"),
    ("京东", "", ""),
    ("x" * 65, "13800000001", ""),
    ("京东", "+", ""),
]
ITEMS = [(s, n, c) for s, n, c, _ in CASES] + BAD
TRANSPORTS = ["stream", "unary"]


def _unary(client, sender, number, category):
    """What unary Check answers: ('ok', CheckResult) or ('error', code, details)."""
    try:
        return ("ok", client.check(sender, number, category))
    except grpc.RpcError as exc:
        return ("error", exc.code(), exc.details())


def _coalesced(check, sender, number, category):
    try:
        return ("ok", check(sender, number, category))
    except CheckError as exc:
        return ("error", exc.code(), exc.details())


@pytest.fixture(scope="module")
def truth(client):
    """The unary answer to every item (the server's list does not change in this module)."""
    want = {item: _unary(client, *item) for item in ITEMS}
    assert sum(w[0] == "error" for w in want.values()) == len(BAD)
    assert any(w[0] == "ok" and w[1].suppressed for w in want.values())
    return want


# -- CheckBatchStream on the wire --------------------------------------------------------------


def test_check_batch_stream_answers_as_check_batch(stubs):
    rng = np.random.default_rng(3)
    requests = []
    for size in (1, 5, 64, 17, 0, 64):
        picks = rng.integers(0, len(ITEMS), size)
        requests.append(pb.CheckBatchRequest(checks=[
            pb.CheckRequest(sender=ITEMS[k][0], number=ITEMS[k][1], category=ITEMS[k][2])
            for k in picks]))
    answers = list(stubs.suppression.CheckBatchStream(iter(requests), timeout=T))
    assert len(answers) == len(requests)
    for request, got in zip(requests, answers, strict=True):
        assert got == stubs.suppression.CheckBatch(request, timeout=T)
        assert len(got.results) == len(request.checks)
    assert any(r.error for a in answers for r in a.results)
    assert any(r.suppressed for a in answers for r in a.results)


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x0a\xff\xff\xff\xff\x0f", Code.INVALID_ARGUMENT),
    (b"\xff", Code.INVALID_ARGUMENT),
    (pb.CheckBatchRequest(checks=[pb.CheckRequest(sender="京东", number="13800000001")] * 65)
     .SerializeToString(), Code.RESOURCE_EXHAUSTED),  # the server's --max-batch is 64
])
def test_check_batch_stream_ends_on_a_message_it_cannot_take(main_server, payload, code):
    good = pb.CheckBatchRequest(checks=[pb.CheckRequest(sender="京东", number="13800000001")])
    with h.Stubs(main_server.target) as s:
        call = s.channel.stream_stream("/anning.v1.Suppression/CheckBatchStream")
        responses = call(iter([good.SerializeToString(), payload,
                               good.SerializeToString()]), timeout=T)
        first = pb.CheckBatchResponse.FromString(next(responses))
        assert [r.scope for r in first.results] == [pb.SCOPE_SENDER]
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        assert info.value.code() == code, info.value.details()


# -- the checker of threads --------------------------------------------------------------------


def _threads(count: int, work) -> list:
    out: list = [None] * count
    errors: list = []

    def run(k: int) -> None:
        try:
            out[k] = work(k)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("max_batch", "depth"), [(64, 4), (8, 1)])
def test_checker_from_many_threads_answers_as_check(main_server, truth, transport, max_batch,
                                                    depth):
    client = h.recorded_client(main_server.target, timeout=T)
    checker = client.checker(max_batch=max_batch, depth=depth, transport=transport)
    rounds = 40

    def work(k: int) -> list:
        rng = np.random.default_rng(k)
        picks = [ITEMS[i] for i in rng.integers(0, len(ITEMS), rounds)]
        return [(item, _coalesced(checker.check, *item)) for item in picks]

    try:
        answers = [a for per_thread in _threads(64, work) for a in per_thread]
        assert len(answers) == 64 * rounds
        for item, got in answers:
            assert got == truth[item], item
        assert checker.checks == 64 * rounds
        assert checker.batches < checker.checks  # they were coalesced
        assert max(1, checker.checks // checker.batches) <= max_batch
    finally:
        checker.close()
        client.close()


def test_checker_alone_and_after_close(client, truth):
    with client.checker() as checker:  # one thread: every check its own batch, no wait
        for item in ITEMS:
            assert _coalesced(checker.check, *item) == truth[item]
        assert checker.batches == checker.checks == len(ITEMS)
    with pytest.raises(CheckError) as info:
        checker.check("京东", "13800000001")
    assert info.value.code() == Code.CANCELLED


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checker_errors_are_each_callers_own(client, truth, transport):
    """A caller's value that cannot even be sent fails that caller alone."""
    checker = client.checker(transport=transport, linger=0.05)
    calls = [("京东", "13800000001", ""), ("京\ud800东", "13800000001", ""),
             (None, "13800000001", ""), ("京东", 8613800000001, ""),
             ("京东", 13.5, ""), ("京东", "13800000001", None), ("京东", "abc", "")]
    got = _threads(len(calls), lambda k: _coalesced(checker.check, *calls[k]))
    checker.close()
    assert got[0] == got[3] == ("ok", client.check("京东", "13800000001"))
    assert got[0][1].scope == "SENDER"
    for k, field in ((1, "sender"), (2, "sender"), (4, "number"), (5, "category")):
        assert got[k][:2] == ("error", Code.INVALID_ARGUMENT), got[k]
        assert got[k][2].startswith(f"{field}: "), got[k]
    assert got[6] == truth[("京东", "abc", "")]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fail_closed", [True, False])
def test_checker_with_the_server_down(transport, fail_closed):
    target = f"127.0.0.1:{h.free_port()}"  # nothing listens there
    client = h.recorded_client(target, fail_closed=fail_closed, timeout=0.5, backoff=0.01)
    checker = client.checker(transport=transport)

    def work(k: int):
        try:
            return checker.check("京东", f"1380000{k:04d}")
        except CheckError as exc:
            return exc

    got = _threads(32, work)
    checker.close()
    client.close()
    if fail_closed:
        assert all(answer == FAILED_CLOSED for answer in got), got
    else:
        for exc in got:
            assert isinstance(exc, CheckError), exc
            assert exc.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED), exc
        assert len({id(exc) for exc in got}) == len(got)  # each caller its own exception


# -- the asyncio client ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_aio_checker_from_many_tasks_answers_as_check(main_server, truth, transport):
    async def main() -> None:
        async with aio.Client(main_server.target, timeout=T) as client:
            for item in ITEMS[:4]:  # the client's own unary check answers alike
                try:
                    got = ("ok", await client.check(*item))
                except grpc.RpcError as exc:
                    got = ("error", exc.code(), exc.details())
                assert got == truth[item]
            checker = client.checker(max_batch=64, transport=transport)
            rng = np.random.default_rng(11)
            picks = [ITEMS[i] for i in rng.integers(0, len(ITEMS), 3000)]

            async def one(item):
                try:
                    return ("ok", await checker.check(*item))
                except CheckError as exc:
                    return ("error", exc.code(), exc.details())

            answers = await asyncio.gather(*(one(item) for item in picks))
            await checker.close()
            for item, got in zip(picks, answers, strict=True):
                assert got == truth[item], item
            assert checker.batches >= 3000 // 64 and checker.batches < 3000 // 8

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fail_closed", [True, False])
def test_aio_checker_with_the_server_down(transport, fail_closed):
    async def main() -> list:
        target = f"127.0.0.1:{h.free_port()}"
        async with aio.Client(target, timeout=0.5, backoff=0.01,
                              fail_closed=fail_closed) as client:
            checker = client.checker(transport=transport)

            async def one(k):
                try:
                    return ("ok", await checker.check("京东", f"1380000{k:04d}"))
                except CheckError as exc:
                    return ("error", exc.code(), exc)

            answers = await asyncio.gather(*(one(k) for k in range(50)))
            await checker.close()
            if fail_closed:
                assert await client.check("京东", "13800000001") == FAILED_CLOSED
            return answers

    answers = asyncio.run(main())
    if fail_closed:
        assert all(a == ("ok", FAILED_CLOSED) for a in answers)
    else:
        assert all(a[0] == "error" and a[1] in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
                   for a in answers), answers
        assert len({id(a[2]) for a in answers}) == len(answers)


def test_aio_client_calls(main_server):
    """The rest of the API, as coroutines, against the sync client's answers."""

    async def main() -> None:
        async with aio.Client(main_server.target, timeout=T) as client:
            batch = await client.check_batch([("京东", "13800000001"), ("京东", "abc")])
            assert batch[0].scope == "SENDER" and batch[1].error.startswith("checks[1].number")
            codes = await client.check_columns(["京东"], np.zeros(2, np.uint32),
                                               np.array([8613800000001, 8613800000009],
                                                        np.uint64))
            assert codes.tolist() == [pb.SCOPE_SENDER, pb.SCOPE_NONE]
            why = await client.explain("京东", "13800000001")
            assert why.suppressed and why.matched == "京东"
            status = await client.status()
            assert status.ready and status.entries == len(h.SNAPSHOT)
            ack = await client.opt_out("13900000077", "京东")
            assert ack.sequence > 0
            assert (await client.check("京东", "13900000077")).scope == "SENDER"
            ack = await client.opt_in("13900000077", "京东")
            assert (await client.check("京东", "13900000077")).scope == "NONE"
            reply = await client.report_reply("京东", "13900000078", "TD")
            assert reply.recognised and reply.ack.sequence == ack.sequence + 1

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checker_through_a_crash_and_restart(tmp_path, transport):
    """kill -9 of the server under 16 checking threads, then a restart on the same port: every
    answer is the truth or failed closed (never a wrong one), and the checker answers again
    once the server is back (a new stream, a new connection)."""
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    server = h.Server(data).serve()
    client = h.recorded_client(server.target, fail_closed=True, timeout=2.0, backoff=0.01)
    checker = client.checker(transport=transport)
    cases = [(s, n, c) for s, n, c, _ in CASES]
    truth = {item: client.check(*item) for item in cases}
    stop = threading.Event()
    restarted = threading.Event()
    seen: list[list] = [[] for _ in range(16)]

    def work(k: int) -> None:
        i = k
        while not stop.is_set():
            item = cases[i % len(cases)]
            seen[k].append((item, checker.check(*item), restarted.is_set()))
            i += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        server.sigkill()
        time.sleep(0.5)
        server.serve()
        restarted.set()
        deadline = time.monotonic() + 10  # the client tries to reconnect at most every 2 s
        while time.monotonic() < deadline and sum(
                got != FAILED_CLOSED for per in seen for _, got, back in per[-200:] if back) < 200:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        checker.close()
        client.close()
        server.kill()
    answers = [a for per_thread in seen for a in per_thread]
    wrong = [(item, got) for item, got, _ in answers
             if got != truth[item] and got != FAILED_CLOSED]
    assert not wrong, wrong[:5]
    after = [got for item, got, back in answers if back]
    assert sum(got != FAILED_CLOSED for got in after) >= 200, "no answers after the restart"


@pytest.mark.parametrize(("settings", "named"), [
    ({"max_batch": 0}, "max_batch 0"), ({"depth": 0}, "depth 0"), ({"linger": 1.5}, "linger 1.5"),
    ({"linger": -0.1}, "linger -0.1"), ({"transport": "pigeon"}, "transport: 'pigeon'")])
def test_both_checkers_refuse_bad_settings_naming_them(settings, named):
    """A checker's settings are checked where it is made, threads' and tasks' alike."""
    with Client("127.0.0.1:1") as client, pytest.raises(ValueError, match=re.escape(named)):
        client.checker(**settings)

    async def tasks_checker() -> None:
        async with aio.Client("127.0.0.1:1") as client:
            with pytest.raises(ValueError, match=re.escape(named)):
                aio.Checker(client, **settings)

    asyncio.run(tasks_checker())
