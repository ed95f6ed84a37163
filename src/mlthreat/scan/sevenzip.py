"""7z archives as containers, opened with py7zr under the same bounds as zip.

The 7z format (7-Zip's ``DOC/7zFormat.txt``) starts with a 32-byte signature header (magic
``7z\\xbc\\xaf\\x27\\x1c``, version, and the offset of the *end* header); the end header lists
every file with its unpacked size, and packs the files' data into *folders* (coder chains:
LZMA2, BCJ, 7zAES …). In a solid archive many files share one folder, so a file has no
compressed size of its own; py7zr reports ``compressed`` only for a file alone in its folder.

Bounds, all checked on the end header's declared sizes **before** anything is unpacked:

* more than ``max_members`` files: ``archive.too-many-members`` (the first ones are scanned);
* the declared total over the unpacked-bytes budget left: ``archive.bomb``, nothing unpacked;
* the declared total over ``max_ratio`` times the archive's size (the ratio of a solid
  archive can only be measured over the whole archive), or one file over ``max_ratio`` times
  its own compressed size where py7zr knows it: ``archive.bomb``, nothing unpacked.

While unpacking, every byte is counted again (a header that lies about sizes is caught):
a file writing past its declared size, or the archive past the budget, stops with
``archive.bomb``; py7zr's own ``max_extract_size`` is set to the same budget. The time budget
is checked on every write.

Where bytes go: py7zr is given a *writer factory*, so it never creates a path of its own;
each file goes to a ``mkstemp`` file in a private folder of the scan's work directory, named
by us (the member's name is only a label, so ``../`` in it cannot reach outside). py7zr
unpacks a whole archive in one pass (a solid folder cannot be unpacked from the middle), so
unlike zip all of an archive's files are on disk together; together they are within the
unpacked-bytes budget, and each is deleted once scanned, the folder when the archive is done.

Encryption (7zAES): when the end header itself is encrypted the names cannot be read: one
medium ``archive.encrypted`` finding on the archive. When only the data is, each file gets a
medium ``archive.encrypted`` finding under its ``archive!member`` name: not evidence of
anything, but not scanned either (the file's verdict is ``error``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlthreat.scan.findings import Finding, printable
from mlthreat.scan.walk import Budget, Member, encrypted, too_many_members, violation

__all__ = ["sevenzip_members"]


class _Stop(Exception):
    """Raised from inside py7zr's extraction by our writer; carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


class _Spool:
    """A py7zr writer factory (``py7zr.io.WriterFactory``'s interface): each archive file
    becomes a temporary file in ``folder``; every byte written is counted against the file's
    declared size and the budget. py7zr may unpack folders in parallel threads: a lock guards
    the shared counts."""

    def __init__(self, folder: Path, display: str, declared: dict[str, int],
                 budget: Budget) -> None:
        self.folder = folder
        self.display = display
        self.declared = declared
        self.budget = budget
        self.cap = budget.remaining
        self.written = 0
        self.lock = threading.Lock()
        self.files: dict[str, tuple[Path, int]] = {}  # name -> (temp file, bytes written)
        self.writers: list[_Writer] = []  # py7zr does not close a writer it failed on

    def create(self, filename: str) -> _Writer:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix="member-")
        writer = _Writer(self, filename, Path(tmp), os.fdopen(fd, "wb"))
        with self.lock:
            self.writers.append(writer)
        return writer

    def add(self, name: str, n: int) -> None:
        """Count ``n`` more bytes of ``name``; raise :class:`_Stop` past a bound."""
        with self.lock:
            self.written += n
            over_total = self.written > self.cap
        limits = self.budget.limits
        if over_total:
            raise _Stop(violation("archive.bomb", self.display, "7z",
                                  f"unpacking passed {self.cap} bytes, the unpacked-bytes "
                                  "budget of this file: decompression bomb", f"entry {name}",
                                  unpacked_bytes_at_stop=self.written))
        if self.budget.expired():
            raise _Stop(violation("scan.timeout", self.display, "7z",
                                  f"scan stopped after {limits.seconds_per_file:g} s, the "
                                  "time budget per file; the rest of this file was not "
                                  "scanned", seconds=round(time.monotonic()
                                                           - self.budget.started, 3)))


class _Writer:
    """One archive file being unpacked (``py7zr.io.Py7zIO``'s interface)."""

    def __init__(self, spool: _Spool, name: str, path: Path, fh: Any) -> None:
        self.spool, self.name, self.path, self.fh = spool, name, path, fh
        self.n = 0

    def write(self, data: bytes | bytearray) -> int:
        self.n += len(data)
        declared = self.spool.declared.get(self.name)
        if declared is not None and self.n > declared:
            raise _Stop(violation("archive.bomb", self.spool.display, "7z",
                                  f"member {self.name} unpacks past the {declared} bytes its "
                                  "header declares", f"entry {self.name}",
                                  declared_bytes=declared))
        self.spool.add(self.name, len(data))
        self.fh.write(data)
        return len(data)

    def read(self, size: int | None = None) -> bytes:
        return b""  # py7zr reads back only from its own in-memory writers

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.fh.seek(offset, whence))

    def flush(self) -> None:
        self.fh.flush()

    def size(self) -> int:
        return self.n

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.fh.close()
        with self.spool.lock:
            self.spool.files[self.name] = (self.path, self.n)


def sevenzip_members(src: Path, display: str, budget: Budget,
                     workdir: Path) -> Iterator[Member | Finding]:
    """Members of the 7z archive ``src`` (see the module docstring); the same contract as
    :func:`mlthreat.scan.walk.open_container`: each member's temporary file is deleted when
    the caller asks for the next item, and a bad archive is a finding, never an exception."""
    try:
        import py7zr
        from py7zr.exceptions import ArchiveError, DecompressionBombError, PasswordRequired
    except ImportError as exc:  # a pinned dependency; a broken install is still no crash
        yield violation("scan.unparseable", display, "7z",
                        f"7z archives need py7zr, which cannot be imported: {exc}")
        return
    limits = budget.limits
    try:
        with py7zr.SevenZipFile(src, mode="r", max_extract_size=budget.remaining) as archive:
            infos = [i for i in archive.list() if not i.is_directory]
            if len(infos) > limits.max_members:
                yield too_many_members(display, "7z", len(infos), limits.max_members)
                infos = infos[: limits.max_members]
            if archive.needs_password():
                for info in infos:
                    yield from encrypted(display, "7z", info.filename, info.uncompressed,
                                         "7zAES")
                return
            files = [i for i in infos if i.is_file]
            bomb = _declared_bomb(src, display, files, budget)
            if bomb is not None:
                yield bomb
                return
            for info in infos:
                if not info.is_file:
                    yield Member(f"{display}!{printable(info.filename)}", None, 0,
                                 "7z link or special member (not followed)")
            if not files:
                return
            declared = {i.filename: i.uncompressed for i in files}
            with tempfile.TemporaryDirectory(dir=workdir, prefix="7z-") as folder:
                spool = _Spool(Path(folder), display, declared, budget)
                try:
                    archive.extract(targets=list(declared), factory=spool)
                except _Stop as stop:
                    budget.unpacked += spool.written
                    yield stop.finding
                    return
                finally:
                    for writer in spool.writers:
                        writer.fh.close()
                budget.unpacked += spool.written
                # in the archive's order (py7zr may finish folders in any order)
                order = {name: i for i, name in enumerate(declared)}
                for name in sorted(spool.files, key=lambda n: (order.get(n, len(order)), n)):
                    path, n = spool.files[name]
                    try:
                        yield Member(f"{display}!{printable(name)}", path, n)
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
    except PasswordRequired:
        # the end header is encrypted: not even the names can be read
        yield from encrypted(display, "7z", "", 0, "7zAES, header encrypted")
    except DecompressionBombError as exc:
        yield violation("archive.bomb", display, "7z", f"decompression bomb: {exc}")
    except (ArchiveError, OSError, EOFError, ValueError, KeyError, IndexError,
            NotImplementedError, MemoryError) as exc:
        yield violation("scan.unparseable", display, "7z",
                        f"corrupt 7z archive: {type(exc).__name__}: {exc}")


def _declared_bomb(src: Path, display: str, files: list[Any], budget: Budget) -> Finding | None:
    """The first bound the end header's declared sizes break, as a finding; ``None`` if none."""
    limits = budget.limits
    total = sum(max(i.uncompressed, 0) for i in files)
    if total > budget.remaining:
        return violation("archive.bomb", display, "7z",
                         f"members declare {total} bytes unpacked, over the {budget.remaining}"
                         " left of the unpacked-bytes budget: not unpacked",
                         declared_bytes=total)
    packed = src.stat().st_size
    if total > limits.unpack_cap(packed):
        return violation("archive.bomb", display, "7z",
                         f"members declare {total} bytes unpacked from a {packed}-byte archive:"
                         f" ratio over {limits.max_ratio:g} (decompression bomb): not unpacked",
                         declared_bytes=total, compressed_bytes=packed)
    for i in files:
        if i.compressed and i.uncompressed > limits.unpack_cap(i.compressed):
            return violation("archive.bomb", display, "7z",
                             f"member {i.filename} declares {i.uncompressed} bytes from "
                             f"{i.compressed}: ratio over {limits.max_ratio:g} (decompression "
                             "bomb): not unpacked", f"entry {i.filename}",
                             unpacked_bytes=i.uncompressed, compressed_bytes=i.compressed)
    return None
