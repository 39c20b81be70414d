"""Fixtures of the gate's tests: a real `anning serve` process, the SMSC simulator, the gate."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gate_helpers import GateThread, make_config, snapshot

from anning.testing.anning_process import AnningProcess
from anning.testing.smsc import SmscSimulator


@pytest.fixture(scope="module")
def anning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnningProcess]:
    data = tmp_path_factory.mktemp("gate") / "data"
    snapshot(data)
    server = AnningProcess(data).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sim() -> Iterator[SmscSimulator]:
    simulator = SmscSimulator().start_thread()
    yield simulator
    simulator.stop_thread()


@pytest.fixture
def gate(sim: SmscSimulator, anning: AnningProcess) -> Iterator[GateThread]:
    running = GateThread(make_config(sim, anning.target)).start()
    running.wait_upstream()
    yield running
    running.stop()
