"""End to end with a real gateway that no one here wrote: Kannel (bearerbox + smsbox) as the
platform's side, its SMPP smsc group pointed at the gate, the gate at the SMSC simulator, and a
real `anning serve` behind the gate. Messages go in through smsbox's `sendsms`; delivery
reports (dlr-url, dlr-mask 31) and users' replies (an sms-service's get-url) come back to a
small HTTP server of the test."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anning.gate.config import Account
from anning.testing.gate import (
    CLEAN,
    HASHED,
    PORT,
    SUPPRESSED_SENDER,
    GateThread,
    make_config,
    snapshot,
)
from anning.testing.server import Server, free_port
from anning.testing.smsc import SmscSimulator

pytestmark = pytest.mark.skipif(
    shutil.which("bearerbox") is None and not Path("/usr/sbin/bearerbox").exists(),
    reason="Kannel is not installed (apt-get install kannel; .ci/run installs it)")

BEARERBOX = shutil.which("bearerbox") or "/usr/sbin/bearerbox"
SMSBOX = shutil.which("smsbox") or "/usr/sbin/smsbox"


class Callbacks(http.server.ThreadingHTTPServer):
    """What Kannel calls back: /dlr?... and /mo?... (the query kept, decoded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def wait(self, test: Callable[[list[tuple[str, dict[str, str]]]], Any],
             timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = test(list(self.calls))
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"no such callback within {timeout}s; got {self.calls}")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Callbacks

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        with self.server.lock:
            self.server.calls.append((url.path, query))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


KANNEL_CONF = """\
group = core
admin-port = {admin}
admin-password = adminpw
smsbox-port = {smsbox}
box-allow-ip = 127.0.0.1
admin-allow-ip = 127.0.0.1
log-file = "{dir}/bearerbox.log"
log-level = 0
access-log = "{dir}/access.log"
dlr-storage = internal
sms-resend-freq = 1
sms-resend-retry = -1

group = smsc
smsc = smpp
smsc-id = gate
host = 127.0.0.1
port = {gate}
transceiver-mode = true
smsc-username = kannel
smsc-password = secret1
system-type = ""
source-addr-ton = 0
source-addr-npi = 0
dest-addr-ton = 0
dest-addr-npi = 0
reconnect-delay = 1
enquire-link-interval = 30
max-pending-submits = 10
wait-ack = 60
wait-ack-expire = 0x02

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox}
sendsms-port = {sendsms}
log-file = "{dir}/smsbox.log"
log-level = 0
mo-recode = true

group = sendsms-user
username = platform
password = sendpw
max-messages = 10
concatenation = true

group = sms-service
keyword = default
catch-all = true
get-url = "http://127.0.0.1:{http}/mo?from=%p&to=%P&text=%a&coding=%c"
max-messages = 0
"""


class Kannel:
    def __init__(self, directory: Path, gate_port: int, http_port: int) -> None:
        self.dir = directory
        self.ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port(),
                      "gate": gate_port, "http": http_port}
        self.conf = directory / "kannel.conf"
        self.conf.write_text(KANNEL_CONF.format(dir=directory, **self.ports), encoding="utf-8")
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Kannel:
        for binary in (BEARERBOX, SMSBOX):
            out = open(self.dir / f"{Path(binary).name}.out", "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen([binary, str(self.conf)], stdout=out,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True))
            _wait_port(self.ports["smsbox"] if binary == BEARERBOX else self.ports["sendsms"])
        return self

    def status(self) -> str:
        url = f"http://127.0.0.1:{self.ports['admin']}/status.txt?password=adminpw"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def send(self, to: str, text: str, sender: str = PORT, dlr_url: str = "") -> str:
        query = {"username": "platform", "password": "sendpw", "from": sender, "to": to,
                 "text": text, "charset": "UTF-8", "dlr-mask": "31", "dlr-url": dlr_url}
        if not text.isascii():
            query["coding"] = "2"  # UCS-2
        url = f"http://127.0.0.1:{self.ports['sendsms']}/cgi-bin/sendsms?" + \
            urllib.parse.urlencode(query)
        return urllib.request.urlopen(url, timeout=10).read().decode()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait(5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in
                         sorted(self.dir.glob("*.log")))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("kannel")
    data = directory / "data"
    snapshot(data)
    server = Server(data).serve()
    sim = SmscSimulator().start_thread()
    kannel_account = Account("kannel", HASHED, "marketing", ports=(PORT,))
    config = make_config(sim, server.target, accounts={"kannel": kannel_account})
    gate = GateThread(config).start()
    callbacks = Callbacks()
    threading.Thread(target=callbacks.serve_forever, daemon=True).start()
    kannel = Kannel(directory, gate.port, callbacks.server_address[1]).start()
    try:
        deadline = time.monotonic() + 30
        while gate.metric("anning_gate_sessions") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.metric("anning_gate_sessions") == 1, kannel.logs()
        yield {"server": server, "sim": sim, "gate": gate, "kannel": kannel,
               "callbacks": callbacks, "dlr": f"http://127.0.0.1:{callbacks.server_address[1]}"
                                              "/dlr?tag={tag}&type=%d&reply=%A&id=%F"}
    finally:
        kannel.stop()
        callbacks.shutdown()
        gate.stop()
        sim.stop_thread()
        server.stop()


def _dlrs(world: dict[str, Any], tag: str) -> Callable[[list[tuple[str, dict[str, str]]]],
                                                       list[dict[str, str]]]:
    return lambda calls: [q for path, q in calls if path == "/dlr" and q.get("tag") == tag]


def _to(world: dict[str, Any], number: str) -> list[Any]:
    return [r for r in world["sim"].received if r.message.destination_addr.endswith(number[-11:])]


def test_an_opted_out_number_is_refused_and_kannel_reports_the_nack(world: dict[str, Any]
                                                                     ) -> None:
    kannel, callbacks = world["kannel"], world["callbacks"]
    assert "Accepted" in kannel.send(SUPPRESSED_SENDER, "【京东】您的订单已发货",
                                     dlr_url=world["dlr"].format(tag="optedout"))
    reports = callbacks.wait(_dlrs(world, "optedout"))
    assert reports[0]["type"] == "16", reports
    assert "NACK/0x00000045" in reports[0]["reply"], reports
    time.sleep(0.5)
    assert _to(world, SUPPRESSED_SENDER) == []
    assert world["gate"].metric("anning_gate_submits_refused_total", {"reason": "sender"}) >= 1


def test_a_clean_message_arrives_intact_chinese_too(world: dict[str, Any]) -> None:
    kannel, sim, callbacks = world["kannel"], world["sim"], world["callbacks"]
    text = "【京东】您的订单已发货，满100减20 😀"
    assert "Accepted" in kannel.send(CLEAN, text, dlr_url=world["dlr"].format(tag="clean"))
    assert "Accepted" in kannel.send("13900000009", "Hello from Kannel @ 5",
                                     dlr_url=world["dlr"].format(tag="ascii"))
    deadline = time.monotonic() + 20
    while len(_to(world, "13900000009")) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    (got,) = _to(world, CLEAN)
    assert got.text == text and got.message.data_coding == 8
    (ascii_,) = _to(world, "13900000009")
    assert ascii_.text == "Hello from Kannel @ 5"
    # the SMSC's receipt went back through the gate to Kannel: a delivered DLR (type 1)
    reports = callbacks.wait(lambda calls: [q for q in _dlrs(world, "clean")(calls)
                                            if q["type"] == "1"])
    assert reports[0]["id"]
    assert sim.received  # and nothing was refused
    assert world["gate"].metric("anning_gate_receipts_total") >= 1


def test_a_td_reply_opts_out_the_merchant_and_reaches_kannel(world: dict[str, Any]) -> None:
    kannel, sim, callbacks, gate = (world["kannel"], world["sim"], world["callbacks"],
                                    world["gate"])
    user = "13911115555"
    assert "Accepted" in kannel.send(user, "【京东到家】您的订单已送达")
    deadline = time.monotonic() + 20
    while not _to(world, user) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _to(world, user)
    assert sim.mo("86" + user, PORT, "TD") == 0  # the gate and Kannel took it
    mo = callbacks.wait(lambda calls: [q for path, q in calls if path == "/mo"
                                       and q.get("from", "").endswith(user)])
    assert mo[0]["text"] == "TD" and mo[0]["to"] == PORT
    assert gate.metric("anning_gate_opt_outs_total") >= 1
    # the next message of the merchant, and one of another signature of the same entity
    for signature, tag in (("【京东到家】", "next"), ("【京东超市】", "sibling")):
        assert "Accepted" in kannel.send(user, signature + "新活动",
                                         dlr_url=world["dlr"].format(tag=tag))
        report = callbacks.wait(_dlrs(world, tag))
        assert report[0]["type"] == "16" and "0x00000045" in report[0]["reply"], report
    assert len(_to(world, user)) == 1  # only the first message ever reached the SMSC


def test_with_anning_stopped_messages_are_held_then_sent(world: dict[str, Any]) -> None:
    kannel, server, gate = world["kannel"], world["server"], world["gate"]
    user = "13911116666"
    server.stop()
    try:
        assert "Accepted" in kannel.send(user, "【淘宝】双十一",
                                         dlr_url=world["dlr"].format(tag="held"))
        deadline = time.monotonic() + 20
        while gate.metric("anning_gate_submits_refused_total",
                          {"reason": "unavailable"}) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # refused with the temporary error, more than once (Kannel retries), never sent
        assert gate.metric("anning_gate_submits_refused_total", {"reason": "unavailable"}) >= 2
        assert _to(world, user) == []
        assert not [q for q in _dlrs(world, "held")(world["callbacks"].calls)
                    if q["type"] == "16"]
    finally:
        server.serve()
    deadline = time.monotonic() + 30
    while not _to(world, user) and time.monotonic() < deadline:
        time.sleep(0.05)
    (got,) = _to(world, user)
    assert got.text == "【淘宝】双十一"
