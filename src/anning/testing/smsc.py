"""An SMSC simulator for tests and benchmarks: accepts binds and submits, records what it got,
and sends users' replies (deliver_sm) and delivery receipts when asked.

    sim = SmscSimulator().start_thread()      # or `await sim.start()` on your own loop
    sim.port                                   # point the gate's upstream here
    sim.wait_for(1)                            # the submits received so far, once there are 1
    sim.mo("13812345678", "1069012345", "TD")  # a user replies; returns the deliver_sm_resp status

Run alone: `python -m anning.testing.smsc --listen 127.0.0.1:2776`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from anning.gate import pdu as P
from anning.gate.text import TextError, decode_user_data, encode_text

__all__ = ["Received", "SmscSimulator"]

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """A submit_sm / data_sm as the SMSC got it."""

    message: P.Message
    text: str | None
    message_id: str
    system_id: str
    at: float  # time.monotonic()


class _Link(asyncio.Protocol):
    def __init__(self, sim: SmscSimulator) -> None:
        self.sim = sim
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.system_id = ""
        self.receives = False
        self.sequence = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[int]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sim.links.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.links.discard(self)
        for future in self.waiting.values():
            if not future.done():
                future.set_result(-1)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 16:
            try:
                header = P.decode_header(self.buffer, 1 << 16)
            except P.PduError:
                assert self.transport is not None
                self.transport.close()
                return
            if len(self.buffer) < header.length:
                return
            pdu = bytes(self.buffer[:header.length])
            del self.buffer[:header.length]
            self.on_pdu(header, pdu)

    def on_pdu(self, header: P.Header, pdu: bytes) -> None:
        sim, command, seq = self.sim, header.command_id, header.sequence
        if command in P.BINDS:
            bind = P.decode_bind(pdu[16:])
            status = 0 if sim.password is None or bind.password == sim.password else \
                P.ESME_RINVPASWD
            self.system_id = bind.system_id
            self.receives = command != P.BIND_TRANSMITTER and status == 0
            self.send(P.encode_bind_resp(command, seq, "simsmsc", status))
            sim.binds.append((bind.system_id, P.BINDS[command], status))
        elif command in (P.SUBMIT_SM, P.DATA_SM):
            self._submit(header, pdu)
        elif command == P.ENQUIRE_LINK:
            self.send(P.encode_pdu(P.ENQUIRE_LINK_RESP, seq))
        elif command == P.UNBIND:
            self.send(P.encode_pdu(P.UNBIND_RESP, seq))
            assert self.transport is not None
            self.transport.close()
        elif command in (P.DELIVER_SM_RESP, P.DATA_SM_RESP, P.GENERIC_NACK):
            future = self.waiting.pop(seq, None)
            if future is not None and not future.done():
                future.set_result(header.status)
        elif command & P.RESPONSE:
            pass
        else:
            self.send(P.encode_pdu(P.GENERIC_NACK, seq, status=P.ESME_RINVCMDID))

    def _submit(self, header: P.Header, pdu: bytes) -> None:
        sim = self.sim
        if sim.submit_status:
            self.send(P.encode_message_resp(header.command_id, header.sequence,
                                            status=sim.submit_status))
            return
        message = P.decode_message(header.command_id, pdu[16:])
        try:
            text = decode_user_data(message.payload, message.data_coding,
                                    bool(message.esm_class & P.ESM_UDHI), sim.alphabet,
                                    message.tlvs).text
        except TextError:
            text = None
        message_id = f"{next(sim.ids):08x}"
        with sim.lock:
            sim.received.append(Received(message, text, message_id, self.system_id,
                                         time.monotonic()))
        self.send(P.encode_message_resp(header.command_id, header.sequence, message_id))
        if sim.auto_receipts and message.registered_delivery & 0x01:
            asyncio.get_running_loop().call_later(
                sim.receipt_delay, lambda: asyncio.ensure_future(
                    sim.receipt(message, message_id)))

    async def deliver(self, m: P.Message) -> int:
        seq = next(self.sequence)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = future
        self.send(P.encode_message(seq, m))
        return await future


class SmscSimulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str | None = None,
                 auto_receipts: bool = True, receipt_delay: float = 0.05,
                 alphabet: str = "gsm") -> None:
        self.host = host
        self.port = port
        self.password = password
        self.auto_receipts = auto_receipts
        self.receipt_delay = receipt_delay
        self.alphabet = alphabet
        self.submit_status = 0  # answer every submit with this error when set
        self.received: list[Received] = []
        self.binds: list[tuple[str, str, int]] = []
        self.receipts_sent: list[tuple[str, int]] = []  # (message id, deliver_sm_resp status)
        self.links: set[_Link] = set()
        self.lock = threading.Lock()
        self.ids = itertools.count(0x1000)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> SmscSimulator:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: _Link(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            if link.transport is not None:
                link.transport.close()

    # -- from a test's thread ----------------------------------------------------------------
    def start_thread(self) -> SmscSimulator:
        started = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="smsc-simulator", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop_thread(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.005)
        with self.lock:
            raise AssertionError(f"the SMSC got {len(self.received)} submits, not {count}, "
                                 f"within {timeout}s")

    def mo(self, source: str, destination: str, text: str, data_coding: int = 0,
           timeout: float = 10.0) -> int:
        """A user's reply; the gate's deliver_sm_resp status (-1: no bound receiver)."""
        return self.call(self.send_mo(source, destination, text, data_coding), timeout)

    # -- on the simulator's loop -------------------------------------------------------------
    def _receiver(self) -> _Link | None:
        for link in self.links:
            if link.receives:
                return link
        return None

    async def send_mo(self, source: str, destination: str, text: str,
                      data_coding: int = 0) -> int:
        link = self._receiver()
        if link is None:
            return -1
        data = encode_text(text, data_coding, self.alphabet)
        m = P.Message(P.DELIVER_SM, source, destination, 0, data_coding, data,
                      source_addr_ton=1 if source.startswith("86") else 0)
        return await link.deliver(m)

    async def receipt(self, original: P.Message, message_id: str,
                      state: str = "DELIVRD") -> int:
        link = self._receiver()
        if link is None:
            return -1
        now = time.strftime("%y%m%d%H%M")
        text = (f"id:{message_id} sub:001 dlvrd:001 submit date:{now} done date:{now} "
                f"stat:{state} err:000 text:").encode("ascii")
        m = P.Message(P.DELIVER_SM, original.destination_addr, original.source_addr,
                      P.ESM_DELIVERY_RECEIPT, 0, text,
                      tlvs={P.TAG_RECEIPTED_MESSAGE_ID: message_id.encode() + b"\0",
                            P.TAG_MESSAGE_STATE: b"\x02"})
        status = await link.deliver(m)
        self.receipts_sent.append((message_id, status))
        return status


def main() -> None:
    parser = argparse.ArgumentParser(description="an SMSC simulator (tests, benchmarks)")
    parser.add_argument("--listen", default="127.0.0.1:2776")
    parser.add_argument("--no-receipts", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")

    async def serve() -> None:
        sim = await SmscSimulator(host, int(port), auto_receipts=not args.no_receipts).start()
        print(f"smsc simulator on {host}:{sim.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
