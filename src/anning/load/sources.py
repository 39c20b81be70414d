"""Snapshot files as byte streams: plain, gzip or zstd (told by their first bytes)."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["BOM", "Source", "open_text"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BOM = b"\xef\xbb\xbf"


class Source:
    """A snapshot file, decompressed as it is read; counts the raw bytes for progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self.raw.fileno()).st_size
        magic = self.raw.read(4)
        self.raw.seek(0)
        if magic.startswith(GZIP_MAGIC):
            self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw)  # type: ignore[assignment]
        elif magic == ZSTD_MAGIC:
            self.stream = io.BufferedReader(_ZstdReader(self.raw), 1 << 20)
        else:
            self.stream = self.raw

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except (OSError, EOFError, zlib.error) as exc:  # cut short or corrupt: never a shorter list
            raise OSError(f"{self.path}: {exc}") from None

    def position(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another (pzstd and `cat` write several), decompressed as read.
    Input that ends inside a frame is an error (a truncated file), not a shorter list."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        super().__init__()
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # the current frame has had input and not reached its end
        self._out = b""
        self._pos = 0
        self._error = zstandard.ZstdError

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            data = self._raw.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise OSError("zstd: the input ends inside a frame (a truncated file)")
                return 0
            self._out, self._pos = self._decompress(data), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                out.append(self._frame.decompress(data))
            except self._error as exc:
                raise OSError(f"zstd: {exc}") from None
            if not self._frame.eof:
                self._in_frame = True
                break
            data = self._frame.unused_data  # the next frame, if any
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)


def open_text(path: Path) -> io.TextIOWrapper:
    source = Source(path)
    # surrogateescape: a row that is not UTF-8 is rejected, not the whole load (_read_entities)
    return io.TextIOWrapper(source.stream, encoding="utf-8-sig",
                            errors="surrogateescape", newline="")


