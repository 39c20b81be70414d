"""anning's SMPP gate: platforms' ESMEs bind to it, it binds to the SMSC, and every message in
between is checked against the suppression list (SPEC §9).

- submit_sm / data_sm: the senders are the signature(s) in the text, the source_addr (the port)
  and the account's entity; suppressed when any is. Suppressed: the configured permanent error
  (ESME_RSUBMITFAIL) and nothing forwarded. anning unable to answer: the configured temporary
  error (ESME_RTHROTTLED), so the platform retries and nothing goes out unchecked. Clean: the
  PDU is forwarded byte for byte under the gate's sequence number, and the SMSC's answer is
  relayed under the ESME's (message_id intact). The parts of a long message wait for each
  other (at most `concat_wait_seconds`) and are decided once, together.
- deliver_sm / data_sm from the SMSC: a delivery receipt goes to the account whose message it
  reports; a user's reply is first run through anning's reply rules for the sender that last
  messaged that number through that port, durably, and only then passed to the account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from itertools import count
from typing import Any, cast

from anning.gate import pdu as P
from anning.gate.backend import BackendUnavailable, CheckBackend, InvalidReply
from anning.gate.checks import (
    BAD_NUMBER,
    BAD_SENDER,
    NONE,
    UNAVAILABLE,
    CheckBatcher,
    Decision,
)
from anning.gate.config import Account, GateConfig, verify_password
from anning.gate.metrics import GateMetrics
from anning.gate.routes import Recent
from anning.gate.session import EsmeSession, Relay, SmscLink
from anning.gate.text import Concat, TextError, decode_user_data, find_signatures

__all__ = ["Gate"]

log = logging.getLogger("anning.gate")

SYSTEM_ID = "anning"
_STATUS_OF = {BAD_NUMBER: P.ESME_RINVDSTADR, BAD_SENDER: P.ESME_RINVSRCADR}
_REASON_OF = {UNAVAILABLE: "unavailable", BAD_NUMBER: "invalid", BAD_SENDER: "invalid"}
MAX_ASSEMBLIES = 100_000


@dataclass(slots=True)
class _Sent:
    """A PDU forwarded to the SMSC, waiting for its answer."""

    session: EsmeSession
    sequence: int  # the ESME's
    command_id: int
    at: float
    system_id: str


@dataclass(slots=True)
class _Assembly:
    """The parts of one long message seen so far."""

    texts: dict[int, str | None]
    base: list[str]  # its senders other than signatures
    number: str
    category: str
    fallback: str
    waiting: asyncio.Future[Decision]
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Counts:
    connections: int = 0
    by_account: dict[str, int] = field(default_factory=dict)


def _number_text(addr: str, ton: int) -> str:
    """A number as anning reads it: TON 1 (international) without `+` gets one."""
    return "+" + addr if ton == 1 and addr and not addr.startswith("+") else addr


def _signatures(assembly: _Assembly, total: int) -> list[str]:
    """The signatures of a long message: at its start when part 1 is there, at its end when
    the last part is (the parts there are joined, so a signature cut in two is whole)."""
    joined = "".join(t for _, t in sorted(assembly.texts.items()) if t)
    found = find_signatures(joined)
    keep = []
    for signature in found:
        at_start = joined.lstrip().startswith(signature)
        if (at_start and 1 in assembly.texts) or (not at_start and total in assembly.texts):
            keep.append(signature)
    return keep


class Gate:
    def __init__(self, config: GateConfig, backend: CheckBackend | None,
                 metrics: GateMetrics | None = None) -> None:
        self.config = config
        self.system_id = SYSTEM_ID
        self.backend = backend
        self.checks = config.checks and backend is not None
        self.metrics = metrics or GateMetrics()
        self.sessions: set[EsmeSession] = set()
        self._counts = _Counts()
        self.link: SmscLink | None = None
        self._sent: dict[int, _Sent] = {}
        self._last_sender: Recent[tuple[str, int], tuple[str, str]] = Recent(
            config.reply_memory, config.reply_memory_seconds)
        self._message_ids: Recent[str, str] = Recent(config.reply_memory, 3 * 86400.0)
        self._decided: Recent[tuple[str, int, str, str, int], Decision] = Recent(
            MAX_ASSEMBLIES, 600.0)
        self._assemblies: dict[tuple[str, int, str, str, int], _Assembly] = {}
        self._round_robin = count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.checker: CheckBatcher | None = None
        self.upstream_bound = asyncio.Event()

    # -- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.checks:
            assert self.backend is not None
            self.checker = CheckBatcher(self.backend, self.metrics, self.config.default_country,
                                        self.config.batch_max)
        host, _, port = self.config.listen.rpartition(":")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: EsmeSession(self), host, int(port),
                                                reuse_address=True)
        self._spawn(self._upstream_loop())
        self._spawn(self._sweep())
        log.info("smpp gate on %s, SMSC %s:%d, checks %s", self.listening,
                 self.config.upstream.host, self.config.upstream.port,
                 "on" if self.checks else "OFF (pass-through)")

    @property
    def listening(self) -> str:
        server = cast(asyncio.Server, self._server)
        host, port = server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.link is not None:
            self.link.close()
        if self.checker is not None:
            await self.checker.close()
        if self.backend is not None:
            await self.backend.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions -----------------------------------------------------------------------------
    def connected(self, session: EsmeSession) -> None:
        self.sessions.add(session)
        if len(self.sessions) > 2 * self.config.max_sessions:
            session.fail(f"{len(self.sessions)} connections, more than twice the session "
                         "limit", "too_many")

    async def authenticate(self, session: EsmeSession,
                           bind: P.BindRequest) -> tuple[Account | None, int]:
        account = self.config.accounts.get(bind.system_id)
        if account is None:
            return None, P.ESME_RINVSYSID
        if not await asyncio.to_thread(verify_password, bind.password, account.password):
            return None, P.ESME_RINVPASWD
        if self._counts.connections >= self.config.max_sessions or \
                self._counts.by_account.get(account.system_id, 0) >= account.max_sessions:
            return None, P.ESME_RBINDFAIL
        return account, P.ESME_ROK

    def bound(self, session: EsmeSession) -> None:
        assert session.account is not None
        counts = self._counts
        counts.connections += 1
        counts.by_account[session.account.system_id] = \
            counts.by_account.get(session.account.system_id, 0) + 1
        self.metrics.sessions.set(counts.connections)

    def disconnected(self, session: EsmeSession) -> None:
        self.sessions.discard(session)
        if session.account is not None:
            counts = self._counts
            counts.connections -= 1
            counts.by_account[session.account.system_id] -= 1
            self.metrics.sessions.set(counts.connections)
        link = self.link
        for relay in session.relayed.values():  # the SMSC will deliver them again
            if link is not None:
                link.send(P.encode_message_resp(relay.command_id, relay.upstream_sequence,
                                                status=P.ESME_RX_T_APPN))
        session.relayed.clear()

    def _receiver(self, system_id: str | None) -> EsmeSession | None:
        """A session of the account bound to receive (round robin)."""
        if system_id is None:
            return None
        found = [s for s in self.sessions if s.account is not None and s.receives
                 and s.account.system_id == system_id and not s.closed]
        return found[next(self._round_robin) % len(found)] if found else None

    def _account_for_port(self, port: str) -> str | None:
        """The account whose `ports` has the longest prefix of `port`; the only account when
        there is one."""
        best, length = None, -1
        for account in self.config.accounts.values():
            for prefix in account.ports:
                if port.startswith(prefix) and len(prefix) > length:
                    best, length = account.system_id, len(prefix)
        if best is None and len(self.config.accounts) == 1:
            return next(iter(self.config.accounts))
        return best

    # -- submits ------------------------------------------------------------------------------
    def submit(self, session: EsmeSession, header: P.Header, pdu: bytes) -> None:
        started = time.perf_counter()
        if not self.checks:
            self.forward(session, header, pdu, None, started)
            return
        self._spawn(self._check_submit(session, header, pdu, started))

    def _refuse(self, session: EsmeSession, header: P.Header, status: int, reason: str,
                started: float) -> None:
        self.metrics.refused_for(reason).inc()
        self.metrics.added.observe(time.perf_counter() - started)
        session.finish_submit(P.encode_message_resp(header.command_id, header.sequence,
                                                    status=status))

    async def _check_submit(self, session: EsmeSession, header: P.Header, pdu: bytes,
                            started: float) -> None:
        account = session.account
        assert account is not None and self.checker is not None
        try:
            m = P.decode_message(header.command_id, pdu[16:])
            where = "message_payload" if P.TAG_MESSAGE_PAYLOAD in m.tlvs else "short_message"
            decoded = decode_user_data(m.payload, m.data_coding, bool(m.esm_class & P.ESM_UDHI),
                                       account.alphabet, m.tlvs, where)
        except (P.PduError, TextError) as exc:
            log.warning("%s: %s %d refused: %s", session.name, P.command_name(header.command_id),
                        header.sequence, exc)
            status = P.ESME_RINVCMDLEN if isinstance(exc, P.PduError) else P.ESME_RINVMSGLEN
            self._refuse(session, header, status, "invalid", started)
            return
        base = [m.source_addr] if m.source_addr else []
        if account.entity:
            base.append(account.entity)
        number = _number_text(m.destination_addr, m.dest_addr_ton)
        if decoded.concat is not None:
            decision = await self._long_message(account, m, decoded.text, decoded.concat, base,
                                                number)
        else:
            senders = (find_signatures(decoded.text) if decoded.text else []) + base
            decision = await self.checker.decide(senders or [account.system_id], number,
                                                 account.category)
            if decision.code != UNAVAILABLE:
                self.metrics.checked.inc()
        if session.closed:
            return  # the ESME is gone: it will submit again; nothing goes out on its behalf
        if decision.code == NONE:
            if m.source_addr and decision.number:
                self._last_sender.put((m.source_addr, decision.number),
                                      (decision.sender, account.system_id))
            self.forward(session, header, pdu, account.system_id, started)
        elif decision.code > 0:
            self.metrics.by_scope[decision.code].inc()
            self._answer_refusal(session, header, started)
        else:
            status = _STATUS_OF.get(decision.code, self.config.unavailable_status)
            if decision.code != UNAVAILABLE:
                log.warning("%s: submit %d refused: %s", session.name, header.sequence,
                            decision.reason)
            self._refuse(session, header, status, _REASON_OF[decision.code], started)

    def _answer_refusal(self, session: EsmeSession, header: P.Header, started: float) -> None:
        self.metrics.added.observe(time.perf_counter() - started)
        session.finish_submit(P.encode_message_resp(header.command_id, header.sequence,
                                                    status=self.config.suppressed_status))

    async def _long_message(self, account: Account, m: P.Message, text: str | None,
                            concat: Concat, base: list[str], number: str) -> Decision:
        """Wait for the other parts (at most concat_wait), decide once, remember it."""
        key = (account.system_id, concat.reference, m.source_addr, m.destination_addr,
               concat.total)
        decided = self._decided.get(key)
        if decided is not None:
            return decided
        assembly = self._assemblies.get(key)
        if assembly is None:
            assembly = _Assembly({}, base, number, account.category, account.system_id,
                                 asyncio.get_running_loop().create_future())
            if len(self._assemblies) < MAX_ASSEMBLIES:
                self._assemblies[key] = assembly
                assembly.timer = asyncio.get_running_loop().call_later(
                    self.config.concat_wait, self._assemble, key, concat.total)
        assembly.texts[concat.number] = text
        if len(assembly.texts) == concat.total or assembly.timer is None:
            self._assemble(key, concat.total, assembly)
        return await asyncio.shield(assembly.waiting)

    def _assemble(self, key: tuple[str, int, str, str, int], total: int,
                  assembly: _Assembly | None = None) -> None:
        assembly = self._assemblies.pop(key, None) or assembly
        if assembly is None or assembly.waiting.done():
            return
        if assembly.timer is not None:
            assembly.timer.cancel()
        assert self.checker is not None
        senders = _signatures(assembly, total) + assembly.base or [assembly.fallback]
        future = self.checker.decide(senders, assembly.number, assembly.category)

        def done(f: asyncio.Future[Decision]) -> None:
            decision = f.result()
            if decision.code != UNAVAILABLE:
                self.metrics.checked.inc()
                self._decided.put(key, decision)
            if not assembly.waiting.done():
                assembly.waiting.set_result(decision)

        future.add_done_callback(done)

    def forward(self, session: EsmeSession, header: P.Header, pdu: bytes,
                system_id: str | None, started: float) -> None:
        """Send a PDU of the ESME's to the SMSC under our sequence; its answer is relayed."""
        link = self.link
        if link is None or link.closed:
            self._refuse(session, header, self.config.unavailable_status, "smsc_down", started)
            return
        if len(self._sent) >= self.config.upstream.window:
            self._refuse(session, header, P.ESME_RTHROTTLED, "smsc_window", started)
            return
        sequence = link.next_sequence()
        self._sent[sequence] = _Sent(session, header.sequence, header.command_id,
                                     time.monotonic(), system_id or "")
        link.send(P.with_sequence(pdu, sequence))
        if header.command_id in (P.SUBMIT_SM, P.DATA_SM):
            self.metrics.forwarded.inc()
            self.metrics.added.observe(time.perf_counter() - started)

    def answered(self, header: P.Header, pdu: bytes) -> None:
        """The SMSC's answer to a PDU we forwarded: back to its ESME, under its sequence."""
        sent = self._sent.pop(header.sequence, None)
        if sent is None:
            log.info("smsc: %s for sequence %d, which is not waiting",
                     P.command_name(header.command_id), header.sequence)
            return
        if header.command_id == P.GENERIC_NACK:
            data = P.encode_message_resp(sent.command_id, sent.sequence, status=header.status)
        else:
            data = P.with_sequence(pdu, sent.sequence)
            if header.status == 0 and sent.system_id and \
                    header.command_id in (P.SUBMIT_SM_RESP, P.DATA_SM_RESP):
                with contextlib.suppress(P.PduError):
                    self._message_ids.put(P.decode_message_id(pdu[16:]), sent.system_id)
        sent.session.finish_submit(data)

    def _fail_sent(self, older_than: float | None) -> None:
        """Answer what the SMSC will not: a temporary error (the platform retries)."""
        now = time.monotonic()
        for sequence, sent in list(self._sent.items()):
            if older_than is None or now - sent.at > older_than:
                del self._sent[sequence]
                self.metrics.refused_for("smsc_down").inc()
                sent.session.finish_submit(P.encode_message_resp(
                    sent.command_id, sent.sequence, status=self.config.unavailable_status))

    # -- from the SMSC: receipts and users' replies ---------------------------------------------
    def mobile_originated(self, header: P.Header, pdu: bytes) -> None:
        self._spawn(self._mobile_originated(header, pdu))

    def _answer_smsc(self, header: P.Header, status: int) -> None:
        if self.link is not None:
            self.link.send(P.encode_message_resp(header.command_id, header.sequence,
                                                 status=status))

    async def _mobile_originated(self, header: P.Header, pdu: bytes) -> None:
        try:
            m = P.decode_message(header.command_id, pdu[16:])
        except P.PduError as exc:
            log.warning("smsc: %s %d refused: %s", P.command_name(header.command_id),
                        header.sequence, exc)
            self._answer_smsc(header, P.ESME_RINVCMDLEN)
            return
        if m.esm_class & P.ESM_TYPE_MASK:  # a receipt or an acknowledgement, not a user's text
            system_id = self._message_ids.get(_receipted_id(m)) or \
                self._account_for_port(m.destination_addr)
            if self._relay(header, pdu, system_id):
                self.metrics.receipts.inc()
            return
        port = m.destination_addr
        number = _number_text(m.source_addr, m.source_addr_ton)
        e164 = _e164(number, self.config.default_country)
        last = self._last_sender.get((port, e164)) if e164 else None
        system_id = last[1] if last else self._account_for_port(port)
        account = self.config.accounts.get(system_id or "")
        sender = (account.entity if account and account.entity else None) or \
            (last[0] if last else port) or (account.system_id if account else "")
        if self.checks and e164 and sender:
            assert self.backend is not None
            try:
                decoded = decode_user_data(m.payload, m.data_coding,
                                           bool(m.esm_class & P.ESM_UDHI),
                                           account.alphabet if account else "gsm", m.tlvs)
            except TextError as exc:
                log.warning("smsc: reply from %s not read: %s", number, exc)
                decoded = None
            if decoded is not None and decoded.text is not None:
                try:
                    outcome = await self.backend.record_reply(sender, number, decoded.text)
                except BackendUnavailable as exc:
                    log.warning("smsc: reply from %s held (anning unavailable: %s)", number, exc)
                    self._answer_smsc(header, P.ESME_RX_T_APPN)
                    return
                except InvalidReply as exc:
                    log.warning("smsc: reply from %s not recorded: %s", number, exc)
                else:
                    self.metrics.replies.labels(outcome.action).inc()
                    if outcome.recognised and outcome.action.startswith("opt_out"):
                        self.metrics.opt_outs.inc()
                        log.info("opt-out from %s for %s (scope %s, sequence %d)", number,
                                 sender, outcome.scope, outcome.sequence)
        self._relay(header, pdu, system_id)

    def _relay(self, header: P.Header, pdu: bytes, system_id: str | None) -> bool:
        session = self._receiver(system_id)
        if session is None:
            log.info("smsc: no receiver bound for %s: %s %d answered with a temporary error",
                     system_id, P.command_name(header.command_id), header.sequence)
            self._answer_smsc(header, P.ESME_RX_T_APPN)
            return False
        sequence = session.next_sequence()
        session.relayed[sequence] = Relay(header.sequence, header.command_id)
        session.send(P.with_sequence(pdu, sequence))
        return True

    def delivered(self, session: EsmeSession, header: P.Header) -> None:
        """The ESME's answer to a deliver_sm we relayed: back to the SMSC with its status."""
        relay = session.relayed.pop(header.sequence, None)
        if relay is not None:
            self._answer_smsc(P.Header(16, relay.command_id, 0, relay.upstream_sequence),
                              header.status)

    # -- the link to the SMSC -------------------------------------------------------------------
    async def _upstream_loop(self) -> None:
        up = self.config.upstream
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                _, link = await loop.create_connection(lambda: SmscLink(self), up.host, up.port)
                status = await asyncio.wait_for(link.bound, 10.0)
            except (OSError, asyncio.TimeoutError) as exc:
                if failures == 0:
                    log.warning("smsc %s:%d: cannot connect: %s", up.host, up.port, exc)
                failures += 1
                await asyncio.sleep(up.reconnect_seconds)
                continue
            if status != P.ESME_ROK:
                log.warning("smsc: bind refused: %s", P.status_name(status))
                link.close()
                await asyncio.sleep(up.reconnect_seconds)
                continue
            failures = 0
            self.link = link
            self.metrics.upstream_up.set(1)
            self.upstream_bound.set()
            log.info("smsc %s:%d: bound", up.host, up.port)
            enquire = asyncio.ensure_future(self._enquire(link))
            await link.lost
            enquire.cancel()
            self.link = None
            self.upstream_bound.clear()
            self.metrics.upstream_up.set(0)
            log.warning("smsc: connection lost; %d forwarded submits answered with a "
                        "temporary error", len(self._sent))
            self._fail_sent(None)
            await asyncio.sleep(up.reconnect_seconds)

    async def _enquire(self, link: SmscLink) -> None:
        while not link.closed:
            await asyncio.sleep(self.config.enquire_link_seconds)
            link.send(P.encode_pdu(P.ENQUIRE_LINK, link.next_sequence()))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._fail_sent(self.config.upstream.response_timeout)


def _receipted_id(m: P.Message) -> str:
    """The message id a receipt reports: the receipted_message_id TLV, else `id:` in its text."""
    raw = m.tlvs.get(P.TAG_RECEIPTED_MESSAGE_ID)
    if raw is not None:
        return raw.rstrip(b"\0").decode("ascii", "replace")
    text = m.payload.decode("latin-1")
    start = text.find("id:")
    return text[start + 3:].split(" ", 1)[0] if start >= 0 else ""


def _e164(text: str, default_country: int) -> int:
    from anning import InvalidInput, normalize_number

    try:
        return normalize_number(text, default_country, "source_addr")
    except InvalidInput:
        return 0
