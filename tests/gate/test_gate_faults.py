"""The gate under faults: garbage and truncated PDUs on the wire (only that session goes), anning
stopped and restarted under load (temporary errors, nothing forwarded unchecked), the SMSC
going away; and the other ways to run it: the in-process engine, the command line."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from anning.client import Client
from anning.gate import pdu as P
from anning.gate.config import AnningSettings
from anning.testing.gate import (
    CLEAN,
    PORT,
    SUPPRESSED_ENTITY,
    SUPPRESSED_SENDER,
    GateThread,
    close,
    esme,
    make_config,
    read,
    smpplib,
    snapshot,
    submit,
    ucs2,
)
from anning.testing.server import Server, free_port
from anning.testing.smsc import SmscSimulator

SUBMITFAIL = 0x45
THROTTLED = 0x58


def _raw(port: int, data: bytes, bind: bool = False) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if bind:
            s.sendall(P.encode_bind(P.BIND_TRANSCEIVER, 1, "platform", "secret1"))
            s.recv(64)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.5)
        try:
            while s.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def test_garbage_and_truncated_pdus_close_only_their_session(
        gate: GateThread, sim: SmscSimulator, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(1000)
    healthy = esme(gate.port)
    good = P.encode_message(2, P.Message(P.SUBMIT_SM, PORT, CLEAN, 0, 8, ucs2("【京东】ok")))
    garbage: list[bytes] = []
    for i in range(1000):
        kind = i % 4
        if kind == 0:  # random bytes
            garbage.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif kind == 1:  # a truncated PDU
            garbage.append(good[:rng.randrange(1, len(good))])
        elif kind == 2:  # a good header over a random body
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
            garbage.append(P.encode_pdu(rng.choice([P.SUBMIT_SM, P.BIND_TRANSCEIVER, P.DATA_SM,
                                                    P.DELIVER_SM_RESP, 0x42]),
                                        i, body))
        else:  # an impossible command_length
            garbage.append(rng.choice([0, 15, 1 << 20, 0xFFFFFFFF]).to_bytes(4, "big")
                           + bytes(rng.randrange(256) for _ in range(20)))
    caplog.set_level(logging.WARNING, logger="anning.gate")
    with caplog.at_level(logging.WARNING, logger="anning.gate"):
        for i, data in enumerate(garbage):
            _raw(gate.port, data, bind=i % 50 == 3)
            if i % 100 == 0:  # the bound session is answered all along
                assert submit(healthy, SUPPRESSED_SENDER, ucs2("【京东】x")).status == SUBMITFAIL
                assert submit(healthy, CLEAN, ucs2("【京东】x")).status == 0
    closing = [r for r in caplog.records if "closing: malformed PDU" in r.getMessage()]
    assert len(closing) == gate.metric("anning_gate_sessions_closed_total",
                                       {"reason": "malformed"}) >= 250
    # one line a session: no session logged twice
    assert len({r.getMessage().split(": closing")[0] for r in closing}) == len(closing)
    assert submit(healthy, CLEAN, ucs2("【京东】still here")).status == 0
    late = esme(gate.port)
    assert submit(late, CLEAN, ucs2("【京东】and new binds")).status == 0
    close(late)
    close(healthy)
    # nothing the garbage said reached the SMSC: only the healthy session's clean submits
    assert {r.message.destination_addr for r in sim.received} == {CLEAN}


def test_anning_restarted_under_load(tmp_path: Path, sim: SmscSimulator) -> None:
    data = tmp_path / "data"
    snapshot(data)
    server = Server(data).serve()
    running = GateThread(make_config(sim, server.target)).start()
    answers: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def load() -> None:
        client = esme(running.port)
        i = 0
        while not stop.is_set():
            number = (CLEAN, SUPPRESSED_SENDER, SUPPRESSED_ENTITY)[i % 3]
            resp = submit(client, number, ucs2("【京东】load"))
            answers.append((number, resp.status, time.monotonic()))
            i += 1
            time.sleep(0.002)
        close(client)

    try:
        running.wait_upstream()
        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(0.5)
        server.stop()
        down_at = time.monotonic()
        time.sleep(0.5)
        assert sim.mo("8613911112222", PORT, "TD") == P.ESME_RX_T_APPN  # held, not lost
        server.serve()
        up_at = time.monotonic()
        time.sleep(1.5)
        stop.set()
        worker.join(30)
    finally:
        stop.set()
        running.stop()
        server.stop()
    statuses = {s for _, s, _ in answers}
    assert statuses <= {0, SUBMITFAIL, THROTTLED}, statuses
    # while anning was down: only temporary errors
    down = [(n, s) for n, s, t in answers if down_at + 0.05 < t < up_at]
    assert down and {s for _, s in down} == {THROTTLED}
    # suppressed numbers never went out; clean ones did, before and after
    assert all(s != 0 for n, s, _ in answers if n != CLEAN)
    assert {r.message.destination_addr for r in sim.received} == {CLEAN}
    after = [(n, s) for n, s, t in answers if t > up_at + 1.0]
    assert after and all(s == (0 if n == CLEAN else SUBMITFAIL) for n, s in after)


def test_the_smsc_down_is_a_temporary_error(sim: SmscSimulator, anning: Server) -> None:
    config = make_config(sim, anning.target)
    sim_port = sim.port
    sim.stop_thread()  # nobody at the upstream address now
    running = GateThread(config).start()
    try:
        client = esme(running.port)
        assert submit(client, CLEAN, ucs2("【京东】hi")).status == THROTTLED
        close(client)
        # the SMSC comes back on the same port: the gate binds and forwards
        back = SmscSimulator(port=sim_port).start_thread()
        try:
            running.wait_upstream(15)
            client = esme(running.port)
            assert submit(client, CLEAN, ucs2("【京东】hi")).status == 0
            assert len(back.wait_for(1)) == 1
            close(client)
        finally:
            back.stop_thread()
    finally:
        running.stop()


def test_in_process_engine_on_the_servers_data(sim: SmscSimulator,
                                               anning: Server) -> None:
    config = make_config(sim, anning.target, anning=AnningSettings(data=str(anning.data)))
    running = GateThread(config).start()
    try:
        running.wait_upstream()
        client = esme(running.port)
        assert submit(client, SUPPRESSED_SENDER, ucs2("【京东】hi")).status == SUBMITFAIL
        assert submit(client, CLEAN, ucs2("【京东】hi")).status == 0
        # an opt-out the server took is seen by the gate's engine (the shared write log)
        with Client(anning.target) as remote:
            remote.opt_out("13922223333", "京东")
        assert submit(client, "13922223333", ucs2("【京东】hi")).status == SUBMITFAIL
        # a reply the gate's engine recorded is seen by the server
        sim.wait_for(1)
        user = "13922224444"
        assert submit(client, user, ucs2("【京东】hi")).status == 0
        reply = threading.Thread(target=lambda: sim.mo("86" + user, PORT, "退订", 8))
        reply.start()
        mo = read(client, "deliver_sm")
        answer = smpplib.smpp.make_pdu("deliver_sm_resp", client=client)
        answer.sequence = mo.sequence
        client.send_pdu(answer)
        reply.join(10)
        assert mo.short_message == "退订".encode("utf-16-be") and mo.data_coding == 8
        with Client(anning.target) as remote:
            assert remote.check("京东超市", user).suppressed  # the entity: 京东集团
        close(client)
    finally:
        running.stop()


def test_the_command_line_runs_the_gate_with_metrics(tmp_path: Path, sim: SmscSimulator,
                                                     anning: Server) -> None:
    hashed = subprocess.run([sys.executable, "-m", "anning.cli", "smpp-gate", "hash-password"],
                            input="secret1\n", capture_output=True, text=True, check=True)
    line = hashed.stdout.strip()
    assert line.startswith("scrypt:") and "secret1" not in line
    config = tmp_path / "gate.toml"
    config.write_text(f"""
[upstream]
address = "127.0.0.1:1"
[[accounts]]
system_id = "platform"
password = "{line}"
""", encoding="utf-8")
    port, metrics = free_port(), free_port()
    log = open(tmp_path / "gate.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "anning.cli", "smpp-gate", "--config", str(config),
         "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{sim.port}",
         "--target", anning.target, "--metrics", str(metrics)],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while not sim.binds and time.monotonic() < deadline:
            time.sleep(0.02)
        client = esme(port)
        assert submit(client, SUPPRESSED_SENDER, ucs2("【京东】hi")).status == SUBMITFAIL
        assert submit(client, CLEAN, ucs2("【京东】hi")).status == 0
        close(client)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read()
        page = text.decode()
        assert 'anning_gate_submits_refused_total{reason="sender"} 1.0' in page
        assert "anning_gate_submits_forwarded_total 1.0" in page
        assert "anning_gate_added_seconds_count 2.0" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        log.close()
    assert code == 0, (tmp_path / "gate.log").read_text()


def test_bad_config_on_the_command_line_is_named(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text('[upstream]\naddress = "x"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "anning.cli", "smpp-gate", "--config",
                           str(config)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "upstream.address: 'x' is not HOST:PORT" in done.stderr
