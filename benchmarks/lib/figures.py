"""The figures of a benchmark run and the one table they are printed in (and written as JSON).

A `Figure` is one normalised median (ns per check, checks/s, seconds...) of one implementation
for one target. A target's figures become rows: anning's figure beside each peer's from the
same run, with the ratio anning / peer, so that a reader compares ratios, never raw figures
across machines. Rows are made either from the figures (anning's figure is the one named
`ours`, else the target's first) or given outright (`Figures.compare`: medians of repetitions,
a named pair, a goal). The pytest benchmarks (benchmarks/conftest.py) and every script print
through `Figures.lines` and write through `Figures.to_json`, so their tables read alike.

A failure (`Figures.fail`) is a wrong or missing answer: a script exits 1 on any; a slow figure,
or a missed goal, is only reported.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Figures", "Row", "fmt", "goal_met"]


@dataclass
class Figure:
    target: str
    impl: str
    value: float
    unit: str
    better: str = "lower"  # or "higher": which way is good for this target
    note: str = ""


@dataclass
class Row:
    """One line of the table: `impl`'s value beside `peer`'s, and their ratio."""

    target: str
    unit: str
    better: str
    impl: str | None
    value: float | None
    peer: str | None
    peer_value: float | None
    ratio: float | None
    goal: str = ""
    met: bool | None = None
    reps: list[float] = field(default_factory=list)
    peer_reps: list[float] = field(default_factory=list)
    note: str = ""


def fmt(value: float | None) -> str:
    """A figure to read: thousands separated from 100 up, two decimals from 1, else 3 digits."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def goal_met(goal: str, value: float, ratio: float) -> bool | None:
    """Whether a goal holds: "ratio <= 1.5" on the ratio, ">= N" or "<= N" on the value;
    None for no goal."""
    if not goal:
        return None
    *on, op, limit = goal.split()
    x = ratio if on else value
    return x >= float(limit) if op == ">=" else x <= float(limit)


class Figures:
    """The figures, rows, context (sizes, machine) and failures of one run."""

    def __init__(self, title: str, ours: str | None = None) -> None:
        self.title = title
        self.ours = ours  # the impl that is anning's figure of a target (None: the first)
        self.items: list[Figure] = []
        self.given: list[Row] = []
        self.context: dict[str, Any] = {}
        self.notes: list[str] = []
        self.failures: list[str] = []

    def add(self, target: str, impl: str, value: float, unit: str, better: str = "lower",
            note: str = "") -> None:
        self.items.append(Figure(target, impl, value, unit, better, note))

    def compare(self, target: str, unit: str, impl: str, reps: Sequence[float], peer: str,
                peer_reps: Sequence[float], goal: str = "", note: str = "",
                better: str = "lower") -> Row | None:
        """A row from repetitions: the medians of each side, their ratio and the goal. No
        repetition on a side is a failure (the runs that should have made it failed)."""
        if not reps or not peer_reps:
            self.fail(f"{target}: no figure")
            return None
        value, peer_value = statistics.median(reps), statistics.median(peer_reps)
        ratio = value / peer_value if peer_value else float("inf")
        row = Row(target, unit, better, impl, value, peer, peer_value, ratio, goal,
                  goal_met(goal, value, ratio), list(reps), list(peer_reps), note)
        self.given.append(row)
        return row

    def fail(self, message: str) -> None:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        self.failures.append(message)

    def rows(self) -> list[Row]:
        """The rows given outright, then one per (target, peer) of the figures."""
        targets: dict[str, list[Figure]] = {}
        for f in self.items:
            targets.setdefault(f.target, []).append(f)
        rows = list(self.given)
        for target, figs in targets.items():
            if self.ours is None:
                ours: Figure | None = figs[0]
            else:
                ours = next((f for f in figs if f.impl == self.ours), None)
            peers: list[Figure | None] = [f for f in figs if f is not ours] or [None]
            for peer in peers:
                first = ours or peer
                assert first is not None
                ratio = None
                if ours is not None and peer is not None and peer.value:
                    ratio = ours.value / peer.value
                rows.append(Row(
                    target, first.unit, first.better, ours.impl if ours else None,
                    ours.value if ours else None, peer.impl if peer else None,
                    peer.value if peer else None, ratio))
        return rows

    def lines(self) -> list[str]:
        """The table: a title, the context, a row a line (a target named once), then the notes
        of figures and rows, the repetitions of given rows, and free notes."""
        rows = self.rows()
        out = ["", f"{'=' * 20} {self.title} {'=' * 20}"]
        if self.context:
            out.append(", ".join(f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool)
                                 else f"{k}={v}" for k, v in self.context.items()))
        goals = any(r.goal for r in rows)
        header = ["target", "unit", "better", "anning", "value", "peer", "peer value", "ratio"]
        header += ["goal", "met"] if goals else []
        table = [header]
        last = None
        for r in rows:
            first = (r.target, r.impl) != last
            last = (r.target, r.impl)
            cells = [r.target, r.unit, r.better, r.impl or "-", fmt(r.value)] if first \
                else [""] * 5
            cells += [r.peer or "-", fmt(r.peer_value),
                      "-" if r.ratio is None else f"{r.ratio:.2f}x"]
            if goals:
                cells += [r.goal or "-", {None: "-", True: "yes", False: "NO"}[r.met]]
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        right = {4, 6, 7}
        out += ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                          for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                for row in table]
        for f in self.items:
            if f.note:
                out.append(f"  {f.target} / {f.impl}: {f.note}")
        for r in self.given:
            if r.reps:
                reps = f"reps {', '.join(map(fmt, r.reps))} | {', '.join(map(fmt, r.peer_reps))}"
                out.append(f"  {r.target} ({r.impl} | {r.peer}): {reps}"
                           + (f"; {r.note}" if r.note else ""))
            elif r.note:
                out.append(f"  {r.target} ({r.impl} | {r.peer}): {r.note}")
        out += [f"  {note}" for note in self.notes]
        return out

    def print(self) -> None:
        print("\n".join(self.lines()), flush=True)

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {"title": self.title, "context": self.context,
                "figures": [asdict(f) for f in self.items],
                "rows": [asdict(r) for r in self.rows()], "notes": self.notes,
                "failures": self.failures, **extra}

    def write_json(self, path: Path, **extra: Any) -> None:
        path.write_text(json.dumps(self.to_json(**extra), indent=2, ensure_ascii=False,
                                   default=str))
        print(f"figures written to {path}", flush=True)

    def close_run(self, json_path: Path | None, work: Path, kept: str = "data",
                  **extra: Any) -> int:
        """The end of a script's run: the table (and JSON); on a failure the work directory
        is kept for a look (`kept` says what is in it) and the status is 1, else it goes."""
        if self.finish(json_path, **extra):
            print(f"{kept} kept in {work}")
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0

    def finish(self, json_path: Path | None, **extra: Any) -> int:
        """Print the table (and the JSON); the exit status: 1 after any failure."""
        self.print()
        if json_path is not None:
            self.write_json(json_path, **extra)
        if self.failures:
            print(f"\n{len(self.failures)} failure(s):", *self.failures, sep="\n  ")
            return 1
        return 0
