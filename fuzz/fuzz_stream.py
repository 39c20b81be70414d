"""Fuzz target: the replicated log's readers of what a NATS server sends (anning._stream:
scan_messages, decode_events; anning.storage.nats.messages.decode_run).

A replica reads every byte a NATS connection delivers with compiled code; a broken or hostile
server, or a publisher of garbage on the stream's subject, decides those bytes. Properties, per
input:
- scan_messages agrees with a plain-Python reader of the protocol written here (the same rows,
  the same end), over structured runs of deliveries, heartbeats and other subscriptions' messages
  cut anywhere, and over raw bytes; every span it reports lies within the bytes;
- decode_run of payloads either raises BadMessage naming a message of the run, or gives events
  that encode_event turns back into exactly those payloads.
Run: python fuzz/fuzz_stream.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np

    from anning._stream import CONTROL, DATA, OTHER, scan_messages
    from anning.storage.nats.messages import BadMessage, decode_run, encode_event

SID = 7


@atheris.instrument_func
def reference(buf: bytes, sid: int) -> tuple[int, list[tuple[int, int, int, int, bytes]]]:
    """(end, rows of kind, stream seq, consumer seq, pending, payload) read by plain Python."""
    pos, rows = 0, []
    while True:
        if not (buf.startswith(b"HMSG ", pos) or buf.startswith(b"MSG ", pos)):
            return pos, rows
        eol = buf.find(b"\n", pos)
        if eol < 0 or eol == pos or buf[eol - 1] != 13:
            return pos, rows
        args = buf[pos:eol - 1].split()
        headed = args[0] == b"HMSG"
        if len(args) not in ((5, 6) if headed else (4, 5)):
            return pos, rows
        numbers = [a for a in (args[2], *args[-2 if headed else -1:])]
        if not all(a.isdigit() and len(a) <= 19 for a in numbers) or int(args[2]) != sid:
            return pos, rows
        total = int(args[-1])
        hsize = int(args[-2]) if headed else 0
        if hsize > total:
            return pos, rows
        start = eol + 1
        if start + total + 2 > len(buf):
            return pos, rows
        reply = args[3] if len(args) == (6 if headed else 5) else b""
        head = buf[start:start + hsize]
        kind, meta = OTHER, (0, 0, 0)
        tokens = reply.split(b".")
        if hsize >= 10 and head.startswith(b"NATS/1.0 1"):
            kind = CONTROL
        elif reply.startswith(b"$JS.ACK.") and (len(tokens) == 9 or 11 <= len(tokens) <= 16):
            base = 2 if len(tokens) == 9 else 4
            picked = (tokens[base + 3], tokens[base + 4], tokens[base + 6])
            if all(t.isdigit() and 1 <= len(t) <= 19 for t in picked):
                kind, meta = DATA, tuple(int(t) for t in picked)
        rows.append((kind, *meta, buf[start + hsize:start + total]))
        pos = start + total + 2


def message(fdp: atheris.FuzzedDataProvider) -> bytes:
    choice = fdp.ConsumeIntInRange(0, 4)
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if choice == 0:  # a heartbeat
        head = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: %d\r\n\r\n" % \
            fdp.ConsumeIntInRange(0, 99)
        return b"HMSG _INBOX.x %d %d %d\r\n%s\r\n" % (SID, len(head), len(head), head)
    sid = SID if choice != 1 else fdp.ConsumeIntInRange(0, 9)
    s, c, q = (fdp.ConsumeIntInRange(0, 2**64 - 1) for _ in range(3))
    reply = (b"$JS.ACK.S.C.1.%d.%d.1.%d" % (s, c, q) if fdp.ConsumeBool() else
             b"$JS.ACK.d.h.S.C.1.%d.%d.1.%d.t" % (s, c, q))
    if choice == 4:
        return b"MSG _INBOX.x %d %s %d\r\n%s\r\n" % (sid, reply, len(payload), payload)
    head = b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"
    return b"HMSG _INBOX.x %d %s %d %d\r\n%s%s\r\n" % (sid, reply, len(head),
                                                     len(head) + len(payload), head, payload)


@atheris.instrument_func
def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        buf = b"".join(message(fdp) for _ in range(fdp.ConsumeIntInRange(0, 6)))
        buf = buf[:fdp.ConsumeIntInRange(0, len(buf))]
    elif mode == 1:
        buf = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        payloads = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 48))
                    for _ in range(fdp.ConsumeIntInRange(1, 6))]
        where, at = [], 0
        for p in payloads:
            where.append((at, len(p)))
            at += len(p)
        data = b"".join(payloads)
        sequences = np.arange(1, len(payloads) + 1, dtype=np.uint64)
        try:
            events = decode_run("S", data, sequences, np.array(where, np.int64).reshape(-1, 2))
        except BadMessage as exc:
            expect("stream S: message " in str(exc), f"BadMessage without its message: {exc}")
            return
        again = [encode_event(e) for e in events.events()]
        expect(again == payloads, f"decoded events encode to {again}, not {payloads}")
        return
    end, run = scan_messages(buf, 0, len(buf), SID)
    rows = []
    for i in range(len(run["kind"])):
        for column in ("reply", "header", "data"):
            off, length = (int(v) for v in run[column][i])
            expect(off >= 0 and length >= 0 and off + length <= len(buf),
                   f"row {i}: {column} {off}+{length} outside {len(buf)} bytes")
        off, length = (int(v) for v in run["data"][i])
        data_row = run["kind"][i] == DATA
        rows.append((int(run["kind"][i]),
                     *(int(run[k][i]) if data_row else 0
                       for k in ("stream_sequence", "consumer_sequence", "pending")),
                     buf[off:off + length]))
    want = reference(buf, SID)
    expect((end, rows) == want, f"scan_messages {(end, rows)}, reference {want}")


if __name__ == "__main__":
    _harness.run(test_one_input)
