"""Fixtures of the gate's tests: a real `anning serve` process, the SMSC simulator, the gate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anning.testing.gate import GateThread, make_config, snapshot
from anning.testing.server import Server
from anning.testing.smsc import SmscSimulator


@pytest.fixture(scope="module")
def anning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("gate") / "data"
    snapshot(data)
    server = Server(data).serve()
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
def gate(sim: SmscSimulator, anning: Server) -> Iterator[GateThread]:
    running = GateThread(make_config(sim, anning.target)).start()
    running.wait_upstream()
    yield running
    running.stop()
