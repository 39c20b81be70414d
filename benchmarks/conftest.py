"""Options, session fixtures and the figures table of the pytest benchmarks.

Options: --entries (default 1,000,000: the CI size), --queries (1,000,000), --events (200,000:
the events benchmark's log), --figures-json PATH (write the figures as JSON too). Each benchmark
records a normalised median (ns per entry, ns per check, seconds, bytes per entry) for anning
or for a peer; at the end of the session benchmarks.lib.figures prints anning's figure beside
each peer's from the same run, with their ratio.

Run from the repository root: `python -m pytest benchmarks -q` (`-m` puts the root on the
path, so `benchmarks.lib` imports as a package).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anning import SuppressionIndex
from benchmarks.lib import datagen
from benchmarks.lib.figures import Figures
from benchmarks.lib.oracle import ListModel

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
        "--events", type=int, default=200_000,
        help="events logged for the events benchmark (default 200,000; 1,000,000 full size)",
    )
    group.addoption(
        "--figures-json", type=Path, default=None,
        help="also write the figures table as JSON to this path",
    )


FIGURES = pytest.StashKey[Figures]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = Figures(
        "anning figures (medians; ratio = anning / peer, lower is better for anning)", ANNING)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(
    terminalreporter: Any, exitstatus: int, config: pytest.Config
) -> None:
    figures = config.stash.get(FIGURES, None)
    if not figures or not (figures.items or figures.given):
        return
    for line in figures.lines():
        terminalreporter.write_line(line)
    path = config.getoption("--figures-json")
    if path is not None:
        figures.write_json(path)


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
    return datagen.build_index(data.universe, data.entries)


@pytest.fixture(scope="session")
def sender_strings(data: datagen.Dataset) -> list[str]:
    return data.queries.sender_strings(data.universe)


@pytest.fixture(scope="session")
def query_ids(index: SuppressionIndex, sender_strings: list[str]) -> np.ndarray:
    return index.sender_ids(sender_strings)


@pytest.fixture(scope="session")
def model(data: datagen.Dataset) -> ListModel:
    """The exact numpy model of the list (benchmarks.lib.oracle)."""
    return ListModel(data.universe, data.entries)


@dataclass
class Oracle:
    """The exact answers to the query set, from the model."""

    marketing: np.ndarray
    notification: np.ndarray


@pytest.fixture(scope="session")
def oracle(data: datagen.Dataset, model: ListModel) -> Oracle:
    q = data.queries
    return Oracle(model.check(q.senders, q.numbers, 0), model.check(q.senders, q.numbers, 1))


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
        figures.add(target, impl, value, unit, note=note)
        benchmark.extra_info["figure"] = value
        return result

    return run
