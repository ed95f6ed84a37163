"""Inputs of a scan: files, folders, and archives opened as containers of further files.

Files and folders given are listed by :mod:`mlthreat.scan.inputs` (which also decides what a
symbolic link inside a folder becomes); :func:`iter_inputs` and :class:`Entry` are re-exported
here.

Archives (``zip``, ``7z`` (see :mod:`mlthreat.scan.sevenzip`), ``tar``, and single-stream
``gzip``/``bz2``/``xz``/``lzma``/``zlib`` files) are containers: each member is streamed, in
64 KiB chunks, to a temporary file in the scan's work directory and scanned like a file
under the name ``outer!member`` (nested: ``a.zip!b.tar!c.pkl``). A single-stream compressed
file has one member, named after the outer file with the compression suffix removed
(``x.tar.gz`` → ``x.tar.gz!x.tar``, ``m.tgz`` → ``m.tgz!m.tar``, ``model.joblib`` (zlib) →
``model.joblib!model.joblib``).

Temporary-file policy: a member is copied to disk because the analysers need a seekable file
and the third-party engines need a real path; at most one temporary file per nesting level
exists at a time (each is deleted as soon as its member is scanned), and the bytes written for
one top-level file never exceed ``Limits.max_unpacked_bytes``.

Bounds (:class:`~mlthreat.scan.findings.Limits`): a member whose declared *or* actually
inflated size exceeds ``max_ratio`` times its compressed size (members under
``Limits.ratio_floor`` bytes are exempt: tiny files compress well and bomb nothing) or the
remaining ``max_unpacked_bytes`` gives ``archive.bomb``; more than ``max_members`` members
gives ``archive.too-many-members`` (the first ``max_members`` are still scanned); a container
deeper than ``max_depth`` gives ``archive.too-deep``; ``seconds_per_file`` spent gives
``scan.timeout``; an archive that cannot be read gives ``scan.unparseable``. Each of these is
a high-severity finding on the container (``location`` names the member), and the scan goes
on.

Encrypted members (zip: general-purpose flag bit 0, set for ZipCrypto and WinZip AES alike,
APPNOTE.TXT 4.4.4; 7z: a 7zAES coder) cannot be scanned without the password: each is a
medium ``archive.encrypted`` finding under its ``archive!member`` name (not a corrupt
archive), recorded with verdict ``error``, and the other members are scanned.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gzip
import lzma
import os
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits, printable
from mlthreat.scan.inputs import Entry, iter_inputs
from mlthreat.scan.sniff import COMPRESSIONS

__all__ = ["Budget", "Entry", "Member", "declared_bombs", "encrypted", "iter_inputs",
           "member_name", "open_container", "violation"]

CHUNK = 1 << 16
# zip general-purpose flag bit 0: the member is encrypted (APPNOTE.TXT 4.4.4); method 99 is
# WinZip's AES (APPNOTE.TXT 4.4.5, appendix E)
_ZIP_ENCRYPTED = 0x1
_ZIP_AES = 99

_ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError,
               RuntimeError, struct.error, zlib.error, lzma.LZMAError)
# compression suffix -> what the decompressed member is called instead
_SUFFIXES = {".tgz": ".tar", ".tbz2": ".tar", ".tbz": ".tar", ".txz": ".tar", ".gz": "",
             ".bz2": "", ".xz": "", ".lzma": "", ".z": "", ".zlib": ""}


@dataclass
class Budget:
    """What one top-level file may still spend: wall-clock seconds and unpacked bytes."""

    limits: Limits
    started: float = field(default_factory=time.monotonic)
    unpacked: int = 0

    def expired(self) -> bool:
        """True once ``limits.seconds_per_file`` seconds have passed since ``started``."""
        return time.monotonic() - self.started >= self.limits.seconds_per_file

    @property
    def remaining(self) -> int:
        """Bytes that may still be unpacked (``max_unpacked_bytes`` minus what was)."""
        return max(self.limits.max_unpacked_bytes - self.unpacked, 0)


@dataclass(frozen=True)
class Member:
    """One archive member: ``display`` is ``outer!name``; ``path`` the temporary file holding
    its bytes, or ``None`` when it is not scanned (``note`` says why: a link, a device, an
    encrypted member …). ``unscanned`` marks a member that may hold a model but could not be
    read (its record's verdict is ``error``, not ``skipped``)."""

    display: str
    path: Path | None
    size: int
    note: str = ""
    unscanned: bool = False


def violation(rule: str, path: str, fmt: str, message: str, location: str = "",
              **details: object) -> Finding:
    """A high-severity, AML.T0011.000 finding for a bound a file broke (or could not be
    read past)."""
    return Finding(path=path, format=fmt, severity="high", rule=rule, message=message,
                   technique=TECHNIQUES["unsafe"], location=location, details=dict(details))


def too_many_members(display: str, fmt: str, count: int, limit: int) -> Finding:
    """The ``archive.too-many-members`` finding for an archive listing ``count`` members
    against the ``limit`` (``max_members``); the first ``limit`` are still scanned."""
    return violation("archive.too-many-members", display, fmt,
                     f"{count} members, over the limit of {limit}; only the first {limit} are "
                     "scanned", members=count)


def encrypted(display: str, fmt: str, name: str, size: int,
              method: str) -> Iterator[Member | Finding]:
    """A medium ``archive.encrypted`` finding for the member ``name`` of ``display`` (on the
    archive itself when ``name`` is empty: its member names are encrypted too), and the
    member's record. Not a bound broken and not corruption: a part we cannot read."""
    path = f"{display}!{printable(name)}" if name else display
    what = f"member {name}" if name else "the archive's file list"
    yield dataclasses.replace(
        violation("archive.encrypted", path, fmt,
                  f"encrypted: {what} cannot be scanned without the password ({method})",
                  container=display, encryption=method, declared_bytes=size),
        severity="medium")
    if name:
        yield Member(path, None, size, f"encrypted ({method}): not scanned", unscanned=True)


def member_name(display: str) -> str:
    """The name of a single-stream compressed file's one member (see the module docstring)."""
    base = display.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    lower = base.lower()
    for suffix, repl in _SUFFIXES.items():
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + repl
    return base


class _Bomb(Exception):
    pass


class _Expired(Exception):
    pass


def _copy(read: Callable[[int], bytes], dst: BinaryIO, cap: int, budget: Budget) -> int:
    """Stream ``read`` into ``dst`` in :data:`CHUNK` pieces; never holds a whole member.
    Raises _Bomb past ``cap`` bytes, _Expired when the time budget runs out."""
    n = 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return n
        n += len(chunk)
        if n > cap:
            raise _Bomb(n)
        dst.write(chunk)
        if budget.expired():
            raise _Expired


def declared_bombs(fh: IO[bytes], display: str, fmt: str, limits: Limits) -> list[Finding]:
    """``archive.bomb`` findings from a zip's central directory alone (declared sizes against
    ``max_ratio`` and ``max_unpacked_bytes``); ``[]`` for a zip that cannot be read (its
    analyser reports that). Used before zip-based model formats go to their analyser whole."""
    try:
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()[: limits.max_members]
    except _ZIP_ERRORS:
        return []
    out: list[Finding] = []
    total = 0
    for info in infos:
        total += max(info.file_size, 0)
        if info.compress_type != zipfile.ZIP_STORED and \
                info.file_size > limits.unpack_cap(info.compress_size):
            out.append(_ratio_bomb(display, fmt, info.filename, info.file_size,
                                   info.compress_size, limits))
    if total > limits.max_unpacked_bytes:
        out.append(violation("archive.bomb", display, fmt,
                             f"members declare {total} bytes unpacked, over the limit of "
                             f"{limits.max_unpacked_bytes}", "", declared_bytes=total))
    return out


def _ratio_bomb(display: str, fmt: str, name: str, size: int, compressed: int,
                limits: Limits) -> Finding:
    return violation("archive.bomb", display, fmt,
                     f"member {name} unpacks to {size} bytes from {compressed}: ratio over "
                     f"{limits.max_ratio:g} (decompression bomb)", f"entry {name}",
                     unpacked_bytes=size, compressed_bytes=compressed)


def open_container(src: Path, fmt: str, display: str, budget: Budget,
                   workdir: Path) -> Iterator[Member | Finding]:
    """Members of the archive ``src`` (format ``fmt`` as sniffed), each streamed to a
    temporary file in ``workdir`` that is deleted when the caller asks for the next item; and
    findings for every bound broken (see the module docstring). Never raises for a bad
    archive: that is a ``scan.unparseable`` finding."""
    if fmt == "zip":
        yield from _zip_members(src, display, budget, workdir)
    elif fmt == "7z":
        from mlthreat.scan.sevenzip import sevenzip_members

        yield from sevenzip_members(src, display, budget, workdir)
    elif fmt == "tar":
        yield from _tar_members(src, display, budget, workdir)
    elif fmt in COMPRESSIONS:
        yield from _stream_member(src, fmt, display, budget, workdir)
    else:
        raise ValueError(f"not a container format: {fmt!r}")


def _temp(workdir: Path) -> tuple[Path, BinaryIO]:
    fd, name = tempfile.mkstemp(dir=workdir, prefix="member-")
    return Path(name), os.fdopen(fd, "wb")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _spill(read: Callable[[int], bytes], display: str, fmt: str, name: str, cap: int,
           budget: Budget, workdir: Path) -> Iterator[Member | Finding]:
    """Copy one member to a temporary file and yield it (deleted afterwards), or yield the
    bound it broke. Raises _Expired to stop the container."""
    tmp, out = _temp(workdir)
    try:
        try:
            with out:
                n = _copy(read, out, cap, budget)
        except _Bomb as exc:
            budget.unpacked += cap
            over_budget = cap >= budget.remaining
            yield violation("archive.bomb", display, fmt,
                            f"member {name} unpacked past {cap} bytes "
                            + ("(the unpacked-bytes budget of this file)" if over_budget
                               else f"(compression ratio over {budget.limits.max_ratio:g})")
                            + ": decompression bomb", f"entry {name}",
                            unpacked_bytes_at_stop=int(exc.args[0]))
            return
        budget.unpacked += n
        yield Member(f"{display}!{printable(name)}", tmp, n)
    finally:
        _unlink(tmp)


def _zip_members(src: Path, display: str, budget: Budget,
                 workdir: Path) -> Iterator[Member | Finding]:
    from mlthreat.scan.formats.torch import open_member

    limits = budget.limits
    try:
        with src.open("rb") as fh, zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                yield too_many_members(display, "zip", len(infos), limits.max_members)
                infos = infos[: limits.max_members]
            for info in infos:
                if info.is_dir():
                    continue
                name = info.filename
                if budget.expired():
                    raise _Expired
                if info.flag_bits & _ZIP_ENCRYPTED:
                    method = "WinZip AES" if info.compress_type == _ZIP_AES else "ZipCrypto"
                    yield from encrypted(display, "zip", name, info.file_size, method)
                    continue
                if info.compress_type != zipfile.ZIP_STORED and \
                        info.file_size > limits.unpack_cap(info.compress_size):
                    yield _ratio_bomb(display, "zip", name, info.file_size,
                                      info.compress_size, limits)
                    continue
                if info.file_size > budget.remaining:
                    yield violation("archive.bomb", display, "zip",
                                    f"member {name} declares {info.file_size} bytes, over the "
                                    f"{budget.remaining} left of the unpacked-bytes budget",
                                    f"entry {name}", declared_bytes=info.file_size)
                    return
                cap = min(limits.unpack_cap(info.compress_size), budget.remaining)
                read: Callable[[int], bytes]
                if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    # our reader finds the data through the local header and skips the CRC
                    # check, as loaders do: a member with a wrong CRC is still scanned
                    read = open_member(fh, info, limits).read
                    yield from _spill(read, display, "zip", name, cap, budget, workdir)
                else:
                    with zf.open(info) as stream:
                        yield from _spill(stream.read, display, "zip", name, cap, budget,
                                          workdir)
    except _Expired:
        yield _timeout(display, "zip", budget)
    except (FormatError, *_ZIP_ERRORS) as exc:
        yield violation("scan.unparseable", display, "zip",
                        f"corrupt zip archive: {type(exc).__name__}: {exc}",
                        getattr(exc, "location", ""))


def _tar_members(src: Path, display: str, budget: Budget,
                 workdir: Path) -> Iterator[Member | Finding]:
    limits = budget.limits
    count = 0
    try:
        with src.open("rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    return
                if info.isdir():
                    continue
                count += 1
                if count > limits.max_members:
                    yield violation("archive.too-many-members", display, "tar",
                                    f"more than {limits.max_members} members; only the first "
                                    f"{limits.max_members} are scanned")
                    return
                if budget.expired():
                    raise _Expired
                if not info.isreg():
                    yield Member(f"{display}!{printable(info.name)}", None, 0,
                                 "tar link or special member (not followed)")
                    continue
                if info.size > budget.remaining:
                    yield violation("archive.bomb", display, "tar",
                                    f"member {info.name} declares {info.size} bytes, over the "
                                    f"{budget.remaining} left of the unpacked-bytes budget",
                                    f"entry {info.name}", declared_bytes=info.size)
                    return
                stream = tf.extractfile(info)
                if stream is None:
                    continue
                with stream:
                    # tar does not compress, but a sparse member can expand: the budget bounds
                    yield from _spill(stream.read, display, "tar", info.name,
                                      budget.remaining, budget, workdir)
    except _Expired:
        yield _timeout(display, "tar", budget)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        yield violation("scan.unparseable", display, "tar",
                        f"corrupt tar archive: {type(exc).__name__}: {exc}")


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _ZlibReader:
    """``read(n)`` over a raw zlib stream, inflating at most ``n`` bytes per call."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._z = zlib.decompressobj()

    def read(self, n: int) -> bytes:
        while True:
            if self._z.unconsumed_tail:
                data = self._z.decompress(self._z.unconsumed_tail, n)
            else:
                raw = self._fh.read(CHUNK)
                if not raw:
                    if not self._z.eof:
                        raise EOFError("zlib stream ends before its end marker")
                    return b""
                data = self._z.decompress(raw, n)
            if data or self._z.eof:
                return data


def _stream_member(src: Path, fmt: str, display: str, budget: Budget,
                   workdir: Path) -> Iterator[Member | Finding]:
    name = member_name(display)
    try:
        size = src.stat().st_size
        cap = min(budget.limits.unpack_cap(size), budget.remaining)
        # the decompressors below only wrap ``raw``; closing ``raw`` releases everything
        with src.open("rb") as raw:
            stream: _Readable
            if fmt == "gzip":
                stream = gzip.GzipFile(fileobj=raw, mode="rb")
            elif fmt == "bz2":
                stream = bz2.BZ2File(raw, "rb")
            elif fmt == "xz":
                stream = lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ)  # noqa: SIM115
            elif fmt == "lzma":
                stream = lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_ALONE)  # noqa: SIM115
            else:
                stream = _ZlibReader(raw)
            yield from _spill(stream.read, display, fmt, name, cap, budget, workdir)
    except _Expired:
        yield _timeout(display, fmt, budget)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        yield violation("scan.unparseable", display, fmt,
                        f"corrupt {fmt} stream: {type(exc).__name__}: {exc}")


def _timeout(display: str, fmt: str, budget: Budget) -> Finding:
    return violation("scan.timeout", display, fmt,
                     f"scan stopped after {budget.limits.seconds_per_file:g} s, the time "
                     "budget per file; the rest of this file was not scanned",
                     seconds=round(time.monotonic() - budget.started, 3))

