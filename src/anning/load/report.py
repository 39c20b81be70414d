"""What a load reports: the summary, the rejects file, the progress line."""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["REJECTS_HEADER", "LoadReport", "ProgressFn", "Rejects", "iso", "progress_printer"]

REJECTS_HEADER = ("line", "column", "reason", "raw")
ProgressFn = Callable[[int, int, int, int], None]  # rows, rejected, bytes read, bytes total


@dataclass
class LoadReport:
    files: list[str]
    rows: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    blank_lines: int = 0
    senders: int = 0
    entity_links: int = 0
    entries_before: int | None = None
    entries_after: int | None = None
    as_of: str | None = None
    newest_event: str | None = None
    events_through: int = 0  # the watermark the snapshot declared
    events_folded: int = 0  # anning's events past it, folded in
    seconds: float = 0.0
    rejects_file: str | None = None
    refused: str | None = None
    started: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["started"]
        return out

    def summary(self) -> str:
        lines = [
            f"files: {', '.join(self.files)}",
            f"rows read: {self.rows:,}; loaded: {self.loaded:,}; duplicates folded: "
            f"{self.duplicates:,}; rejected: {self.rejected:,}; blank lines: {self.blank_lines:,}",
        ]
        for reason, count in sorted(self.rejected_by_reason.items(), key=lambda x: -x[1]):
            lines.append(f"  rejected {count:,}: {reason}")
        before = "none" if self.entries_before is None else f"{self.entries_before:,}"
        after = "-" if self.entries_after is None else f"{self.entries_after:,}"
        lines.append(f"entries before: {before}; after: {after}; as of {self.as_of}")
        lines.append(f"events through: {self.events_through:,}; anning events folded in: "
                     f"{self.events_folded:,}")
        lines.append(f"seconds: {self.seconds:.2f}")
        if self.rejects_file:
            lines.append(f"rejects: {self.rejects_file}")
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        return "\n".join(lines)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


class Rejects:
    """The rejects file, written as rows are rejected; created only when there is one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file: io.TextIOWrapper | None = None
        self.writer: Any = None
        self.by_reason: Counter[str] = Counter()

    def write(self, source: str, rejects: Iterable[tuple[int, str, str, bytes]]) -> None:
        for line, column, reason, raw in rejects:
            key = f"{column}: {reason}" if column else reason
            self.by_reason[_reason_class(key)] += 1
            if self.path is None:
                continue
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                self.writer = csv.writer(self.file)
                self.writer.writerow(("file", *REJECTS_HEADER))
            text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
            self.writer.writerow((source, line, column, reason, text))

    def close(self) -> str | None:
        if self.file is None:
            return None
        self.file.close()
        return str(self.path)


def _reason_class(key: str) -> str:
    """A reason without the values it quotes, to count rejects by kind in the summary."""
    return _DIGITS.sub("N", _QUOTED.sub("…", key))


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_DIGITS = re.compile(r"\b\d+\b")


def progress_printer(stream: Any = None) -> ProgressFn:
    """A progress bar on a terminal; a log line every few seconds otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    started = time.monotonic()
    state = {"last": 0.0}

    def show(rows: int, rejected: int, read: int, total: int) -> None:
        now = time.monotonic()
        elapsed = max(now - started, 1e-9)
        rate = rows / elapsed
        fraction = min(read / total, 1.0) if total else 1.0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0
        if tty:
            bar = "#" * int(fraction * 30)
            stream.write(
                f"\r[{bar:<30}] {fraction:4.0%} {rows:>13,} rows {rate / 1e6:5.2f}M rows/s "
                f"ETA {eta:4.0f}s rejects {rejected:,} "
            )
            if fraction >= 1.0:
                stream.write("\n")
            stream.flush()
        elif now - state["last"] >= 5 or fraction >= 1.0:
            state["last"] = now
            stream.write(
                f"load: {fraction:.0%} {rows:,} rows, {rate:,.0f} rows/s, eta {eta:.0f}s, "
                f"{rejected:,} rejected\n"
            )
            stream.flush()

    return show

