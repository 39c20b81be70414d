"""A small NATS client for the replicated log: one connection, a thread that reads it, requests
with replies, publishes, and the deliveries of a push consumer in bulk.

Why not nats-py on this path: a replica takes every event of the stream, and on a restart the
whole backlog at once; nats-py builds a message object and a task per delivery (measured on this
machine: 88,000 deliveries/s at its parser, 68,000 through its ordered consumer, against the
issue's 200,000 events/s for a catch-up). Here a run of deliveries is read by compiled code
(anning._stream) and handed on as columns (`DeliveryHandler`). The client speaks what anning
needs of the protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol):
INFO, CONNECT with headers, PING/PONG both ways, SUB/UNSUB, PUB/HPUB, MSG/HMSG, +OK, -ERR; user
and password or a token in the URL; TLS when the server asks for it or the URL says `tls://`.
It reconnects by itself, going round the URLs; requests in flight when a connection is lost
fail (Unavailable) and the owner is told (`on_reconnect`) so that it can set its consumer up
again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy.typing as npt

from anning._stream import scan_messages
from anning.errors import InvalidInput, Unavailable

__all__ = ["Connection", "DeliveryHandler", "PendingReply", "Reply", "TlsFiles",
           "parse_urls"]

log = logging.getLogger("anning.nats")

PING_SECONDS = 2.0  # a silent connection is pinged this often...
MAX_PINGS_OUT = 2  # ...and given up after so many unanswered pings
_READ = 1 << 20
_CONTROL = re.compile(rb"^NATS/1\.0 (\d{3})(?: ([^\r]*))?\r\n")


@dataclass(frozen=True)
class TlsFiles:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    tls: bool
    user: str | None
    password: str | None
    token: str | None

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


def parse_urls(text: str) -> list[Server]:
    """`nats://[user:password@]host:port,...` (or `tls://`, a token as the user alone);
    InvalidInput names a bad one."""
    servers = []
    for url in [u.strip() for u in text.split(",") if u.strip()]:
        try:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            port = parts.port or 4222
        except ValueError as exc:
            raise InvalidInput(f"--nats: {url!r} is not a NATS URL ({exc})") from None
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise InvalidInput(f"--nats: {url!r} is not a NATS URL (nats://host:port)")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        servers.append(Server(parts.hostname, port, parts.scheme == "tls",
                              user if password is not None else None, password,
                              user if password is None else None))
    if not servers:
        raise InvalidInput(f"--nats: {text!r} names no server")
    return servers


@dataclass(frozen=True)
class Reply:
    """A reply to a request: its data and its headers' status (0: none; 503: no responders)."""

    data: bytes
    status: int
    description: str
    headers: bytes


# A run of messages to a bulk subscription: the bytes read (valid during the call) and the
# columns of anning._stream.scan_messages pointing into them.
DeliveryHandler = Callable[[bytearray, dict[str, "npt.NDArray[Any]"]], None]


class PendingReply:
    """A request waiting for its reply."""

    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Reply | None = None
        self.error: BaseException | None = None

    def wait(self, timeout: float, what: str) -> Reply:
        if not self.done.wait(timeout):
            raise Unavailable(f"{what}: no answer from NATS in {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


class Connection:
    """One connection to a NATS cluster, reconnecting by itself."""

    def __init__(self, servers: Sequence[Server], name: str = "anning",
                 tls: TlsFiles | None = None, connect_timeout: float = 2.0,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.servers = list(servers)
        self.name = name
        self.tls = tls or TlsFiles()
        self.connect_timeout = connect_timeout
        self.on_reconnect = on_reconnect
        self.info: dict[str, Any] = {}
        self.connected_to: Server | None = None
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._closing = threading.Event()
        self._inbox = f"_INBOX.{os.urandom(10).hex()}"
        self._tokens = itertools.count(1)
        self._pending: dict[bytes, PendingReply] = {}
        self._sids = itertools.count(2)  # 1: the replies of requests
        self._bulk: dict[int, tuple[str, DeliveryHandler]] = {}
        self._pings_out = 0
        self._next = 0  # the server to try first
        self._reader: threading.Thread | None = None
        self.last_error = ""

    # -- connecting ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the first server that answers (Unavailable naming each that did not:
        then the reader thread goes on trying), and read in a thread of its own."""
        try:
            with self._state:
                self._dial_any()
        finally:  # unreachable now: the reader goes on trying, round the servers
            self._reader = threading.Thread(target=self._read_forever, name="nats-reader",
                                            daemon=True)
            self._reader.start()

    @property
    def is_connected(self) -> bool:
        return self._sock is not None

    def _dial_any(self) -> None:
        failures = []
        for i in range(len(self.servers)):
            server = self.servers[(self._next + i) % len(self.servers)]
            try:
                self._dial(server)
                self._next = (self._next + i + 1) % len(self.servers)
                return
            except (OSError, ValueError, Unavailable) as exc:
                failures.append(f"{server}: {exc}")
        self.last_error = "; ".join(failures)
        raise Unavailable(f"no NATS server answered ({self.last_error})")

    def _dial(self, server: Server) -> None:
        sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (server.host, server.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            line = _read_line(sock)
            if not line.startswith(b"INFO "):
                raise Unavailable(f"not a NATS server (it said {line[:60]!r})")
            info = json.loads(line[5:])
            if server.tls or info.get("tls_required"):
                sock = self._wrap(sock, server)
            connect: dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True,
                                       "no_responders": True, "protocol": 1,
                                       "name": self.name, "lang": "python-anning",
                                       "version": "1"}
            if server.user is not None:
                connect.update(user=server.user, **{"pass": server.password})
            if server.token is not None:
                connect["auth_token"] = server.token
            sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            while True:  # the PONG says CONNECT was taken; -ERR says why not
                reply = _read_line(sock)
                if reply.startswith(b"-ERR"):
                    raise Unavailable(reply.decode(errors="replace"))
                if reply == b"PONG":
                    break
            subs = [f"SUB {self._inbox}.* 1\r\n"] + \
                [f"SUB {subject} {sid}\r\n" for sid, (subject, _) in self._bulk.items()]
            sock.sendall("".join(subs).encode())
            sock.settimeout(PING_SECONDS)
        except BaseException:
            sock.close()
            raise
        self.info = info
        self._sock = sock
        self.connected_to = server
        self._pings_out = 0

    def _wrap(self, sock: socket.socket, server: Server) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=self.tls.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls.cert:
            context.load_cert_chain(self.tls.cert, self.tls.key)
        return context.wrap_socket(sock, server_hostname=server.host)

    def close(self) -> None:
        with self._state:
            self._closing.set()
            sock, self._sock = self._sock, None
            self._state.notify_all()
        if sock is not None:
            _close(sock)
        self._fail_pending(Unavailable("the NATS connection was closed"))
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)

    # -- sending ------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise Unavailable(f"not connected to NATS ({self.last_error or 'reconnecting'})")
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as exc:
            self._lost(sock, exc)
            raise Unavailable(f"NATS connection lost while sending: {exc}") from None

    def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                reply: str = "") -> None:
        self._send(encode_publish(subject, data, headers, reply))

    def send_raw(self, data: bytes) -> None:
        """Publishes already encoded (encode_publish), in one write."""
        self._send(data)

    def request_start(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None,
                      before: bytes = b"") -> PendingReply:
        """Send a request (after `before`, publishes encoded by encode_publish, in the same
        write); wait for its reply with `.wait(timeout, what)`."""
        token = str(next(self._tokens)).encode()
        pending = PendingReply()
        self._pending[token] = pending
        try:
            self._send(before + encode_publish(subject, data, headers,
                                               f"{self._inbox}.{token.decode()}"))
        except BaseException:
            self._pending.pop(token, None)
            raise
        return pending

    def request(self, subject: str, data: bytes, timeout: float,
                headers: dict[str, str] | None = None) -> Reply:
        return self.request_start(subject, data, headers).wait(timeout, subject)

    def subscribe_bulk(self, subject: str, handler: DeliveryHandler) -> int:
        """Messages to `subject` handed to `handler` by the run, on the reader thread."""
        sid = next(self._sids)
        self._bulk[sid] = (subject, handler)
        if self._sock is not None:
            self._send(f"SUB {subject} {sid}\r\n".encode())
        return sid

    def unsubscribe(self, sid: int) -> None:
        if self._bulk.pop(sid, None) is not None and self._sock is not None:
            with contextlib.suppress(Unavailable):
                self._send(f"UNSUB {sid}\r\n".encode())

    def new_inbox(self) -> str:
        return f"_INBOX.{os.urandom(10).hex()}"

    # -- reading ------------------------------------------------------------------------------
    def _read_forever(self) -> None:
        while not self._closing.is_set():
            sock = self._sock
            if sock is None:
                self._reconnect()
                continue
            try:
                self._read_until_lost(sock)
            except Exception as exc:  # the protocol broken: start again on a new connection
                if self._closing.is_set():
                    return
                log.warning("NATS connection to %s dropped: %r", self.connected_to, exc)
                self._lost(sock, exc)

    def _read_until_lost(self, sock: socket.socket | ssl.SSLSocket) -> None:
        buf = bytearray()
        while self._sock is sock:
            try:
                chunk = sock.recv(_READ)
            except TimeoutError:
                if self._pings_out >= MAX_PINGS_OUT:
                    raise ConnectionError(f"no PONG to {self._pings_out} PINGs") from None
                self._pings_out += 1
                self._send(b"PING\r\n")
                continue
            except ssl.SSLWantReadError:
                continue
            if not chunk:
                raise ConnectionError("closed by the server")
            self._pings_out = 0
            buf += chunk
            used = self._parse(buf)
            del buf[:used]

    def _parse(self, buf: bytearray) -> int:
        """Handle every whole operation in `buf`; returns how many bytes were used. A run of
        messages to a bulk subscription is read by the compiled scanner and handed over whole
        (its columns point into `buf`, valid during the call)."""
        pos = 0
        end = len(buf)
        while pos < end:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"HMSG ", pos) or buf.startswith(b"MSG ", pos):
                headed = buf[pos] == ord("H")
                args = bytes(buf[pos + (5 if headed else 4):eol]).split(b" ")
                if len(args) not in ((4, 5) if headed else (3, 4)):
                    raise ConnectionError(f"a malformed message line: {bytes(buf[pos:eol])!r}")
                size = int(args[-1])
                header_size = int(args[-2]) if headed else 0
                start = eol + 2
                if start + size + 2 > end:
                    break  # the rest of the message is still on its way
                sid = int(args[1])
                bulk = self._bulk.get(sid)
                if bulk is not None:
                    after, run = scan_messages(buf, pos, end, sid)
                    if after == pos:
                        raise ConnectionError("a message the scanner cannot read: "
                                              f"{bytes(buf[pos:eol])!r}")
                    bulk[1](buf, run)
                    pos = after
                    continue
                headers = bytes(buf[start:start + header_size])
                data = bytes(buf[start + header_size:start + size])
                pos = start + size + 2
                if sid == 1:
                    self._answer(args[0], headers, data)
                continue
            line = bytes(buf[pos:eol])
            pos = eol + 2
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line == b"PONG" or line == b"+OK":
                pass
            elif line.startswith(b"INFO "):
                self.info.update(json.loads(line[5:]))
            elif line.startswith(b"-ERR"):
                text = line.decode(errors="replace")
                self.last_error = text
                if "permissions violation" not in text.lower():
                    raise ConnectionError(text)
                log.warning("NATS: %s", text)
            else:
                raise ConnectionError(f"unexpected from the server: {line[:60]!r}")
        return pos

    def _answer(self, subject: bytes, headers: bytes, data: bytes) -> None:
        pending = self._pending.pop(subject.rpartition(b".")[2], None)
        if pending is None:
            return  # an answer after its request gave up
        status, description = 0, ""
        if headers:
            m = _CONTROL.match(headers)
            if m:
                status = int(m.group(1))
                description = (m.group(2) or b"").decode(errors="replace")
        pending.reply = Reply(data, status, description, headers)
        pending.done.set()

    # -- losing and getting the connection back -----------------------------------------------
    def _lost(self, sock: socket.socket | ssl.SSLSocket, exc: BaseException) -> None:
        with self._state:
            if self._sock is not sock:
                return
            self._sock = None
            self.last_error = f"connection to {self.connected_to} lost: {exc}"
        _close(sock)
        self._fail_pending(Unavailable(self.last_error))

    def _fail_pending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = error
            p.done.set()

    def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing.is_set():
            try:
                with self._state:
                    self._dial_any()
            except Unavailable as exc:
                log.warning("%s; trying again in %.1f s", exc, delay)
                with self._state:
                    self._state.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            log.info("NATS: connected to %s", self.connected_to)
            if self.on_reconnect is not None:
                # not on this thread: what it does waits for replies that this thread reads
                threading.Thread(target=self.on_reconnect, name="nats-reconnected",
                                 daemon=True).start()
            return


def encode_publish(subject: str, data: bytes, headers: dict[str, str] | None = None,
                   reply: str = "") -> bytes:
    """The bytes of a PUB (or HPUB with headers)."""
    space = f" {reply}" if reply else ""
    if not headers:
        return b"PUB %s%s %d\r\n%s\r\n" % (subject.encode(), space.encode(), len(data), data)
    head = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) +
            "\r\n").encode()
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subject.encode(), space.encode(), len(head),
                                             len(head) + len(data), head, data)


def header_value(headers: bytes, name: bytes) -> bytes | None:
    """The value of a header in a message's header block (case as sent), or None."""
    for line in headers.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def control_status(headers: bytes) -> tuple[int, str]:
    """A control message's status and description (0 for an ordinary message)."""
    m = _CONTROL.match(headers) if headers else None
    if not m:
        return 0, ""
    return int(m.group(1)), (m.group(2) or b"").decode(errors="replace")


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise Unavailable("closed by the server")
        data += byte
        if len(data) > 1 << 16:
            raise Unavailable("an over-long line from the server")
    return bytes(data[:-2])


def _close(sock: socket.socket | ssl.SSLSocket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
