"""The text of a message: data_coding, the user data header, and the signature in it.

A port's text carries its sender as a signature, `【京东】`, at the start or the end (SPEC §9):
to find it the gate must read the text as the handset will, so it decodes data_coding 0 (the
GSM 03.38 default alphabet, one septet an octet as SMPP carries it; or ASCII / Latin-1 when an
account says its platform sends those), 1 (IA5/ASCII), 3 (Latin-1) and 8 (UCS-2 big-endian;
read as UTF-16, so surrogate pairs come out as the one character they are). Other codings
(binary, WAP push, ...) carry no text and so no signature: the message is still checked by its
source address. Concatenated messages are recognised by their UDH (8-bit and 16-bit reference)
or by the SAR TLVs, so that the gate can decide a long message once.

Every decoder raises `TextError` (a ValueError) naming the field and the value at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "Concat",
    "Decoded",
    "TextError",
    "decode_user_data",
    "encode_text",
    "find_signatures",
    "gsm_encode",
]

GSM_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION: Final = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[",
                        0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}
_GSM_ENCODE: Final = {ch: bytes([i]) for i, ch in enumerate(GSM_BASIC) if i != 0x1B}
_GSM_ENCODE.update({ch: bytes([0x1B, code]) for code, ch in GSM_EXTENSION.items()})
assert len(GSM_BASIC) == 128

ALPHABETS: Final = ("gsm", "ascii", "latin1")
SIGNATURE_OPEN: Final = "【"
SIGNATURE_CLOSE: Final = "】"
MAX_SIGNATURE: Final = 64  # characters inside the brackets (SPEC §3: a sender is 1-64)

IE_CONCAT_8: Final = 0x00
IE_CONCAT_16: Final = 0x08


class TextError(ValueError):
    """User data that cannot be read as its data_coding says; names the field and value."""


@dataclass(frozen=True, slots=True)
class Concat:
    """One part of a long message: (reference, total parts, this part's number from 1)."""

    reference: int
    total: int
    number: int


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str | None  # None: a coding without text (binary)
    concat: Concat | None


def _gsm_decode(data: bytes, field: str) -> str:
    out: list[str] = []
    escape = False
    for i, octet in enumerate(data):
        if octet > 0x7F:
            raise TextError(f"{field}: byte 0x{octet:02x} at {i} is not a GSM 03.38 septet "
                            "(data_coding 0 with the GSM alphabet)")
        if escape:
            # an unknown extension falls back to the basic character (GSM 03.38 §6.2.1.1)
            out.append(GSM_EXTENSION.get(octet, GSM_BASIC[octet]))
            escape = False
        elif octet == 0x1B:
            escape = True
        else:
            out.append(GSM_BASIC[octet])
    return "".join(out)


def gsm_encode(text: str) -> bytes:
    """Text in the GSM 03.38 default alphabet, one septet an octet (SMPP's unpacked form)."""
    try:
        return b"".join(_GSM_ENCODE[ch] for ch in text)
    except KeyError as exc:
        raise TextError(f"text: {exc.args[0]!r} has no GSM 03.38 code") from None


def encode_text(text: str, data_coding: int, alphabet: str = "gsm") -> bytes:
    """The user data for `text` under `data_coding` (0, 1, 3, 8)."""
    if data_coding == 0:
        return gsm_encode(text) if alphabet == "gsm" else text.encode(
            "latin-1" if alphabet == "latin1" else "ascii")
    if data_coding == 1:
        return text.encode("ascii")
    if data_coding == 3:
        return text.encode("latin-1")
    if data_coding == 8:
        return text.encode("utf-16-be")
    raise TextError(f"data_coding: {data_coding} is not a text coding the gate writes")


def _udh(data: bytes, field: str) -> tuple[Concat | None, int]:
    """The concatenation IE of a user data header and where the text starts after it."""
    if not data:
        raise TextError(f"{field}: empty, but esm_class says it starts with a UDH")
    length = data[0]
    if 1 + length > len(data):
        raise TextError(f"{field}: UDH length {length} runs past the {len(data)} bytes")
    concat: Concat | None = None
    pos, end = 1, 1 + length
    while pos < end:
        if pos + 2 > end:
            raise TextError(f"{field}: UDH element at byte {pos} is cut off")
        iei, iel = data[pos], data[pos + 1]
        value = data[pos + 2:pos + 2 + iel]
        if pos + 2 + iel > end:
            raise TextError(f"{field}: UDH element 0x{iei:02x} of length {iel} runs past "
                            f"the header's {length} bytes")
        if iei == IE_CONCAT_8 and iel == 3:
            concat = _concat(value[0], value[1], value[2], field)
        elif iei == IE_CONCAT_16 and iel == 4:
            concat = _concat(value[0] << 8 | value[1], value[2], value[3], field)
        elif iei in (IE_CONCAT_8, IE_CONCAT_16):
            raise TextError(f"{field}: UDH concatenation element 0x{iei:02x} of length {iel}")
        pos += 2 + iel
    return concat, end


def _concat(reference: int, total: int, number: int, field: str) -> Concat:
    if total == 0 or not 1 <= number <= total:
        raise TextError(f"{field}: concatenation part {number} of {total}")
    return Concat(reference, total, number)


def sar_concat(tlvs: dict[int, bytes]) -> Concat | None:
    """Concatenation told by the SAR TLVs (sar_msg_ref_num 0x020C, sar_total_segments 0x020E,
    sar_segment_seqnum 0x020F), all three or none."""
    ref, total, seq = tlvs.get(0x020C), tlvs.get(0x020E), tlvs.get(0x020F)
    if ref is None and total is None and seq is None:
        return None
    if ref is None or total is None or seq is None or len(ref) != 2 or len(total) != 1 \
            or len(seq) != 1:
        raise TextError(f"sar TLVs: ref {ref!r}, total {total!r}, seqnum {seq!r}: all three, "
                        "of 2, 1 and 1 bytes")
    return _concat(int.from_bytes(ref, "big"), total[0], seq[0], "sar_segment_seqnum")


def decode_user_data(data: bytes, data_coding: int, udhi: bool, alphabet: str = "gsm",
                     tlvs: dict[int, bytes] | None = None,
                     field: str = "short_message") -> Decoded:
    """The text (None for a coding without text) and the concatenation of a message's user
    data. `alphabet` is how data_coding 0 is read: `gsm`, `ascii` or `latin1`."""
    concat: Concat | None = None
    start = 0
    if udhi:
        concat, start = _udh(data, field)
    if concat is None and tlvs:
        concat = sar_concat(tlvs)
    body = data[start:]
    coding = data_coding
    if coding & 0xF0 == 0xF0:  # message class coding group: bit 2 picks 8-bit data or GSM
        coding = 4 if coding & 0x04 else 0
    if coding == 0:
        if alphabet == "gsm":
            return Decoded(_gsm_decode(body, field), concat)
        coding = 3 if alphabet == "latin1" else 1
    if coding == 1:
        try:
            return Decoded(body.decode("ascii"), concat)
        except UnicodeDecodeError as exc:
            raise TextError(f"{field}: byte 0x{body[exc.start]:02x} at {exc.start} is not "
                            f"ASCII (data_coding {data_coding})") from None
    if coding == 3:
        return Decoded(body.decode("latin-1"), concat)
    if coding == 8:
        if len(body) % 2:
            raise TextError(f"{field}: {len(body)} bytes of UCS-2 (data_coding 8), an odd "
                            "number")
        try:
            return Decoded(body.decode("utf-16-be"), concat)
        except UnicodeDecodeError as exc:
            raise TextError(f"{field}: {body[exc.start:exc.start + 2].hex()} at {exc.start} is "
                            "a lone surrogate (data_coding 8)") from None
    return Decoded(None, concat)


def find_signatures(text: str) -> list[str]:
    """The signatures at the start and at the end of a text (`【京东】…`, `…【京东】`): none,
    one, or two different ones. A bracket pair with nothing inside, or more than 64
    characters, is not a signature."""
    found: list[str] = []
    stripped = text.strip()
    if stripped.startswith(SIGNATURE_OPEN):
        end = stripped.find(SIGNATURE_CLOSE)
        if 1 < end <= MAX_SIGNATURE + 1:
            found.append(stripped[: end + 1])
    if stripped.endswith(SIGNATURE_CLOSE):
        start = stripped.rfind(SIGNATURE_OPEN)
        if start >= 0 and 1 < len(stripped) - 1 - start <= MAX_SIGNATURE + 1:
            signature = stripped[start:]
            if SIGNATURE_CLOSE not in signature[1:-1] and signature not in found:
                found.append(signature)
    return found
