"""Issue 13 end to end, as an operator runs it: a real `anning serve`, opt-outs and replies by
the `anning` command line against it, nightly loads by `anning load` into its data directory
(taken up by the server itself) and by Admin.LoadSnapshot, kill -9 and restarts. An
acknowledged event outlives every load that is merely silent about it, and goes only when a
load's watermark (`--events-through`) covers it, or a row of the file speaks of its key with a
later `at` (an `opt_in` or `opt_out` row, or a `reassign` of the number)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest

from anning.storage.snapshot import read_snapshot
from anning.testing import server as h
from anning.testing.server import ENTITY, NONE, SENDER, T
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
OUT, IN, REASSIGN = pb.EVENT_KIND_OPT_OUT, pb.EVENT_KIND_OPT_IN, pb.EVENT_KIND_REASSIGN
FILLER = [f"{13700000000 + j},f{j % 10},marketing,," for j in range(100)]  # in every file
HEADER = "number,sender,category,at,action"
ENTITIES = "sender,entity\n京东,京东集团\n京东超市,京东集团\n"


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`anning ARGS...` as a separate process."""
    return subprocess.run([sys.executable, "-m", "anning.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def nightly_file(path: Path, rows: list[str] = ()) -> Path:
    """A nightly file: the filler rows (so that no load trips the shrink guard) and `rows`."""
    path.write_text("\n".join([HEADER, *FILLER, *rows]) + "\n", encoding="utf-8")
    return path


class Night:
    """The nightly loads of one data directory, each with an `as_of` later than the last."""

    def __init__(self, tmp: Path, data: Path) -> None:
        self.tmp, self.data = tmp, data
        self.entities = tmp / "entities.csv"
        self.entities.write_text(ENTITIES, encoding="utf-8")
        self.count = 0
        self.as_of_ms = 0

    def next_as_of(self) -> int:
        self.as_of_ms = max(int(time.time() * 1000), self.as_of_ms + 1000)
        return self.as_of_ms

    def file(self, rows: list[str] = ()) -> Path:
        self.count += 1
        return nightly_file(self.tmp / f"night-{self.count}.csv", rows)

    def load(self, rows: list[str] = (), events_through: int | None = None,
             as_of_ms: int | None = None) -> subprocess.CompletedProcess[str]:
        """`anning load --json` of a file of `rows` into the data directory (offline)."""
        as_of = as_of_ms if as_of_ms is not None else self.next_as_of()
        args = ["load", self.file(rows), "--data", self.data, "--entities", self.entities,
                "--as-of", h.iso(as_of), "--json"]
        if events_through is not None:
            args += ["--events-through", events_through]
        return cli(*args)


def taken_up(stubs: h.Stubs, as_of_ms: int, timeout: float = 10.0) -> pb.StatusReply:
    """Wait until the server serves the snapshot of this as_of (it looks twice a second)."""
    deadline = time.monotonic() + timeout
    while True:
        status = stubs.admin.Status(pb.StatusRequest(), timeout=T)
        if status.snapshot_as_of and \
                datetime.fromisoformat(status.snapshot_as_of).timestamp() * 1000 == as_of_ms:
            return status
        assert time.monotonic() < deadline, f"never took up the load of {h.iso(as_of_ms)}: " \
            f"{status}"
        time.sleep(0.05)


def load_and_wait(night: Night, stubs: h.Stubs, rows: list[str] = (),
                  events_through: int | None = None) -> tuple[dict, pb.StatusReply]:
    done = night.load(rows, events_through)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), taken_up(stubs, night.as_of_ms)


def scope(stubs: h.Stubs, sender: str, number: str, category: str = "") -> int:
    return stubs.suppression.Check(pb.CheckRequest(sender=sender, number=number,
                                                   category=category), timeout=T).scope


def cli_check(target: str, sender: str, number: str) -> tuple[int, str]:
    """(exit status, scope) of `anning check --target`: exit 1 when suppressed, 0 when not."""
    done = cli("check", "--json", "--target", target, sender, number)
    assert done.returncode in (0, 1), done.stderr
    answer = json.loads(done.stdout)
    assert answer["suppressed"] == (done.returncode == 1), answer
    return done.returncode, answer["scope"]


def sequences(status: pb.StatusReply) -> tuple[int, int, int, int]:
    return (status.last_sequence, status.events_through, status.folded_through,
            status.feed_lag)


def export_rows(data: Path, since: int = 0) -> list[list[str]]:
    """`anning events export` rows (number,sender,category,action,source,seq: `at` left out)."""
    done = cli("events", "export", "--data", data, "--since", since)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "number,sender,category,action,at,source,seq", lines
    return [[*row.split(",")[:4], *row.split(",")[5:]] for row in lines[1:]]


# -- 1. the scenario of the issue --------------------------------------------------------------


def test_events_outlive_silent_loads_until_a_watermark_covers_them(tmp_path):
    """An opt-out and a reply (by the CLI) survive a later load that lacks them, a kill -9 and
    a restart; a load whose watermark covers both drops both; one that covers one of two new
    ones drops exactly that one; a load without a watermark keeps the previous one; the same
    through Admin.LoadSnapshot; the feed exports all of them, each with its sequence."""
    data = tmp_path / "data"
    night = Night(tmp_path, data)
    first = night.load(as_of_ms=int(time.time() * 1000) - 3_600_000)
    assert first.returncode == 0, first.stderr
    server = h.Server(data, demo=False, load_dirs=[tmp_path])
    with h.running(server), h.Stubs(server.target) as s:
        t = ("--target", server.target)
        opt_out = cli("opt-out", "--json", *t, "13900000099", "shopb")
        assert opt_out.returncode == 0, opt_out.stderr
        assert json.loads(opt_out.stdout)["sequence"] == 1
        reply = cli("reply", "--json", *t, "京东", "13900000098", "退订")
        assert reply.returncode == 0, reply.stderr
        answer = json.loads(reply.stdout)
        assert (answer["action"], answer["scope"], answer["ack"]["sequence"]) == \
            ("opt_out", "entity:京东集团", 2)
        both = [("shopb", "13900000099", SENDER), ("京东超市", "13900000098", ENTITY)]
        assert [scope(s, x, n) for x, n, _ in both] == [w for *_, w in both]
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert sequences(status) == (2, 0, 0, 2)

        # a later list that lacks both, without a watermark: both stay, folded into it
        report, status = load_and_wait(night, s)
        assert (report["events_through"], report["events_folded"]) == (0, 2)
        assert sequences(status) == (2, 0, 2, 2)

        def still_suppressed() -> None:
            assert [scope(s, x, n) for x, n, _ in both] == [w for *_, w in both]
            assert [cli_check(server.target, x, n) for x, n, _ in both] == \
                [(1, "sender"), (1, "entity")]
            # the binary snapshot itself holds them (the offline check reads only it)
            offline = cli("check", "--data", data, "京东超市", "13900000098")
            assert offline.returncode == 1, offline.stdout + offline.stderr

        still_suppressed()
        server.sigkill()
        server.serve()
        s.close()
        s = h.Stubs(server.target)
        still_suppressed()
        assert sequences(s.admin.Status(pb.StatusRequest(), timeout=T)) == (2, 0, 2, 2)

        # a list that took both in (watermark 2) and lacks them: both go
        report, status = load_and_wait(night, s, events_through=2)
        assert (report["events_through"], report["events_folded"]) == (2, 0)
        assert sequences(status) == (2, 2, 2, 0)
        assert [scope(s, x, n) for x, n, _ in both] == [NONE, NONE]
        assert [cli_check(server.target, x, n) for x, n, _ in both] == [(0, "none")] * 2

        # two fresh ones; a list that took in the first (watermark 3) and lacks both
        assert json.loads(cli("opt-out", "--json", *t, "13900000097",
                              "shopb").stdout)["sequence"] == 3
        assert json.loads(cli("reply", "--json", *t, "京东", "13900000096", "TD").stdout)[
            "ack"]["sequence"] == 4
        report, status = load_and_wait(night, s, events_through=3)
        assert (report["events_through"], report["events_folded"]) == (3, 1)
        assert sequences(status) == (4, 3, 4, 1)
        assert scope(s, "shopb", "13900000097") == NONE
        assert scope(s, "京东超市", "13900000096") == ENTITY
        assert cli_check(server.target, "shopb", "13900000097") == (0, "none")
        assert cli_check(server.target, "京东超市", "13900000096") == (1, "entity")

        # no watermark declared: the previous one (3) stands, the uncovered event stays
        report, status = load_and_wait(night, s)
        assert (report["events_through"], report["events_folded"]) == (3, 1)
        assert sequences(status) == (4, 3, 4, 1)
        assert scope(s, "京东超市", "13900000096") == ENTITY

        # refused: a watermark past the last sequence, or back past the serving one
        before = (data / "index.anx").read_bytes()
        for through, why in ((5, "events_through 5 is past the last event there is (4)"),
                             (2, "events_through 2 goes back past")):
            done = night.load(events_through=through)
            assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
            assert why in done.stderr, done.stderr
            exc = h.rpc_error(s.admin.LoadSnapshot, pb.LoadSnapshotRequest(
                paths=[str(night.file())], entities=str(night.entities),
                as_of=h.iso(night.next_as_of()), events_through=through), timeout=60)
            assert exc.code() == Code.FAILED_PRECONDITION, (exc.code(), exc.details())
            assert why in exc.details(), exc.details()
            assert (data / "index.anx").read_bytes() == before
        status = s.admin.Status(pb.StatusRequest(), timeout=T)
        assert sequences(status) == (4, 3, 4, 1)
        assert "events_through 2 goes back past" in status.last_refusal
        assert scope(s, "京东超市", "13900000096") == ENTITY

        # the same through Admin.LoadSnapshot: watermark 4 covers the reply and drops it
        def admin_load(through: int | None) -> pb.LoadReport:
            request = pb.LoadSnapshotRequest(paths=[str(night.file())],
                                             entities=str(night.entities),
                                             as_of=h.iso(night.next_as_of()))
            if through is not None:
                request.events_through = through
            return s.admin.LoadSnapshot(request, timeout=60)

        report = admin_load(4)
        assert (report.events_through, report.events_folded, report.refused) == (4, 0, "")
        assert scope(s, "京东超市", "13900000096") == NONE
        assert sequences(s.admin.Status(pb.StatusRequest(), timeout=T)) == (4, 4, 4, 0)
        five = s.opt_outs.OptOut(pb.OptOutRequest(number="13900000095", scope="*"), timeout=T)
        six = s.opt_outs.OptOut(pb.OptOutRequest(number="13900000094", scope="*"), timeout=T)
        assert (five.sequence, six.sequence) == (5, 6)
        report = admin_load(5)
        assert (report.events_through, report.events_folded) == (5, 1)
        assert scope(s, "anyone", "13900000095") == NONE
        assert scope(s, "anyone", "13900000094") == h.GLOBAL
        report = admin_load(None)  # keeps 5
        assert (report.events_through, report.events_folded) == (5, 1)
        assert scope(s, "anyone", "13900000094") == h.GLOBAL
        assert sequences(s.admin.Status(pb.StatusRequest(), timeout=T)) == (6, 5, 6, 1)
        s.close()

    # the feed holds every event, in order, each once (no checkpoint has retired any)
    assert export_rows(data) == [
        ["8613900000099", "shopb", "marketing", "opt_out", "api", "1"],
        ["8613900000098", "entity:京东集团", "marketing", "opt_out", "reply", "2"],
        ["8613900000097", "shopb", "marketing", "opt_out", "api", "3"],
        ["8613900000096", "entity:京东集团", "marketing", "opt_out", "reply", "4"],
        ["8613900000095", "*", "marketing", "opt_out", "api", "5"],
        ["8613900000094", "*", "marketing", "opt_out", "api", "6"],
    ]
    assert export_rows(data, since=4) == export_rows(data)[4:]
    info = json.loads(cli("info", "--data", data).stdout)
    assert (info["events_through"], info["folded_through"]) == (5, 6)


# -- 2. rows that speak of an event's key: opt_in, opt_out and reassign rows with their `at` ----

T0 = int(time.time() * 1000) - 600_000  # the events' time
BEFORE, AFTER = T0 - 60_000, T0 + 60_000
# (number, the event written (kind, scope, category, at), the row of the next nightly file or
# None, answers for (sender, category) without a watermark, and with one covering the event)
# Senders asked: "shop" (a sender); the events and rows name "shop" or "*" for a reassignment.
CASES = [
    # an anning opt-out against opt_in rows: older yields, newer or the load's as_of wins
    ("13910000001", (OUT, "shop", "", T0), f"shop,marketing,{BEFORE},opt_in", SENDER, NONE),
    ("13910000002", (OUT, "shop", "", T0), f"shop,marketing,{AFTER},opt_in", NONE, NONE),
    ("13910000003", (OUT, "shop", "", T0), "shop,marketing,,opt_in", NONE, NONE),
    ("13910000004", (OUT, "shop", "", T0), f"shop,marketing,{T0},opt_in", SENDER, NONE),  # tie
    # an anning opt-in against opt_out rows: older yields, newer or as_of wins, a tie opts out
    ("13910000005", (IN, "shop", "", T0), f"shop,marketing,{BEFORE},opt_out", NONE, SENDER),
    ("13910000006", (IN, "shop", "", T0), f"shop,marketing,{AFTER},opt_out", SENDER, SENDER),
    ("13910000007", (IN, "shop", "", T0), "shop,marketing,,opt_out", SENDER, SENDER),
    ("13910000008", (IN, "shop", "", T0), f"shop,marketing,{T0},opt_out", SENDER, SENDER),
    # per category: a newer opt_in row of marketing leaves the event's notification in force
    ("13910000010", (OUT, "shop", "all", T0), f"shop,marketing,{AFTER},opt_in", (NONE, SENDER),
     (NONE, NONE)),
    # reassignment rows: a later one drops the event, an earlier one does not
    ("13910000011", (OUT, "shop", "", T0), f"*,,{AFTER},reassign", NONE, NONE),
    ("13910000012", (OUT, "shop", "", T0), f"*,,{BEFORE},reassign", SENDER, NONE),
    ("13910000013", (OUT, "shop", "", T0), "*,,,reassign", NONE, NONE),
    # a reassignment event against opt_out rows: an older row goes, a newer one stays
    ("13910000014", (REASSIGN, "", "", T0), f"shop,marketing,{BEFORE},opt_out", NONE, SENDER),
    ("13910000015", (REASSIGN, "", "", T0), f"shop,marketing,{AFTER},opt_out", SENDER, SENDER),
    ("13910000016", (REASSIGN, "", "", T0), "shop,marketing,,opt_out", SENDER, SENDER),
    # the file silent about the key: the event decides alone, until a watermark covers it
    ("13910000017", (OUT, "shop", "", T0), None, SENDER, NONE),
    ("13910000018", (IN, "shop", "", T0), None, NONE, NONE),
]
# numbers opted out on the first list (as of an hour ago), and so before every event
ON_FIRST_LIST = ["13910000005", "13910000006", "13910000007", "13910000008", "13910000014",
                 "13910000015", "13910000016", "13910000018"]


def answers(want: int | tuple[int, int]) -> tuple[int, int]:
    """(marketing, notification)."""
    return want if isinstance(want, tuple) else (want, NONE)


@pytest.mark.parametrize("how", ["cli", "admin"])
def test_rows_with_at_and_action_against_events(tmp_path, how):
    """Each event of CASES against the row of the next nightly file for its key (opt_in,
    opt_out or reassign, with an `at` before, after or at the event's, or none: the as_of):
    the answers without a watermark (the latest statement wins), the same after kill -9 and a
    restart, and with a watermark covering every event (the rows alone decide)."""
    data = tmp_path / "data"
    night = Night(tmp_path, data)
    first = night.load([f"{n},shop,marketing,," for n in ON_FIRST_LIST],
                       as_of_ms=int(time.time() * 1000) - 3_600_000)
    assert first.returncode == 0, first.stderr
    rows = [f"{n},{row}" for n, _, row, *_ in CASES if row is not None]
    server = h.Server(data, demo=False, load_dirs=[tmp_path])
    with h.running(server), h.Stubs(server.target) as s:
        ack = s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=kind, number=n, scope=scope_, category=category, at_ms=at)
            for n, (kind, scope_, category, at), *_ in CASES]), timeout=T)
        assert (ack.sequence, ack.events) == (len(CASES), len(CASES))

        def load(through: int | None) -> None:
            if how == "cli":
                report, _ = load_and_wait(night, s, rows, through)
                assert report["events_through"] == (through or 0)
                return
            request = pb.LoadSnapshotRequest(paths=[str(night.file(rows))],
                                             entities=str(night.entities),
                                             as_of=h.iso(night.next_as_of()))
            if through is not None:
                request.events_through = through
            report = s.admin.LoadSnapshot(request, timeout=60)
            assert (report.refused, report.events_through) == ("", through or 0)

        def got() -> list[tuple[int, int]]:
            return [(scope(s, "shop", n), scope(s, "shop", n, "notification"))
                    for n, *_ in CASES]

        load(None)
        assert got() == [answers(w) for *_, w, _ in CASES]
        server.sigkill()
        server.serve()
        s.close()
        s = h.Stubs(server.target)
        assert got() == [answers(w) for *_, w, _ in CASES]
        load(len(CASES))
        assert got() == [answers(w) for *_, w in CASES]
        s.close()


# -- 3. the export, read back by `anning load` --------------------------------------------------


def test_the_export_loads_back(tmp_path):
    """`anning events export` beside the running server, loaded by `anning load` into another
    data directory as a list of its own: senders that need CSV quoting, Chinese and brackets,
    entities, `all` and one category, opt-ins and reassignments come back as the server
    answers them."""
    data, other = tmp_path / "data", tmp_path / "other"
    night = Night(tmp_path, data)
    first = night.load(["13920000003,*,all,,"], as_of_ms=int(time.time() * 1000) - 3_600_000)
    assert first.returncode == 0, first.stderr
    now = int(time.time() * 1000)
    writes = [(OUT, "13920000001", "a,b", "all"), (OUT, "13920000001", 'say "hi"', ""),
              (OUT, "13920000001", "【京东】", "notification"),
              (OUT, "13920000002", "entity:京东集团", ""), (OUT, "13920000002", "*", "all"),
              (IN, "13920000002", "*", "marketing"), (REASSIGN, "13920000003", "", "")]
    asks = [("a,b", "13920000001"), ('say "hi"', "13920000001"), ("京东", "13920000001"),
            ("京东超市", "13920000002"), ("x", "13920000002"), ("x", "13920000003")]
    server = h.Server(data, demo=False, load_dirs=[tmp_path])
    with h.running(server), h.Stubs(server.target) as s:
        ack = s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=k, number=n, scope=sc, category=c, at_ms=now + i)
            for i, (k, n, sc, c) in enumerate(writes)]), timeout=T)
        assert ack.sequence == len(writes)
        want = [[scope(s, x, n, c) for x, n in asks] for c in ("marketing", "notification")]
        out = tmp_path / "feed.csv"
        done = cli("events", "export", "--data", data, "--out", out)
        assert done.returncode == 0, done.stderr
    assert want == [[SENDER, SENDER, NONE, ENTITY, NONE, NONE],
                    [SENDER, NONE, SENDER, h.GLOBAL, h.GLOBAL, NONE]]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[1:4] == [f'8613920000001,"a,b",all,opt_out,{iso_z(now)},api,1',
                          f'8613920000001,"say ""hi""",marketing,opt_out,{iso_z(now + 1)},api,2',
                          f"8613920000001,京东,notification,opt_out,{iso_z(now + 2)},api,3"]
    loaded = cli("load", out, "--data", other, "--entities", night.entities, "--as-of",
                 h.iso(now + 60_000), "--json")
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["rejected"] == 0
    back = read_snapshot(other / "index.anx")
    assert [[int(back.check(x, n, c)) for x, n in asks]
            for c in ("marketing", "notification")] == want


def iso_z(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{ms % 1000:03d}Z"


def test_a_watermark_another_worker_just_wrote_is_accepted(tmp_path):
    """Two workers: an opt-out acknowledged through one connection, then at once a load whose
    watermark is its sequence through a new connection (either worker): never refused as past
    the last event, and the opt-out (covered, the file silent) is gone."""
    data = tmp_path / "data"
    night = Night(tmp_path, data)
    first = night.load(as_of_ms=int(time.time() * 1000) - 3_600_000)
    assert first.returncode == 0, first.stderr
    server = h.Server(data, workers=2, demo=False, load_dirs=[tmp_path])
    with h.running(server):
        for i in range(15):
            number = f"139300000{i:02d}"
            with h.Stubs(server.target, use_local_subchannel_pool=1) as a:
                ack = a.opt_outs.OptOut(pb.OptOutRequest(number=number, scope="shop"),
                                        timeout=T)
            assert ack.sequence == i + 1
            with h.Stubs(server.target, use_local_subchannel_pool=1) as b:
                report = b.admin.LoadSnapshot(pb.LoadSnapshotRequest(
                    paths=[str(night.file())], entities=str(night.entities),
                    as_of=h.iso(night.next_as_of()), events_through=ack.sequence), timeout=60)
                assert (report.refused, report.events_through) == ("", ack.sequence)
                assert scope(b, "shop", number) == NONE
