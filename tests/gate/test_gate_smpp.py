"""The gate against smpplib ESMEs, the SMSC simulator and a real `anning serve`: binds, checks,
every data_coding, long messages, receipts, replies, unbind mid-window, anning restarted."""

from __future__ import annotations

import threading
import time

import pytest

from anning.gate import pdu as P
from anning.gate.text import gsm_encode
from anning.testing.gate import (
    CLEAN,
    PASSWORD,
    PORT,
    SUPPRESSED_ENTITY,
    SUPPRESSED_GLOBAL,
    SUPPRESSED_PORT,
    SUPPRESSED_SENDER,
    GateThread,
    close,
    esme,
    make_config,
    read,
    smpplib,
    submit,
    ucs2,
)
from anning.testing.server import Server
from anning.testing.smsc import SmscSimulator

SUBMITFAIL = 0x45
THROTTLED = 0x58


# -- binds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transmitter", "receiver", "transceiver"])
def test_each_bind_type_binds(gate: GateThread, mode: str) -> None:
    client = esme(gate.port, mode=mode)
    try:
        assert client.state == {"transmitter": smpplib.consts.SMPP_CLIENT_STATE_BOUND_TX,
                                "receiver": smpplib.consts.SMPP_CLIENT_STATE_BOUND_RX,
                                "transceiver": smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX}[mode]
        assert gate.metric("anning_gate_sessions") == 1
    finally:
        close(client)


@pytest.mark.parametrize(("system_id", "password", "status"), [
    ("platform", "wrong", P.ESME_RINVPASWD),
    ("platform", "", P.ESME_RINVPASWD),
    ("nobody", PASSWORD, P.ESME_RINVSYSID),
])
def test_a_wrong_bind_is_refused(gate: GateThread, system_id: str, password: str,
                                 status: int) -> None:
    client = smpplib.client.Client("127.0.0.1", gate.port, timeout=10,
                                   allow_unknown_opt_params=True)
    client.connect()
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            client.bind_transceiver(system_id=system_id, password=password)
        assert refused.value.args[1] == status
        assert gate.metric("anning_gate_sessions") == 0
    finally:
        client.disconnect()


def test_a_receiver_cannot_submit(gate: GateThread) -> None:
    client = esme(gate.port, mode="receiver")
    try:
        # smpplib refuses to send it from a receiver itself: the raw PDU goes out
        raw = P.encode_message(7, P.Message(P.SUBMIT_SM, PORT, CLEAN, data_coding=0,
                                            short_message=b"hi"))
        client._socket.sendall(raw)
        resp = client.read_pdu()
        assert (resp.command, resp.status, resp.sequence) == ("submit_sm_resp",
                                                              P.ESME_RINVBNDSTS, 7)
    finally:
        close(client)


# -- checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "text", "scope"), [
    (SUPPRESSED_SENDER, "【京东】您的订单已发货", "sender"),
    (SUPPRESSED_SENDER, "您的订单已发货【京东】", "sender"),
    (SUPPRESSED_ENTITY, "【京东超市】周末特惠", "entity"),
    (SUPPRESSED_GLOBAL, "【淘宝】双十一", "global"),
    (SUPPRESSED_PORT, "no signature at all", "sender"),
])
def test_a_suppressed_submit_is_refused_and_not_forwarded(
        gate: GateThread, sim: SmscSimulator, number: str, text: str, scope: str) -> None:
    client = esme(gate.port)
    try:
        resp = submit(client, number, ucs2(text))
        assert resp.status == SUBMITFAIL
        clean = submit(client, CLEAN, ucs2(text))  # the same message to someone else goes
        assert clean.status == 0 and clean.message_id
        received = sim.wait_for(1)
        assert [r.message.destination_addr for r in received] == [CLEAN]
        assert received[0].message_id == clean.message_id.decode()
        assert gate.metric("anning_gate_submits_refused_total", {"reason": scope}) == 1
        assert gate.metric("anning_gate_submits_forwarded_total") == 1
        assert gate.metric("anning_gate_submits_checked_total") == 2
    finally:
        close(client)


def test_a_signature_inside_the_text_is_not_a_sender(gate: GateThread,
                                                     sim: SmscSimulator) -> None:
    client = esme(gate.port)
    try:
        resp = submit(client, SUPPRESSED_SENDER, ucs2("您好，【京东】的活动已结束，详情见官网"),
                      source="1069000000")
        assert resp.status == 0
        assert sim.wait_for(1)[0].text == "您好，【京东】的活动已结束，详情见官网"
    finally:
        close(client)


def test_the_category_of_the_account_is_checked(gate: GateThread, sim: SmscSimulator) -> None:
    # the list's entries are marketing: a notification account's message goes through
    client = esme(gate.port, system_id="notify")
    try:
        assert submit(client, SUPPRESSED_SENDER, ucs2("【京东】验证码 1234")).status == 0
        assert len(sim.wait_for(1)) == 1
    finally:
        close(client)


def test_an_account_entity_is_a_sender_of_all_its_traffic(gate: GateThread) -> None:
    client = esme(gate.port, system_id="merchant")
    try:
        # no signature, another port: the account's entity (京东到家 -> 京东集团) decides
        assert submit(client, SUPPRESSED_ENTITY, ucs2("周末特惠"), source="10690999").status \
            == SUBMITFAIL
    finally:
        close(client)


@pytest.mark.parametrize(("number", "status"), [("12345", P.ESME_RINVDSTADR),
                                                ("abc", P.ESME_RINVDSTADR)])
def test_a_bad_destination_is_refused_by_name(gate: GateThread, sim: SmscSimulator,
                                              number: str, status: int) -> None:
    client = esme(gate.port)
    try:
        assert submit(client, number, ucs2("【京东】hi")).status == status
        assert sim.received == []
    finally:
        close(client)


# -- data codings -----------------------------------------------------------------------------


@pytest.mark.parametrize(("account", "coding", "data", "text"), [
    ("platform", 0, gsm_encode("[JD] Hello @ £5 €"), "[JD] Hello @ £5 €"),
    ("latin", 0, "Grüße".encode("latin-1"), "Grüße"),
    ("platform", 1, b"plain ascii", "plain ascii"),
    ("platform", 3, "Café crème".encode("latin-1"), "Café crème"),
    ("platform", 8, ucs2("【京东】满100减20 😀"), "【京东】满100减20 😀"),
])
def test_every_data_coding_is_read_and_passed_intact(gate: GateThread, sim: SmscSimulator,
                                                     account: str, coding: int, data: bytes,
                                                     text: str) -> None:
    client = esme(gate.port, system_id=account)
    try:
        assert submit(client, CLEAN, data, data_coding=coding).status == 0
        got = sim.wait_for(1)[0]
        assert got.message.short_message == data  # byte for byte
        assert got.message.data_coding == coding
    finally:
        close(client)


def test_a_signature_with_an_emoji_in_ucs2_is_found(gate: GateThread) -> None:
    # a surrogate pair read as one character: the signature is whole
    client = esme(gate.port)
    try:
        assert submit(client, SUPPRESSED_SENDER, ucs2("😀活动 【京东】")).status == SUBMITFAIL
    finally:
        close(client)


def test_message_payload_is_read(gate: GateThread, sim: SmscSimulator) -> None:
    client = esme(gate.port)
    try:
        long_text = "【京东】" + "很长的消息" * 40
        resp = submit(client, SUPPRESSED_SENDER, b"", message_payload=ucs2(long_text))
        assert resp.status == SUBMITFAIL
        assert submit(client, CLEAN, b"", message_payload=ucs2(long_text)).status == 0
        assert sim.wait_for(1)[0].text == long_text
    finally:
        close(client)


def test_undecodable_text_is_refused_naming_the_field(gate: GateThread,
                                                      sim: SmscSimulator) -> None:
    client = esme(gate.port)
    try:
        assert submit(client, CLEAN, b"\x4e\xac\x4e", data_coding=8).status == \
            P.ESME_RINVMSGLEN
        assert submit(client, CLEAN, b"\xd8\x3d\x00\x41", data_coding=8).status == \
            P.ESME_RINVMSGLEN
        assert sim.received == []
    finally:
        close(client)


# -- long messages ----------------------------------------------------------------------------


def _parts(text: str, reference: int, size: int = 30, ie16: bool = False) -> list[bytes]:
    data = ucs2(text)
    chunks = [data[i:i + size * 2] for i in range(0, len(data), size * 2)]
    out = []
    for n, chunk in enumerate(chunks, 1):
        if ie16:
            udh = bytes([6, 0x08, 4, reference >> 8, reference & 0xFF, len(chunks), n])
        else:
            udh = bytes([5, 0x00, 3, reference, len(chunks), n])
        out.append(udh + chunk)
    return out


@pytest.mark.parametrize("ie16", [False, True])
@pytest.mark.parametrize(("number", "text", "status"), [
    (SUPPRESSED_SENDER, "【京东】" + "双十一大促，全场满减，" * 6, SUBMITFAIL),
    (SUPPRESSED_SENDER, "双十一大促，全场满减，" * 6 + "【京东】", SUBMITFAIL),
    (CLEAN, "【京东】" + "双十一大促，全场满减，" * 6, 0),
])
def test_a_long_message_is_decided_once_for_every_part(
        gate: GateThread, sim: SmscSimulator, ie16: bool, number: str, text: str,
        status: int) -> None:
    client = esme(gate.port)
    try:
        parts = _parts(text, 0x1234 if ie16 else 0x42, ie16=ie16)
        assert len(parts) >= 3
        for part in parts:  # all in the window, then the answers
            client.send_message(source_addr=PORT, destination_addr=number, short_message=part,
                                data_coding=8, esm_class=P.ESM_UDHI)
        statuses = [read(client, "submit_sm_resp").status for _ in parts]
        assert statuses == [status] * len(parts)
        if status == 0:
            received = sim.wait_for(len(parts))
            assert b"".join(r.message.short_message[r.message.short_message[0] + 1:]
                            for r in received) == ucs2(text)
        else:
            time.sleep(0.1)
            assert sim.received == []
        assert gate.metric("anning_gate_submits_checked_total") == 1
    finally:
        close(client)


def test_a_part_after_the_decision_gets_the_same_answer(gate: GateThread) -> None:
    client = esme(gate.port)
    try:
        parts = _parts("【京东】" + "很长的促销消息，" * 10, 0x77)
        for part in parts:
            client.send_message(source_addr=PORT, destination_addr=SUPPRESSED_SENDER,
                                short_message=part, data_coding=8, esm_class=P.ESM_UDHI)
        assert {read(client, "submit_sm_resp").status for _ in parts} == {SUBMITFAIL}
        # the platform retries the middle part alone: decided already
        client.send_message(source_addr=PORT, destination_addr=SUPPRESSED_SENDER,
                            short_message=parts[1], data_coding=8, esm_class=P.ESM_UDHI)
        assert read(client, "submit_sm_resp").status == SUBMITFAIL
        assert gate.metric("anning_gate_submits_checked_total") == 1
    finally:
        close(client)


def test_a_long_message_missing_a_part_is_decided_after_the_wait(gate: GateThread,
                                                                 sim: SmscSimulator) -> None:
    client = esme(gate.port)
    try:
        parts = _parts("【京东】" + "很长的促销消息，" * 10, 0x99)
        started = time.monotonic()
        for part in parts[:-1]:  # the last never comes
            client.send_message(source_addr=PORT, destination_addr=CLEAN, short_message=part,
                                data_coding=8, esm_class=P.ESM_UDHI)
        assert [read(client, "submit_sm_resp").status for _ in parts[:-1]] == \
            [0] * (len(parts) - 1)
        assert time.monotonic() - started >= gate.config.concat_wait * 0.9
        assert len(sim.wait_for(len(parts) - 1)) == len(parts) - 1
    finally:
        close(client)


# -- receipts and replies ---------------------------------------------------------------------


def test_a_receipt_goes_untouched_to_the_account_that_sent(gate: GateThread,
                                                           sim: SmscSimulator) -> None:
    sender = esme(gate.port)
    other = esme(gate.port, system_id="notify", mode="receiver")
    try:
        resp = submit(sender, CLEAN, ucs2("【京东】hi"), registered_delivery=1)
        assert resp.status == 0
        receipt = read(sender, "deliver_sm")
        assert receipt.esm_class & 0x3C == 0x04
        assert receipt.receipted_message_id.decode().rstrip("\0") == resp.message_id.decode()
        assert f"id:{resp.message_id.decode()}".encode() in receipt.short_message
        resp_pdu = smpplib.smpp.make_pdu("deliver_sm_resp", client=sender)
        resp_pdu.sequence = receipt.sequence
        sender.send_pdu(resp_pdu)
        deadline = time.monotonic() + 5
        while not sim.receipts_sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.receipts_sent == [(resp.message_id.decode(), 0)]
        assert gate.metric("anning_gate_receipts_total") == 1
        other._socket.settimeout(0.3)
        with pytest.raises(Exception):  # noqa: B017 - nothing reached the other account
            other.read_pdu()
    finally:
        close(sender)
        close(other)


def _reply_round(gate: GateThread, sim: SmscSimulator, user: str, text: str,
                 signature: str = "【京东到家】") -> tuple[object, int]:
    """Message `user` through the port, the user replies `text`; returns the MO as the ESME
    got it and the status the simulator got back."""
    client = esme(gate.port)
    try:
        assert submit(client, user, ucs2(signature + "您的订单已发货")).status == 0
        sim.wait_for(1)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(sim.mo("86" + user, PORT, text)))
        thread.start()
        mo = read(client, "deliver_sm")
        resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client)
        resp.sequence = mo.sequence
        client.send_pdu(resp)
        thread.join(10)
        return mo, result[0]
    finally:
        close(client)


def test_a_td_reply_is_recorded_before_it_is_passed_on(gate: GateThread,
                                                        sim: SmscSimulator) -> None:
    user = "13911110001"
    mo, status = _reply_round(gate, sim, user, "TD")
    assert status == 0
    assert mo.short_message == b"TD" and mo.source_addr.decode() == "86" + user
    assert gate.metric("anning_gate_opt_outs_total") == 1
    client = esme(gate.port)
    try:
        # refused now: the merchant's signature, and another signature of the same entity
        assert submit(client, user, ucs2("【京东到家】又有新活动")).status == SUBMITFAIL
        assert submit(client, user, ucs2("【京东超市】周末特惠"), source="1069077777").status \
            == SUBMITFAIL
        assert submit(client, user, ucs2("【淘宝】双十一"), source="1069077777").status == 0
    finally:
        close(client)


def test_free_text_is_passed_on_and_changes_nothing(gate: GateThread,
                                                    sim: SmscSimulator) -> None:
    user = "13911110002"
    mo, status = _reply_round(gate, sim, user, "T-shirt still there?")
    assert status == 0 and mo.short_message == b"T-shirt still there?"
    assert gate.metric("anning_gate_replies_total", {"action": "none"}) == 1
    client = esme(gate.port)
    try:
        assert submit(client, user, ucs2("【京东到家】又有新活动")).status == 0
    finally:
        close(client)


def test_a_reply_without_a_receiver_is_held_for_the_smsc_to_retry(gate: GateThread,
                                                                  sim: SmscSimulator) -> None:
    client = esme(gate.port, mode="transmitter")
    try:
        assert sim.mo("8613911110003", PORT, "hello") == P.ESME_RX_T_APPN
    finally:
        close(client)


# -- windows, unbind, enquire_link ------------------------------------------------------------


def test_past_the_window_submits_are_throttled(sim: SmscSimulator, anning: Server) -> None:
    running = GateThread(make_config(sim, anning.target, window=3, concat_wait=30.0)).start()
    try:
        running.wait_upstream()
        client = esme(running.port)
        # parts of a long message wait for their missing last part: they stay in flight
        parts = _parts("【京东】" + "很长的促销消息，" * 20, 0x55)
        sent = [client.send_message(source_addr=PORT, destination_addr=CLEAN,
                                    short_message=part, data_coding=8,
                                    esm_class=P.ESM_UDHI).sequence for part in parts[:4]]
        resp = read(client, "submit_sm_resp")
        assert resp.status == THROTTLED and resp.sequence == sent[3]
        assert running.metric("anning_gate_submits_refused_total", {"reason": "throttled"}) == 1
        client.disconnect()
    finally:
        running.stop()


def test_unbind_mid_window_answers_every_submit_first(gate: GateThread,
                                                      sim: SmscSimulator) -> None:
    client = esme(gate.port)
    sent = []
    for i in range(8):
        sent.append(client.send_message(source_addr=PORT, destination_addr=CLEAN if i % 2
                                        else SUPPRESSED_SENDER,
                                        short_message=ucs2(f"【京东】{i}"), data_coding=8).sequence)
    unbind = smpplib.smpp.make_pdu("unbind", client=client)
    client.send_pdu(unbind)
    got = []
    while True:
        pdu = client.read_pdu()
        got.append((pdu.command, pdu.sequence, pdu.status))
        if pdu.command == "unbind_resp":
            break
    answers = {seq: status for command, seq, status in got if command == "submit_sm_resp"}
    assert answers == {seq: (0 if i % 2 else SUBMITFAIL) for i, seq in enumerate(sent)}
    assert got[-1][0] == "unbind_resp"
    client.disconnect()


def test_enquire_link_and_unknown_commands(gate: GateThread) -> None:
    client = esme(gate.port)
    try:
        client._socket.sendall(P.encode_pdu(P.ENQUIRE_LINK, 41))
        resp = client.read_pdu()
        assert (resp.command, resp.sequence) == ("enquire_link_resp", 41)
        client._socket.sendall(P.encode_pdu(0x0000_7777, 42))
        nack = client.read_pdu()
        assert (nack.command, nack.sequence, nack.status) == ("generic_nack", 42,
                                                              P.ESME_RINVCMDID)
        assert submit(client, CLEAN, ucs2("【京东】still serving")).status == 0
    finally:
        close(client)


def test_data_sm_is_checked_too(gate: GateThread, sim: SmscSimulator) -> None:
    client = esme(gate.port)
    try:
        for number, status in ((SUPPRESSED_SENDER, SUBMITFAIL), (CLEAN, 0)):
            raw = P.encode_message(90, P.Message(P.DATA_SM, PORT, number, data_coding=8, tlvs={
                P.TAG_MESSAGE_PAYLOAD: ucs2("【京东】data_sm")}))
            client._socket.sendall(raw)
            resp = read(client, "data_sm_resp")
            assert (resp.sequence, resp.status) == (90, status)
        assert [r.message.command_id for r in sim.wait_for(1)] == [P.DATA_SM]
    finally:
        close(client)


def test_the_session_limit_refuses_binds_past_it(sim: SmscSimulator,
                                                 anning: Server) -> None:
    running = GateThread(make_config(sim, anning.target, max_sessions=2)).start()
    clients = []
    try:
        clients = [esme(running.port), esme(running.port, mode="receiver")]
        third = smpplib.client.Client("127.0.0.1", running.port, timeout=10,
                                      allow_unknown_opt_params=True)
        third.connect()
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            third.bind_transmitter(system_id="platform", password=PASSWORD)
        assert refused.value.args[1] == P.ESME_RBINDFAIL
        third.disconnect()
        close(clients.pop())  # one goes: a bind fits again
        deadline = time.monotonic() + 5
        while running.metric("anning_gate_sessions") > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        clients.append(esme(running.port))
        assert running.metric("anning_gate_sessions") == 2
    finally:
        for client in clients:
            close(client)
        running.stop()


def test_an_oversized_pdu_closes_only_that_session(gate: GateThread) -> None:
    healthy = esme(gate.port)
    bad = esme(gate.port)
    try:
        bad._socket.sendall((gate.config.max_pdu_bytes + 1).to_bytes(4, "big") + bytes(12))
        assert bad._socket.recv(16) == b""  # closed by the gate
        assert gate.metric("anning_gate_sessions_closed_total", {"reason": "malformed"}) == 1
        assert submit(healthy, CLEAN, ucs2("【京东】on")).status == 0
    finally:
        close(healthy)
        bad.disconnect()
