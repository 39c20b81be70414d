"""The replicated log's parsers of untrusted bytes: the compiled scanner of NATS deliveries
(anning._stream.scan_messages) against a plain reader of the protocol, over random splits and
garbage; the event message codec (anning.storage.nats.messages) round trip, and every way a
payload can fail to be an event named with its sequence."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anning._stream import CONTROL, DATA, OTHER, decode_events, scan_messages
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.storage.nats.client import encode_publish
from anning.storage.nats.messages import BadMessage, decode_run, encode_event

SID = 7


def delivery(sseq: int, cseq: int, pending: int, payload: bytes, sid: int = SID,
             headers: dict[str, str] | None = None, v2: bool = False) -> bytes:
    reply = (f"$JS.ACK.hub.ACCHASH.S.C.1.{sseq}.{cseq}.1796525401335000000.{pending}.tok"
             if v2 else f"$JS.ACK.S.C.1.{sseq}.{cseq}.1796525401335000000.{pending}")
    pub = encode_publish("_INBOX.x", payload, headers or {"Nats-Msg-Id": f"w.{sseq}"}, reply)
    return pub.replace(b"HPUB _INBOX.x", b"HMSG _INBOX.x %d" % sid, 1) if pub.startswith(
        b"HPUB") else pub.replace(b"PUB _INBOX.x", b"MSG _INBOX.x %d" % sid, 1)


def heartbeat(sid: int = SID, last_consumer: int = 0) -> bytes:
    head = (f"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: {last_consumer}\r\n"
            "Nats-Last-Stream: 0\r\n\r\n").encode()
    return b"HMSG _INBOX.x %d %d %d\r\n%s\r\n" % (sid, len(head), len(head), head)


def reference(buf: bytes, sid: int) -> tuple[int, list[tuple[int, int, int, int, bytes]]]:
    """A plain reader of the same run: (end, rows of kind, sseq, cseq, pending, payload)."""
    pos, rows = 0, []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0 or not (buf.startswith(b"HMSG ", pos) or buf.startswith(b"MSG ", pos)):
            return pos, rows
        args = buf[pos:eol].split(b" ")
        headed = args[0] == b"HMSG"
        if int(args[2]) != sid:
            return pos, rows
        total = int(args[-1])
        hsize = int(args[-2]) if headed else 0
        start = eol + 2
        if start + total + 2 > len(buf):
            return pos, rows
        reply = args[3] if len(args) == (6 if headed else 5) else b""
        head = buf[start:start + hsize]
        tokens = reply.split(b".")
        kind, meta = OTHER, (0, 0, 0)
        if head.startswith(b"NATS/1.0 1"):
            kind = CONTROL
        elif reply.startswith(b"$JS.ACK.") and len(tokens) in (9, 11, 12):
            base = 2 if len(tokens) == 9 else 4
            kind, meta = DATA, (int(tokens[base + 3]), int(tokens[base + 4]),
                                int(tokens[base + 6]))
        rows.append((kind, *meta, buf[start + hsize:start + total]))
        pos = start + total + 2


def scanned(buf: bytes, sid: int = SID) -> tuple[int, list[tuple[int, int, int, int, bytes]]]:
    end, run = scan_messages(buf, 0, len(buf), sid)
    rows = []
    for i in range(len(run["kind"])):
        off, length = run["data"][i]
        rows.append((int(run["kind"][i]),
                     *(int(run[k][i]) if run["kind"][i] == DATA else 0
                       for k in ("stream_sequence", "consumer_sequence", "pending")),
                     buf[off:off + length]))
    return end, rows


def test_a_run_of_deliveries_heartbeats_and_the_end_of_the_run():
    buf = (delivery(5, 1, 2, b"a") + delivery(6, 2, 1, b"bb", v2=True) + heartbeat() +
           delivery(7, 3, 0, b"") + delivery(8, 4, 0, b"x", sid=99) + delivery(9, 5, 0, b"y"))
    end, rows = scanned(buf)
    assert rows == [(DATA, 5, 1, 2, b"a"), (DATA, 6, 2, 1, b"bb"), (CONTROL, 0, 0, 0, b""),
                    (DATA, 7, 3, 0, b"")]
    assert buf[end:].startswith(b"HMSG _INBOX.x 99 ")  # another subscription: the caller's
    assert (end, rows) == reference(buf, SID)


def test_a_message_not_yet_whole_is_left_for_the_next_read():
    whole = delivery(1, 1, 0, b"payload") + delivery(2, 2, 0, b"more")
    for cut in range(len(whole)):
        end, rows = scanned(whole[:cut])
        assert (end, rows) == reference(whole[:cut], SID)
        assert end in (0, len(delivery(1, 1, 0, b"payload")))


@given(st.lists(st.tuples(st.integers(1, 2**40), st.integers(1, 2**40), st.integers(0, 10**6),
                          st.binary(max_size=40), st.booleans(), st.booleans()), max_size=12),
       st.data())
def test_scanner_agrees_with_a_plain_reader_at_any_split(messages, data):
    buf = b"".join(heartbeat() if beat else delivery(s, c, p, payload, v2=v2)
                   for s, c, p, payload, v2, beat in messages)
    cut = data.draw(st.integers(0, len(buf)))
    assert scanned(buf[:cut]) == reference(buf[:cut], SID)


@given(st.binary(max_size=300))
def test_garbage_never_reads_past_the_bytes(garbage):
    for prefix in (b"", b"HMSG ", b"MSG ", b"HMSG _INBOX.x 7 ", delivery(1, 1, 0, b"ok")):
        buf = prefix + garbage
        end, run = scan_messages(buf, 0, len(buf), SID)
        assert 0 <= end <= len(buf)
        for column in ("header", "data", "reply"):
            spans = run[column]
            assert ((spans[:, 0] >= 0) & (spans[:, 0] + spans[:, 1] <= len(buf))).all()


def test_positions_outside_the_bytes_are_refused():
    with pytest.raises(ValueError, match="outside"):
        scan_messages(b"abc", 2, 10, SID)


# -- the event message -------------------------------------------------------------------


def events_of(n: int, scopes: int = 3) -> list[Event]:
    kinds = (OPT_OUT, OPT_IN, REASSIGN)
    out = []
    for i in range(n):
        kind = kinds[i % 3]
        out.append(Event(8613800000000 + i, "" if kind == REASSIGN else f"商户{i % scopes}",
                         0 if kind == REASSIGN else 1 + i % 3, kind, 1796525401335 + i,
                         ("reply", "api", "regulator")[i % 3], 100 + i))
    return out


def run_of(payloads: list[bytes]) -> tuple[bytes, np.ndarray]:
    where, offset = [], 0
    for p in payloads:
        where.append((offset, len(p)))
        offset += len(p)
    return b"".join(payloads), np.array(where, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("distinct", [1, 3, 700])  # 700: the table of scope names grows
def test_events_travel_unchanged(distinct):
    events = events_of(3000, distinct)
    buf, where = run_of([encode_event(e) for e in events])
    got = decode_run("S", buf, np.array([e.sequence for e in events], np.uint64), where)
    assert got.events() == events


@pytest.mark.parametrize(("damage", "why"), [
    (lambda p: p[:10], "not an event of version 1"),
    (lambda p: b"\x02" + p[1:], "not an event of version 1"),
    (lambda p: p[:1] + b"\x09" + p[2:], "not an event of version 1"),
    (lambda p: p + b"x", "not an event of version 1"),
    (lambda p: p[:4] + struct.pack("<Q", 0) + p[12:], "number 0"),
    (lambda p: p[:2] + b"\x00" + p[3:], "mask 0"),
    (lambda p: p[:12] + struct.pack("<q", 5) + p[20:], "at_ms 5"),
    (lambda p: p[:22] + b"\xff\xfe", "is not UTF-8"),
])
def test_a_payload_that_is_no_event_is_named_with_its_sequence(damage, why):
    good = [encode_event(e) for e in events_of(4)[:2]]
    bad = damage(encode_event(Event(8613800000009, "ab", 1, OPT_OUT, 1796525401335, "api")))
    buf, where = run_of([*good, bad])
    with pytest.raises(BadMessage, match=f"message 42: .*{why}"):
        decode_run("S", buf, np.array([40, 41, 42], np.uint64), where)


@given(st.lists(st.binary(max_size=60), min_size=1, max_size=20))
def test_random_payloads_decode_or_are_refused(payloads):
    buf, where = run_of(payloads)
    _, bad = decode_events(buf, where, 6, 1)
    assert -1 <= bad < len(payloads)
    try:
        decode_run("S", buf, np.arange(1, len(payloads) + 1, dtype=np.uint64), where)
    except BadMessage as exc:
        assert "stream S: message" in str(exc)
