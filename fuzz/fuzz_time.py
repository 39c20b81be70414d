"""Fuzz target: event times in snapshot files (anning._csv.parse_time, C in ext/eventtime.h).

The `at` column and `--as-of` take ISO 8601 ("2026-11-22", "2026-11-22 08:30",
"2026-11-22T08:30:00.5Z", "...+08:00") or Unix time (all digits: seconds, or milliseconds from
12 digits on; at most 13). Properties, per input:
- parse_time never crashes and gives None or an int;
- it agrees with a reference written here from that grammar with Python's own calendar
  (datetime.date), for every text and any offset for zone-less times;
- every time it accepts within years 1-9999 round-trips: written back as ISO 8601 in UTC with
  milliseconds, and as Unix milliseconds when that has 12-13 digits, it parses to the same value.
Run: python fuzz/fuzz_time.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    from anning._csv import parse_time

_ISO = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})"
    rb"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    rb"(?:([Zz])|([+-])(\d{2})(?::?(\d{2})|:)?)?\Z"
)
_DAYS_400_YEARS = 146097
_EPOCH = date(1970, 1, 1).toordinal()
_UNIX = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _days(year: int, month: int, day: int) -> int | None:
    """Days since 1970-01-01 (proleptic Gregorian), or None for a date that does not exist."""
    shift = 0
    if year < 1:  # datetime has no year 0: the calendar repeats every 400 years
        year, shift = year + 400, _DAYS_400_YEARS
    try:
        return date(year, month, day).toordinal() - _EPOCH - shift
    except ValueError:
        return None


def reference(text: bytes, offset_minutes: int) -> int | None:
    text = text.strip(b" ")
    if not text:
        return None
    if text.isdigit():
        if len(text) > 13:
            return None
        return int(text) if len(text) >= 12 else int(text) * 1000
    m = _ISO.match(text)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = (int(g) if g else 0 for g in (m[4], m[5], m[6]))
    millis = int((m[7] or b"").ljust(3, b"0")[:3])
    if m[8]:
        offset = 0
    elif m[9]:
        oh, om = int(m[10]), int(m[11] or 0)
        if oh > 14 or om > 59:
            return None
        offset = (-1 if m[9] == b"-" else 1) * (oh * 60 + om)
    else:
        offset = offset_minutes
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return None
    days = _days(year, month, day)
    if days is None:
        return None
    return (days * 86400 + hour * 3600 + minute * 60 + second - offset * 60) * 1000 + millis


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    offset = fdp.ConsumeIntInRange(-14 * 60, 14 * 60)
    text = fdp.ConsumeBytes(fdp.remaining_bytes())
    got = parse_time(text, offset)
    expect(got is None or type(got) is int, f"parse_time gave {got!r}")
    want = reference(text, offset)
    expect(got == want, f"parse_time({text!r}, {offset}) = {got}, reference {want}")
    if got is None:
        return
    try:
        moment = _UNIX + timedelta(milliseconds=got)  # exact, unlike a float timestamp
    except OverflowError:
        return  # outside years 1-9999: datetime cannot write it
    iso = moment.strftime("%Y-%m-%dT%H:%M:%S").encode() + b".%03dZ" % (got % 1000)
    if len(iso) == 24:  # a four-digit year
        expect(parse_time(iso, offset) == got, f"{got} written as {iso!r} parses differently")
    if got >= 0 and 12 <= len(str(got)) <= 13:
        expect(parse_time(str(got).encode(), offset) == got, f"{got} as Unix ms")


if __name__ == "__main__":
    _harness.run(test_one_input)
