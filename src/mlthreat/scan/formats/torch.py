"""PyTorch zip analyser (``torch.save`` since 1.6): the pickles inside, never the tensors.

A PyTorch zip holds ``<prefix>/data.pkl`` (the object, storages as persistent IDs) plus raw
storage members ``<prefix>/data/<key>``. Only ``*.pkl`` members are read, each with the
pickle analyser. Member bytes are located through the local file header (APPNOTE.TXT 4.3.7)
and streamed, so a member whose CRC-32 is wrong is still analysed: torch's own reader does
not check CRCs, and scanners that stop at a CRC error are bypassed by exactly that.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import IO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats.pickle import analyze_stream
from mlthreat.scan.policy import Policy

__all__ = ["MemberReader", "analyze", "open_member"]

FORMAT = "pytorch-zip"
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 16


class MemberReader:
    """Read-only, forward-seekable view of one zip member's uncompressed bytes.

    Stored members are a window on the archive; deflated ones are inflated on the fly with
    a raw-deflate ``zlib`` object. CRCs are not checked here (see :func:`member_crc`).
    Seeking backwards restarts from the member's first byte.
    """

    def __init__(self, fh: IO[bytes], data_start: int, info: zipfile.ZipInfo) -> None:
        self._fh = fh
        self._start = data_start
        self._csize = info.compress_size
        self.size = info.file_size
        self._method = info.compress_type
        if self._method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{info.filename}: unsupported zip compression method "
                              f"{self._method}", f"entry {info.filename}")
        self._restart()

    def _restart(self) -> None:
        self._pos = 0
        self._cpos = 0
        self._pending = b""
        self._inflater = zlib.decompressobj(-15) if self._method == zipfile.ZIP_DEFLATED \
            else None

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, where: int, whence: int = 0) -> int:
        target = where if whence == 0 else self._pos + where if whence == 1 \
            else self.size + where
        if target < self._pos:
            self._restart()
        if self._inflater is None:
            self._pos = min(max(target, 0), self.size)
            return self._pos
        while self._pos < target:
            if not self.read(min(_CHUNK, target - self._pos)):
                break
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.size - self._pos
        n = max(0, min(n, self.size - self._pos))
        if self._inflater is None:
            self._fh.seek(self._start + self._pos)
            data = self._fh.read(n)
            self._pos += len(data)
            return data
        out = [self._pending[:n]]
        got = len(out[0])
        self._pending = self._pending[n:]
        while got < n:
            if self._inflater.unconsumed_tail:
                raw = self._inflater.unconsumed_tail
            else:
                if self._cpos >= self._csize:
                    break
                self._fh.seek(self._start + self._cpos)
                raw = self._fh.read(min(_CHUNK, self._csize - self._cpos))
                if not raw:
                    break
                self._cpos += len(raw)
            try:
                # max_length keeps a zip bomb from inflating more than one chunk at a time.
                part = self._inflater.decompress(raw, max(n - got, _CHUNK))
            except zlib.error as exc:
                raise FormatError(f"corrupt deflate data: {exc}") from None
            take = part[:n - got]
            self._pending = part[n - got:]
            out.append(take)
            got += len(take)
        data = b"".join(out)
        self._pos += len(data)
        return data


def open_member(fh: IO[bytes], info: zipfile.ZipInfo, limits: Limits) -> MemberReader:
    """A :class:`MemberReader` for ``info``, found through its local header.

    Raises
    ------
    FormatError
        Bad local header, data beyond the archive, or an uncompressed/compressed ratio above
        ``limits.max_ratio`` (zip bomb).
    """
    where = f"entry {info.filename}"
    if info.header_offset < 0 or info.compress_size < 0 or info.file_size < 0:
        raise FormatError(f"{info.filename}: negative offset or size in the zip directory",
                          where)
    fh.seek(info.header_offset)
    head = fh.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size or head[:4] != _LOCAL_MAGIC:
        raise FormatError(f"{info.filename}: bad local file header", where)
    fields = _LOCAL_HEADER.unpack(head)
    name_len, extra_len = fields[9], fields[10]
    data_start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > limits.unpack_cap(info.compress_size):
        raise FormatError(f"{info.filename}: compression ratio above {limits.max_ratio} "
                          "(zip bomb?)", where)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise FormatError(f"{info.filename}: stored member with different sizes", where)
    return MemberReader(fh, data_start, info)


def member_crc(reader: MemberReader) -> int:
    """CRC-32 of the member's uncompressed bytes, streamed in 64 KiB chunks."""
    reader.seek(0)
    crc = 0
    while True:
        chunk = reader.read(_CHUNK)
        if not chunk:
            return crc
        crc = zlib.crc32(chunk, crc)


def analyze(fh: IO[bytes], *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Findings for every ``*.pkl`` member of a PyTorch zip checkpoint.

    Parameters
    ----------
    fh : binary file object
        The whole zip, seekable, at offset 0. Members are streamed (64 KiB chunks); storage
        members are never read.
    path : str
        The archive; member findings use ``path!member``.
    size : int
        Archive size in bytes.
    limits, policy
        As for :func:`mlthreat.scan.formats.pickle.analyze`; ``max_members``,
        ``max_ratio`` and ``max_unpacked_bytes`` bound the archive.

    Returns
    -------
    list of Finding
        Pickle findings of each ``.pkl`` member (offsets inside the member), plus
        ``zip.bad-crc`` (medium, AML.T0010.003) for a member whose CRC-32 does not match the
        central directory.

    Raises
    ------
    FormatError
        Not a zip, too many members, no ``.pkl`` member, or a member that cannot be parsed.
    """
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError,
            RuntimeError, struct.error) as exc:
        raise FormatError(f"not a readable zip: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise FormatError(f"more than {limits.max_members} zip members")
        pkls = [i for i in infos if i.filename.endswith(".pkl") and not i.is_dir()]
        if not pkls:
            raise FormatError("PyTorch zip without a .pkl member")
        findings: list[Finding] = []
        unpacked = 0
        for info in pkls:
            unpacked += info.file_size
            if unpacked > limits.max_unpacked_bytes:
                raise FormatError(f"more than {limits.max_unpacked_bytes} bytes to unpack",
                                  f"entry {info.filename}")
            member = f"{path}!{info.filename}"
            reader = open_member(fh, info, limits)
            crc = member_crc(reader)
            if crc != info.CRC:
                findings.append(Finding(
                    path=member, format=FORMAT, severity="medium", rule="zip.bad-crc",
                    message=f"CRC-32 of {info.filename} is {crc:08x}, the zip directory says "
                            f"{info.CRC:08x}: the member was altered after the zip was written",
                    technique=TECHNIQUES["tampered"], location=f"entry {info.filename}",
                    details={"crc_expected": f"{info.CRC:08x}", "crc_actual": f"{crc:08x}"}))
            reader.seek(0)
            try:
                findings.extend(analyze_stream(reader, path=member, size=info.file_size,
                                               limits=limits, policy=policy, fmt=FORMAT))
            except FormatError as exc:
                raise exc.within(info.filename, findings) from None
        return findings
