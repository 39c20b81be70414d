"""What the `anning` command prints: a line a person reads, or JSON for scripts (`--json`).

One naming of scopes everywhere, in both: `none`, `sender`, `entity`, `global` (`unknown` for a
check that failed closed), as the metrics' `scope` label. In JSON integers are numbers (never
the strings protobuf's JSON mapping makes of 64-bit fields) and times are Unix milliseconds
(`at_ms`) as on the wire; for people, times are local with their offset
("2026-12-06 10:31 +08:00") and counts have thousands separators.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

__all__ = ["SCOPE_NAMES", "as_json", "check_line", "duration", "local_time", "plain",
           "reply_line", "scope_name", "status_lines", "write_line"]

SCOPE_NAMES = ("none", "sender", "entity", "global")
_DEFAULT_CATEGORY = "marketing"


def scope_name(scope: int | str) -> str:
    """A scope code (0-3), a client's name (SENDER) or a proto's (SCOPE_SENDER) as the CLI
    names it."""
    if isinstance(scope, int):
        return SCOPE_NAMES[scope] if 0 <= scope < len(SCOPE_NAMES) else "unknown"
    return scope.removeprefix("SCOPE_").lower()


def plain(message: Any) -> dict[str, Any]:
    """A protobuf message as a dict for JSON: its fields by their proto names, every one present,
    integers as numbers, the Scope enum as scope_name names it, other enums by their value
    names in lower case without the enum's prefix."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = {k: _value(field.message_type.fields_by_name["value"], v)
                               for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 6.31; `label` before
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED


def _value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return plain(value)
    if field.enum_type is not None:
        if field.enum_type.name == "Scope":
            return scope_name(int(value))
        name: str = field.enum_type.values_by_number[int(value)].name
        prefix = "".join("_" + c if c.isupper() else c for c in field.enum_type.name)
        return name.removeprefix(prefix.lstrip("_").upper() + "_").lower()
    return value


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- for people ----------------------------------------------------------------------------------


def local_time(ms: int) -> str:
    """Unix ms as local time with its offset: 2026-12-06 10:31 +08:00."""
    return _local(datetime.fromtimestamp(ms / 1000).astimezone())


def _local(moment: datetime) -> str:
    offset = moment.strftime("%z")  # +0800
    return f"{moment:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]}" if offset else \
        f"{moment:%Y-%m-%d %H:%M}"


def local_iso(text: str) -> str:
    """An ISO 8601 time (a snapshot's as_of) as local time; the text itself if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return _local(moment.astimezone())


def duration(seconds: float) -> str:
    """3 s, 4 min 2 s, 10 h 31 min, 2 d 4 h."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400:,} d {s % 86400 // 3600} h"


def _who(key: str) -> str:
    """A scope key (a sender, entity:NAME, *) as the one who is opted out of."""
    if key == "*":
        return "every sender"
    return key.removeprefix("entity:")


def _when(why: Any) -> str:
    """When the deciding statement was made, and how it came."""
    if why.origin == "event":
        via = f", via {why.source}" if why.source else ""
        return f", {local_time(why.at_ms)}{via}" if why.at_ms else via
    if why.snapshot_as_of:
        return f", in the snapshot as of {local_iso(why.snapshot_as_of)}"
    return ", in the snapshot"


def check_line(suppressed: bool, scope: str, sender: str, number: str, category: str,
               why: Any = None, failed_closed: bool = False, error: str = "") -> str:
    """suppressed — 京东 opted out (sender), 2026-12-06 10:31 +08:00, via reply"""
    category = category or _DEFAULT_CATEGORY
    if failed_closed:
        return f"suppressed — failed closed: {error or 'no answer from anning'}"
    if suppressed:
        if why is not None and why.suppressed and scope_name(why.scope) == scope:
            return f"suppressed — {_who(why.matched)} opted out ({scope}){_when(why)}"
        return f"suppressed — opted out ({scope})"
    line = f"not suppressed — {number} may receive {category} from {sender}"
    if why is not None and why.origin == "event" and why.at_ms:  # a reassignment
        line += (f" (the number was reassigned {local_time(why.at_ms)}: earlier opt-outs "
                 "no longer count)")
    return line


def write_line(action: str, number: str, scope_key: str, category: str, ack: Any) -> str:
    """opted out — 13812345678 from 京东 (marketing), 2026-12-06 10:31 +08:00; sequence 1,042"""
    when = f", {local_time(ack.at_ms)}" if ack.at_ms else ""
    if action == "reassigned":
        return (f"reassigned — {number}{when}: earlier opt-outs no longer count; "
                f"sequence {ack.sequence:,}")
    category = category or _DEFAULT_CATEGORY
    what = "every category" if category == "all" else category
    who = f"entity {_who(scope_key)}" if scope_key.startswith("entity:") else _who(scope_key)
    return f"{action} — {number} from {who} ({what}){when}; sequence {ack.sequence:,}"


def reply_line(number: str, text: str, result: Any) -> str:
    """What a user's reply did."""
    if not result.recognised:
        return f"not recognised — {text!r} is no opt-out or opt-in keyword; nothing recorded"
    action = {"opt_out": "opted out", "opt_out_global": "opted out",
              "opt_in": "opted in"}.get(result.action, result.action)
    line = write_line(action, number, result.scope, "", result.ack)
    return f"{line} (keyword {result.keyword!r})"


def status_lines(status: Any) -> str:
    entries = int(status.entries)
    per_entry = f", {status.bytes / entries:.1f} bytes an entry" if entries else ""
    lines = [
        ("ready", "yes" if status.ready else "NO: checks answer UNAVAILABLE (fail closed)"),
        ("entries", f"{entries:,} ({_size(status.bytes)}{per_entry})"),
        ("senders", f"{status.senders:,}"),
        ("snapshot", f"as of {local_iso(status.snapshot_as_of)}, "
                     f"{duration(status.snapshot_age_seconds)} old"
         if status.snapshot_as_of else "none"),
        ("events", f"{status.events:,} on top of the snapshot; last sequence "
                   f"{status.last_sequence:,}"),
        ("change feed", f"upstream has taken in events through {status.events_through:,}; "
                        f"{status.feed_lag:,} events behind"
         + (f", the oldest {duration(status.oldest_uncovered_age_seconds)} old"
            if status.feed_lag else "")),
        ("writes", "ok" if status.writes_ok else f"STOPPED: {status.writes_error}"),
        ("last refusal", status.last_refusal or "none"),
        ("workers", f"{status.workers:,} (anning {status.version})"),
    ]
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value, units = n / 1024, ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:,.1f} {units[0]}"
