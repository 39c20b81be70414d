"""Replicas on NATS JetStream (SPEC §8): a real 3-node nats-server cluster on loopback, written
by `anning nats-config`, and real `anning serve --nats` processes, one worker each, every one
serving the same list from a data directory of its own."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from anning.testing import server as h
from anning.testing.nats import NatsCluster, nats_server_available

why_not = nats_server_available()
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")

Code = grpc.StatusCode


@pytest.fixture(scope="module", autouse=True)
def no_unknown_or_internal():
    start = len(h.CODES)
    yield
    bad = [(m, c) for m, c in h.CODES[start:] if c in (Code.UNKNOWN, Code.INTERNAL)]
    assert not bad, f"calls answered UNKNOWN or INTERNAL: {bad}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[NatsCluster]:
    if why_not is not None:
        pytest.skip(why_not)
    nats = NatsCluster(tmp_path_factory.mktemp("nats"))
    nats.start()
    try:
        nats.wait_ready()
        yield nats
    finally:
        nats.stop()
