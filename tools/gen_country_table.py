"""Generate ext/country_table.h from the phonenumbers metadata (run by setup.py at build).

The normaliser (ext/number.h) reproduces, without a regex engine, what phonenumbers' parse and
is_possible_number do with a number outside the default country. For every country calling
code except China's +86 (whose rules ext/number.h spells out) the table records, from the
metadata of the code's main region (the one parse and is_possible_number use):

- lengths: the national lengths accepted. The main region's possible lengths, and those another
  region of the code calls possible while the main region calls them possible-local-only
  (Canada's 7-digit +1 numbers, which the US calls local-only). is_possible_number counts
  local-only lengths as possible, so no length it calls impossible is ever accepted.
- possible, local_only, max_possible: the main region's lengths, for the length test parse makes
  after stripping a national prefix (it keeps the stripped form only if that length is possible
  or too long, not too short, local-only or an impossible length in between).
- rules: national_prefix_for_parsing expanded into its alternatives in the order Python's
  backtracking regex engine tries them, so the first rule that matches is the regex's match.
  Each is a sequence of digit masks, maybe anchored at the end ('$'), and what the number
  becomes: literal digits and one slice of the match from national_prefix_transform_rule when
  the pattern's last group took part (Norfolk Island's 5-digit numbers get a 3 in front,
  Argentina's "0 11 15 ..." becomes "9 11 ..."), then the rest of the number; otherwise just the
  rest (a trunk prefix or carrier code is dropped).
- a DFA of the main region's general national-number pattern: parse does not strip when the
  number as written is viable (matches it in full) and the stripped one is not.

A code whose patterns use constructs outside the small subset handled here is marked inexact
(inexact_codes() says why); ext/number.h then strips only its plain one-digit national prefix.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

ALL_DIGITS = 0x3FF
MAX_PATHS = 1000      # alternatives of one national_prefix_for_parsing
MAX_RULE_DIGITS = 24  # digits one alternative may match
MAX_LITERAL = 7       # literal digits one transform may write
MAX_DFA_STATES = 32000


class Unsupported(ValueError):
    """A pattern construct this generator does not translate."""


def _class_mask(items) -> int:
    mask = 0
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            if 48 <= arg <= 57:
                mask |= 1 << (arg - 48)
        elif name == "RANGE":
            for c in range(max(arg[0], 48), min(arg[1], 57) + 1):
                mask |= 1 << (c - 48)
        elif name == "CATEGORY" and str(arg) == "CATEGORY_DIGIT":
            mask |= ALL_DIGITS
        else:
            raise Unsupported(f"character class item {name}")
    return mask


def _atom_mask(name: str, arg) -> int | None:
    """The digit mask of a one-character item, or None if it is not one."""
    if name == "LITERAL":
        return 1 << (arg - 48) if 48 <= arg <= 57 else 0
    if name == "IN":
        return _class_mask(arg)
    return None


# --- Regular language of digit strings: a DFA (for the general national-number pattern) ---


class _Nfa:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[int, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.moves.append([])
        return len(self.eps) - 1

    def build(self, items, start: int) -> int:
        """Thompson construction of a parsed pattern from `start`; returns the end state."""
        cur = start
        for op, arg in items:
            name = str(op)
            mask = _atom_mask(name, arg)
            if mask is not None:
                nxt = self.state()
                self.moves[cur].append((mask, nxt))
                cur = nxt
            elif name == "BRANCH":
                end = self.state()
                for alt in arg[1]:
                    self.eps[self.build(alt, cur)].append(end)
                cur = end
            elif name == "SUBPATTERN":
                cur = self.build(arg[-1], cur)
            elif name in ("MAX_REPEAT", "MIN_REPEAT"):
                low, high, body = arg
                if high == sre_constants.MAXREPEAT or high > 40:
                    raise Unsupported("unbounded repeat")
                for _ in range(low):
                    cur = self.build(body, cur)
                end = self.state()
                self.eps[cur].append(end)
                for _ in range(high - low):
                    cur = self.build(body, cur)
                    self.eps[cur].append(end)
                cur = end
            else:
                raise Unsupported(f"{name} in a national-number pattern")
        return cur


def build_dfa(pattern: str) -> tuple[list[list[int]], list[bool]]:
    """A minimal DFA over the digits accepting the strings `pattern` matches in full.

    Transitions are state numbers or -1 (no match possible); state 0 is the start.
    """
    nfa = _Nfa()
    start = nfa.state()
    final = nfa.build(sre_parse.parse(pattern), start)

    def closure(states) -> frozenset[int]:
        seen = set(states)
        stack = list(seen)
        while stack:
            for nxt in nfa.eps[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)

    first = closure([start])
    ids = {first: 0}
    order = [first]
    moves: list[list[int]] = []
    for subset in order:  # grows while it is walked
        row = []
        for digit in range(10):
            target = closure(t for s in subset for m, t in nfa.moves[s] if m >> digit & 1)
            if not target:
                row.append(-1)
                continue
            if target not in ids:
                if len(order) >= 20 * MAX_DFA_STATES:
                    raise Unsupported("DFA too large")
                ids[target] = len(order)
                order.append(target)
            row.append(ids[target])
        moves.append(row)
    accept = [final in subset for subset in order]
    return _minimize(moves, accept)


def _minimize(moves: list[list[int]], accept: list[bool]) -> tuple[list[list[int]], list[bool]]:
    """Moore's partition refinement; the start state stays 0."""
    block = [int(a) for a in accept]
    count = len(set(block))
    while True:
        signatures: dict[tuple, int] = {}
        new = []
        for state, row in enumerate(moves):
            key = (block[state], tuple(block[t] if t >= 0 else -1 for t in row))
            new.append(signatures.setdefault(key, len(signatures)))
        block = new
        if len(signatures) == count:
            break
        count = len(signatures)
    renumber: dict[int, int] = {}
    for state in range(len(moves)):  # start first, then in order of appearance
        renumber.setdefault(block[state], len(renumber))
    out_moves: list[list[int]] = [[] for _ in renumber]
    out_accept = [False] * len(renumber)
    for state, row in enumerate(moves):
        new_state = renumber[block[state]]
        out_moves[new_state] = [renumber[block[t]] if t >= 0 else -1 for t in row]
        out_accept[new_state] = accept[state]
    return out_moves, out_accept


def dfa_fullmatch(dfa: tuple[list[list[int]], list[bool]], digits: str) -> bool:
    moves, accept = dfa
    state = 0
    for ch in digits:
        state = moves[state][ord(ch) - 48]
        if state < 0:
            return False
    return accept[state]


# --- national_prefix_for_parsing: alternatives in backtracking order ---

# A path is a tuple of ("m", mask) | ("(", group) | (")", group) | ("$",).


def _paths(items) -> list[tuple]:
    """The pattern's alternatives in the order Python's backtracking engine tries them."""
    paths: list[tuple] = [()]
    for op, arg in items:
        name = str(op)
        mask = _atom_mask(name, arg)
        if mask is not None:
            alts: list[tuple] = [(("m", mask),)]
        elif name == "AT" and str(arg) == "AT_END":
            alts = [(("$",),)]
        elif name == "BRANCH":
            alts = [p for alt in arg[1] for p in _paths(alt)]
        elif name == "SUBPATTERN":
            group = arg[0]
            inner = _paths(arg[-1])
            alts = [(("(", group), *p, (")", group)) for p in inner] if group else inner
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, body = arg
            if high == sre_constants.MAXREPEAT or high > MAX_RULE_DIGITS:
                raise Unsupported("unbounded repeat")
            alts = _repeat(_paths(body), low, high, greedy=name == "MAX_REPEAT")
        else:
            raise Unsupported(f"{name} in national_prefix_for_parsing")
        paths = [a + b for a in paths for b in alts]
        if len(paths) > MAX_PATHS:
            raise Unsupported("too many alternatives")
    return paths


def _repeat(body: list[tuple], low: int, high: int, greedy: bool) -> list[tuple]:
    """Depth first, as the engine does: at each count, one more iteration (every alternative
    of the body) before stopping if greedy, after it if lazy."""

    def from_count(done: int) -> list[tuple]:
        more = [p + q for p in body for q in from_count(done + 1)] if done < high else []
        if len(more) > MAX_PATHS:
            raise Unsupported("too many alternatives")
        if done < low:
            return more
        return [*more, ()] if greedy else [(), *more]

    return from_count(0)


@dataclass(frozen=True)
class Rule:
    masks: tuple[int, ...]  # a digit mask for each digit of the match
    anchored: bool          # matches only a number of exactly len(masks) digits
    literal: str            # written first ...
    keep: tuple[int, int]   # ... then this slice of the match, then the rest of the number


def _template(rule: str) -> tuple[str, int | None]:
    """national_prefix_transform_rule as (literal digits, group or None): "9\\1", "\\2", "20\\1"."""
    match = re.fullmatch(r"(\d*)(?:\\(\d))?", rule)
    if match is None:
        raise Unsupported(f"transform rule {rule!r}")
    return match.group(1), int(match.group(2)) if match.group(2) else None


def build_rules(parsing: str, transform: str | None) -> list[Rule]:
    """The national prefix rules of one code, in the order they are tried."""
    parsed = sre_parse.parse(parsing)
    groups = parsed.state.groups - 1
    literal, ref = _template(transform) if transform else ("", None)
    if transform and groups == 0:
        raise Unsupported("a transform rule without a group")
    if len(literal) > MAX_LITERAL:
        raise Unsupported("long transform literal")
    rules: list[Rule] = []
    for path in _paths(parsed):
        masks: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        opened: dict[int, int] = {}
        anchored = False
        for item in path:
            if item[0] == "m":
                if anchored:
                    break  # digits after '$': the path never matches
                masks.append(item[1])
            elif item[0] == "(":
                opened[item[1]] = len(masks)
            elif item[0] == ")":
                spans[item[1]] = (opened[item[1]], len(masks))  # the last iteration's
            else:
                anchored = True
        else:
            rule = _rule(masks, anchored, spans, groups, literal, ref, bool(transform))
            if rule is None:
                continue
            if not rule.masks and not anchored:  # the empty match: nothing after it is tried
                if rule.literal:
                    rules.append(rule)
                break
            rules.append(rule)
    return _merge(rules)


def _rule(masks, anchored, spans, groups, literal, ref, transform) -> Rule | None:
    """One alternative as a rule, or None if it never matches a digit string."""
    if any(m == 0 for m in masks):
        return None  # a non-digit
    if len(masks) > MAX_RULE_DIGITS:
        raise Unsupported("a long alternative")
    if transform and groups in spans:  # parse transforms when the last group took part
        keep = spans.get(ref, (0, 0)) if ref is not None else (0, 0)
        return Rule(tuple(masks), anchored, literal, keep)
    return Rule(tuple(masks), anchored, "", (0, 0))  # and strips the match otherwise


def _shape(rule: Rule) -> tuple:
    return rule.anchored, rule.literal, rule.keep, len(rule.masks)


def _merge(rules: list[Rule]) -> list[Rule]:
    """Neighbours that differ in one digit's mask only match what either does: one rule."""
    out: list[Rule] = []
    for rule in rules:
        last = out[-1] if out else None
        if last is not None and _shape(last) == _shape(rule):
            pairs = zip(last.masks, rule.masks, strict=True)
            diff = [i for i, (a, b) in enumerate(pairs) if a != b]
            if len(diff) <= 1:
                masks = list(last.masks)
                for i in diff:
                    masks[i] |= rule.masks[i]
                out[-1] = Rule(tuple(masks), rule.anchored, rule.literal, rule.keep)
                continue
        out.append(rule)
    return out


def apply_rules(rules: list[Rule], digits: str) -> str | None:
    """What the first matching rule makes of `digits`, or None (a model of ext/number.h)."""
    for rule in rules:
        size = len(rule.masks)
        if (len(digits) != size) if rule.anchored else (len(digits) < size):
            continue
        if all(m >> (ord(ch) - 48) & 1 for m, ch in zip(rule.masks, digits[:size], strict=True)):
            return rule.literal + digits[rule.keep[0] : rule.keep[1]] + digits[size:]
    return None


# --- The table ---


def _mask(lengths) -> int:
    out = 0
    for n in lengths or ():
        if 0 < n < 32:
            out |= 1 << n
    return out


@dataclass
class Country:
    code: int
    lengths: int = 0
    possible: int = 0
    local_only: int = 0
    rules: list[Rule] = field(default_factory=list)
    dfa: tuple[list[list[int]], list[bool]] | None = None
    inexact: str | None = None


def main_metadata(code: int, regions):
    from phonenumbers import PhoneMetadata

    if regions[0] == "001":
        return PhoneMetadata.metadata_for_nongeo_region(code)
    return PhoneMetadata.metadata_for_region(regions[0])


def build_countries() -> dict[int, Country]:
    from phonenumbers import PhoneMetadata
    from phonenumbers.data import _COUNTRY_CODE_TO_REGION_CODE as regions_by_code

    out: dict[int, Country] = {}
    for code, regions in regions_by_code.items():
        meta = main_metadata(code, regions)
        if meta is None or meta.general_desc is None:
            continue
        general = meta.general_desc
        country = Country(code)
        country.possible = _mask(general.possible_length)
        country.local_only = _mask(general.possible_length_local_only)
        country.lengths = country.possible
        for other in regions[1:]:
            other_meta = PhoneMetadata.metadata_for_region(other)
            if other_meta is not None and other_meta.general_desc is not None:
                other_possible = _mask(other_meta.general_desc.possible_length)
                country.lengths |= other_possible & country.local_only
        out[code] = country
        parsing = meta.national_prefix_for_parsing
        if code == 86 or not parsing:
            continue  # China: ext/number.h's own rules
        try:
            country.rules = build_rules(parsing, meta.national_prefix_transform_rule)
            if general.national_number_pattern:
                country.dfa = build_dfa(general.national_number_pattern)
        except (Unsupported, sre_constants.error) as exc:
            country.inexact = str(exc)
            country.dfa = None
            prefix = meta.national_prefix or ""
            plain = [Rule((1 << int(prefix),), False, "", (0, 0))] if prefix.isdigit() else []
            country.rules = plain if len(prefix) == 1 else []
    return out


def inexact_codes() -> dict[int, str]:
    """Codes whose national prefix rules the table does not hold exactly, and why."""
    return {c.code: c.inexact for c in build_countries().values() if c.inexact}


def render(countries: dict[int, Country], version: str) -> str:
    rows, rule_rows, mask_rows, dfa_rows, accept = [], [], [], [], []
    mask_pool: list[int] = []
    for code in sorted(countries):
        c = countries[code]
        first_rule = len(rule_rows)
        for rule in c.rules:
            rule_rows.append(
                f"    {{{len(mask_pool)}, {len(rule.masks)}, {int(rule.anchored)}, "
                f"{rule.keep[0]}, {rule.keep[1]}, {len(rule.literal)}, \"{rule.literal}\"}},"
            )
            mask_pool.extend(rule.masks)
        dfa_start = -1
        if c.dfa is not None:
            dfa_start = len(accept)
            moves, acc = c.dfa
            for row in moves:
                cells = ", ".join(str(t + dfa_start) if t >= 0 else "-1" for t in row)
                dfa_rows.append(f"    {{{cells}}},")
            accept.extend(acc)
        max_possible = c.possible.bit_length() - 1 if c.possible else 0
        rows.append(
            f"    [{code}] = {{0x{c.lengths:08x}u, 0x{c.possible:08x}u, 0x{c.local_only:08x}u, "
            f"{first_rule}, {len(c.rules)}, {dfa_start}, {max_possible}, "
            f"{0 if c.inexact else 1}}},"
        )
    if len(accept) > MAX_DFA_STATES or len(mask_pool) > 65535 or len(rule_rows) > 65535:
        raise SystemExit("gen_country_table: the table outgrew its index types")
    for i in range(0, len(mask_pool), 12):
        mask_rows.append("    " + ", ".join(f"0x{m:03x}" for m in mask_pool[i : i + 12]) + ",")
    accept_rows = [
        "    " + ", ".join(str(int(a)) for a in accept[i : i + 40]) + ","
        for i in range(0, len(accept), 40)
    ]
    empty_rule = "    {0, 0, 0, 0, 0, 0, \"\"},"
    return (
        "/* Generated by tools/gen_country_table.py from phonenumbers "
        f"{version}; do not edit. */\n"
        "#ifndef ANNING_COUNTRY_TABLE_H\n#define ANNING_COUNTRY_TABLE_H\n"
        "#include <stdint.h>\n"
        f"#define AN_COUNTRY_TABLE_VERSION \"{version}\"\n"
        "typedef struct {\n"
        "    uint32_t lengths;     /* national lengths accepted (bit n: n digits) */\n"
        "    uint32_t possible;    /* the main region's possible lengths */\n"
        "    uint32_t local_only;  /* the main region's possible-local-only lengths */\n"
        "    uint16_t rule;        /* its national prefix rules: an_rules[rule .. rule + rules),\n"
        "                             tried in order */\n"
        "    uint16_t rules;\n"
        "    int16_t dfa;          /* start state of its general pattern in an_dfa, or -1 */\n"
        "    uint8_t max_possible; /* the longest possible length */\n"
        "    uint8_t exact;        /* 0: its patterns were beyond the generator */\n"
        "} an_country;\n"
        "typedef struct {\n"
        "    uint16_t masks;       /* its digit masks: an_rule_masks[masks .. masks + len) */\n"
        "    uint8_t len;          /* digits it matches */\n"
        "    uint8_t anchored;     /* 1: only a number of exactly len digits ('$') */\n"
        "    uint8_t keep_from;    /* the number becomes lit, then the match's digits */\n"
        "    uint8_t keep_to;      /* [keep_from, keep_to), then the digits after the match */\n"
        "    uint8_t lit_len;\n"
        f"    char lit[{MAX_LITERAL + 1}];\n"
        "} an_rule;\n"
        "static const an_country an_countries[1000] = {\n" + "\n".join(rows) + "\n};\n"
        "static const an_rule an_rules[] = {\n" + "\n".join(rule_rows or [empty_rule]) + "\n};\n"
        "static const uint16_t an_rule_masks[] = {\n" + "\n".join(mask_rows or ["    0,"])
        + "\n};\n"
        "static const int16_t an_dfa[][10] = {\n"
        + "\n".join(dfa_rows or ["    {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1},"]) + "\n};\n"
        "static const uint8_t an_dfa_accept[] = {\n" + "\n".join(accept_rows or ["    0,"])
        + "\n};\n#endif\n"
    )


def main(out: str) -> None:
    import phonenumbers

    text = render(build_countries(), phonenumbers.__version__)
    path = Path(out)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ext/country_table.h")
