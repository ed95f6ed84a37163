"""Follow a growing JSONL log (``mlthreat detect run --follow``), like ``tail -f``.

:func:`follow` yields :class:`EventBatch` chunks of the complete lines of a file, from a given
byte offset, then keeps polling for lines appended to it. A partial last line (a writer caught
mid-line) is left for a later poll, once its newline has arrived. Each chunk of new complete
lines is parsed by :class:`~mlthreat.detect.readers.LogReader` (through a temporary JSONL file),
so bad lines are quarantined and counted exactly as in a plain run.

Only JSONL can be followed: CSV and Parquet are not appended to line by line.

A run with a state file keeps where it stopped (:func:`position`, saved with the detector state)
and a restarted one goes on from there (:func:`resume_offset`): the lines it has already judged
are not fed to the detectors a second time (which counted each old query twice and raised
alerts on the doubled history).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlthreat.errors import UsageError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["FollowStats", "check_followable", "follow", "position", "resume_offset"]

_NOT_JSONL = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".gz": "gzip"}


def check_followable(path: str | Path) -> None:
    """Raise UsageError unless ``path`` is a (plain, uncompressed) JSONL log."""
    path = Path(path)
    kind = _NOT_JSONL.get(path.suffix.lower())
    if kind is None:
        try:
            with path.open("rb") as fh:
                head = fh.read(4096)
        except OSError:
            return  # a missing file is reported by the reader, naming it
        head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        if head.startswith(b"PAR1"):
            kind = "Parquet"
        elif head.strip() and not head.lstrip().startswith(b"{"):
            kind = "CSV"
    if kind is not None:
        raise UsageError(f"--follow reads JSONL only; {path} is {kind}")


class FollowStats:
    """Counts over every chunk read while following (same fields as the reader's stats)."""

    def __init__(self, source: str) -> None:
        from collections import Counter

        self.source = source
        self.lines = 0
        self.blank = 0
        self.events = 0
        self.skipped: Counter[str] = Counter()
        self.offset = 0  # byte offset past the last complete line fed to the detectors

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def add(self, stats: Any) -> None:
        self.lines += stats.lines
        self.blank += stats.blank
        self.events += stats.events
        self.skipped.update(stats.skipped)


def follow(path: str | Path, *, offset: int = 0, mapping: Any = None, batch_size: int = 4096,
           quarantine: str | Path | IO[str] | None = None, poll_interval: float = 1.0,
           max_seconds: float | None = None, stop: Callable[[], bool] = lambda: False,
           stats: FollowStats | None = None, chunk_bytes: int = 1 << 20,
           max_line_bytes: int | None = None, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[EventBatch]:
    """Yield the events of the complete lines of ``path`` from byte ``offset`` on, then of the
    lines appended to it, polling every ``poll_interval`` seconds.

    Stops (returning normally) when ``stop()`` turns true or ``max_seconds`` have passed.
    ``stop()`` is also asked before each chunk of at most ``chunk_bytes`` (or one longer line),
    so a run far behind its writer still stops promptly, after a whole chunk: ``stats.offset``
    is then past the last line fed to the detectors, never inside a chunk. A file that
    shrinks (truncated or rotated in place) is read again from its start. Line numbers in
    quarantine records count from the start of each chunk read, not of the file.

    A line longer than ``max_line_bytes`` (default
    :data:`~mlthreat.detect.readers.MAX_LINE_BYTES`) is quarantined as ``line_too_long`` once
    that many bytes of it have arrived, newline or not, and read past without being held in
    memory; a run stopped inside such a line resumes there, and the rest of the line is
    quarantined as ``bad_json``.
    """
    from mlthreat.detect.errors import LogFormatError
    from mlthreat.detect.readers import MAX_LINE_BYTES, LogReader, quarantine_one

    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"{path}: no such file")
    check_followable(path)
    if poll_interval <= 0:
        raise UsageError(f"--poll-interval must be > 0, got {poll_interval}")
    stats = stats if stats is not None else FollowStats(str(path))
    stats.offset = offset
    cap = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    skipping = False  # inside a line over the cap, reading on to its newline
    deadline = None if max_seconds is None else clock() + max_seconds
    with tempfile.TemporaryDirectory(prefix="mlthreat-follow-") as tmp:
        chunk_path = Path(tmp) / "chunk.jsonl"
        while True:
            if stop():
                return
            if skipping:
                offset, skipping = _past_newline(path, offset)
                stats.offset = offset
                if not skipping:
                    continue
            else:
                data, offset = _complete_lines(path, offset, chunk_bytes, cap)
                if data is None:  # a line over the cap starts at offset
                    stats.lines += 1
                    quarantine_one(quarantine, stats, str(path), 1, _head(path, offset),
                                   "line_too_long", f"over the {cap}-byte line cap")
                    skipping = True
                    continue
                if data:
                    chunk_path.write_bytes(data)
                    reader = LogReader(chunk_path, mapping=mapping, batch_size=batch_size,
                                       quarantine=quarantine, max_line_bytes=cap)
                    yield from reader
                    stats.add(reader.stats)
                    stats.offset = offset
                    continue  # more may have arrived meanwhile: read again before sleeping
            # nothing new: wait, in short slices so that a stop request is seen promptly
            wake = clock() + poll_interval
            while True:
                now = clock()
                if stop() or (deadline is not None and now >= deadline):
                    return
                if now >= wake:
                    break
                left = wake - now if deadline is None else min(wake, deadline) - now
                sleep(max(0.0, min(0.1, left)))


def _complete_lines(path: Path, offset: int, limit: int, cap: int) -> tuple[bytes | None, int]:
    """The bytes of the complete lines after ``offset`` (at most ``limit`` bytes when that is
    positive, but always at least one whole line) and the offset past them; None for the bytes
    when the line at ``offset`` is longer than ``cap``, whether its newline has come or not."""
    from mlthreat.detect.errors import LogFormatError

    try:
        size = os.path.getsize(path)
        if size < offset:
            offset = 0  # truncated or replaced: start over
        if size == offset:
            return b"", offset
        with path.open("rb") as fh:
            fh.seek(offset)
            want = size - offset if limit <= 0 else min(size - offset, limit)
            data = fh.read(want)
            if b"\n" not in data and size - offset > want:  # one line longer than the limit
                data += fh.read(min(size - offset, cap + 1) - want)
    except FileNotFoundError:
        return b"", offset  # rotated away; wait for it to come back
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end = data.rfind(b"\n")
    if end < 0:  # only a partial line so far: wait for its newline, unless it is already over
        return (None if len(data) > cap else b""), offset
    return data[:end + 1], offset + end + 1


def _head(path: Path, offset: int) -> str:
    """The first 1,024 bytes of the line at ``offset``, as text, for a quarantine record."""
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(1024).decode("utf-8", errors="replace")


def _past_newline(path: Path, offset: int) -> tuple[int, bool]:
    """Read on from ``offset`` (inside a line over the cap) in 1 MiB pieces to the line's end:
    the offset past its newline and False, or the end of the file and True when the newline
    has not come yet. A file now shorter than ``offset`` starts over at 0."""
    try:
        if os.path.getsize(path) < offset:
            return 0, False
        with path.open("rb") as fh:
            fh.seek(offset)
            while piece := fh.read(1 << 20):
                end = piece.find(b"\n")
                if end >= 0:
                    return offset + end + 1, False
                offset += len(piece)
    except FileNotFoundError:
        pass  # rotated away; wait for it to come back
    return offset, True


_HEAD = 1024  # bytes at the start of a log whose hash tells one file's content from another


def _head_hash(path: str | Path, offset: int) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(min(offset, _HEAD))).hexdigest()


def position(path: str | Path, offset: int) -> dict[str, Any] | None:
    """Where following ``path`` stopped, for a state file: the resolved path, the byte
    ``offset`` past the last line read, and the file's identity (device, inode and the SHA-256
    of its first ``min(offset, 1024)`` bytes), so that a log rotated to a new file, or
    truncated and written again past the offset (``copytruncate``), is read from its start.
    None when the file is gone."""
    try:
        st = os.stat(path)
        head = _head_hash(path, offset)
    except OSError:
        return None
    return {"path": str(Path(path).resolve()), "offset": int(offset),
            "device": int(st.st_dev), "inode": int(st.st_ino), "head_sha256": head}


def resume_offset(path: str | Path, saved: Any) -> int:
    """The byte offset to go on following ``path`` from: the saved :func:`position`'s when it
    is of this same file (path, device, inode and head) and the file is at least that long,
    else 0 (the start of a new, rotated or truncated file)."""
    if not isinstance(saved, dict):
        return 0
    offset = saved.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return 0
    try:
        if os.path.getsize(path) < offset:
            return 0
    except OSError:
        return 0
    now = position(path, offset)
    if now is None or any(saved.get(k) != now[k]
                          for k in ("path", "device", "inode", "head_sha256")):
        return 0
    return offset
