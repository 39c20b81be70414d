"""The `anning` command against a real server, as a user runs it: exit codes (check 1/0, 2 on
bad input, 3 with no answer and never 0, 1 with --fail-closed), the lines people read (local
times with their offset, counts with separators, one naming of scopes), --json for scripts
(integers as numbers), opt-out, reply, explain, status, and mutual TLS."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from anning.testing import server as h
from anning.testing.server import AS_OF_MS, ENTITIES, SNAPSHOT

SHANGHAI = timezone(timedelta(hours=8))
FILLER = 1500  # entries besides the main list's: the status shows a count with a separator


def anning(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": "Asia/Shanghai"}
    env.pop("ANNING_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "anning.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M +08:00")


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("cli") / "data"
    numbers, scopes, categories = (list(c) for c in zip(*SNAPSHOT, strict=True))
    numbers += [8613700000000 + i for i in range(FILLER)]
    scopes += ["filler"] * FILLER
    categories += ["marketing"] * FILLER
    h.write_snapshot(data, numbers, scopes, categories, ENTITIES, AS_OF_MS)
    with h.running(h.Server(data)) as server:
        yield server


def test_check_exit_codes_and_lines(cli_server):
    target = ("--target", cli_server.target)
    done = anning("check", "【京东】", "13800000001", *target)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ("suppressed — 京东 opted out (sender), in the snapshot as of "
                           f"{local(AS_OF_MS)}\n")
    done = anning("check", "京东超市", "13800000002", *target)
    assert (done.returncode, done.stdout) == (
        1, f"suppressed — 京东集团 opted out (entity), in the snapshot as of {local(AS_OF_MS)}\n")
    done = anning("check", "京东", "13800000009", *target)
    assert (done.returncode, done.stdout) == (
        0, "not suppressed — 13800000009 may receive marketing from 京东\n")
    for number, want, scope in (("13800000003", 1, "global"), ("13800000009", 0, "none")):
        done = anning("check", "京东", number, "--json", *target)
        assert done.returncode == want
        assert json.loads(done.stdout) == {"suppressed": bool(want), "scope": scope}


@pytest.mark.parametrize(("args", "field"), [
    (("京东", "abc"), "number: 'abc'"),
    (("京东", "13800000001", "--category", "bogus"), "category: 'bogus'"),
    (("", "13800000001"), "sender: ''"),
])
def test_check_bad_input_exits_2(cli_server, args, field):
    for extra in ((), ("--fail-closed",), ("--json",)):
        done = anning("check", *args, "--target", cli_server.target, *extra)
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        assert f"INVALID_ARGUMENT: {field}" in done.stderr, done.stderr
        assert done.stdout == ""


def test_check_with_no_server_never_exits_0():
    target = ("--target", f"127.0.0.1:{h.free_port()}", "--timeout", "1")
    done = anning("check", "京东", "13800000009", *target)  # would be "not suppressed"
    assert done.returncode == 3, done.stdout
    assert "UNAVAILABLE" in done.stderr and done.stdout == ""
    done = anning("check", "京东", "13800000009", "--fail-closed", *target)
    assert (done.returncode, done.stdout) == (
        1, "suppressed — failed closed: no answer from anning\n")
    done = anning("check", "京东", "13800000009", "--fail-closed", "--json", *target)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"suppressed": True, "scope": "unknown",
                                       "failed_closed": True, "error": "no answer from anning"}
    for command in (("status",), ("explain", "京东", "13800000009"),
                    ("opt-out", "13800000009", "京东"), ("reply", "京东", "13800000009", "TD")):
        assert anning(*command, *target).returncode == 3, command


def test_check_of_a_server_not_ready(tmp_path):
    """Up but with no list: UNAVAILABLE, never "not suppressed"."""
    with h.running(h.Server(tmp_path / "data", demo=False), h.NOT_SERVING) as server:
        target = ("--target", server.target, "--timeout", "1")
        done = anning("check", "京东", "13800000009", *target)
        assert done.returncode == 3 and "UNAVAILABLE" in done.stderr, done
        assert anning("check", "京东", "13800000009", "--fail-closed", *target).returncode == 1
        done = anning("status", "--json", *target)
        assert done.returncode == 0 and json.loads(done.stdout)["ready"] is False


def test_opt_out_then_check_and_explain(cli_server):
    target = ("--target", cli_server.target)
    before = int(time.time() * 1000)
    done = anning("opt-out", "13900000101", "京东", "--json", *target)
    assert done.returncode == 0, done.stderr
    ack = json.loads(done.stdout)
    assert set(ack) == {"sequence", "at_ms"}
    assert isinstance(ack["sequence"], int) and ack["sequence"] >= 1
    assert isinstance(ack["at_ms"], int) and before - 1000 <= ack["at_ms"] <= time.time() * 1000
    done = anning("check", "京东", "13900000101", *target)
    assert (done.returncode, done.stdout) == (
        1, f"suppressed — 京东 opted out (sender), {local(ack['at_ms'])}, via api\n")
    done = anning("explain", "京东", "13900000101", "--json", *target)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "suppressed": True, "scope": "sender", "matched": "京东", "categories": ["marketing"],
        "origin": "event", "source": "api", "at_ms": ack["at_ms"],
        "snapshot_as_of": h.iso(AS_OF_MS)}
    done = anning("opt-out", "13900000102", "*", "--category", "all", "--source",
                  "complaint_12321", *target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("opted out — 13900000102 from every sender (every category), ")
    assert "; sequence " in done.stdout
    done = anning("explain", "淘宝", "13900000102", "--category", "notification", *target)
    assert done.returncode == 0
    assert done.stdout.startswith("suppressed — every sender opted out (global), ")
    assert done.stdout.rstrip().endswith(", via complaint_12321 "
                                         "[categories: marketing, notification]")
    done = anning("opt-in", "13900000101", "京东", *target)
    assert done.returncode == 0 and done.stdout.startswith("opted in — 13900000101 from 京东")
    assert anning("check", "京东", "13900000101", *target).returncode == 0
    done = anning("opt-out", "13900000103", "京东", "--at-ms", "5", *target)
    assert done.returncode == 2 and "at_ms" in done.stderr


def test_reply_and_reassign(cli_server):
    target = ("--target", cli_server.target)
    done = anning("reply", "京东", "13900000111", "退订谢谢", *target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("opted out — 13900000111 from entity 京东集团 (marketing), ")
    assert done.stdout.rstrip().endswith("(keyword '退订')")
    done = anning("check", "京东超市", "13900000111", *target)  # the merchant's other signature
    assert done.returncode == 1
    assert done.stdout.startswith("suppressed — 京东集团 opted out (entity), ")
    assert done.stdout.rstrip().endswith(", via reply")
    done = anning("reply", "京东", "13900000111", "你好", "--json", *target)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"recognised": False, "action": "none", "scope": "",
                                       "keyword": "", "ack": {"sequence": 0, "at_ms": 0}}
    done = anning("reassign", "13900000111", "--json", *target)
    assert done.returncode == 0
    moved = json.loads(done.stdout)["at_ms"]
    done = anning("explain", "京东超市", "13900000111", *target)
    assert (done.returncode, done.stdout) == (
        0, f"not suppressed — 13900000111 may receive marketing from 京东超市 (the number was "
           f"reassigned {local(moved)}: earlier opt-outs no longer count)\n")


def test_status(cli_server):
    done = anning("status", "--target", cli_server.target, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    entries = len(SNAPSHOT) + FILLER
    assert status["entries"] == entries and isinstance(status["bytes"], int)
    assert status["ready"] is True and status["workers"] == 1
    assert isinstance(status["last_sequence"], int)
    age = time.time() - AS_OF_MS / 1000
    assert abs(status["snapshot_age_seconds"] - age) < 30
    done = anning("status", "--target", cli_server.target)
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in done.stdout.splitlines())
    assert lines["ready"] == "yes" and lines["writes"] == "ok"
    assert lines["entries"].startswith(f"{entries:,} (")
    assert lines["snapshot"].startswith(f"as of {local(AS_OF_MS)}, 1 h ")
    assert lines["last refusal"] == "none"


# -- mutual TLS ----------------------------------------------------------------------------------


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=anning test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (folder / f"{name}.ext").write_text(ext)
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=anning test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                     "client.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_mutual_tls(tmp_path):
    files = _certificates(tmp_path)
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    server = h.Server(data, extra_args=["--tls-cert", str(files["server.pem"]), "--tls-key",
                                        str(files["server.key"]), "--client-ca",
                                        str(files["ca.pem"])])
    server.start()
    try:
        credentials = grpc.ssl_channel_credentials(
            files["ca.pem"].read_bytes(), files["client.key"].read_bytes(),
            files["client.pem"].read_bytes())
        deadline = time.monotonic() + 30
        while True:  # the harness's health check speaks plain text: ask over TLS here
            with grpc.secure_channel(server.target, credentials) as channel:
                try:
                    if health_pb2_grpc.HealthStub(channel).Check(
                            health_pb2.HealthCheckRequest(), timeout=1).status == h.SERVING:
                        break
                except grpc.RpcError:
                    pass
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        base = ("--target", server.target, "--timeout", "2", "--tls-ca", str(files["ca.pem"]))
        client = ("--tls-cert", str(files["client.pem"]), "--tls-key", str(files["client.key"]))
        done = anning("check", "京东", "13800000001", *base)  # no client certificate: refused
        assert done.returncode == 3, (done.stdout, done.stderr)
        done = anning("check", "京东", "13800000001", *base, *client)
        assert done.returncode == 1, done.stderr
        assert done.stdout.startswith("suppressed — 京东 opted out (sender)")
        assert anning("check", "京东", "13800000009", *base, *client).returncode == 0
        assert anning("status", *base, *client).returncode == 0
        done = anning("check", "京东", "13800000001", *base, "--tls-cert",
                      str(files["client.pem"]))
        assert done.returncode == 2 and "tls-key" in done.stderr
        done = anning("check", "京东", "13800000001", *base, "--tls-cert",
                      str(tmp_path / "missing.pem"), "--tls-key", str(files["client.key"]))
        assert done.returncode == 2 and "missing.pem" in done.stderr
        assert server.stop() == 0
        h.assert_clean_log(server)
    finally:
        server.kill()
