"""A raw HTTP/2 peer for abuse tests: gRPC calls written frame by frame on a plain socket, so a
test can do what no well-behaved client library will (never read an answer, send 100 MB of
headers, leave a stream open forever).

Headers are HPACK literals without indexing or Huffman coding (RFC 7541 §6.2.2), which every
decoder must accept.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["PREFACE", "RawH2", "frame", "grpc_message", "hpack_int", "hpack_literal"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, CONTINUATION = 0x0, 0x1, 0x4, 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with a `prefix_bits` prefix, OR-ed into `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name (RFC 7541 §6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def grpc_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class RawH2:
    """One connection; the caller decides what is written, and whether anything is read."""

    def __init__(self, port: int, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connect: the window TCP offers is set then
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        self.port = port
        self.next_stream = 1

    def start(self) -> RawH2:
        """The client preface, empty SETTINGS, and an ACK of the server's (sent blind)."""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, ACK, 0, b""))
        return self

    def headers_block(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
        fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                  (b":authority", f"127.0.0.1:{self.port}".encode()),
                  (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                  *(extra or [])]
        return b"".join(hpack_literal(n, v) for n, v in fields)

    def open_stream(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> int:
        stream = self.next_stream
        self.next_stream += 2
        self.sock.sendall(frame(HEADERS, END_HEADERS, stream, self.headers_block(path, extra)))
        return stream

    def send(self, stream: int, message: bytes, end: bool = False) -> None:
        self.sock.sendall(frame(DATA, END_STREAM if end else 0, stream, grpc_message(message)))

    def try_send(self, data: bytes, timeout: float) -> bool:
        """Write `data` unless the peer stops taking it for `timeout` seconds: False then."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (TimeoutError, BlockingIOError):
            return False
        finally:
            self.sock.settimeout(None)
        return True

    def close(self) -> None:
        self.sock.close()
