"""Every parser of the gate with good data and with garbage: the PDU codec, the text decoding,
the configuration file. Bad input raises the parser's error naming the field and the value,
never anything else."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import smpplib.smpp

from anning.gate import pdu as P
from anning.gate.config import ConfigError, hash_password, load_config, verify_password
from anning.gate.text import (
    Concat,
    TextError,
    decode_user_data,
    encode_text,
    find_signatures,
    gsm_encode,
    sar_concat,
)

# -- PDUs -------------------------------------------------------------------------------------


class _Stub:  # what smpplib's make_pdu wants of a client
    sequence = 5

    def next_sequence(self) -> int:
        return 5


def test_a_submit_sm_smpplib_wrote_is_read_field_by_field() -> None:
    made = smpplib.smpp.make_pdu(
        "submit_sm", client=_Stub(), source_addr_ton=5, source_addr="1069012345",
        dest_addr_ton=1, destination_addr="8613800000001", esm_class=0x40, data_coding=8,
        registered_delivery=1, short_message=b"\x05\x00\x03\x01\x02\x01abcd",
        service_type="CMT")
    raw = made.generate()
    header = P.decode_header(raw, 4096)
    assert (header.length, header.command_id, header.sequence) == (len(raw), P.SUBMIT_SM, 5)
    m = P.decode_message(header.command_id, raw[16:])
    assert (m.service_type, m.source_addr_ton, m.source_addr, m.dest_addr_ton,
            m.destination_addr, m.esm_class, m.data_coding, m.registered_delivery,
            m.short_message) == ("CMT", 5, "1069012345", 1, "8613800000001", 0x40, 8, 1,
                                 b"\x05\x00\x03\x01\x02\x01abcd")
    # and our encoder writes what smpplib reads back the same
    again = P.encode_message(5, m)
    assert again == raw


def test_data_sm_and_tlvs_round_trip() -> None:
    m = P.Message(P.DATA_SM, "106900", "13800000001", 0, 8, b"",
                  tlvs={P.TAG_MESSAGE_PAYLOAD: "【京东】".encode("utf-16-be"), 0x1403: b"x"})
    raw = P.encode_message(9, m)
    back = P.decode_message(P.DATA_SM, raw[16:])
    assert back.payload == "【京东】".encode("utf-16-be") and back.tlvs[0x1403] == b"x"


def test_bind_round_trip_and_sequence_rewrite() -> None:
    raw = P.encode_bind(P.BIND_TRANSCEIVER, 3, "platform", "secret1", "VMA")
    bind = P.decode_bind(raw[16:])
    assert (bind.system_id, bind.password, bind.system_type, bind.interface_version) == \
        ("platform", "secret1", "VMA", 0x34)
    moved = P.with_sequence(raw, 0x7FFFFFFF)
    assert P.decode_header(moved, 4096).sequence == 0x7FFFFFFF and moved[16:] == raw[16:]


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00" * 10, "header: 10 bytes"),
    (b"\x00\x00\x00\x0f" + b"\x00" * 12, "command_length: 15 is outside 16..4096"),
    (b"\x00\x01\x00\x00" + b"\x00" * 12, "command_length: 65536 is outside 16..4096"),
])
def test_bad_headers_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(P.PduError, match=message):
        P.decode_header(raw, 4096)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "service_type: b'' has no terminating NUL"),
    (b"\0\x01\x01" + b"1" * 30 + b"\0", "source_addr: b'111111111111111111111'... is longer "
                                        "than 20"),
    (b"\0\x01\x01106\0\x01\x01138\0\x00\x00\x00\0\0\x00\x00\x08\x00\x10abc",
     "short_message: 16 bytes announced, 3 left"),
    (b"\0\x01\x01106\0\x01\x01138\0\x00\x00\x00\0\0\x00\x00\x08\x00\x00\x04\x24\x00",
     "optional parameters: 3 stray bytes"),
    (b"\0\x01\x01106\0\x01\x01138\0\x00\x00\x00\0\0\x00\x00\x08\x00\x00\x04\x24\x00\x09ab",
     "TLV 0x0424: length 9 runs past"),
    (b"\0\x01\x01106\0\x01\x01\xff\0", "destination_addr: b'\\\\xff' is not ASCII"),
])
def test_bad_submit_bodies_are_named(body: bytes, message: str) -> None:
    with pytest.raises(P.PduError, match=message):
        P.decode_message(P.SUBMIT_SM, body)


def test_short_message_and_message_payload_together_are_refused() -> None:
    m = P.Message(P.SUBMIT_SM, "106", "138", short_message=b"a",
                  tlvs={P.TAG_MESSAGE_PAYLOAD: b"b"})
    with pytest.raises(P.PduError, match="message_payload: present with a short_message"):
        P.decode_message(P.SUBMIT_SM, P.encode_message(1, m)[16:])


def test_garbage_bodies_raise_only_pdu_errors() -> None:
    """Random and truncated bodies of every kind the gate reads: PduError or a result."""
    rng = random.Random(15)
    good = P.encode_message(1, P.Message(P.SUBMIT_SM, "1069012345", "13800000001",
                                         0x40, 8, b"\x05\x00\x03\x01\x02\x01ab",
                                         tlvs={0x1403: b"xyz"}))[16:]
    bodies = [good[:n] for n in range(len(good))]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(80))) for _ in range(3000)]
    bodies += [bytearray(good) for _ in range(500)]
    for b in bodies[-500:]:
        assert isinstance(b, bytearray)
        b[rng.randrange(len(b))] = rng.randrange(256)
    for body in bodies:
        for decode in (lambda b: P.decode_message(P.SUBMIT_SM, b),
                       lambda b: P.decode_message(P.DATA_SM, b),
                       P.decode_bind, P.decode_message_id):
            try:
                decode(bytes(body))
            except P.PduError as exc:
                assert ": " in str(exc)  # names a field


def test_names_of_commands_and_statuses() -> None:
    assert P.command_name(P.SUBMIT_SM_RESP) == "submit_sm_resp"
    assert P.command_name(P.GENERIC_NACK) == "generic_nack"
    assert P.command_name(0x1234) == "0x00001234"
    assert P.status_name(0x45) == "ESME_RSUBMITFAIL"


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("coding", "data", "alphabet", "text"), [
    (0, gsm_encode("Hi @£$¥ {x} ~ €"), "gsm", "Hi @£$¥ {x} ~ €"),
    (0, b"Hi there", "ascii", "Hi there"),
    (0, "Grüße".encode("latin-1"), "latin1", "Grüße"),
    (1, b"IA5 text", "gsm", "IA5 text"),
    (3, "Café".encode("latin-1"), "gsm", "Café"),
    (8, "【京东】😀".encode("utf-16-be"), "gsm", "【京东】😀"),
    (0xF0, gsm_encode("class 0"), "gsm", "class 0"),
    (4, b"\x00\xff binary", "gsm", None),
    (0xF4, b"\x00\xff", "gsm", None),
])
def test_every_coding_decodes(coding: int, data: bytes, alphabet: str,
                              text: str | None) -> None:
    assert decode_user_data(data, coding, False, alphabet).text == text


@pytest.mark.parametrize(("text", "coding"), [("Hello £", 0), ("Café", 3), ("退订😀", 8)])
def test_encode_and_decode_agree(text: str, coding: int) -> None:
    assert decode_user_data(encode_text(text, coding), coding, False).text == text


@pytest.mark.parametrize(("data", "coding", "udhi", "message"), [
    (b"\x80abc", 0, False, "short_message: byte 0x80 at 0 is not a GSM 03.38 septet"),
    (b"abc\xff", 1, False, "short_message: byte 0xff at 3 is not ASCII"),
    (b"\x4e\xac\x4e", 8, False, "short_message: 3 bytes of UCS-2 .* an odd number"),
    (b"\xd8\x3d\x00\x41", 8, False, "short_message: d83d at 0 is a lone surrogate"),
    (b"", 8, True, "short_message: empty, but esm_class says it starts with a UDH"),
    (b"\x09\x00\x03", 8, True, "short_message: UDH length 9 runs past the 3 bytes"),
    (b"\x05\x00\x09\x01\x02\x01", 8, True, "UDH element 0x00 of length 9 runs past"),
    (b"\x05\x00\x03\x01\x02\x03", 8, True, "concatenation part 3 of 2"),
    (b"\x05\x00\x03\x01\x00\x00", 8, True, "concatenation part 0 of 0"),
    (b"\x04\x00\x02\x01\x02", 8, True, "UDH concatenation element 0x00 of length 2"),
    (b"\x01\x00", 8, True, "UDH element at byte 1 is cut off"),
])
def test_bad_user_data_is_named(data: bytes, coding: int, udhi: bool, message: str) -> None:
    with pytest.raises(TextError, match=message):
        decode_user_data(data, coding, udhi)


def test_concatenation_from_udh_and_sar() -> None:
    got = decode_user_data(b"\x06\x08\x04\x12\x34\x03\x02" + "长".encode("utf-16-be"), 8, True)
    assert got == decode_user_data(b"\x06\x08\x04\x12\x34\x03\x02\x95\x7f", 8, True)
    assert got.concat == Concat(0x1234, 3, 2) and got.text == "长"
    # other IEs before it are skipped
    got = decode_user_data(b"\x08\x24\x01\x01\x00\x03\x07\x02\x01hi", 0, True)
    assert got.concat == Concat(7, 2, 1) and got.text == "hi"
    assert sar_concat({0x020C: b"\x00\x05", 0x020E: b"\x02", 0x020F: b"\x01"}) == \
        Concat(5, 2, 1)
    with pytest.raises(TextError, match="sar TLVs"):
        sar_concat({0x020C: b"\x00\x05"})


def test_garbage_user_data_raises_only_text_errors() -> None:
    rng = random.Random(8)
    for _ in range(5000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        for coding in (0, 1, 3, 8, 4, 0xF0):
            try:
                decode_user_data(data, coding, rng.random() < 0.5,
                                 rng.choice(["gsm", "ascii", "latin1"]))
            except TextError as exc:
                assert "short_message" in str(exc) or "sar" in str(exc)


@pytest.mark.parametrize(("text", "found"), [
    ("【京东】您的订单已发货", ["【京东】"]),
    ("您的订单已发货【京东】", ["【京东】"]),
    ("  【京东】中间 【淘宝】 ", ["【京东】", "【淘宝】"]),
    ("【京东】短信【京东】", ["【京东】"]),
    ("您好，【京东】的活动", []),
    ("【】空的", []),
    ("【" + "长" * 65 + "】", []),
    ("【" + "长" * 64 + "】", ["【" + "长" * 64 + "】"]),
    ("x【a】b】", []),
    ("no brackets", []),
])
def test_signatures_at_the_start_or_the_end(text: str, found: list[str]) -> None:
    assert find_signatures(text) == found


# -- the configuration file --------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


HASHED = hash_password("secret1", bytes(16))
GOOD = f"""
[gate]
listen = "127.0.0.1:2775"
window = 20
suppressed_status = 0x45

[upstream]
address = "127.0.0.1:2776"
system_id = "gate"
password = "pw"

[anning]
target = "127.0.0.1:50051"

[[accounts]]
system_id = "kannel"
password = "{HASHED}"
category = "notification"
entity = "京东集团"
ports = ["106901"]
"""


def test_a_good_config_and_the_example_load(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(_write(tmp_path, GOOD))
    account = config.accounts["kannel"]
    assert (account.category, account.entity, account.ports) == ("notification", "京东集团",
                                                                 ("106901",))
    assert (config.window, config.upstream.port, config.suppressed_status) == (20, 2776, 0x45)
    monkeypatch.setenv("ANNING_GATE_SMSC_PASSWORD", "pw")
    example = Path(__file__).resolve().parents[2] / "deploy" / "smpp-gate.example.toml"
    assert load_config(example).accounts


def test_passwords_are_checked_against_their_hash() -> None:
    assert verify_password("secret1", HASHED)
    assert not verify_password("secret2", HASHED)
    assert not verify_password("secret1", "plain")
    salt = bytes(range(16))
    import hashlib

    line = f"sha256:{salt.hex()}:{hashlib.sha256(salt + b'pw').hexdigest()}"
    assert verify_password("pw", line) and not verify_password("px", line)


@pytest.mark.parametrize(("change", "message"), [
    (("window = 20", "window = 0"), "gate.window: 0 must be above 0"),
    (("window = 20", 'window = "20"'), "gate.window: '20' is not int"),
    (("window = 20", "windows = 20"), "gate.windows: unknown key"),
    (('address = "127.0.0.1:2776"', 'address = "nowhere"'),
     "upstream.address: 'nowhere' is not HOST:PORT"),
    (('category = "notification"', 'category = "spam"'),
     "accounts\\[0\\].category: 'spam' is not one of marketing, notification"),
    ((f'password = "{HASHED}"', 'password = "secret1"'),
     "accounts\\[0\\].password: 'secret1'... is not a hashed password"),
    (('system_id = "kannel"', 'system_id = "a-very-long-system-id"'),
     "accounts\\[0\\].system_id: 'a-very-long-system-id' is not 1-15"),
    (("suppressed_status = 0x45", "suppressed_status = 0"),
     "gate.suppressed_status: 0 is not an SMPP command_status"),
    (("[[accounts]]", "[[account]]"), ": account: unknown key"),
    (("[gate]", "[gate"), "not TOML"),
])
def test_bad_configs_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD.replace(*change)))


def test_a_config_that_is_not_there_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_garbage_configs_raise_only_config_errors(tmp_path: Path) -> None:
    rng = random.Random(3)
    base = GOOD.encode()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / "g.toml"
        path.write_bytes(bytes(data))
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path))
