"""The number normaliser against the `phonenumbers` oracle (SPEC §3).

The rule: for every input made only of digits, spaces, ``+ - . ( )`` and an optional ``tel:``
that phonenumbers (parsing with region CN) finds *valid*, our E.164 digits equal its E.164
digits; every input it cannot parse or finds *impossible* we reject with InvalidInput. For
inputs it finds possible but not valid, either answer is allowed.

The inputs are generated with a fixed seed: Chinese mobiles and fixed lines in all the written
forms, example numbers of every region and type, random digit tails after real country codes,
and random digit strings, each maybe with separators and a ``tel:`` prefix.
"""

from __future__ import annotations

import random
from collections import Counter

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

import anning

SEED = 20240607
N_INPUTS = 120_000
REGION = "CN"

# Real Chinese area codes: Beijing 10, the 2x cities, and a spread of 3-digit codes.
CN_AREA_CODES = (
    ["10", "20", "21", "22", "23", "24", "25", "27", "28", "29"]
    + "311 351 371 379 391 411 431 451 471 510 512 513 516 531 532 535 551 571 573 574 577"
    " 579 591 592 595 631 635 660 662 663 668 710 711 731 734 750 752 753 754 755 756 757"
    " 758 759 760 762 763 769 771 773 791 797 812 816 817 818 825 827 830 838 851 852 871"
    " 872 873 891 898 899 931 937 951 971 991 997".split()
)
SEPARATORS = [" ", " ", "-", "-", ".", "(", ")", "  "]
TEL_PREFIXES = ["tel:", "tel:", "TEL:", "Tel:"]
ALLOWED = set("0123456789 +-.()")

TYPES = [
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
]


def _example_numbers() -> list[phonenumbers.PhoneNumber]:
    """Example numbers of every region and type phonenumbers has, and the non-geographic ones."""
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                out.append(example)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            out.append(example)
    return out


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _cn_mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + _digits(rng, 9)


def _cn_fixed(rng: random.Random) -> str:
    """An area code and a 7-8 digit subscriber number (first digit usually 2-9)."""
    first = rng.choice("23456789") if rng.random() < 0.9 else rng.choice("0123456789")
    return rng.choice(CN_AREA_CODES) + first + _digits(rng, rng.choice((6, 7)))


def _cn_nsn(rng: random.Random) -> str:
    return _cn_mobile(rng) if rng.random() < 0.5 else _cn_fixed(rng)


def _decorate(rng: random.Random, text: str) -> str:
    """Maybe insert separators anywhere, and maybe a tel: prefix."""
    if rng.random() < 0.6:
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(SEPARATORS))
        text = "".join(chars)
    if rng.random() < 0.12:
        text = rng.choice(TEL_PREFIXES) + text
    return text


def generate(seed: int = SEED, n: int = N_INPUTS) -> list[tuple[str, str]]:
    """(category, input) pairs, deterministic for the seed."""
    rng = random.Random(seed)
    examples = _example_numbers()
    codes = sorted({e.country_code for e in examples})

    def cn_mobile() -> str:
        return _cn_mobile(rng)

    def cn_plus86() -> str:
        trunk = "0" if rng.random() < 0.15 else ""
        return rng.choice(("+86", "+86 ", "+ 86", "(+86)")) + trunk + _cn_nsn(rng)

    def cn_0086() -> str:
        return "0086" + ("0" if rng.random() < 0.1 else "") + _cn_nsn(rng)

    def cn_86() -> str:
        return "86" + _cn_nsn(rng)

    def cn_fixed() -> str:
        return ("0" if rng.random() < 0.7 else "") + _cn_fixed(rng)

    def foreign_example() -> str:
        example = rng.choice(examples)
        prefix = rng.choice(("+", "+", "00"))
        nsn = phonenumbers.national_significant_number(example)
        style = rng.random()
        if style < 0.4:
            return prefix + str(example.country_code) + nsn
        if style < 0.8:
            international = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
            return prefix + international[1:]
        # The trunk prefix written after the country code, as in "+44 (0)20 ...".
        return f"{prefix}{example.country_code} (0){nsn}"

    def foreign_random() -> str:
        prefix = rng.choice(("+", "+", "00"))
        return prefix + str(rng.choice(codes)) + _digits(rng, rng.randint(1, 14))

    def random_digits() -> str:
        return _digits(rng, rng.randint(1, 18))

    def random_plus() -> str:
        return rng.choice(("+", "00")) + _digits(rng, rng.randint(1, 17))

    makers = [
        ("cn_mobile", cn_mobile, 12),
        ("cn_plus86", cn_plus86, 12),
        ("cn_0086", cn_0086, 6),
        ("cn_86", cn_86, 8),
        ("cn_fixed", cn_fixed, 12),
        ("foreign_example", foreign_example, 18),
        ("foreign_random", foreign_random, 14),
        ("random_digits", random_digits, 12),
        ("random_plus", random_plus, 6),
    ]
    names = [m[0] for m in makers]
    weights = [m[2] for m in makers]
    by_name = {m[0]: m[1] for m in makers}
    out = []
    for name in rng.choices(names, weights, k=n):
        out.append((name, _decorate(rng, by_name[name]())))
    return out


VALID, REJECT, EITHER = "valid", "reject", "either"


def oracle(text: str) -> tuple[str, int | None, str]:
    """What phonenumbers says: (verdict, E.164 digits when valid, its reason)."""
    try:
        parsed = phonenumbers.parse(text, REGION)
    except NumberParseException as exc:
        return REJECT, None, f"parse error {exc.error_type}"
    if phonenumbers.is_valid_number(parsed):
        e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
        return VALID, int(e164[1:]), "valid"
    if not phonenumbers.is_possible_number(parsed):
        return REJECT, None, "impossible"
    return EITHER, None, "possible, not valid"


def disagreements(cases: list[tuple[str, str]]) -> tuple[list[str], Counter]:
    ours = anning.normalize_numbers([text for _, text in cases], strict=False)
    problems = []
    verdicts: Counter = Counter()
    for (category, text), got in zip(cases, ours.tolist(), strict=True):
        verdict, want, reason = oracle(text)
        verdicts[verdict] += 1
        if verdict == VALID and got != want:
            problems.append(f"{category}: {text!r} phonenumbers {want} ({reason}), ours {got}")
        elif verdict == REJECT and got != 0:
            problems.append(f"{category}: {text!r} phonenumbers {reason}, ours {got}")
    return problems, verdicts


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, str]]:
    return generate()


def test_generator_is_deterministic_and_in_the_oracle_alphabet(cases):
    assert len(cases) >= 100_000
    assert generate(n=500) == cases[:500]
    for _, text in cases:
        body = text[4:] if text[:4].lower() == "tel:" else text
        assert set(body) <= ALLOWED, text
    counts = Counter(category for category, _ in cases)
    assert len(counts) == 9 and min(counts.values()) > 3000, counts


def test_agrees_with_phonenumbers(cases):
    problems, verdicts = disagreements(cases)
    # The generator must exercise every verdict substantially, or the test proves little.
    assert verdicts[VALID] > 40_000 and verdicts[REJECT] > 10_000, verdicts
    shown = "\n".join(problems[:20])
    assert not problems, f"{len(problems)} disagreements with phonenumbers, first 20:\n{shown}"


def test_rejected_inputs_raise_invalid_input(cases):
    """Where the batch gives 0, the single-item form raises InvalidInput naming the input."""
    sample = cases[:3000]
    ours = anning.normalize_numbers([text for _, text in sample], strict=False)
    rejected = [text for (_, text), got in zip(sample, ours.tolist(), strict=True) if got == 0]
    assert rejected
    for text in rejected:
        with pytest.raises(anning.InvalidInput) as info:
            anning.normalize_number(text)
        assert str(info.value).startswith(f"number: {text!r} ")


if __name__ == "__main__":
    found, seen = disagreements(generate())
    print(seen)
    print(len(found))
    print("\n".join(found[:200]))
