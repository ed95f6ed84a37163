"""The pickle reader's input: a forward-only buffered view of a byte source.

Reads opcodes and their arguments in chunks of at most 64 KiB (or one argument), skips large
arguments by seeking forward, and never seeks back, so a zip member read as a stream will do.
"""

from __future__ import annotations

from typing import Protocol

from mlthreat.scan.findings import FormatError

__all__ = ["ByteSource", "Input", "Truncated"]

_CHUNK = 1 << 16


class ByteSource(Protocol):
    """What the analysers need of a file: ``read`` and (forward) ``seek``."""

    def read(self, n: int = ..., /) -> bytes: ...

    def seek(self, where: int, whence: int = ..., /) -> int: ...


class Truncated(Exception):
    """Raised by the reader at end of data; turned into FormatError with the offset."""


class Input:
    """Forward-only buffered reader over ``fh[start:end]`` that can skip without reading.

    Offsets are absolute positions in ``fh``. ``fh`` may be a forward-seekable stream
    (a zip member): the reader only ever seeks forward.
    """

    def __init__(self, fh: ByteSource, start: int, end: int) -> None:
        self.fh = fh
        self.pos = start
        self.end = end
        self._buf = b""
        self._bufstart = start
        self._fhpos = -1

    def _seek_fh(self, where: int) -> None:
        if self._fhpos != where:
            self.fh.seek(where)
            self._fhpos = where

    def _fetch(self, where: int, n: int) -> bytes:
        self._seek_fh(where)
        data = self.fh.read(n)
        self._fhpos = where + len(data)
        return data

    def at_end(self) -> bool:
        return self.pos >= self.end

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises Truncated when the data ends first."""
        if n < 0 or self.pos + n > self.end:
            raise Truncated
        off = self.pos - self._bufstart
        if off >= 0 and off + n <= len(self._buf):
            self.pos += n
            return self._buf[off:off + n]
        if n > _CHUNK:
            data = self._fetch(self.pos, n)
        else:
            self._buf = self._fetch(self.pos, min(_CHUNK, self.end - self.pos))
            self._bufstart = self.pos
            data = self._buf[:n]
        if len(data) != n:
            raise Truncated
        self.pos += n
        return data

    def readline(self, limit: int) -> bytes:
        """Bytes up to and including ``\\n``; FormatError if longer than ``limit``."""
        parts: list[bytes] = []
        total = 0
        while True:
            off = self.pos - self._bufstart
            if not 0 <= off < len(self._buf):
                if self.pos >= self.end:
                    raise Truncated
                self._buf = self._fetch(self.pos, min(_CHUNK, self.end - self.pos))
                self._bufstart = self.pos
                off = 0
                if not self._buf:
                    raise Truncated
            nl = self._buf.find(b"\n", off)
            stop = len(self._buf) if nl < 0 else nl + 1
            parts.append(self._buf[off:stop])
            total += stop - off
            self.pos += stop - off
            if total > limit:
                raise FormatError(f"line argument longer than {limit} bytes")
            if nl >= 0:
                return b"".join(parts)

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the current position, without moving it."""
        n = max(0, min(n, self.end - self.pos))
        off = self.pos - self._bufstart
        if not (off >= 0 and off + n <= len(self._buf)):
            self._buf = self._fetch(self.pos, min(max(_CHUNK, n), self.end - self.pos))
            self._bufstart = self.pos
            off = 0
        return self._buf[off:off + n]

    def skip(self, n: int) -> None:
        """Move ``n`` bytes forward without reading them (bounded memory)."""
        if n < 0 or self.pos + n > self.end:
            raise Truncated
        self.pos += n
