"""The two kinds of SMPP connection of the gate: ESMEs bound to it, and its link to the SMSC.

Both are asyncio Protocols over one framing (`PduLink`): a PDU is cut out of the byte stream as
soon as its `command_length` bytes are there, without a task per PDU. A frame whose length is
below 16 or above the limit cannot be resynchronised, so it closes that connection (one log
line) and nothing else; the gate and its other sessions go on. What a PDU *means* is the
gate's business (anning.gate.gate): the sessions keep the SMPP state (bound or not, as what,
how many submits are in flight) and answer what needs no decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anning.gate import pdu as P
from anning.gate.config import Account

if TYPE_CHECKING:
    from anning.gate.gate import Gate

__all__ = ["EsmeSession", "PduLink", "Relay", "SmscLink"]

log = logging.getLogger("anning.gate")

UNBIND_DRAIN_SECONDS = 5.0  # how long an unbind waits for the submits still in flight
BIND_TIMEOUT_SECONDS = 30.0  # a connection that does not bind within this is closed


@dataclass(slots=True)
class Relay:
    """A deliver_sm of the SMSC's passed to an ESME: the answer goes back under this."""

    upstream_sequence: int
    command_id: int


class PduLink(asyncio.Protocol):
    """SMPP frames over a TCP connection."""

    def __init__(self, max_pdu: int, name: str) -> None:
        self.max_pdu = max_pdu
        self.name = name
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.name = f"{self.name} {peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 16 and not self.closed:
            try:
                header = P.decode_header(buffer, self.max_pdu)
            except P.PduError as exc:
                self.fail(f"malformed PDU: {exc}", "malformed")
                return
            if len(buffer) < header.length:
                return
            pdu = bytes(buffer[:header.length])
            del buffer[:header.length]
            self.on_pdu(header, pdu)
        if len(buffer) >= 4 and not self.closed:  # an impossible length is known at once
            length = int.from_bytes(buffer[:4], "big")
            if not 16 <= length <= self.max_pdu:
                self.fail(f"malformed PDU: command_length: {length} is outside "
                          f"16..{self.max_pdu}", "malformed")

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def fail(self, reason: str, kind: str) -> None:
        """Close this connection for `reason` (one log line)."""
        if not self.closed:
            log.warning("%s: closing: %s", self.name, reason)
            self.on_failure(kind)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.on_lost()

    def on_pdu(self, header: P.Header, pdu: bytes) -> None:
        raise NotImplementedError

    def on_failure(self, kind: str) -> None:
        return None

    def on_lost(self) -> None:
        return None


class EsmeSession(PduLink):
    """An ESME's connection to the gate: bind, submits (window), MOs and receipts to it."""

    def __init__(self, gate: Gate) -> None:
        super().__init__(gate.config.max_pdu_bytes, "esme")
        self.gate = gate
        self.account: Account | None = None
        self.mode = ""  # receiver, transmitter, transceiver once bound
        self.binding = False
        self.unbinding = False
        self.in_flight = 0  # submits answered not yet
        self._drained: asyncio.Event | None = None
        self._sequence = 0
        # our deliver_sm sequence -> the upstream deliver_sm's sequence it relays
        self.relayed: dict[int, Relay] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._bind_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._bind_timer = asyncio.get_running_loop().call_later(
            BIND_TIMEOUT_SECONDS, self._bind_timeout)
        self.gate.connected(self)

    def _bind_timeout(self) -> None:
        if self.account is None:
            self.fail(f"no bind within {BIND_TIMEOUT_SECONDS:.0f} s", "bind_timeout")

    @property
    def receives(self) -> bool:
        return self.mode in ("receiver", "transceiver") and not self.unbinding

    @property
    def transmits(self) -> bool:
        return self.mode in ("transmitter", "transceiver")

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def answer(self, command_id: int, sequence: int, status: int, message_id: str = "") -> None:
        self.send(P.encode_message_resp(command_id, sequence, message_id, status))

    def finish_submit(self, data: bytes) -> None:
        """Send a submit's answer; one fewer in flight (an unbind may be waiting for it)."""
        self.send(data)
        self.in_flight -= 1
        if self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    def on_pdu(self, header: P.Header, pdu: bytes) -> None:
        command, seq = header.command_id, header.sequence
        if command in (P.SUBMIT_SM, P.DATA_SM):
            if not self.transmits or self.unbinding:
                self.answer(command, seq, P.ESME_RINVBNDSTS)
            elif self.in_flight >= self.gate.config.window:
                self.gate.metrics.refused_for("throttled").inc()
                self.answer(command, seq, P.ESME_RTHROTTLED)
            else:
                self.in_flight += 1
                self.gate.submit(self, header, pdu)
        elif command in (P.DELIVER_SM_RESP, P.DATA_SM_RESP):
            self.gate.delivered(self, header)
        elif command == P.ENQUIRE_LINK:
            self.send(P.encode_pdu(P.ENQUIRE_LINK_RESP, seq))
        elif command in P.BINDS:
            self._bind(header, pdu)
        elif command == P.UNBIND:
            self._spawn(self._unbind(seq))
        elif command in (P.UNBIND_RESP, P.ENQUIRE_LINK_RESP, P.GENERIC_NACK):
            if command == P.UNBIND_RESP:
                self.close()
        elif command in (P.QUERY_SM, P.CANCEL_SM):
            if self.account is None:
                self.answer(command, seq, P.ESME_RINVBNDSTS)
            else:
                self.in_flight += 1
                self.gate.forward(self, header, pdu, None, 0.0)
        elif command == P.REPLACE_SM:  # would change a text that was checked
            self.answer(command, seq, P.ESME_RREPLACEFAIL)
        elif command & P.RESPONSE:
            log.info("%s: unexpected %s (sequence %d) ignored", self.name,
                     P.command_name(command), seq)
        else:  # submit_multi, outbind, alert_notification from an ESME, or garbage
            self.send(P.encode_pdu(P.GENERIC_NACK, seq, status=P.ESME_RINVCMDID))

    def _bind(self, header: P.Header, pdu: bytes) -> None:
        command, seq = header.command_id, header.sequence
        if self.account is not None or self.binding:
            self.send(P.encode_bind_resp(command, seq, self.gate.system_id, P.ESME_RALYBND))
            return
        try:
            bind = P.decode_bind(pdu[16:])
        except P.PduError as exc:
            log.warning("%s: bind refused: %s", self.name, exc)
            self.send(P.encode_bind_resp(command, seq, self.gate.system_id, P.ESME_RBINDFAIL))
            return
        self.binding = True
        self._spawn(self._authenticate(command, seq, bind))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _authenticate(self, command: int, seq: int, bind: P.BindRequest) -> None:
        try:
            account, status = await self.gate.authenticate(self, bind)
        finally:
            self.binding = False
        if self.closed:
            return
        if status != P.ESME_ROK or account is None:
            log.warning("%s: bind as %r refused: %s", self.name, bind.system_id,
                        P.status_name(status))
            self.send(P.encode_bind_resp(command, seq, self.gate.system_id, status))
            return
        self.account = account
        self.mode = P.BINDS[command]
        if self._bind_timer is not None:
            self._bind_timer.cancel()
        self.name = f"{self.name} {account.system_id}/{self.mode}"
        self.gate.bound(self)  # counted before the ESME hears it is bound
        self.send(P.encode_bind_resp(command, seq, self.gate.system_id, status))

    async def _unbind(self, seq: int) -> None:
        """Answer the submits still in flight, then unbind_resp, then close."""
        self.unbinding = True
        if self.in_flight:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), UNBIND_DRAIN_SECONDS)
            except asyncio.TimeoutError:
                log.warning("%s: unbind with %d submits still unanswered", self.name,
                            self.in_flight)
        self.send(P.encode_pdu(P.UNBIND_RESP, seq))
        self.close()

    def on_failure(self, kind: str) -> None:
        self.gate.metrics.closed.labels(kind).inc()

    def on_lost(self) -> None:
        if self._bind_timer is not None:
            self._bind_timer.cancel()
        self.gate.disconnected(self)


class SmscLink(PduLink):
    """The gate's connection to the SMSC, bound as a transceiver."""

    def __init__(self, gate: Gate) -> None:
        super().__init__(max(gate.config.max_pdu_bytes, 65536), "smsc")
        self.gate = gate
        self.bound = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self._sequence = 0

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        up = self.gate.config.upstream
        self.send(P.encode_bind(P.BIND_TRANSCEIVER, self.next_sequence(), up.system_id,
                                up.password, up.system_type))

    def on_pdu(self, header: P.Header, pdu: bytes) -> None:
        command = header.command_id
        if command == P.BIND_TRANSCEIVER | P.RESPONSE:
            if not self.bound.done():
                self.bound.set_result(header.status)
        elif command in (P.DELIVER_SM, P.DATA_SM):
            self.gate.mobile_originated(header, pdu)
        elif command == P.ENQUIRE_LINK:
            self.send(P.encode_pdu(P.ENQUIRE_LINK_RESP, header.sequence))
        elif command == P.UNBIND:
            self.send(P.encode_pdu(P.UNBIND_RESP, header.sequence))
            self.close()
        elif command == P.ENQUIRE_LINK_RESP:
            pass
        elif command & P.RESPONSE:  # submit_sm_resp, data_sm_resp, query/cancel, nack
            self.gate.answered(header, pdu)
        else:
            self.send(P.encode_pdu(P.GENERIC_NACK, header.sequence, status=P.ESME_RINVCMDID))

    def on_lost(self) -> None:
        if not self.bound.done():
            self.bound.set_result(-1)
        if not self.lost.done():
            self.lost.set_result(None)
