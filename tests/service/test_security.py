"""The access review of README "Security" (issue 16 items 5 and 6), a test for each point, on
real servers: tokens compared in constant time; the tokens file's mode, and a malformed or
empty one; TLS (1.2 at least) and mutual TLS; no token or number in the log; the metrics
endpoint and the gRPC port on loopback unless told (and given tokens); LoadSnapshot only under
the allowed directories."""

from __future__ import annotations

import contextlib
import hmac
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest

from anning.server import tokens as tokens_module
from anning.server.tokens import Tokens, new_token
from anning.testing import server as h
from anning.testing.server import NONE, SENDER, SNAPSHOT, T, write_main_snapshot
from anning.v1 import anning_pb2 as pb
from anning.v1 import anning_pb2_grpc as rpc

Code = grpc.StatusCode
CHECK = pb.CheckRequest(sender="京东", number="13800000001")


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_are_compared_in_constant_time(tmp_path, monkeypatch):
    """Every known digest is compared with hmac.compare_digest, and none is skipped after a
    match: the work is the same whichever token comes, known or not."""
    made = [new_token(["check"]) for _ in range(5)]
    path = tmp_path / "tokens"
    path.write_text("".join(line + "\n" for _, line in made), encoding="utf-8")
    path.chmod(0o600)
    tokens = Tokens.load(path)
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    for token in (made[0][0], made[-1][0], "not-a-token", ""):
        compared.clear()
        granted = tokens.roles(token)
        assert (granted is not None) == (token in {t for t, _ in made})
        assert len(compared) == len(made), token  # all of them, each in constant time
        assert {known for known, _ in compared} == {line[7:71] for _, line in made}


def _start_code(server: h.Server, timeout: float = 30.0) -> int | None:
    """The exit status of a server that stops at start, or None when it serves."""
    server.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            server._log.close()
            return code
        if server.health(timeout=0.3) == h.SERVING:
            assert server.stop() == 0
            return None
        time.sleep(0.05)
    server.kill()
    raise AssertionError(f"neither served nor stopped:\n{server.output()}")


def _tokens_file(tmp_path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("mode", "refused", "warned"), [
    (0o600, False, False), (0o640, False, False), (0o644, False, True), (0o604, False, True),
    (0o620, True, False), (0o602, True, False), (0o666, True, False),
])
def test_a_tokens_file_others_may_write_is_refused(tmp_path, mode, refused, warned):
    path = _tokens_file(tmp_path, new_token(["admin"])[1] + "\n", mode)
    server = h.Server(tmp_path / "data", tokens=path)
    code = _start_code(server)
    out = server.output()
    assert "Traceback" not in out, out
    if refused:
        assert code == 2, out
        assert f"{path}: writable by" in out and "chmod go-w" in out, out
    else:
        assert code is None, out
        assert ("readable by others" in out) == warned, out


@pytest.mark.parametrize(("text", "says"), [
    ("", ": no tokens"),
    ("# nothing but a comment\n\n", ": no tokens"),
    ("sha256:abc check\n", ":1: expected `sha256:<64 hex digits> roles`"),
    ("# ok\nsha256:" + "g" * 64 + " check\n", ":2: expected `sha256:<64 hex digits> roles`"),
    ("sha256:" + "a" * 64 + "\n", ":1: expected"),
    ("sha256:" + "a" * 64 + " check,root\n", ":1: roles 'check,root'"),
    (b"sha256:\xff\xfe check\n", ": not UTF-8 text"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_malformed_or_empty_tokens_file_stops_the_start(tmp_path, text, says, workers):
    path = _tokens_file(tmp_path, text)
    server = h.Server(tmp_path / "data", tokens=path, workers=workers)
    started = time.monotonic()
    assert _start_code(server) == 2
    assert time.monotonic() - started < 15  # at once, not a worker restarted again and again
    out = server.output()
    assert f"cannot serve with --tokens {path}: {path}{says}" in out, out
    assert "Traceback" not in out, out


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from anning.testing.tls import Authority

    root = tmp_path_factory.mktemp("pki")
    ca, clients, stranger = Authority(root, "ca"), Authority(root, "clients"), \
        Authority(root, "stranger")
    return {"ca": ca, "server": ca.issue("server", server=True), "clients": clients,
            "client": clients.issue("client", server=False), "stranger": stranger,
            "stranger-client": stranger.issue("stranger-client", server=False),
            "stranger-server": stranger.issue("stranger-server", server=True)}


def _tls_args(pki: dict, client_ca: bool) -> list[str]:
    args = ["--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key)]
    return args + (["--client-ca", str(pki["clients"].cert)] if client_ca else [])


def _credentials(pki: dict, client: str | None = None,
                 trust: str = "ca") -> grpc.ChannelCredentials:
    key, cert = pki[client].read() if client else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=pki[trust].cert.read_bytes(),
                                        private_key=key, certificate_chain=cert)


def _code(target: str, credentials: grpc.ChannelCredentials | None) -> Code:
    channel = grpc.secure_channel(target, credentials) if credentials else \
        grpc.insecure_channel(target)
    with channel:
        return h.code_of(rpc.SuppressionStub(channel).Check, CHECK, timeout=5)


def test_tls(tmp_path, pki):
    data = tmp_path / "data"
    write_main_snapshot(data)
    server = h.Server(data, extra_args=_tls_args(pki, client_ca=False),
                      credentials=_credentials(pki))
    with h.running(server):
        assert _code(server.target, _credentials(pki)) == Code.OK
        assert _code(server.target, None) == Code.UNAVAILABLE  # plaintext: refused
        # a client that does not trust the server's certificate gets nowhere either
        assert _code(server.target, _credentials(pki, trust="stranger")) == Code.UNAVAILABLE
        assert "with TLS" in server.output()


def test_mutual_tls(tmp_path, pki):
    data = tmp_path / "data"
    write_main_snapshot(data)
    server = h.Server(data, extra_args=_tls_args(pki, client_ca=True),
                      credentials=_credentials(pki, "client"))
    with h.running(server):
        assert _code(server.target, _credentials(pki, "client")) == Code.OK
        assert _code(server.target, _credentials(pki)) == Code.UNAVAILABLE  # no certificate
        assert _code(server.target, _credentials(pki, "stranger-client")) == \
            Code.UNAVAILABLE  # a certificate of another authority
        assert _code(server.target, None) == Code.UNAVAILABLE  # plaintext


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """The TLS version a handshake with 127.0.0.1:port settles on (ssl.SSLError if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return str(tls.version())


def _client_context(pki: dict, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki["ca"].cert)
    context.minimum_version = context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this side offer TLS 1.1 at all
    context.set_alpn_protocols(["h2"])
    return context


@contextlib.contextmanager
def _permissive_server(pki: dict):
    """A plain TLS server that takes TLS 1.1: proof that the client below can speak it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"].cert, pki["server"].key)
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(tmp_path, pki):
    old = _client_context(pki, ssl.TLSVersion.TLSv1_1)
    try:
        with _permissive_server(pki) as port:
            assert _handshake(port, old) == "TLSv1.1"
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL does not speak TLS 1.1 at all: {exc}")
    data = tmp_path / "data"
    write_main_snapshot(data)
    server = h.Server(data, extra_args=_tls_args(pki, client_ca=False),
                      credentials=_credentials(pki))
    with h.running(server):
        with pytest.raises(ssl.SSLError) as info:
            _handshake(server.port, old)
        # the server's doing (an alert, or the connection closed on the hello), not this side
        # giving up, which the server above has shown it does not
        assert info.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION",
                                     "UNEXPECTED_EOF_WHILE_READING"), info.value
        assert _handshake(server.port, _client_context(pki, ssl.TLSVersion.TLSv1_2)) == \
            "TLSv1.2"
        assert server.health() == h.SERVING


# -- the log -----------------------------------------------------------------------------------


def test_no_token_or_number_in_the_log(tmp_path):
    root = tmp_path
    data = root / "data"
    write_main_snapshot(data)
    granted = {role: new_token([role]) for role in ("check", "write", "admin")}
    path = _tokens_file(root, "".join(line + "\n" for _, line in granted.values()))
    wrong = new_token(["admin"])[0]
    csv = root / "list.csv"
    listed = [f"1391234{i:04d}" for i in range(50)]
    csv.write_text("number,sender,category\n" + "".join(
        f"{n},{s},{c}\n" for n, s, c in SNAPSHOT) + "".join(f"{n},京东,marketing\n"
                                                         for n in listed) +
        "1391234999x,京东,marketing\n", encoding="utf-8")  # a reject, with its raw text
    written = ["13955501234", "+86 139 5550 1235", "13955501236"]
    bad = ["1395550123x", "139555012371234567", "139\x0055501238"]
    server = h.Server(data, tokens=path, load_dirs=[root])
    with h.running(server):
        for token in (granted["check"][0], wrong):
            with h.Stubs(server.target, token) as s:
                h.code_of(s.suppression.Check, CHECK, timeout=T, metadata=s.metadata)
        with h.Stubs(server.target, granted["write"][0]) as s:
            md = s.metadata
            for number in written:
                s.opt_outs.OptOut(pb.OptOutRequest(number=number, scope="京东"), timeout=T,
                                  metadata=md)
            for number in bad:
                assert h.code_of(s.opt_outs.OptOut, pb.OptOutRequest(
                    number=number, scope="京东"), timeout=T, metadata=md) == \
                    Code.INVALID_ARGUMENT
            s.opt_outs.ReportReply(pb.ReplyRequest(sender="京东", number="13955501239",
                                                   text="退订"), timeout=T, metadata=md)
        with h.Stubs(server.target, granted["check"][0]) as s:
            for number in bad:
                assert h.code_of(s.suppression.Check, pb.CheckRequest(
                    sender="京东", number=number), timeout=T, metadata=s.metadata) == \
                    Code.INVALID_ARGUMENT
        with h.Stubs(server.target, granted["admin"][0]) as s:
            report = s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
                paths=[str(csv)], allow_shrink=True, max_reject_ratio=0.5), timeout=60,
                metadata=s.metadata)
            assert report.rejected == 1
    log = server.output()
    assert "bad request to OptOut" in log and "bad request to Check" in log  # logged, and
    secrets = [t for t, _ in granted.values()] + [wrong]
    secrets += [line[7:71] for _, line in granted.values()]  # the digests too
    numbers = [*written, *bad, *listed, "1391234999x", "13955501239", "13800000001"]
    numbers += [re.sub(r"\D", "", n) for n in numbers]
    found = [x for x in secrets + numbers if x and x in log]
    assert not found, f"{found} in the log:\n{log}"


# -- what listens where ------------------------------------------------------------------------


def _listening(pid: int) -> set[tuple[str, int]]:
    """(host, port) of each listening socket of the process; "any" for every interface."""
    return {(_host(c.laddr.ip), c.laddr.port)
            for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN}


def _host(ip: str) -> str:
    ip = ip.removeprefix("::ffff:")  # an IPv6 socket that takes IPv4 (gRPC's)
    return "any" if ip in ("0.0.0.0", "::") else ip


@pytest.mark.parametrize(("given", "host"), [(":{port}", "127.0.0.1"),
                                             ("{port}", "127.0.0.1"),
                                             ("0.0.0.0:{port}", "any")])
def test_the_metrics_endpoint_is_on_loopback_unless_told(tmp_path, given, host):
    data = tmp_path / "data"
    port = h.free_port()
    server = h.Server(data, extra_args=["--metrics", given.format(port=port)])
    with h.running(server):
        assert (host, port) in _listening(server.proc.pid)
        assert {ip for ip, p in _listening(server.proc.pid) if p == port} == {host}
        assert "anning_checks_total" in h.metrics_text(port)


@pytest.mark.parametrize("tokens", [False, True])
def test_without_tokens_the_port_is_on_loopback_only(tmp_path, tokens):
    data = tmp_path / "data"
    path = _tokens_file(tmp_path, new_token(["check"])[1] + "\n") if tokens else None
    server = h.Server(data, tokens=path)
    server.args += ["--listen", f"0.0.0.0:{server.port}"]  # the last --listen counts
    with h.running(server):
        where = {ip for ip, p in _listening(server.proc.pid) if p == server.port}
        if tokens:
            assert where == {"any"}
        else:
            assert where == {"127.0.0.1"}
            assert "no --tokens: listening on loopback only" in server.output()


# -- LoadSnapshot's directories ----------------------------------------------------------------


def _list_csv(path: Path, number: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("number,sender,category\n" + "".join(
        f"{n},{s},{c}\n" for n, s, c in SNAPSHOT) + f"{number},京东,marketing\n",
        encoding="utf-8")
    return str(path)


def test_load_snapshot_reads_only_under_the_allowed_directories(tmp_path):
    data, allowed, outside = tmp_path / "srv" / "data", tmp_path / "drop", tmp_path / "else"
    write_main_snapshot(data)
    good = _list_csv(allowed / "list.csv", "13977700001")
    in_data = _list_csv(data / "list.csv", "13977700002")
    away = _list_csv(outside / "list.csv", "13977700003")
    (allowed / "link.csv").symlink_to(away)
    (allowed / "sub").mkdir()
    (allowed / "sub" / "up").symlink_to(outside, target_is_directory=True)
    server = h.Server(data, load_dirs=[allowed])
    with h.running(server), h.Stubs(server.target) as s:

        def load(**fields) -> grpc.RpcError | pb.LoadReport:
            try:
                return s.admin.LoadSnapshot(pb.LoadSnapshotRequest(allow_shrink=True,
                                                                   **fields), timeout=60)
            except grpc.RpcError as exc:
                return exc

        def check(number: str) -> int:
            return s.suppression.Check(pb.CheckRequest(sender="京东", number=number),
                                       timeout=T).scope

        refused = {
            "paths[0]": dict(paths=[away]),
            "paths[1]": dict(paths=[good, str(allowed / "link.csv")]),  # a link out
            "paths[0] ": dict(paths=[str(allowed / ".." / "else" / "list.csv")]),
            "paths[0]  ": dict(paths=[str(allowed / "sub" / "up" / "list.csv")]),
            "paths[0]   ": dict(paths=["/etc/passwd"]),
            "entities": dict(paths=[good], entities=str(outside / "entities.csv")),
            "rejects": dict(paths=[good], rejects=str(outside / "rejects.csv")),
        }
        for field, fields in refused.items():
            exc = load(**fields)
            assert isinstance(exc, grpc.RpcError), field
            assert exc.code() == Code.PERMISSION_DENIED, (field, exc.code(), exc.details())
            assert exc.details().startswith(f"{field.strip()}: ") and "--load-dir" in \
                exc.details() and str(allowed) in exc.details(), exc.details()
        nul = load(paths=[good + "\0.csv"])
        assert nul.code() == Code.INVALID_ARGUMENT and nul.details().startswith("paths[0]: ")
        assert not (outside / "rejects.csv").exists()
        assert check("13977700003") == NONE  # nothing of the refused loads is served
        # what is allowed: under --load-dir and under the data directory, rejects there too
        report = load(paths=[good], rejects=str(allowed / "out" / "rejects.csv"))
        assert isinstance(report, pb.LoadReport) and report.loaded == len(SNAPSHOT) + 1
        assert check("13977700001") == SENDER
        report = load(paths=[in_data])
        assert isinstance(report, pb.LoadReport), report
        assert check("13977700002") == SENDER and check("13977700001") == NONE


def test_the_load_dir_flag_is_in_the_help():
    out = subprocess.run([sys.executable, "-m", "anning.cli", "serve", "--help"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "--load-dir DIR" in out
