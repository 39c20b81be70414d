# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Normalisation of phone numbers and senders (SPEC §3): the compiled part.

Numbers: ASCII text goes straight to the C parser in number.h, reading the str's own buffer;
other text is NFKC-normalised first (full-width digits become ASCII). Senders: NFKC, trimmed,
the enclosing bracket pair removed (and pairs nested inside it, so that the result is its own
normal form), ASCII letters folded, 1-64 characters, no control characters.
"""

import unicodedata

cimport numpy as cnp
import numpy as np
from libc.stdint cimport uint64_t

from number cimport (
    AN_COUNTRY_TABLE_VERSION, AN_NUM_BAD_CHAR, AN_NUM_BAD_LENGTH, AN_NUM_EMPTY,
    AN_NUM_LONE_PLUS, AN_NUM_MISPLACED_PLUS, AN_NUM_NOT_CN, AN_NUM_OK, AN_NUMBER_LIMIT, AN_NUM_TOO_LONG,
    AN_NUM_TOO_SHORT, AN_NUM_UNKNOWN_COUNTRY, an_check_e164, an_parse_number,
)

cnp.import_array()

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void *PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)

__all__ = ["InvalidInput", "normalize_number", "normalize_numbers", "normalize_sender",
           "normalize_senders", "check_e164", "COUNTRY_TABLE_VERSION"]

COUNTRY_TABLE_VERSION = AN_COUNTRY_TABLE_VERSION.decode()
MAX_SENDER_LENGTH = 64


# The one class of bad input, defined with the rest of anning's errors (a ValueError too).
from anning.errors import InvalidInput


cdef dict _REASONS = {
    AN_NUM_EMPTY: "is empty",
    AN_NUM_LONE_PLUS: "is a lone '+'",
    AN_NUM_MISPLACED_PLUS: "has a '+' that is not at the start",
    AN_NUM_TOO_SHORT: "is too short",
    AN_NUM_TOO_LONG: "is too long",
    AN_NUM_UNKNOWN_COUNTRY: "has an unknown country code",
    AN_NUM_BAD_LENGTH: "has an impossible length for its country",
    AN_NUM_NOT_CN: "is neither a Chinese mobile nor a fixed-line number",
}


cdef str _number_reason(int status, object text, size_t bad_at):
    if status == AN_NUM_BAD_CHAR:
        return f"has an invalid character {text[bad_at]!r} at position {bad_at}"
    return _REASONS.get(status, "is not a phone number")


cdef inline object _shown(object text):
    """The text the C parser reads: NFKC of text that is not ASCII."""
    return text if PyUnicode_IS_ASCII(text) else unicodedata.normalize("NFKC", text)


cdef inline int _parse(object text, int default_cc, uint64_t *out, size_t *bad_at):
    cdef object ascii_text = _shown(text)
    if not PyUnicode_IS_ASCII(ascii_text):
        # A character that is not ASCII even after NFKC: report the first one.
        for i, ch in enumerate(ascii_text):
            if ord(ch) > 127:
                bad_at[0] = i
                break
        return AN_NUM_BAD_CHAR
    return an_parse_number(<const unsigned char *>PyUnicode_DATA(ascii_text),
                           <size_t>PyUnicode_GET_LENGTH(ascii_text), default_cc, out, bad_at)


cdef inline int _check_country(int default_country) except -1:
    if default_country < 1 or default_country > 999 or an_check_e164(
            <uint64_t>default_country * 10000000000ULL) == AN_NUM_UNKNOWN_COUNTRY:
        raise InvalidInput(f"default_country: {default_country!r} is not a country calling code")
    return 0


def normalize_number(object text, int default_country=86, str field="number"):
    """Return the E.164 digits of `text` as an int; raise InvalidInput naming `field`."""
    cdef uint64_t value = 0
    cdef size_t bad_at = 0
    cdef int status
    if not isinstance(text, str):
        if isinstance(text, int) and not isinstance(text, bool):
            return check_e164(text, field)
        raise InvalidInput(f"{field}: {text!r} is not text")
    if default_country != 86:
        _check_country(default_country)
    status = _parse(text, default_country, &value, &bad_at)
    if status != AN_NUM_OK:
        raise InvalidInput(f"{field}: {text!r} {_number_reason(status, _shown(text), bad_at)}")
    return value


def check_e164(object value, str field="number"):
    """Validate an int of E.164 digits (country code first); return it as an int."""
    cdef int status
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{field}: {value!r} is not an integer")
    if value <= 0 or value >= AN_NUMBER_LIMIT:
        raise InvalidInput(f"{field}: {value!r} is not an E.164 number (1 to 15 digits)")
    status = an_check_e164(<uint64_t>value)
    if status != AN_NUM_OK:
        raise InvalidInput(f"{field}: {value!r} {_number_reason(status, str(value), 0)}")
    return int(value)


def normalize_numbers(object texts, int default_country=86, bint strict=True,
                      str field="number"):
    """Normalise many numbers into a uint64 array.

    strict: the first bad item raises InvalidInput naming `field[i]`; otherwise bad items are
    0 in the result (0 is never an E.164 number) and the caller asks for reasons one by one.
    """
    cdef Py_ssize_t i, n = len(texts)
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] result = np.zeros(n, dtype=np.uint64)
    cdef uint64_t value
    cdef size_t bad_at
    cdef int status
    if default_country != 86:
        _check_country(default_country)
    for i in range(n):
        text = texts[i]
        value = 0
        if isinstance(text, str):
            status = _parse(text, default_country, &value, &bad_at)
            if status != AN_NUM_OK:
                if strict:
                    raise InvalidInput(f"{field}[{i}]: {text!r} "
                                       f"{_number_reason(status, _shown(text), bad_at)}")
                value = 0
        elif strict:
            value = normalize_number(text, default_country, f"{field}[{i}]")
        else:
            try:
                value = normalize_number(text, default_country, field)
            except InvalidInput:
                value = 0
        result[i] = value
    return result


cpdef str normalize_sender(object text, str field="sender"):
    """Return the canonical form of a sender; raise InvalidInput naming `field`."""
    cdef str s
    cdef Py_UCS4 ch, first, last
    cdef Py_ssize_t n
    cdef bint upper = False
    if not isinstance(text, str):
        raise InvalidInput(f"{field}: {text!r} is not text")
    s = text if PyUnicode_IS_ASCII(text) else unicodedata.normalize("NFKC", text)
    s = s.strip()
    n = len(s)
    # The enclosing pair, and then any pair that enclosed within it: removing only one left
    # "【【京东】】" as "【京东】", whose own normal form is "京东", so a stored sender was not
    # found by its own name (fuzz/fuzz_normalize.py: normalising must be idempotent).
    while n >= 2:
        first, last = s[0], s[n - 1]
        if not ((first == u"【" and last == u"】") or (first == u"[" and last == u"]")
                or (first == u"「" and last == u"」")):
            break
        s = s[1:n - 1].strip()
        n = len(s)
    for ch in s:
        if ch < 0x20 or 0x7F <= ch <= 0x9F or 0xD800 <= ch <= 0xDFFF:
            raise InvalidInput(f"{field}: {text!r} has a control character {ch!r}")
        upper |= u"A" <= ch <= u"Z"
    n = len(s)
    if n == 0:
        raise InvalidInput(f"{field}: {text!r} is empty")
    if n > MAX_SENDER_LENGTH:
        raise InvalidInput(f"{field}: {text!r} is longer than {MAX_SENDER_LENGTH} characters")
    if upper and PyUnicode_IS_ASCII(s):
        s = s.lower()
    elif upper:
        # A folded letter may compose with the mark after it where the capital did not ("J" and
        # U+030C stay two under NFKC, "j" and U+030C become "ǰ"): NFKC again, so that the result
        # is its own normal form (fuzz/fuzz_normalize.py found "Ｊ̌" -> "ǰ" -> "ǰ").
        s = unicodedata.normalize("NFKC", s.translate(_ASCII_LOWER))
    if s == u"*" or s.startswith(u"entity:"):
        # Scope keys are senders' names, `entity:NAME` and `*`, in one namespace: a sender whose
        # normal form is written like the other two ("[entity:x]", "【*】") was read as the
        # entity or as global, and "[entity:]" made a check of a number with real-time events
        # fail whole (fuzz/fuzz_wire.py). No such sender can be on a list.
        raise InvalidInput(f"{field}: {text!r} is written as a scope key "
                           "('*' or 'entity:NAME'), not as a sender")
    return s


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def normalize_senders(object texts, str field="sender"):
    """Normalise many senders into a list of str; the first bad one raises naming `field[i]`."""
    cdef Py_ssize_t i, n = len(texts)
    cdef list out = [None] * n
    for i in range(n):
        try:
            out[i] = normalize_sender(texts[i], field)
        except InvalidInput:
            # Again with the position in the field name, so the message says which item.
            normalize_sender(texts[i], f"{field}[{i}]")
            raise
    return out
