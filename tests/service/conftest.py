"""The service's tests: real `anning serve` processes on loopback, driven through
anning.client.Client, the generated stubs and a reflection-only generic client. Every server is
stopped with SIGTERM and must exit 0 with no traceback in its output; no call of a module may
be answered UNKNOWN or INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from anning.testing import server as h

Code = grpc.StatusCode


@pytest.fixture(scope="module", autouse=True)
def no_unknown_or_internal():
    start = len(h.CODES)
    yield
    bad = [(m, c) for m, c in h.CODES[start:] if c in (Code.UNKNOWN, Code.INTERNAL)]
    assert not bad, f"calls answered UNKNOWN or INTERNAL: {bad}"


@pytest.fixture(scope="module")
def main_server(tmp_path_factory):
    """One worker, no tokens, reflection, metrics, --max-batch 64, the main list."""
    data = tmp_path_factory.mktemp("main") / "data"
    h.write_main_snapshot(data)
    server = h.Server(data, reflection=True, metrics=True, max_batch=64)
    with h.running(server):
        yield server


@pytest.fixture(scope="module")
def stubs(main_server):
    with h.Stubs(main_server.target) as s:
        yield s


@pytest.fixture(scope="module")
def client(main_server):
    c = h.recorded_client(main_server.target, timeout=h.T)
    yield c
    c.close()
