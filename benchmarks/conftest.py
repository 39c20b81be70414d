"""Fixtures and the figures table for the anning benchmarks.

Options: --entries (default 1,000,000: the CI size), --queries (1,000,000), --figures-json PATH
(write the figures as JSON too). Each benchmark records a normalised median (ns per entry, ns
per check, seconds, bytes per entry) for anning or for a peer; at the end of the session a
table sets anning's figure beside each peer's figure from the same run, with their ratio.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen

from anning import SuppressionIndex

ANNING = "anning"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anning benchmarks")
    group.addoption(
        "--entries", type=int, default=1_000_000,
        help="entries in the generated suppression list (default 1,000,000)",
    )
    group.addoption(
        "--queries", type=int, default=1_000_000,
        help="(sender, number) checks in the query set (default 1,000,000)",
    )
    group.addoption(
        "--figures-json", type=Path, default=None,
        help="also write the figures table as JSON to this path",
    )


@dataclass
class Figure:
    target: str
    impl: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Figures:
    """Normalised medians gathered by the tests of one session."""

    items: list[Figure] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def add(self, target: str, impl: str, value: float, unit: str, note: str = "") -> None:
        self.items.append(Figure(target, impl, value, unit, note))

    def rows(self) -> list[dict[str, Any]]:
        """One row per (target, peer): anning's figure, the peer's, and anning / peer."""
        targets: dict[str, list[Figure]] = {}
        for f in self.items:
            targets.setdefault(f.target, []).append(f)
        rows = []
        for target, figs in targets.items():
            ours = next((f for f in figs if f.impl == ANNING), None)
            peers = [f for f in figs if f.impl != ANNING] or [None]
            for peer in peers:
                ratio = None
                if ours is not None and peer is not None and peer.value:
                    ratio = ours.value / peer.value
                rows.append({
                    "target": target,
                    "unit": (ours or peer).unit,
                    "anning": None if ours is None else ours.value,
                    "peer": None if peer is None else peer.impl,
                    "peer_value": None if peer is None else peer.value,
                    "ratio": ratio,
                })
        return rows


FIGURES = pytest.StashKey[Figures]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = Figures()


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(
    terminalreporter: Any, exitstatus: int, config: pytest.Config
) -> None:
    figures = config.stash.get(FIGURES, None)
    if not figures or not figures.items:
        return
    rows = figures.rows()
    tr = terminalreporter
    ctx = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
                    for k, v in figures.context.items())
    tr.write_sep("=", "anning figures (medians; ratio = anning / peer, lower is better for anning)")
    if ctx:
        tr.write_line(ctx)
    header = ("target", "unit", "anning", "peer", "peer value", "anning/peer")
    table = [header] + [
        (r["target"], r["unit"], _fmt(r["anning"]), r["peer"] or "-", _fmt(r["peer_value"]),
         "-" if r["ratio"] is None else f"{r['ratio']:.2f}x")
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    last_target = None
    for n, row in enumerate(table):
        cells = list(row)
        if n and cells[0] == last_target:
            cells[0] = cells[1] = cells[2] = ""
        else:
            last_target = cells[0] if n else None
        tr.write_line("  ".join(str(c).rjust(w) if i >= 2 and i != 3 else str(c).ljust(w)
                                for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    for f in figures.items:
        if f.note:
            tr.write_line(f"  {f.target} / {f.impl}: {f.note}")
    path = config.getoption("--figures-json")
    if path is not None:
        doc = {"context": figures.context, "figures": [vars(f) for f in figures.items],
               "rows": rows}
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        tr.write_line(f"figures written to {path}")


# -- data ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    return request.config.stash[FIGURES]


@pytest.fixture(scope="session")
def sizes(request: pytest.FixtureRequest, figures: Figures) -> tuple[int, int]:
    entries = request.config.getoption("--entries")
    queries = request.config.getoption("--queries")
    if entries < 1 or queries < 1:
        raise pytest.UsageError("--entries and --queries must be positive")
    figures.context.update(entries=entries, queries=queries)
    return entries, queries


@pytest.fixture(scope="session")
def data(sizes: tuple[int, int], figures: Figures) -> datagen.Dataset:
    t0 = time.perf_counter()
    dataset = datagen.generate(*sizes)
    figures.context["datagen_s"] = round(time.perf_counter() - t0, 2)
    return dataset


@pytest.fixture(scope="session")
def index(data: datagen.Dataset) -> SuppressionIndex:
    return datagen.build_index(data)


@pytest.fixture(scope="session")
def sender_strings(data: datagen.Dataset) -> list[str]:
    return data.queries.sender_strings(data.universe)


@pytest.fixture(scope="session")
def query_ids(index: SuppressionIndex, sender_strings: list[str]) -> np.ndarray:
    return index.sender_ids(sender_strings)


@dataclass
class Oracle:
    keys: np.ndarray  # sorted unique number << 20 | code
    masks: np.ndarray
    marketing: np.ndarray  # the exact answers to the query set, category marketing
    notification: np.ndarray


@pytest.fixture(scope="session")
def oracle(data: datagen.Dataset) -> Oracle:
    u, q = data.universe, data.queries
    keys, masks = datagen.oracle_keys(u, data.entries)
    return Oracle(
        keys, masks,
        datagen.oracle_check(u, keys, masks, q.senders, q.numbers, 0),
        datagen.oracle_check(u, keys, masks, q.senders, q.numbers, 1),
    )


@pytest.fixture(scope="session")
def sorted_numbers(data: datagen.Dataset) -> np.ndarray:
    return np.sort(data.entries.numbers)


@pytest.fixture(scope="session")
def number_set(data: datagen.Dataset) -> set[int]:
    return set(data.entries.numbers.tolist())


# -- measuring -------------------------------------------------------------------------------

Measure = Callable[..., Any]


@pytest.fixture
def measure(benchmark: Any, figures: Figures) -> Measure:
    """measure(target, impl, fn, per=, unit=, scale=, rounds=, setup=) -> fn's last result.

    Runs fn through pytest-benchmark (rounds, one warm-up) and records its median divided by
    `per` and multiplied by `scale` (1e9: ns) as figure (target, impl). With
    --benchmark-disable it times a single call instead (setup included)."""

    def run(
        target: str, impl: str, fn: Callable[..., Any], *, per: float = 1.0,
        unit: str = "ns", scale: float = 1e9, rounds: int = 5, warmup: int = 1,
        setup: Callable[[], Any] | None = None, note: str = "",
    ) -> Any:
        benchmark.group = target
        benchmark.extra_info.update(per=per, unit=unit)
        if benchmark.disabled:  # pedantic runs fn once, untimed: time that call
            t0 = time.perf_counter()
            result = benchmark.pedantic(fn, setup=setup)
            median = time.perf_counter() - t0
        else:
            result = benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=warmup)
            median = benchmark.stats.stats.median
        value = median / per * scale
        figures.add(target, impl, value, unit, note)
        benchmark.extra_info["figure"] = value
        return result

    return run
