"""Fuzz target: the SMPP gate's PDU decoder (anning.gate.pdu, the framing of
anning.gate.session.PduLink, and the user data of anning.gate.text).

Anyone who can reach the gate's port sends it bytes; so does the SMSC. A session cuts frames
out of the stream by command_length and decodes the bodies it reads; garbage must come out as
PduError / TextError (the session answers it, or closes only itself), never another exception.
Properties, per input:
- framing over chunks cut anywhere gives the frames a plain reading of command_length gives
  (each 16..max_pdu bytes, back to back from the start), and fails the session exactly where an
  impossible length stands; the same frames whatever the chunks;
- each frame decodes by its command (submit_sm, deliver_sm, data_sm, the binds, a response's
  message_id) to its fields or PduError; nothing reads past the body: a body cut short is
  PduError, a decoded message's fields fit their sizes (C-strings ASCII without NUL, within
  SMPP 3.4's lengths, short_message at most 254 bytes);
- a decoded message re-encodes (encode_message) to a PDU that decodes to the same message, and
  a decoded bind (encode_bind) likewise for the fields it writes;
- where smpplib (an independent SMPP implementation, the tests' ESME) parses a PDU anning
  decoded, its mandatory fields are the same;
- its user data decodes (decode_user_data, each alphabet) to text or None, or TextError; a
  concatenation told is part n of total, 1 <= n <= total; signatures found are 【...】 of 1-64
  characters within the text.
Run: python fuzz/fuzz_pdu.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import logging
import struct

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    from anning.gate import pdu as P
    from anning.gate.session import PduLink
    from anning.gate.text import TextError, decode_user_data, find_signatures
import smpplib.smpp

logging.getLogger("smpplib.command").disabled = True  # "unknown optional parameter" a PDU

logging.getLogger("anning.gate").disabled = True  # a closing session logs a line
MAX_PDU = 512
COMMANDS = (P.SUBMIT_SM, P.DELIVER_SM, P.DATA_SM, P.BIND_TRANSCEIVER, P.BIND_TRANSMITTER,
            P.SUBMIT_SM_RESP, P.DATA_SM_RESP, P.ENQUIRE_LINK, P.UNBIND, 0x12345678)


class Collecting(PduLink):
    def __init__(self) -> None:
        super().__init__(MAX_PDU, "fuzz")
        self.frames: list[bytes] = []
        self.failure = ""

    def on_pdu(self, header: P.Header, pdu: bytes) -> None:
        expect(header.length == len(pdu), f"header says {header.length}, frame {len(pdu)}")
        self.frames.append(pdu)

    def on_failure(self, kind: str) -> None:
        self.failure = kind


def reference_frames(stream: bytes) -> tuple[list[bytes], bool]:
    frames, pos = [], 0
    while len(stream) - pos >= 4:
        length = int.from_bytes(stream[pos:pos + 4], "big")
        if not 16 <= length <= MAX_PDU:
            return frames, True
        if len(stream) - pos < length:
            break
        frames.append(stream[pos:pos + length])
        pos += length
    return frames, False


def frame_stream(stream: bytes, cuts: list[int]) -> Collecting:
    link = Collecting()
    at = 0
    for cut in [*sorted(cuts), len(stream)]:
        if not link.closed:
            link.data_received(stream[at:cut])
        at = max(at, cut)
    return link


def check_fields(m: P.Message) -> None:
    limits = {"service_type": 6, "source_addr": 65 if m.command_id == P.DATA_SM else 21,
              "destination_addr": 65 if m.command_id == P.DATA_SM else 21,
              "schedule_delivery_time": 17, "validity_period": 17}
    for name, size in limits.items():
        value = getattr(m, name)
        expect(value.isascii() and "\0" not in value and len(value) < size,
               f"{name}: {value!r} does not fit {size - 1} ASCII characters")
    expect(len(m.short_message) <= 254, f"short_message of {len(m.short_message)} bytes")


class _Sequences:
    """What smpplib's PDUs ask of a client when made."""

    sequence = 0

    def next_sequence(self) -> int:
        return 1


MANDATORY = {
    P.SUBMIT_SM: ("service_type", "source_addr_ton", "source_addr_npi", "source_addr",
                  "dest_addr_ton", "dest_addr_npi", "destination_addr", "esm_class",
                  "protocol_id", "priority_flag", "schedule_delivery_time", "validity_period",
                  "registered_delivery", "data_coding", "short_message"),
    P.DATA_SM: ("service_type", "source_addr_ton", "source_addr_npi", "source_addr",
                "dest_addr_ton", "dest_addr_npi", "destination_addr", "esm_class",
                "registered_delivery", "data_coding"),
}
MANDATORY[P.DELIVER_SM] = MANDATORY[P.SUBMIT_SM]


def compare_with_smpplib(pdu: bytes, m: P.Message) -> None:
    try:
        theirs = smpplib.smpp.parse_pdu(pdu, client=_Sequences(), allow_unknown_opt_params=True)
    except Exception:  # smpplib's own failures: only where both parse
        return
    for name in MANDATORY[m.command_id]:
        ours = getattr(m, name)
        value = getattr(theirs, name, None)
        if value is None and name == "short_message":
            value = b""  # smpplib stops at the body's end before an empty one
        expect((ours.encode("ascii") if isinstance(ours, str) else ours) == value,
               f"{name}: {ours!r}, smpplib {value!r}")


def check_message(header: P.Header, body: bytes) -> None:
    try:
        m = P.decode_message(header.command_id, body)
    except P.PduError:
        return
    check_fields(m)
    compare_with_smpplib(P.encode_pdu(header.command_id, header.sequence, body), m)
    again = P.encode_message(header.sequence, m)
    h2 = P.decode_header(again, 1 << 20)
    expect(h2.command_id == header.command_id and h2.sequence == header.sequence,
           f"re-encoded header {h2}")
    m2 = P.decode_message(h2.command_id, again[16:])
    expect(m2 == m, f"{m} re-encodes to {m2}")
    for alphabet in ("gsm", "ascii", "latin1"):
        try:
            decoded = decode_user_data(m.payload, m.data_coding, bool(m.esm_class & P.ESM_UDHI),
                                       alphabet, m.tlvs)
        except TextError:
            continue
        c = decoded.concat
        expect(c is None or 1 <= c.number <= c.total, f"concatenation {c}")
        if decoded.text is not None:
            for signature in find_signatures(decoded.text):
                expect(signature.startswith("【") and signature.endswith("】")
                       and 1 <= len(signature) - 2 <= 64 and signature in decoded.text,
                       f"signature {signature!r} of {decoded.text!r}")


def check_frame(pdu: bytes) -> None:
    header = P.decode_header(pdu, MAX_PDU)
    body = pdu[16:]
    if header.command_id in (P.SUBMIT_SM, P.DELIVER_SM, P.DATA_SM) or not header.command_id & 1:
        check_message(header, body)
    if header.command_id in P.BINDS:
        try:
            bind = P.decode_bind(body)
        except P.PduError:
            return
        again = P.encode_bind(header.command_id, header.sequence, bind.system_id, bind.password,
                              bind.system_type, bind.interface_version)
        b2 = P.decode_bind(again[16:])
        expect((b2.system_id, b2.password, b2.system_type, b2.interface_version) ==
               (bind.system_id, bind.password, bind.system_type, bind.interface_version),
               f"{bind} re-encodes to {b2}")
    if header.command_id & P.RESPONSE:
        try:
            message_id = P.decode_message_id(body)
        except P.PduError:
            return
        expect(message_id.isascii() and len(message_id) <= 64, f"message_id {message_id!r}")


def cstring(fdp: atheris.FuzzedDataProvider, size: int) -> bytes:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, size + 2))  # maybe no NUL, too long
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, size - 1)).replace(b"\0", b"1") + b"\0"


def some_pdu(fdp: atheris.FuzzedDataProvider) -> bytes:
    command = COMMANDS[fdp.ConsumeIntInRange(0, len(COMMANDS) - 1)]
    if command in (P.SUBMIT_SM, P.DELIVER_SM):
        short = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 160))
        body = (cstring(fdp, 6) + fdp.ConsumeBytes(2) + cstring(fdp, 21) + fdp.ConsumeBytes(2)
                + cstring(fdp, 21) + fdp.ConsumeBytes(3) + cstring(fdp, 17) + cstring(fdp, 17)
                + fdp.ConsumeBytes(4) + bytes([fdp.ConsumeIntInRange(0, 255)
                                               if fdp.ConsumeBool() else len(short)]) + short)
    elif command == P.DATA_SM:
        body = (cstring(fdp, 6) + fdp.ConsumeBytes(2) + cstring(fdp, 65) + fdp.ConsumeBytes(2)
                + cstring(fdp, 65) + fdp.ConsumeBytes(3))
    elif command in P.BINDS:
        body = (cstring(fdp, 16) + cstring(fdp, 9) + cstring(fdp, 13) + fdp.ConsumeBytes(3)
                + cstring(fdp, 41))
    else:
        body = cstring(fdp, 65) if fdp.ConsumeBool() else b""
    for _ in range(fdp.ConsumeIntInRange(0, 3)):  # TLVs, maybe lying about their length
        value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24))
        tag = (P.TAG_MESSAGE_PAYLOAD, P.TAG_SAR_MSG_REF_NUM, P.TAG_SAR_TOTAL_SEGMENTS,
               P.TAG_SAR_SEGMENT_SEQNUM, P.TAG_RECEIPTED_MESSAGE_ID,
               fdp.ConsumeIntInRange(0, 0xFFFF))[fdp.ConsumeIntInRange(0, 5)]
        length = len(value) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0xFFFF)
        body += struct.pack(">HH", tag, length) + value
    if fdp.ConsumeIntInRange(0, 5) == 0:
        body = body[:fdp.ConsumeIntInRange(0, len(body))]
    return P.encode_pdu(command, fdp.ConsumeIntInRange(0, 0x7FFFFFFF), body,
                        fdp.ConsumeIntInRange(0, 3))


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    if fdp.ConsumeBool():
        stream = b"".join(some_pdu(fdp) for _ in range(fdp.ConsumeIntInRange(1, 3)))
        if fdp.ConsumeIntInRange(0, 3) == 0:
            stream += fdp.ConsumeBytes(8)
    else:
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    cuts = [fdp.ConsumeIntInRange(0, len(stream)) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    want, fails = reference_frames(stream)
    for link in (frame_stream(stream, []), frame_stream(stream, cuts)):
        expect(link.frames == want, f"frames {link.frames}, a plain reading gives {want}")
        expect(bool(link.failure) == fails and link.closed == fails,
               f"session failed {link.failure!r}, closed {link.closed}; should fail: {fails}")
    for pdu in want:
        check_frame(pdu)


if __name__ == "__main__":
    _harness.run(test_one_input)
