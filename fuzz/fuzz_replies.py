"""Fuzz target: reply parsing (anning.model.replies.recognise_reply, SPEC §4).

A user's reply is whatever a handset sends. Properties, per input:
- any text gives a Reply, never an exception: its action one of opt_out, opt_out_global,
  opt_in, none; its keyword "" for none, else a keyword of SPEC §4's list (a table written here
  from the SPEC) whose action it is;
- a recognised reply's keyword is in the text (case and width folded, punctuation and spaces
  dropped), and the keyword alone is recognised as the same reply (idempotence);
- case and width do not matter: the text with its ASCII letters' case swapped, or its ASCII
  written full width, is read the same; so is the text between spaces and punctuation;
- a reply made of a SPEC keyword in any case and width, with politeness before or after it
  and punctuation and spaces around, is recognised as that keyword's action; "不要" before one
  (don't) is free text.
Run: python fuzz/fuzz_replies.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import re
import unicodedata

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    from anning.model.replies import Reply, recognise_reply

SPEC_KEYWORDS = {
    **dict.fromkeys(("T", "TD", "N", "0000", "退订", "取消", "拒收", "STOP", "UNSUBSCRIBE",
                     "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"), "opt_out"),
    **dict.fromkeys(("STOPALL", "全部退订"), "opt_out_global"),
    **dict.fromkeys(("START", "UNSTOP"), "opt_in"),
}
KEYS = sorted(SPEC_KEYWORDS)
BEFORE = ("", "请", "please ", "麻烦")
AFTER = ("", "谢谢", " thank you", "thanks", "谢谢你", " please")
EDGES = ("", " ", "!", "。", "！", "  ", "\u3000", "...", "~", "\t", "\n")
NOT_WORD = re.compile(r"[\W_]+")


def fold(text: str) -> str:
    return NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else
                   "\u3000" if c == " " else c for c in text)


def swap_ascii_case(text: str) -> str:
    return "".join(c.swapcase() if c.isascii() else c for c in text)


def check_any(text: str) -> Reply:
    reply = recognise_reply(text)
    expect(isinstance(reply, Reply), f"{text!r}: {reply!r}")
    if reply.action == "none":
        expect(reply.keyword == "", f"{text!r}: free text with keyword {reply.keyword!r}")
        return reply
    spec = {k.casefold(): a for k, a in SPEC_KEYWORDS.items()}
    expect(spec.get(reply.keyword) == reply.action,
           f"{text!r}: {reply!r} is not a keyword of SPEC §4 with that action")
    expect(fold(reply.keyword) in fold(text), f"{text!r}: keyword {reply.keyword!r} not in it")
    expect(recognise_reply(reply.keyword) == reply, f"{reply.keyword!r} alone is read otherwise")
    return reply


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    if fdp.ConsumeBool():
        keyword = KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]
        keyword = "".join(c.lower() if fdp.ConsumeBool() else c for c in keyword)
        text = (EDGES[fdp.ConsumeIntInRange(0, len(EDGES) - 1)]
                + BEFORE[fdp.ConsumeIntInRange(0, len(BEFORE) - 1)] + keyword
                + EDGES[fdp.ConsumeIntInRange(0, 3)]
                + AFTER[fdp.ConsumeIntInRange(0, len(AFTER) - 1)]
                + EDGES[fdp.ConsumeIntInRange(0, len(EDGES) - 1)])
        if fdp.ConsumeBool():
            text = full_width(text)
        want = SPEC_KEYWORDS[keyword.upper()]
        reply = check_any(text)
        expect(reply.action == want, f"{text!r}: {reply.action}, SPEC §4 says {want}")
        expect(check_any("不要" + text.strip()).action == "none",
               f"'不要' + {text.strip()!r} (don't) read as a keyword")
        return
    text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    reply = check_any(text)
    for variant in (swap_ascii_case(text), full_width(text), f" {text} !"):
        again = check_any(variant)
        expect(again == reply, f"{text!r}: {reply!r}, but {variant!r}: {again!r}")


if __name__ == "__main__":
    _harness.run(test_one_input)
