"""For the gate's tests and benchmark: the gate on its own event loop in a thread (real TCP on
loopback), its configuration, the list the server starts with, smpplib clients as the ESMEs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from anning.gate.backend import make_backend
from anning.gate.config import Account, AnningSettings, GateConfig, Upstream, hash_password
from anning.gate.gate import Gate
from anning.testing.server import write_snapshot
from anning.testing.smsc import SmscSimulator

PASSWORD = "secret1"
SALT = bytes(16)
HASHED = hash_password(PASSWORD, SALT)
PORT = "1069012345"  # the platform's port (source_addr)

# the list the server starts with (see `snapshot`)
SUPPRESSED_SENDER = "13800000001"  # opted out of 京东
SUPPRESSED_ENTITY = "13800000002"  # opted out of entity 京东集团 (京东, 京东超市)
SUPPRESSED_GLOBAL = "13800000003"  # opted out of everyone
SUPPRESSED_PORT = "13800000004"  # opted out of the port 1069012345
CLEAN = "13900000000"


def snapshot(data: Path) -> None:
    write_snapshot(
        data,
        [SUPPRESSED_SENDER, SUPPRESSED_ENTITY, SUPPRESSED_GLOBAL, SUPPRESSED_PORT],
        ["京东", "entity:京东集团", "*", PORT],
        entities={"京东": "京东集团", "京东超市": "京东集团", "京东到家": "京东集团"})


def accounts() -> dict[str, Account]:
    return {
        "platform": Account("platform", HASHED, "marketing"),
        "notify": Account("notify", HASHED, "notification"),
        "latin": Account("latin", HASHED, "marketing", alphabet="latin1"),
        "merchant": Account("merchant", HASHED, "marketing", entity="京东到家",
                            ports=("10690999",)),
    }


class GateThread:
    """The gate on its own event loop in a thread, like the process would run it."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config
        self.gate: Gate | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> GateThread:
        self.thread.start()

        async def start() -> Gate:
            c = self.config
            backend = make_backend(c.anning.target, c.anning.token, c.anning.timeout,
                                   c.anning.data) if c.checks else None
            gate = Gate(c, backend)
            await gate.start()
            return gate

        self.gate = self.call(start())
        return self

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def port(self) -> int:
        assert self.gate is not None
        return int(self.gate.listening.rpartition(":")[2])

    def wait_upstream(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gate is not None and self.gate.link is not None:
                return
            time.sleep(0.01)
        raise AssertionError("the gate did not bind to the SMSC")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        assert self.gate is not None
        value = self.gate.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0

    def stop(self) -> None:
        if self.gate is not None:
            with contextlib.suppress(Exception):
                self.call(self.gate.close(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def make_config(sim: SmscSimulator, target: str, **changes: Any) -> GateConfig:
    config = GateConfig(accounts=accounts(), upstream=Upstream("127.0.0.1", sim.port, "gate",
                                                               "pw"),
                        anning=AnningSettings(target=target, timeout=1.0),
                        listen="127.0.0.1:0", concat_wait=2.0, enquire_link_seconds=5.0)
    return replace(config, **changes)


def esme(port: int, system_id: str = "platform", password: str = PASSWORD,
         mode: str = "transceiver") -> smpplib.client.Client:
    client = smpplib.client.Client("127.0.0.1", port, timeout=10,
                                   allow_unknown_opt_params=True)
    client.connect()
    getattr(client, f"bind_{mode}")(system_id=system_id, password=password)
    return client


def read(client: smpplib.client.Client, command: str) -> Any:
    """The next PDU of that command (enquire_links and others in between are skipped)."""
    while True:
        pdu = client.read_pdu()
        if pdu.command == command:
            return pdu
        if pdu.command == "deliver_sm":  # answer it, as an ESME must
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client)
            resp.sequence = pdu.sequence
            client.send_pdu(resp)


def submit(client: smpplib.client.Client, destination: str, text: bytes,
           source: str = PORT, data_coding: int = 8, **fields: Any) -> Any:
    """A submit_sm and its submit_sm_resp."""
    client.send_message(source_addr_ton=0, source_addr_npi=0, source_addr=source,
                        dest_addr_ton=0, dest_addr_npi=0, destination_addr=destination,
                        short_message=text, data_coding=data_coding, **fields)
    return read(client, "submit_sm_resp")


def ucs2(text: str) -> bytes:
    return text.encode("utf-16-be")


def close(client: smpplib.client.Client) -> None:
    with contextlib.suppress(Exception):
        client.unbind()
    with contextlib.suppress(Exception):
        client.disconnect()
