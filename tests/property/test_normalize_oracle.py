"""The number normaliser against the `phonenumbers` oracle (SPEC §3).

The rule: for every input made only of digits, spaces, ``+ - . ( )`` and an optional ``tel:``
that phonenumbers (parsing with region CN) finds *valid*, our E.164 digits equal its E.164
digits; every input it cannot parse or finds *impossible* we reject with InvalidInput. For
inputs it finds possible but not valid, either answer is allowed.

The inputs are generated with a fixed seed: Chinese mobiles and fixed lines in all the written
forms, Chinese service numbers and carrier prefixes, example numbers of every region and type
(also with "(0)" after the country code), random digit tails after real country codes, and
random digit strings, each maybe with separators and a ``tel:`` prefix.

The country table (tools/gen_country_table.py) translates phonenumbers' parsing metadata for
countries other than China: possible lengths, national_prefix_for_parsing and
national_prefix_transform_rule as ordered prefix rules, the general pattern as a DFA. The
translation is checked against Python's regex engine here too. Disagreements about a code whose
patterns the generator could not translate (its inexact_codes(), none for the phonenumbers
this was written against) are counted apart as known gaps (see known_gap).
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

import anning

# the build's generator of the country table, read from the source tree (it is no module of
# the installed package)
_TOOL = Path(__file__).resolve().parents[2] / "tools" / "gen_country_table.py"
_spec = importlib.util.spec_from_file_location("gen_country_table", _TOOL)
assert _spec is not None and _spec.loader is not None
gen_country_table = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gen_country_table", gen_country_table)  # its dataclasses look it up
_spec.loader.exec_module(gen_country_table)

SEED = 20240607
N_INPUTS = 120_000
REGION = "CN"

# Real Chinese area codes: Beijing 10, the 2x cities, and a spread of 3-digit codes.
CN_AREA_CODES = (
    "10", "20", "21", "22", "23", "24", "25", "27", "28", "29", "311", "351", "371", "379", "391",
    "411", "431", "451", "471", "510", "512", "513", "516", "531", "532", "535", "551", "571",
    "573", "574", "577", "579", "591", "592", "595", "631", "635", "660", "662", "663", "668",
    "710", "711", "731", "734", "750", "752", "753", "754", "755", "756", "757", "758", "759",
    "760", "762", "763", "769", "771", "773", "791", "797", "812", "816", "817", "818", "825",
    "827", "830", "838", "851", "852", "871", "872", "873", "891", "898", "899", "931", "937",
    "951", "971", "991", "997",
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

    def cn_special() -> str:
        """Service, premium and toll-free numbers, and IP-dialling carrier prefixes."""
        kind = rng.randrange(5)
        if kind == 0:  # a short service number after an area code
            service = rng.choice(("95", "96", "100", "123", "1", "9"))
            area = rng.choice(("0", "")) + rng.choice(CN_AREA_CODES)
            return area + service + _digits(rng, rng.randint(1, 4))
        if kind == 1:
            head = rng.choice(("1010", "1096", "160", "168", "400", "950", "10800", "800"))
            return head + _digits(rng, rng.randint(3, 8))
        carrier = rng.choice(("11", "12", "179")) + _digits(rng, 3)
        carrier = carrier[:5]
        if kind == 2:  # carrier prefix + national number, maybe after 86, +86 or a trunk 0
            lead = rng.choice(("", "", "86", "+86 ", "0086", "0"))
            return lead + carrier + rng.choice(("", "0")) + _cn_nsn(rng)
        if kind == 3:  # carrier prefix + 00 + a foreign number
            example = rng.choice(examples)
            nsn = phonenumbers.national_significant_number(example)
            return carrier + "00" + str(example.country_code) + nsn
        return carrier + _digits(rng, rng.randint(1, 14))

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
        ("cn_special", cn_special, 6),
        ("foreign_example", foreign_example, 18),
        ("foreign_random", foreign_random, 14),
        ("random_digits", random_digits, 12),
        ("random_plus", random_plus, 6),
    ]
    names = [m[0] for m in makers]
    weights = [m[2] for m in makers]
    by_name = {m[0]: m[1] for m in makers}
    out = []
    for _ in range(n):
        name = rng.choices(names, weights)[0]
        out.append((name, _decorate(rng, by_name[name]())))
    return out


VALID, REJECT, EITHER = "valid", "reject", "either"


def _metadata(code: int) -> phonenumbers.PhoneMetadata:
    region = phonenumbers.region_code_for_country_code(code)
    if region == "001":
        return phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)
    return phonenumbers.PhoneMetadata.metadata_for_region(region)


INEXACT = gen_country_table.inexact_codes()


def known_gap(text: str, parsed: phonenumbers.PhoneNumber) -> str | None:
    """Why a disagreement about `text` is a known gap of the country table, or None.

    One shape: a number of a code whose national_prefix_for_parsing, transform rule or general
    pattern tools/gen_country_table.py could not translate (the table then holds only its plain
    one-digit national prefix), whose digits after the country code start with what that
    national_prefix_for_parsing matches (or, when the transform rule is what failed, with what
    the rule rewrites): that is where phonenumbers strips or rewrites by rules the table does
    not hold.
    """
    code = parsed.country_code
    if code not in INEXACT:
        return None
    digits = "".join(ch for ch in text if ch.isdigit())
    idd = re.match(f"(?:{_metadata(86).international_prefix})", digits)  # 00, 17951 00, ...
    if idd:
        digits = digits[idd.end() :]
    if not digits.startswith(str(code)):
        return None
    rest = digits[len(str(code)) :]
    parsing = _metadata(code).national_prefix_for_parsing or ""
    match = re.match(parsing, rest) if parsing else None
    if match is None or not (match.group(0) or _metadata(code).national_prefix_transform_rule):
        return None
    return f"+{code} national prefix rules beyond the table ({INEXACT[code]})"


def oracle(text: str) -> tuple[str, int | None, str, str | None]:
    """What phonenumbers says: (verdict, E.164 digits when valid, its reason, known gap).

    Two refinements where SPEC §3's rules would otherwise contradict each other, both of which
    make the expected answer "reject", never "either":
    - a number phonenumbers calls valid *and* impossible (is_possible_number tests only the
      main region of a shared country code) is impossible: the country table records the
      lengths is_possible_number tests;
    - a valid number of a country other than China whose E.164 form has fewer than 7 or more
      than 15 digits (Iran's "+98 9601", Germany's 15-digit national numbers) is outside SPEC's
      "7-15 digits in all" (and E.164's 15-digit limit), so it is too short or too long.
    """
    try:
        parsed = phonenumbers.parse(text, REGION)
    except NumberParseException as exc:
        return REJECT, None, f"parse error {exc.error_type}", None
    gap = known_gap(text, parsed)
    if not phonenumbers.is_possible_number(parsed):
        valid = ", though valid" if phonenumbers.is_valid_number(parsed) else ""
        return REJECT, None, "impossible" + valid, gap
    if phonenumbers.is_valid_number(parsed):
        e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
        if not 7 <= len(e164) - 1 <= 15:
            return REJECT, None, f"valid {e164} but outside SPEC's 7-15 digits", gap
        return VALID, int(e164[1:]), "valid", gap
    return EITHER, None, "possible, not valid", gap


class Report:
    """Disagreements with phonenumbers: real ones, and known gaps of the country table."""

    def __init__(self, cases: list[tuple[str, str]]) -> None:
        ours = anning.normalize_numbers([text for _, text in cases], strict=False)
        self.accepted = sorted(set(ours.tolist()) - {0})
        self.problems: list[str] = []
        self.gaps: list[str] = []
        self.foreign_digits: list[str] = []
        self.verdicts: Counter = Counter()
        for (category, text), got in zip(cases, ours.tolist(), strict=True):
            verdict, want, reason, gap = oracle(text)
            self.verdicts[verdict] += 1
            if verdict == VALID and got != want:
                line = f"{category}: {text!r} phonenumbers {want} ({reason}), ours {got}"
            elif verdict == REJECT and got != 0:
                line = f"{category}: {text!r} phonenumbers {reason}, ours {got}"
            elif verdict == EITHER and got != 0:
                # Beyond SPEC: outside China the table reproduces phonenumbers' parsing, so a
                # possible number we accept has its digits too.
                parsed = phonenumbers.parse(text, REGION)
                if parsed.country_code == 86 or gap is not None:
                    continue
                theirs = int(phonenumbers.format_number(parsed, PhoneNumberFormat.E164)[1:])
                if got != theirs:
                    self.foreign_digits.append(f"{category}: {text!r} phonenumbers {theirs} "
                                               f"({reason}), ours {got}")
                continue
            else:
                continue
            if gap is None:
                self.problems.append(line)
            else:
                self.gaps.append(f"{line} [known gap: {gap}]")


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, str]]:
    return generate()


@pytest.fixture(scope="module")
def report(cases) -> Report:
    return Report(cases)


def test_generator_is_deterministic_and_in_the_oracle_alphabet(cases):
    assert len(cases) >= 100_000
    assert generate(n=500) == cases[:500]
    for _, text in cases:
        body = text[4:] if text[:4].lower() == "tel:" else text
        assert set(body) <= ALLOWED, text
    counts = Counter(category for category, _ in cases)
    assert len(counts) == 10 and min(counts.values()) > 3000, counts


def test_agrees_with_phonenumbers(report):
    # The generator must exercise every verdict substantially, or the test proves little.
    assert report.verdicts[VALID] > 40_000, report.verdicts
    assert report.verdicts[REJECT] > 10_000, report.verdicts
    shown = "\n".join(report.problems[:20])
    assert not report.problems, (
        f"{len(report.problems)} disagreements with phonenumbers, first 20:\n{shown}"
    )


def test_every_accepted_number_is_well_formed_e164(report):
    """What the parser returns, check_e164 (normalize_number of an int) accepts unchanged."""
    assert len(report.accepted) > 40_000
    for value in report.accepted:
        assert anning.normalize_number(value) == value


def test_foreign_numbers_we_accept_have_the_digits_phonenumbers_gives(report):
    """Also where phonenumbers calls a number outside China possible but not valid."""
    shown = "\n".join(report.foreign_digits[:20])
    assert not report.foreign_digits, f"{len(report.foreign_digits)}, first 20:\n{shown}"


def test_known_gaps_are_few(report, cases):
    """The known gaps stay rare: a handful of countries' special parsing rules."""
    assert len(report.gaps) < len(cases) // 1000, "\n".join(report.gaps[:20])


def test_no_known_gaps_either(report):
    shown = "\n".join(report.gaps[:20])
    assert not report.gaps, f"{len(report.gaps)} known-gap disagreements, first 20:\n{shown}"


def test_the_generator_translates_every_code():
    """Every code's parsing metadata fits the rules and DFAs of the country table."""
    assert INEXACT == {}


# --- The country table's translation of the metadata, against Python's regex engine ---


def _examples_by_code() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for example in _example_numbers():
        nsn = phonenumbers.national_significant_number(example)
        out.setdefault(example.country_code, []).append(nsn)
    return out


def _variants(rng: random.Random, nsn: str) -> list[str]:
    """The number, and near misses: shortened, lengthened, a digit changed, digits in front."""
    i = rng.randrange(len(nsn))
    return [
        nsn,
        nsn[:-1],
        nsn + rng.choice("0123456789"),
        nsn[:i] + rng.choice("0123456789") + nsn[i + 1 :],
        rng.choice("0123456789") + nsn,
        nsn[1:],
    ]


def _witness(rng: random.Random, rule: gen_country_table.Rule) -> str:
    """Digits a rule matches."""
    return "".join(rng.choice([str(d) for d in range(10) if m >> d & 1]) for m in rule.masks)


COUNTRIES = gen_country_table.build_countries()


def test_general_pattern_dfas_match_as_re_does():
    rng = random.Random(SEED)
    examples = _examples_by_code()
    checked = matched = 0
    for code, country in sorted(COUNTRIES.items()):
        if country.dfa is None:
            continue
        pattern = re.compile(_metadata(code).general_desc.national_number_pattern)
        nsns = examples.get(code, []) * 3
        texts = [v for nsn in nsns for v in _variants(rng, nsn)]
        texts += [_digits(rng, rng.randint(1, 17)) for _ in range(100)]
        for text in texts:
            want = pattern.fullmatch(text) is not None
            assert gen_country_table.dfa_fullmatch(country.dfa, text) == want, (code, text)
            checked += 1
            matched += want
    assert checked > 20_000 and matched > 2_000, (checked, matched)


def test_prefix_rules_match_as_re_does():
    """The rules give what national_prefix_for_parsing and the transform rule make of a number
    (before phonenumbers' viability and length tests, which ext/number.h applies after)."""
    rng = random.Random(SEED)
    examples = _examples_by_code()
    checked = changed = 0
    for code, country in sorted(COUNTRIES.items()):
        meta = _metadata(code)
        if not country.rules:
            assert code == 86 or not meta.national_prefix_for_parsing, code
            continue
        pattern = re.compile(meta.national_prefix_for_parsing)
        transform = meta.national_prefix_transform_rule
        texts = [_digits(rng, rng.randint(1, 17)) for _ in range(40)]
        for rule in country.rules:
            for _ in range(20):
                tail = rng.choice([*examples.get(code, [""]), _digits(rng, rng.randint(0, 12))])
                texts.append(_witness(rng, rule) + ("" if rule.anchored else tail))
        for text in texts:
            match = pattern.match(text)
            if match is None:
                want = text
            elif transform and match.groups()[-1] is not None:
                want = pattern.sub(transform, text, count=1)
            else:
                want = text[match.end() :]
            got = gen_country_table.apply_rules(country.rules, text)
            assert (text if got is None else got) == want, (code, text)
            checked += 1
            changed += want != text
    assert checked > 10_000 and changed > 5_000, (checked, changed)


def test_countries_with_prefix_rules_against_phonenumbers():
    """The oracle's rules, and the digits of the possible numbers we accept, on numbers made for
    the national prefix rules: their prefixes before example numbers and random digits."""
    rng = random.Random(SEED)
    examples = _examples_by_code()
    texts = []
    for code, country in sorted(COUNTRIES.items()):
        if code == 86 or not country.rules:
            continue
        rich = len(country.rules) > 1 or any(r.literal or r.anchored for r in country.rules)
        for _ in range(300 if rich else 20):
            pick = rng.random()
            if pick < 0.6:
                rule = rng.choice(country.rules)
                body = _witness(rng, rule)
                if not rule.anchored and examples.get(code) and rng.random() < 0.5:
                    body += rng.choice(examples[code])
                elif not rule.anchored:
                    body += _digits(rng, rng.randint(0, 12))
            elif pick < 0.8 and examples.get(code):
                body = rng.choice(("", "0", _digits(rng, 1), _digits(rng, 2)))
                body += rng.choice(examples[code])
            else:
                body = _digits(rng, rng.randint(1, 15))
            texts.append(rng.choice(("+", "00")) + str(code) + body)
    ours = anning.normalize_numbers(texts, strict=False).tolist()
    problems, verdicts = [], Counter()
    for text, got in zip(texts, ours, strict=True):
        verdict, want, reason, gap = oracle(text)
        verdicts[verdict] += 1
        assert gap is None
        if verdict == EITHER and got:
            parsed = phonenumbers.parse(text, REGION)
            want = int(phonenumbers.format_number(parsed, PhoneNumberFormat.E164)[1:])
        elif verdict == EITHER:
            continue
        if got != (want or 0):
            problems.append(f"{text!r} phonenumbers {want} ({reason}), ours {got}")
    assert min(verdicts.values()) > 1000, verdicts
    assert not problems, f"{len(problems)}, first 20:\n" + "\n".join(problems[:20])


def test_rejected_inputs_raise_invalid_input(cases):
    """The single-item form agrees with the batch and raises InvalidInput naming the input."""
    sample = cases[:3000]
    ours = anning.normalize_numbers([text for _, text in sample], strict=False)
    for (_, text), got in zip(sample, ours.tolist(), strict=True):
        if got:
            assert anning.normalize_number(text) == got, text
            continue
        with pytest.raises(anning.InvalidInput) as info:
            anning.normalize_number(text)
        assert str(info.value).startswith(f"number: {text!r} ")


if __name__ == "__main__":
    result = Report(generate(int(sys.argv[1]) if len(sys.argv) > 1 else SEED))
    print(result.verdicts, len(result.problems), len(result.gaps), len(result.foreign_digits))
    print("\n".join(result.problems[:200]))
    print("\n".join(result.gaps[:200]))
    print("\n".join(result.foreign_digits[:200]))
