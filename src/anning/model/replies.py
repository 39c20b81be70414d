"""Replies to opt-out keywords (SPEC §4): "TD", "退订", "STOP. Thank you" -> an event.

Matching ignores case, full/half width (NFKC), surrounding punctuation and white space, and
politeness before or after the keyword ("请退订", "退订谢谢", "Stop. Thank you"). Anything else
is free text, reported as unrecognised and never guessed at: "不要退订" (don't unsubscribe),
"T恤还有吗" (is the T-shirt in stock?), "stop by tomorrow?".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["OPT_IN", "OPT_OUT", "OPT_OUT_GLOBAL", "Reply", "recognise_reply"]

OPT_OUT = "opt_out"
OPT_OUT_GLOBAL = "opt_out_global"
OPT_IN = "opt_in"
NONE = "none"

_KEYWORDS = {
    **dict.fromkeys(("t", "td", "n", "0000", "退订", "取消", "拒收", "stop", "unsubscribe",
                     "cancel", "end", "quit", "optout", "revoke"), OPT_OUT),
    **dict.fromkeys(("stopall", "全部退订"), OPT_OUT_GLOBAL),
    **dict.fromkeys(("start", "unstop"), OPT_IN),
}
# Politeness that may stand before or after a keyword; longest first.
_POLITE_AFTER = sorted(
    ("谢谢", "谢谢你", "谢谢您", "多谢", "感谢", "谢了", "thank you", "thankyou", "thanks",
     "thx", "ty", "please", "pls", "plz", "谢谢啦", "谢谢了", "麻烦了", "麻烦你了"),
    key=len, reverse=True,
)
_POLITE_BEFORE = sorted(("请", "麻烦", "please", "pls", "plz", "请帮我", "帮我"), key=len,
                        reverse=True)
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")  # punctuation, symbols and spaces at either end
_INNER_SPACE = re.compile(r"[\s\-_]+")


@dataclass(frozen=True)
class Reply:
    action: str  # opt_out, opt_out_global, opt_in, none
    keyword: str  # the keyword as recognised ("" for free text)

    @property
    def recognised(self) -> bool:
        return self.action != NONE


def _trim(text: str) -> str:
    return _EDGE.sub("", text)


def recognise_reply(text: str) -> Reply:
    """What a reply asks for; free text is Reply("none", "")."""
    if not isinstance(text, str):  # a caller's garbage: free text, not an error
        return Reply(NONE, "")  # type: ignore[unreachable]
    s = _trim(unicodedata.normalize("NFKC", text).casefold())
    for _ in range(4):  # politeness may be stacked: "请退订，谢谢！"
        before = s
        for word in _POLITE_AFTER:
            if s.endswith(word) and len(s) > len(word):
                s = _trim(s[: -len(word)])
                break
        for word in _POLITE_BEFORE:
            if s.startswith(word) and len(s) > len(word):
                s = _trim(s[len(word):])
                break
        if s == before:
            break
    key = _INNER_SPACE.sub("", s)
    action = _KEYWORDS.get(key)
    return Reply(action, key) if action else Reply(NONE, "")
