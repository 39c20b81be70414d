"""SMPP 3.4 PDUs: the frame, the bodies the gate reads, and the encoders it and its tests need.

Why an own codec and not smpplib's: smpplib is a synchronous client (a blocking socket, one
`read_pdu` at a time, its PDU objects tied to a `Client` instance), and the gate is an asyncio
proxy that must parse frames out of a byte stream fed by `data_received`, rewrite only the
sequence number of a PDU it forwards (everything else, TLVs it does not know included, passes
byte for byte), and refuse garbage with an error that names the field. Reading a handful of
fixed fields out of `bytes` is a few hundred lines; wrapping smpplib's objects would be more,
and slower. smpplib is still what the tests use as the ESME: an independent implementation.

Every decoder raises `PduError` (a ValueError) naming the field and the value at fault; none
reads past the end of the PDU it was given.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "BindRequest",
    "Header",
    "Message",
    "PduError",
    "command_name",
    "decode_bind",
    "decode_header",
    "decode_message",
    "decode_message_id",
    "encode_bind",
    "encode_message",
    "encode_pdu",
    "encode_tlvs",
    "status_name",
    "with_sequence",
]

HEADER_SIZE: Final = 16
RESPONSE: Final = 0x80000000

GENERIC_NACK: Final = 0x80000000
BIND_RECEIVER: Final = 0x00000001
BIND_TRANSMITTER: Final = 0x00000002
QUERY_SM: Final = 0x00000003
SUBMIT_SM: Final = 0x00000004
DELIVER_SM: Final = 0x00000005
UNBIND: Final = 0x00000006
REPLACE_SM: Final = 0x00000007
CANCEL_SM: Final = 0x00000008
BIND_TRANSCEIVER: Final = 0x00000009
OUTBIND: Final = 0x0000000B
ENQUIRE_LINK: Final = 0x00000015
SUBMIT_MULTI: Final = 0x00000021
ALERT_NOTIFICATION: Final = 0x00000102
DATA_SM: Final = 0x00000103

SUBMIT_SM_RESP: Final = SUBMIT_SM | RESPONSE
DELIVER_SM_RESP: Final = DELIVER_SM | RESPONSE
DATA_SM_RESP: Final = DATA_SM | RESPONSE
UNBIND_RESP: Final = UNBIND | RESPONSE
ENQUIRE_LINK_RESP: Final = ENQUIRE_LINK | RESPONSE

BINDS: Final = {BIND_RECEIVER: "receiver", BIND_TRANSMITTER: "transmitter",
                BIND_TRANSCEIVER: "transceiver"}

_NAMES: Final = {
    GENERIC_NACK: "generic_nack", BIND_RECEIVER: "bind_receiver",
    BIND_TRANSMITTER: "bind_transmitter", QUERY_SM: "query_sm", SUBMIT_SM: "submit_sm",
    DELIVER_SM: "deliver_sm", UNBIND: "unbind", REPLACE_SM: "replace_sm",
    CANCEL_SM: "cancel_sm", BIND_TRANSCEIVER: "bind_transceiver", OUTBIND: "outbind",
    ENQUIRE_LINK: "enquire_link", SUBMIT_MULTI: "submit_multi",
    ALERT_NOTIFICATION: "alert_notification", DATA_SM: "data_sm",
}

# command_status values (SMPP 3.4 §5.1.3) the gate and its tests use
ESME_ROK: Final = 0x00
ESME_RINVMSGLEN: Final = 0x01
ESME_RINVCMDLEN: Final = 0x02
ESME_RINVCMDID: Final = 0x03
ESME_RINVBNDSTS: Final = 0x04
ESME_RALYBND: Final = 0x05
ESME_RSYSERR: Final = 0x08
ESME_RINVSRCADR: Final = 0x0A
ESME_RINVDSTADR: Final = 0x0B
ESME_RBINDFAIL: Final = 0x0D
ESME_RINVPASWD: Final = 0x0E
ESME_RINVSYSID: Final = 0x0F
ESME_RREPLACEFAIL: Final = 0x13
ESME_RMSGQFUL: Final = 0x14
ESME_RSUBMITFAIL: Final = 0x45
ESME_RTHROTTLED: Final = 0x58
ESME_RX_T_APPN: Final = 0x64
ESME_RINVOPTPARSTREAM: Final = 0xC0

_STATUS_NAMES: Final = {
    ESME_ROK: "ESME_ROK", ESME_RINVMSGLEN: "ESME_RINVMSGLEN", ESME_RINVCMDLEN: "ESME_RINVCMDLEN",
    ESME_RINVCMDID: "ESME_RINVCMDID", ESME_RINVBNDSTS: "ESME_RINVBNDSTS",
    ESME_RALYBND: "ESME_RALYBND", ESME_RSYSERR: "ESME_RSYSERR",
    ESME_RINVSRCADR: "ESME_RINVSRCADR", ESME_RINVDSTADR: "ESME_RINVDSTADR",
    ESME_RBINDFAIL: "ESME_RBINDFAIL", ESME_RINVPASWD: "ESME_RINVPASWD",
    ESME_RINVSYSID: "ESME_RINVSYSID", ESME_RREPLACEFAIL: "ESME_RREPLACEFAIL",
    ESME_RMSGQFUL: "ESME_RMSGQFUL", ESME_RSUBMITFAIL: "ESME_RSUBMITFAIL",
    ESME_RTHROTTLED: "ESME_RTHROTTLED", ESME_RX_T_APPN: "ESME_RX_T_APPN",
    ESME_RINVOPTPARSTREAM: "ESME_RINVOPTPARSTREAM",
}

# TLV tags (SMPP 3.4 §5.3.2)
TAG_RECEIPTED_MESSAGE_ID: Final = 0x001E
TAG_SAR_MSG_REF_NUM: Final = 0x020C
TAG_SAR_TOTAL_SEGMENTS: Final = 0x020E
TAG_SAR_SEGMENT_SEQNUM: Final = 0x020F
TAG_SC_INTERFACE_VERSION: Final = 0x0210
TAG_MESSAGE_STATE: Final = 0x0427
TAG_MESSAGE_PAYLOAD: Final = 0x0424

ESM_UDHI: Final = 0x40  # esm_class: short_message starts with a user data header
ESM_TYPE_MASK: Final = 0x3C  # esm_class bits 5-2: message type
ESM_DELIVERY_RECEIPT: Final = 0x04

_HEADER: Final = struct.Struct(">IIII")


class PduError(ValueError):
    """A PDU that cannot be read; the message names the field and the value."""


def command_name(command_id: int) -> str:
    base = _NAMES.get(command_id & ~RESPONSE if command_id != GENERIC_NACK else command_id)
    if base is None:
        return f"0x{command_id:08x}"
    return base + "_resp" if command_id & RESPONSE and command_id != GENERIC_NACK else base


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"0x{status:08x}")


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    command_id: int
    status: int
    sequence: int


def decode_header(pdu: bytes | bytearray | memoryview, max_length: int) -> Header:
    """The 16-byte header; `command_length` must lie in [16, max_length]."""
    if len(pdu) < HEADER_SIZE:
        raise PduError(f"header: {len(pdu)} bytes, a PDU header has 16")
    length, command_id, status, sequence = _HEADER.unpack_from(pdu)
    if not HEADER_SIZE <= length <= max_length:
        raise PduError(f"command_length: {length} is outside 16..{max_length}")
    return Header(length, command_id, status, sequence)


def with_sequence(pdu: bytes, sequence: int) -> bytes:
    """The same PDU under another sequence number (what a proxy changes, and only that)."""
    return pdu[:12] + sequence.to_bytes(4, "big") + pdu[16:]


def encode_pdu(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return _HEADER.pack(HEADER_SIZE + len(body), command_id, status, sequence) + body


# -- fields -----------------------------------------------------------------------------------


class _Reader:
    """Fields read in order from a PDU body; every read is bounded by the body's end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self, name: str) -> int:
        if self.pos >= len(self.data):
            raise PduError(f"{name}: missing (the body ends at byte {len(self.data)})")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def cstring(self, name: str, size: int) -> str:
        """A C-octet string of at most `size` bytes with its NUL; ASCII (SMPP 3.4 §3.1)."""
        end = self.data.find(b"\0", self.pos, self.pos + size)
        if end < 0:
            shown = self.data[self.pos:self.pos + size]
            if self.pos + len(shown) >= len(self.data) and len(shown) < size:
                raise PduError(f"{name}: {shown!r} has no terminating NUL before the body ends")
            raise PduError(f"{name}: {shown!r}... is longer than {size - 1} characters")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise PduError(f"{name}: {raw!r} is not ASCII") from None

    def octets(self, name: str, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PduError(f"{name}: {n} bytes announced, {len(self.data) - self.pos} left")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value

    def tlvs(self) -> dict[int, bytes]:
        """Optional parameters to the end of the body; a repeated tag keeps the first."""
        found: dict[int, bytes] = {}
        data, pos = self.data, self.pos
        while pos < len(data):
            if pos + 4 > len(data):
                raise PduError(f"optional parameters: {len(data) - pos} stray bytes "
                               f"{data[pos:]!r} at byte {pos}, a TLV header has 4")
            tag, length = struct.unpack_from(">HH", data, pos)
            if pos + 4 + length > len(data):
                raise PduError(f"TLV 0x{tag:04x}: length {length} runs past the body's end "
                               f"({len(data) - pos - 4} bytes left)")
            found.setdefault(tag, data[pos + 4:pos + 4 + length])
            pos += 4 + length
        self.pos = pos
        return found


def _cstring(value: str, name: str, size: int) -> bytes:
    raw = value.encode("ascii")
    if len(raw) >= size or b"\0" in raw:
        raise PduError(f"{name}: {value!r} does not fit {size - 1} ASCII characters")
    return raw + b"\0"


def encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    return b"".join(struct.pack(">HH", tag, len(v)) + v for tag, v in tlvs.items())


# -- bind -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindRequest:
    system_id: str
    password: str
    system_type: str
    interface_version: int
    addr_ton: int
    addr_npi: int
    address_range: str


def decode_bind(body: bytes) -> BindRequest:
    r = _Reader(body)
    bind = BindRequest(r.cstring("system_id", 16), r.cstring("password", 9),
                       r.cstring("system_type", 13), r.u8("interface_version"),
                       r.u8("addr_ton"), r.u8("addr_npi"), r.cstring("address_range", 41))
    r.tlvs()  # a bind has none in 3.4; tolerated when well formed
    return bind


def encode_bind(command_id: int, sequence: int, system_id: str, password: str,
                system_type: str = "", interface_version: int = 0x34) -> bytes:
    body = (_cstring(system_id, "system_id", 16) + _cstring(password, "password", 9)
            + _cstring(system_type, "system_type", 13) + bytes([interface_version, 0, 0])
            + b"\0")
    return encode_pdu(command_id, sequence, body)


def encode_bind_resp(command_id: int, sequence: int, system_id: str, status: int = 0) -> bytes:
    body = _cstring(system_id, "system_id", 16)
    if status == 0:
        body += encode_tlvs({TAG_SC_INTERFACE_VERSION: b"\x34"})
    return encode_pdu(command_id | RESPONSE, sequence, body, status)


# -- submit_sm, deliver_sm, data_sm -----------------------------------------------------------


@dataclass(slots=True)
class Message:
    """The fields of a submit_sm, deliver_sm or data_sm (data_sm: no short_message, the text
    in the message_payload TLV; its absent fixed fields are 0 / empty)."""

    command_id: int
    source_addr: str
    destination_addr: str
    esm_class: int = 0
    data_coding: int = 0
    short_message: bytes = b""
    registered_delivery: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def payload(self) -> bytes:
        """The user data: message_payload when present (it supersedes short_message)."""
        return self.tlvs.get(TAG_MESSAGE_PAYLOAD, self.short_message)

    @property
    def is_receipt(self) -> bool:
        return self.esm_class & ESM_TYPE_MASK == ESM_DELIVERY_RECEIPT


def decode_message(command_id: int, body: bytes) -> Message:
    """A submit_sm / deliver_sm (SMPP 3.4 §4.4.1, §4.6.1) or data_sm (§4.7.1) body."""
    r = _Reader(body)
    if command_id == DATA_SM:
        service_type = r.cstring("service_type", 6)
        src_ton, src_npi = r.u8("source_addr_ton"), r.u8("source_addr_npi")
        source = r.cstring("source_addr", 65)
        dst_ton, dst_npi = r.u8("dest_addr_ton"), r.u8("dest_addr_npi")
        destination = r.cstring("destination_addr", 65)
        esm_class, registered, coding = (r.u8("esm_class"), r.u8("registered_delivery"),
                                         r.u8("data_coding"))
        return Message(command_id, source, destination, esm_class, coding, b"", registered,
                       service_type, src_ton, src_npi, dst_ton, dst_npi, tlvs=r.tlvs())
    if command_id not in (SUBMIT_SM, DELIVER_SM):
        raise PduError(f"command_id: {command_name(command_id)} carries no message")
    service_type = r.cstring("service_type", 6)
    src_ton, src_npi = r.u8("source_addr_ton"), r.u8("source_addr_npi")
    source = r.cstring("source_addr", 21)
    dst_ton, dst_npi = r.u8("dest_addr_ton"), r.u8("dest_addr_npi")
    destination = r.cstring("destination_addr", 21)
    esm_class, protocol_id, priority = (r.u8("esm_class"), r.u8("protocol_id"),
                                        r.u8("priority_flag"))
    schedule = r.cstring("schedule_delivery_time", 17)
    validity = r.cstring("validity_period", 17)
    registered = r.u8("registered_delivery")
    r.u8("replace_if_present_flag")
    coding = r.u8("data_coding")
    r.u8("sm_default_msg_id")
    sm_length = r.u8("sm_length")
    if sm_length > 254:  # 0..254 (§4.4.1); 255 was taken, and no encoder could write it back
        raise PduError(f"sm_length: {sm_length} is over 254 (use message_payload)")
    short_message = r.octets("short_message", sm_length)
    tlvs = r.tlvs()
    if sm_length and TAG_MESSAGE_PAYLOAD in tlvs:
        raise PduError(f"message_payload: present with a short_message of {sm_length} bytes "
                       "(SMPP 3.4 §5.3.2.32 allows one or the other)")
    return Message(command_id, source, destination, esm_class, coding, short_message,
                   registered, service_type, src_ton, src_npi, dst_ton, dst_npi, protocol_id,
                   priority, schedule, validity, tlvs)


def encode_message(sequence: int, m: Message) -> bytes:
    """A submit_sm, deliver_sm or data_sm from its fields (the simulator's and the tests')."""
    head = (_cstring(m.service_type, "service_type", 6) + bytes([m.source_addr_ton,
            m.source_addr_npi]))
    if m.command_id == DATA_SM:
        body = (head + _cstring(m.source_addr, "source_addr", 65)
                + bytes([m.dest_addr_ton, m.dest_addr_npi])
                + _cstring(m.destination_addr, "destination_addr", 65)
                + bytes([m.esm_class, m.registered_delivery, m.data_coding]))
        return encode_pdu(DATA_SM, sequence, body + encode_tlvs(m.tlvs))
    if len(m.short_message) > 254:
        raise PduError(f"short_message: {len(m.short_message)} bytes, at most 254 "
                       "(use message_payload)")
    body = (head + _cstring(m.source_addr, "source_addr", 21)
            + bytes([m.dest_addr_ton, m.dest_addr_npi])
            + _cstring(m.destination_addr, "destination_addr", 21)
            + bytes([m.esm_class, m.protocol_id, m.priority_flag])
            + _cstring(m.schedule_delivery_time, "schedule_delivery_time", 17)
            + _cstring(m.validity_period, "validity_period", 17)
            + bytes([m.registered_delivery, 0, m.data_coding, 0, len(m.short_message)])
            + m.short_message + encode_tlvs(m.tlvs))
    return encode_pdu(m.command_id, sequence, body)


def decode_message_id(body: bytes) -> str:
    """The message_id of a submit_sm_resp / data_sm_resp (empty body: an error response)."""
    if not body:
        return ""
    return _Reader(body).cstring("message_id", 65)


def encode_message_resp(command_id: int, sequence: int, message_id: str = "",
                        status: int = 0) -> bytes:
    """submit_sm_resp / deliver_sm_resp / data_sm_resp. An error answer carries no body, as
    SMPP 3.4 §4.4.2 says of submit_sm_resp."""
    body = _cstring(message_id, "message_id", 65) if status == 0 else b""
    return encode_pdu(command_id | RESPONSE, sequence, body, status)
