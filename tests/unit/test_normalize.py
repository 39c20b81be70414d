"""Normalisation of numbers and senders (SPEC §3): a golden table and the batch forms.

Each number case is (input, expected): an int is the E.164 digits; a str is a substring of the
InvalidInput message, which must also start with "number: <repr of the input> ".
"""

from __future__ import annotations

import numpy as np
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anning
from anning import InvalidInput

MOBILE = 8613812345678
BEIJING = 861012345678  # 010-1234 5678
SHANGHAI = 862161234567  # 021-6123 4567
SHENZHEN = 8675512345678  # 0755-1234 5678
LONDON = 442079460958  # 020 7946 0958

BAD_CHAR = "has an invalid character"
EMPTY = "is empty"
LONE_PLUS = "is a lone '+'"
MISPLACED_PLUS = "has a '+' that is not at the start"
TOO_SHORT = "is too short"
TOO_LONG = "is too long"
UNKNOWN_COUNTRY = "has an unknown country code"
BAD_LENGTH = "has an impossible length for its country"
NOT_CN = "is neither a Chinese mobile nor a fixed-line number"

NUMBER_CASES: list[tuple[str, int | str]] = [
    # Plain national mobiles, with and without separators.
    ("13812345678", MOBILE),
    ("15912345678", 8615912345678),
    ("18600000000", 8618600000000),
    ("19912345678", 8619912345678),
    ("17012345678", 8617012345678),
    (" 13812345678 ", MOBILE),
    ("138 1234 5678", MOBILE),
    ("138-1234-5678", MOBILE),
    ("138.1234.5678", MOBILE),
    ("(138) 1234 5678", MOBILE),
    ("138  1234--5678", MOBILE),
    ("0138 1234 5678", MOBILE),  # a trunk 0 before a mobile is dropped too
    # +86 forms.
    ("+8613812345678", MOBILE),
    ("+86 138 1234 5678", MOBILE),
    ("+86 138-1234-5678", MOBILE),
    ("+86-138-1234-5678", MOBILE),
    ("+86.138.1234.5678", MOBILE),
    ("+86 (138) 1234-5678", MOBILE),
    ("(+86) 138 1234 5678", MOBILE),
    ("+ 86 13812345678", MOBILE),
    ("+86 0 138 1234 5678", MOBILE),
    # 86 written without '+', and 0086.
    ("8613812345678", MOBILE),
    ("86 138 1234 5678", MOBILE),
    ("86-10-1234-5678", BEIJING),
    ("86 0755 1234 5678", SHENZHEN),
    ("008613812345678", MOBILE),
    ("0086 138 1234 5678", MOBILE),
    ("0086-21-6123-4567", SHANGHAI),
    ("0086 0755 12345678", SHENZHEN),
    ("0 0 86 13812345678", MOBILE),  # separators inside the 00 are still 00
    ("+0086 138 1234 5678", MOBILE),  # '+' and 00 both written: phonenumbers reads the 00
    # Full-width forms and other NFKC folds.
    ("１３８１２３４５６７８", MOBILE),
    ("＋８６ １３８ １２３４ ５６７８", MOBILE),
    ("＋86 138 1234 5678", MOBILE),
    ("+86\u3000138\u30001234\u30005678", MOBILE),  # ideographic space
    ("\u300013812345678\u3000", MOBILE),
    ("138\u00a01234\u00a05678", MOBILE),  # no-break space
    ("０１０－１２３４－５６７８", BEIJING),  # full-width hyphen-minus
    ("（０２１）６１２３４５６７", SHANGHAI),  # full-width parentheses
    ("①③⑧①②③④⑤⑥⑦⑧", MOBILE),  # circled digits: NFKC makes them digits as well
    # tel: (RFC 3966).
    ("tel:+86-138-1234-5678", MOBILE),
    ("TEL:+8613812345678", MOBILE),
    ("Tel:13812345678", MOBILE),
    ("tel:010-12345678", BEIJING),
    ("tel:+44-20-7946-0958", LONDON),
    (" tel:13812345678", MOBILE),
    ("ｔｅｌ：13812345678", MOBILE),  # full-width, NFKC
    # National fixed lines with the trunk 0: area codes 10, 2x and 3-digit ones.
    ("010-12345678", BEIJING),
    ("010 1234 5678", BEIJING),
    ("01012345678", BEIJING),
    ("1012345678", BEIJING),  # without the trunk 0
    ("021-61234567", SHANGHAI),
    ("020 8888 8888", 862088888888),
    ("029-8765 4321", 862987654321),
    ("0755-12345678", SHENZHEN),
    ("(0755) 1234 5678", SHENZHEN),
    ("75512345678", SHENZHEN),
    ("0571-87654321", 8657187654321),
    ("0871-6543210", 868716543210),  # 7-digit subscriber number
    ("0898 6543 2100", 8689865432100),
    # +86 with a trunk 0 after the country code.
    ("+86 010 1234 5678", BEIJING),
    ("+86 (0)755 1234 5678", SHENZHEN),
    ("+86-0571-87654321", 8657187654321),
    ("+86 021 6123 4567", SHANGHAI),
    # Chinese service, toll-free and premium numbers phonenumbers calls valid.
    ("021 95555", 862195555),
    ("+86 21 95555", 862195555),
    ("010 10010", 861010010),
    ("400 123 4567", 864001234567),
    ("10800 123 4567", 86108001234567),
    ("168 12345", 8616812345),
    # IP-dialling carrier prefixes, national and international.
    ("17951 138 1234 5678", MOBILE),
    ("12593 755 1234 5678", SHENZHEN),
    ("17951 00 44 20 7946 0958", LONDON),
    # Foreign numbers.
    ("+1 650 253 0000", 16502530000),
    ("+1 (212) 736-5000", 12127365000),
    ("001 212 736 5000", 12127365000),
    ("+1-800-356-9377", 18003569377),
    ("+1 1 650 253 0000", 16502530000),  # the NANP trunk 1 after the country code
    ("+44 20 7946 0958", LONDON),
    ("+44 (0)20 7946 0958", LONDON),
    ("0044 20 7946 0958", LONDON),
    ("0044 (0)20 7946 0958", LONDON),
    ("+44 7911 123456", 447911123456),
    ("+81 3-1234-5678", 81312345678),
    ("+81 (0)3 1234 5678", 81312345678),
    ("+81 90-1234-5678", 819012345678),
    ("+49 30 123456", 4930123456),
    ("+49 (0)30 1234567", 49301234567),
    ("+49 151 23456789", 4915123456789),
    ("+33 1 23 45 67 89", 33123456789),
    ("+33 (0)6 12 34 56 78", 33612345678),
    ("0033 6 12 34 56 78", 33612345678),
    ("+852 2123 4567", 85221234567),
    ("+852 5123 4567", 85251234567),
    ("00852 2123 4567", 85221234567),
    ("+886 2 2345 6789", 886223456789),
    ("+886 912 345 678", 886912345678),
    ("+853 6612 3456", 85366123456),
    ("+7 495 123-45-67", 74951234567),
    ("+61 2 9876 5432", 61298765432),
    ("+91 98765 43210", 919876543210),
    ("+39 06 1234 5678", 390612345678),  # Italy keeps its leading 0
    ("+65 6123 4567", 6561234567),
    ("+82 10-1234-5678", 821012345678),
    # Foreign national prefixes and rewrites, as phonenumbers' metadata has them.
    ("+1 310 1234", 13101234),  # Canada's 7-digit numbers (local-only in the US)
    ("+375 (0)801 123 4567", 3758011234567),  # Belarus: the 0 goes, the 8 of 801 stays
    ("+375 80 29 491 1911", 375294911911),  # ... and its 80 prefix goes
    ("+370 8 612 34567", 37061234567),  # Lithuania's 8
    ("+57 05 601 234 5678", 576012345678),  # Colombia: 0 and a carrier code
    ("+591 010 2 212 3456", 59122123456),  # Bolivia: 0 and a carrier code
    ("+82 081 2 1234 5678", 82212345678),  # Korea: 0 and a carrier code
    ("+44 180020 20 7946 0958", LONDON),  # the UK's 180020
    ("+61 1831 2 9876 5432", 61298765432),  # an Australian carrier code
    ("+36 06 1 234 5678", 3612345678),  # Hungary's trunk prefix 06
    ("+81 0037 6812 3456", 81003768123456),  # Japan: 0037... is a number, not a prefix
    ("+672 10 020", 672310020),  # Norfolk Island: 5-digit numbers get a 3 in front
    ("+261 20 91 317", 261202091317),  # Madagascar: 7-digit numbers get 20 in front
    ("+261 (0)20 2123456", 261202123456),
    ("+378 886377", 3780549886377),  # San Marino: 6-digit numbers get 0549 in front
    ("+54 0 11 15 1234 5678", 5491112345678),  # Argentina: 0 AREA 15 NUMBER is 9 AREA NUMBER
    ("+54 9 11 1234 5678", 5491112345678),
    ("+55 0 15 11 98765 4321", 5511987654321),  # Brazil: 0 and a carrier code
    ("+241 0 11 44 55 66", 24111445566),  # Gabon's old leading 0
    # Letters, keypad words, control characters, other scripts, emoji.
    ("138a", "has an invalid character 'a' at position 3"),
    ("1-800-FLOWERS", "has an invalid character 'F' at position 6"),
    ("+1-800-FLOWERS", "has an invalid character 'F' at position 7"),
    ("13812345678x", "has an invalid character 'x' at position 11"),
    ("13812345678 ext 12", "has an invalid character 'e' at position 12"),
    ("phone 13812345678", "has an invalid character 'p' at position 0"),
    ("138\t1234\t5678", "has an invalid character '\\t' at position 3"),
    ("13812345678\n", "has an invalid character '\\n' at position 11"),
    ("\x0013812345678", "has an invalid character '\\x00' at position 0"),
    ("138_1234_5678", "has an invalid character '_' at position 3"),
    ("138/1234/5678", "has an invalid character '/' at position 3"),
    ("tel:tel:13812345678", "has an invalid character 't' at position 4"),
    ("电话13812345678", "has an invalid character '电' at position 0"),
    ("１３８１２３４５６７８号", "has an invalid character '号' at position 11"),
    ("📞13812345678", "has an invalid character '📞' at position 0"),
    ("13812345678😀", "has an invalid character '😀' at position 11"),
    ("١٣٨١٢٣٤٥٦٧٨", "has an invalid character '١' at position 0"),  # not folded by NFKC
    # Empty, only separators, '+' misplaced.
    ("", EMPTY),
    ("   ", EMPTY),
    ("\u3000", EMPTY),
    ("---", EMPTY),
    ("( )", EMPTY),
    ("tel:", EMPTY),
    ("+", LONE_PLUS),
    ("+ ", LONE_PLUS),
    ("(+)", LONE_PLUS),
    ("tel:+", LONE_PLUS),
    ("＋", LONE_PLUS),
    ("138+12345678", MISPLACED_PLUS),
    ("13812345678+", 8613812345678),  # phonenumbers drops a trailing '+': SPEC §3's oracle
    ("++8613812345678", 8613812345678),  # ... and reads a run of leading ones as one
    ("+86+13812345678", MISPLACED_PLUS),
    ("+ +8613812345678", MISPLACED_PLUS),
    # Too short and too long.
    ("1", TOO_SHORT),
    ("1234", TOO_SHORT),
    ("123456", TOO_SHORT),
    ("95555", TOO_SHORT),
    ("+12", TOO_SHORT),
    ("+86 12345", TOO_SHORT),
    ("1381234567890123", TOO_LONG),
    ("13812345678901234567", TOO_LONG),
    ("1" * 30, TOO_LONG),
    ("+86 138 1234 5678 90", TOO_LONG),
    ("+86 138 1234 5678 9", NOT_CN),  # 12 digits: a possible length, not a shape
    ("+1234567890123456", TOO_LONG),
    ("+44 20 7946 0958 1234 56", TOO_LONG),
    # The right digits in the wrong shape.
    ("1381234567", NOT_CN),
    ("+86 138 1234 567", NOT_CN),
    ("+86 1 2345 6789", NOT_CN),
    ("+44 20 7946", BAD_LENGTH),
    ("+1 650 253 000", BAD_LENGTH),
    ("+1 1 310 1234", BAD_LENGTH),  # the trunk 1 stays before a local-only length: 8 digits
    ("+49 1", TOO_SHORT),
    # Unknown country codes.
    ("+999 1234 5678", UNKNOWN_COUNTRY),
    ("00999 1234 5678", UNKNOWN_COUNTRY),
    ("+0 138 1234 5678", UNKNOWN_COUNTRY),
    ("000 44 20 7946 0958", UNKNOWN_COUNTRY),
]


def _id(case: tuple[str, int | str]) -> str:
    return ascii(case[0])


@pytest.mark.parametrize("text, expected", NUMBER_CASES, ids=[_id(c) for c in NUMBER_CASES])
def test_normalize_number(text, expected):
    if isinstance(expected, int):
        got = anning.normalize_number(text)
        assert type(got) is int
        assert got == expected
        assert anning.normalize_number(got) == got  # a well-formed E.164 number (check_e164)
        return
    with pytest.raises(InvalidInput) as info:
        anning.normalize_number(text)
    message = str(info.value)
    assert message.startswith(f"number: {text!r} "), message
    assert expected in message, message


def test_the_golden_table_is_big_and_covers_both_outcomes():
    assert len(NUMBER_CASES) >= 100
    assert len({text for text, _ in NUMBER_CASES}) == len(NUMBER_CASES)
    assert sum(isinstance(e, int) for _, e in NUMBER_CASES) >= 50
    assert sum(isinstance(e, str) for _, e in NUMBER_CASES) >= 40


def test_the_golden_numbers_agree_with_phonenumbers_where_it_calls_them_valid():
    """The oracle of SPEC §3 on the table's own accepted inputs in its alphabet."""
    checked = 0
    for text, expected in NUMBER_CASES:
        body = text.strip(" ")
        body = body[4:] if body[:4].lower() == "tel:" else body
        if not isinstance(expected, int) or not set(body) <= set("0123456789 +-.()"):
            continue
        parsed = phonenumbers.parse(text, "CN")
        if phonenumbers.is_valid_number(parsed):
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            assert int(e164[1:]) == expected, text
            checked += 1
        else:
            assert phonenumbers.is_possible_number(parsed), text
    assert checked >= 60


ACCEPTED = [(t, e) for t, e in NUMBER_CASES if isinstance(e, int) and t.isascii()]
FULL_WIDTH = str.maketrans("0123456789+-() ", "０１２３４５６７８９＋－（）\u3000")


@given(st.sampled_from(ACCEPTED), st.lists(st.tuples(st.integers(0, 40),
                                                      st.sampled_from(" -.()\u3000")),
                                            max_size=6))
def test_separators_anywhere_change_nothing(case, inserts):
    text, expected = case
    start = text.lower().find("tel:") + 4 if "tel:" in text.lower() else 0
    # nor between a run of leading pluses: "++86..." is +86 to the oracle (SPEC §3), but
    # "+ +86..." is no number to it, and is refused
    pluses = len(text[start:]) - len(text[start:].lstrip("+"))
    if pluses > 1:
        start += pluses
    chars = list(text)
    for at, sep in inserts:
        chars.insert(min(start + at, len(chars)), sep)
    assert anning.normalize_number("".join(chars)) == expected


@given(st.sampled_from(ACCEPTED))
def test_full_width_changes_nothing(case):
    text, expected = case
    assert anning.normalize_number(text.translate(FULL_WIDTH)) == expected


@given(st.text(alphabet=st.sampled_from("0123456789+-.() \t\u3000８＋a電😀"), max_size=30)
       | st.text(max_size=30))
def test_any_text_is_a_number_or_invalid_input(text):
    try:
        value = anning.normalize_number(text)
    except InvalidInput as exc:
        assert str(exc).startswith(f"number: {text!r} ")
    else:
        assert 0 < value < 10**15
        assert anning.normalize_number(value) == value  # a well-formed E.164 number


def test_the_spec_examples_are_one_number():
    texts = ["13812345678", "+86 138-1234-5678", "8613812345678", "008613812345678",
             "１３８１２３４５６７８"]
    assert {anning.normalize_number(t) for t in texts} == {MOBILE}


def test_the_field_name_is_in_the_message():
    with pytest.raises(InvalidInput, match=r"^to: '138a' has an invalid character 'a'"):
        anning.normalize_number("138a", field="to")
    with pytest.raises(ValueError, match=r"^number: '' is empty$"):
        anning.normalize_number("")


def test_another_default_country():
    assert anning.normalize_number("020 7946 0958", default_country=44) == LONDON
    assert anning.normalize_number("+86 138 1234 5678", default_country=44) == MOBILE
    assert anning.normalize_number("(650) 253-0000", default_country=1) == 16502530000
    with pytest.raises(InvalidInput, match="default_country: 999 is not a country"):
        anning.normalize_number("13812345678", default_country=999)


@pytest.mark.parametrize(
    "value, expected",
    [
        (MOBILE, MOBILE),
        (LONDON, LONDON),
        (None, "number: None is not text"),
        (True, "number: True is not text"),
        (13812345678.0, "number: 13812345678.0 is not text"),
        (b"13812345678", "number: b'13812345678' is not text"),
        (0, "number: 0 is not an E.164 number"),
        (-MOBILE, "is not an E.164 number"),
        (10**15, "is not an E.164 number"),
        (9991234567, "has an unknown country code"),
    ],
)
def test_non_str_numbers(value, expected):
    if isinstance(expected, int):
        assert anning.normalize_number(value) == expected
        return
    with pytest.raises(InvalidInput) as info:
        anning.normalize_number(value)
    assert expected in str(info.value)


class Err(str):
    """An expected InvalidInput: a substring of its message."""


# Senders: (input, the normalised sender or Err(part of the message)).
SENDER_CASES: list[tuple[object, str]] = [
    ("【京东】", "京东"),
    ("京东", "京东"),
    (" 【京东】 ", "京东"),
    ("\u3000【京东】\u3000", "京东"),
    ("【 京东 】", "京东"),
    ("[JD]", "jd"),
    ("[ JD ]", "jd"),
    ("「X」", "x"),
    ("JD", "jd"),
    ("ＪＤ", "jd"),  # full-width, NFKC
    ("【ＪＤ】", "jd"),
    ("［JD］", "jd"),  # full-width square brackets become [ ]
    ("ｴｲﾁ", "エイチ"),  # half-width katakana, NFKC
    ("JD.com", "jd.com"),
    ("京东JD", "京东jd"),
    ("Äpfel", "Äpfel"),  # only ASCII letters are folded
    ("ÄPFEL", "Äpfel"),
    ("ÄB", "Äb"),
    ("İSTANBUL", "İstanbul"),
    ("ΣΟΦΙΑ", "ΣΟΦΙΑ"),
    ("Москва", "Москва"),
    ("【京东]", "【京东]"),  # not a pair: kept
    ("【【京东】】", "京东"),  # nested pairs too: the normal form is its own normal form
    ("〔京东〕", "〔京东〕"),  # other brackets are kept
    ("京东\n", "京东"),  # surrounding white space, whatever kind
    ("a" * 64, "a" * 64),
    ("【" + "a" * 64 + "】", "a" * 64),
    ("京" * 64, "京" * 64),
    ("a" * 65, Err("is longer than 64 characters")),
    ("京" * 65, Err("is longer than 64 characters")),
    ("", Err("is empty")),
    ("   ", Err("is empty")),
    ("\u3000", Err("is empty")),
    ("【】", Err("is empty")),
    ("[]", Err("is empty")),
    ("「」", Err("is empty")),
    ("【 】", Err("is empty")),
    ("京\t东", Err("has a control character '\\t'")),
    ("\x00京东", Err("has a control character '\\x00'")),
    ("京\x7f东", Err("has a control character '\\x7f'")),
    ("京\x85东", Err("has a control character '\\x85'")),
    ("【京\x1b东】", Err("has a control character '\\x1b'")),
    ("京\ud800东", Err("has a control character")),
    (None, Err("is not text")),
    (123, Err("is not text")),
    (b"JD", Err("is not text")),
    (["JD"], Err("is not text")),
]


@pytest.mark.parametrize("text, expected", SENDER_CASES, ids=[ascii(c[0]) for c in SENDER_CASES])
def test_normalize_sender(text, expected):
    if not isinstance(expected, Err):
        assert anning.normalize_sender(text) == expected
        return
    with pytest.raises(InvalidInput) as info:
        anning.normalize_sender(text)
    message = str(info.value)
    assert message.startswith(f"sender: {text!r} "), message
    assert expected in message, message


def test_the_spec_sender_examples_are_one_sender():
    assert {anning.normalize_sender(s) for s in ("【京东】", "京东", " 【京东】 ")} == {"京东"}


def test_sender_field_name():
    with pytest.raises(InvalidInput, match=r"^from: '' is empty$"):
        anning.normalize_sender("", field="from")


# Batch forms.


def test_normalize_numbers_gives_uint64():
    texts = ["13812345678", "+86 138-1234-5678", "8613812345678", "008613812345678",
             "１３８１２３４５６７８", "+44 (0)20 7946 0958"]
    got = anning.normalize_numbers(texts)
    assert got.dtype == np.uint64
    assert got.tolist() == [MOBILE] * 5 + [LONDON]
    empty = anning.normalize_numbers([])
    assert empty.dtype == np.uint64 and empty.shape == (0,)


def test_normalize_numbers_agrees_with_normalize_number():
    texts = [text for text, _ in NUMBER_CASES]
    got = anning.normalize_numbers(texts, strict=False).tolist()
    for (text, expected), value in zip(NUMBER_CASES, got, strict=True):
        assert value == (expected if isinstance(expected, int) else 0), text


def test_normalize_numbers_strict_names_the_item():
    with pytest.raises(InvalidInput, match=r"^number\[2\]: '138a' has an invalid character 'a'"):
        anning.normalize_numbers(["13812345678", "+8613812345678", "138a", ""])
    with pytest.raises(InvalidInput, match=r"^number\[0\]: '' is empty$"):
        anning.normalize_numbers([""])
    with pytest.raises(InvalidInput, match=r"^phones\[1\]: '\+' is a lone '\+'$"):
        anning.normalize_numbers(["13812345678", "+"], field="phones")
    with pytest.raises(InvalidInput, match=r"^number\[1\]: None is not text$"):
        anning.normalize_numbers(["13812345678", None])


def test_normalize_numbers_non_strict_gives_zero():
    got = anning.normalize_numbers(
        ["13812345678", "138a", "", "+", "1234", None, MOBILE, "+999 1234 5678",
         "tel:+8613812345678"],
        strict=False,
    )
    assert got.tolist() == [MOBILE, 0, 0, 0, 0, 0, MOBILE, 0, MOBILE]


def test_normalize_senders():
    assert anning.normalize_senders(["【京东】", "京东", " 【京东】 ", "[JD]", "ＪＤ"]) == [
        "京东", "京东", "京东", "jd", "jd"]
    assert anning.normalize_senders([]) == []
    with pytest.raises(InvalidInput, match=r"^sender\[1\]: '【】' is empty$"):
        anning.normalize_senders(["【京东】", "【】"])
    with pytest.raises(InvalidInput, match=r"^sender\[2\]: None is not text$"):
        anning.normalize_senders(["a", "b", None])
    with pytest.raises(InvalidInput, match=r"^from\[0\]: 'a{65}' is longer than 64"):
        anning.normalize_senders(["a" * 65], field="from")
