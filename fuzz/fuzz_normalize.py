"""Fuzz target: number and sender normalisation (anning._normalize, C in ext/number.h).

Properties, per input (SPEC §3):
- numbers made only of digits, spaces, `+ - . ( )` and an optional `tel:`: phonenumbers, parsing
  with region CN, is the oracle. Where it finds the number valid, the E.164 digits agree; where
  it cannot parse it or finds it impossible, anning rejects it. (Two refinements, as in
  tests/test_normalize_oracle.py: valid-but-impossible is impossible, and a valid foreign number
  outside 7-15 digits is rejected.) Where it is possible but not valid, an accepted number
  outside China has its digits too. Full-width digits are the same number.
- any text: the result is an E.164 number that check_e164 accepts unchanged, or InvalidInput
  whose message names the field and shows the value; text with a letter (after `tel:`) is
  always invalid; normalize_numbers agrees with normalize_number item by item, strict or not.
- senders: the result is 1-64 characters without control characters, and normalising it again
  returns it unchanged (idempotence: a stored sender is found by its own name); bad text raises
  InvalidInput naming the field and showing the value.
Run: python fuzz/fuzz_normalize.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import unicodedata

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberFormat

    from anning import InvalidInput, normalize_number, normalize_numbers, normalize_sender
    from anning._normalize import check_e164

ALPHABET = "0123456789 +-.()"
FULL_WIDTH = str.maketrans("0123456789+-.() ", "０１２３４５６７８９＋－．（）　")
PIECES = ["+86", "0086", "86", "138", "1234", "5678", "010", "0755", "+44", "(0)", "17951",
          "00", "+1", "+49", "400", "95555", " ", "-"]
VALID, REJECT, EITHER = "valid", "reject", "either"


def oracle(text: str) -> tuple[str, int | None, int]:
    """(verdict, E.164 digits when valid, country code) as phonenumbers has it."""
    try:
        parsed = phonenumbers.parse(text, "CN")
    except NumberParseException:
        return REJECT, None, 0
    if not phonenumbers.is_possible_number(parsed):
        return REJECT, None, parsed.country_code
    e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    if phonenumbers.is_valid_number(parsed):
        if not 7 <= len(e164) - 1 <= 15:
            return REJECT, None, parsed.country_code
        return VALID, int(e164[1:]), parsed.country_code
    return EITHER, int(e164[1:]), parsed.country_code


def _longer_than_spec_fixed_line(text: str) -> bool:
    """A +86 toll-free number behind an area code ('21-8000372073': 21 8000372073, CI's fuzz
    run), which phonenumbers finds valid and SPEC §3's own +86 rule refuses (mobile, or an
    area code and 7-8 digits; "anything else is invalid"): where the two parts of SPEC §3
    disagree its +86 rule decides; a known gap, in the closing note."""
    parsed = phonenumbers.parse(text, "CN")
    if parsed.country_code != 86:
        return False
    national = phonenumbers.national_significant_number(parsed)
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.TOLL_FREE and \
        not national.startswith(("400", "800"))


def ours(text: str, field: str = "number") -> int | None:
    """normalize_number's value, or None for InvalidInput (checked to name field and value)."""
    try:
        value = normalize_number(text, 86, field)
    except InvalidInput as exc:
        expect(str(exc).startswith(f"{field}: {text!r} "), f"message {exc} for {text!r}")
        return None
    expect(type(value) is int and check_e164(value) == value,
           f"{text!r} gave {value!r}, not an E.164 number check_e164 takes")
    return value


def check_number_oracle(text: str) -> None:
    got = ours(text)
    verdict, want, code = oracle(text)
    if verdict == VALID and not _longer_than_spec_fixed_line(text):
        expect(got == want, f"{text!r}: phonenumbers finds {want} valid, anning {got}")
    elif verdict == REJECT:
        expect(got is None, f"{text!r}: phonenumbers rejects it, anning gives {got}")
    elif got is not None and code != 86:
        expect(got == want, f"{text!r}: possible +{code} number {want}, anning {got}")
    expect(ours(text.translate(FULL_WIDTH)) == got, f"{text!r} in full width reads otherwise")


def check_number_any(text: str) -> None:
    got = ours(text)
    body = unicodedata.normalize("NFKC", text).lstrip(" ")
    if body[:4].lower() == "tel:":
        body = body[4:]
    if any(ch.isalpha() for ch in body):
        expect(got is None, f"{text!r} has a letter, yet gives {got}")


def check_numbers(texts: list[str]) -> None:
    each = [ours(t, f"number[{i}]") for i, t in enumerate(texts)]
    loose = normalize_numbers(texts, strict=False).tolist()
    expect(loose == [v or 0 for v in each], f"normalize_numbers(strict=False) {loose}, {each}")
    try:
        strict = normalize_numbers(texts).tolist()
    except InvalidInput as exc:
        first = next((i for i, v in enumerate(each) if v is None), None)
        expect(first is not None and str(exc).startswith(f"number[{first}]: {texts[first]!r} "),
               f"normalize_numbers raised {exc} for {texts!r}")
        return
    expect(None not in each and strict == each, f"normalize_numbers {strict}, {each}")


def check_sender(text: str) -> None:
    try:
        sender = normalize_sender(text, "sender")
    except InvalidInput as exc:
        expect(str(exc).startswith(f"sender: {text!r} "), f"message {exc} for {text!r}")
        return
    expect(isinstance(sender, str) and 1 <= len(sender) <= 64, f"{text!r} gave {sender!r}")
    expect(not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in sender),
           f"{text!r} gave {sender!r} with a control character")
    expect(normalize_sender(sender) == sender, f"{text!r} -> {sender!r} -> "
                                               f"{normalize_sender(sender)!r}: not idempotent")


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # the oracle's alphabet, from pieces and single characters
        parts = []
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            if fdp.ConsumeBool():
                parts.append(fdp.PickValueInList(PIECES))
            else:
                parts.append("".join(fdp.PickValueInList(list(ALPHABET))
                                     for _ in range(fdp.ConsumeIntInRange(0, 8))))
        prefix = fdp.PickValueInList(["", "", "", "tel:", "TEL:"])  # only as a prefix
        check_number_oracle(prefix + "".join(parts))
    elif mode == 1:
        check_number_any(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40)))
    elif mode == 2:
        check_numbers([fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 20))
                       for _ in range(fdp.ConsumeIntInRange(0, 4))])
    else:
        check_sender(fdp.ConsumeUnicode(fdp.remaining_bytes()))


if __name__ == "__main__":
    _harness.run(test_one_input)
