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
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[EventBatch]:
    """Yield the events of the complete lines of ``path`` from byte ``offset`` on, then of the
    lines appended to it, polling every ``poll_interval`` seconds.

    Stops (returning normally) when ``stop()`` turns true or ``max_seconds`` have passed.
    ``stop()`` is also asked before each chunk of at most ``chunk_bytes`` (or one longer line),
    so a run far behind its writer still stops promptly, after a whole chunk: ``stats.offset``
    is then past the last line fed to the detectors, never inside a chunk. A file that
    shrinks (truncated or rotated in place) is read again from its start. Line numbers in
    quarantine records count from the start of each chunk read, not of the file.
    """
    from mlthreat.detect.errors import LogFormatError
    from mlthreat.detect.readers import LogReader

    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"{path}: no such file")
    check_followable(path)
    if poll_interval <= 0:
        raise UsageError(f"--poll-interval must be > 0, got {poll_interval}")
    stats = stats if stats is not None else FollowStats(str(path))
    stats.offset = offset
    deadline = None if max_seconds is None else clock() + max_seconds
    with tempfile.TemporaryDirectory(prefix="mlthreat-follow-") as tmp:
        chunk_path = Path(tmp) / "chunk.jsonl"
        while True:
            if stop():
                return
            data, offset = _complete_lines(path, offset, chunk_bytes)
            if data:
                chunk_path.write_bytes(data)
                reader = LogReader(chunk_path, mapping=mapping, batch_size=batch_size,
                                   quarantine=quarantine)
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


def _complete_lines(path: Path, offset: int, limit: int = 0) -> tuple[bytes, int]:
    """The bytes of the complete lines after ``offset`` (at most ``limit`` bytes when that is
    positive, but always at least one whole line) and the offset past them."""
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
            if want < size - offset and b"\n" not in data:
                data += fh.read(size - offset - want)  # one line longer than the limit
    except FileNotFoundError:
        return b"", offset  # rotated away; wait for it to come back
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end = data.rfind(b"\n")
    if end < 0:
        return b"", offset  # only a partial line so far: wait for its newline
    return data[:end + 1], offset + end + 1


def position(path: str | Path, offset: int) -> dict[str, Any] | None:
    """Where following ``path`` stopped, for a state file: the resolved path, the byte
    ``offset`` past the last line read, and the file's identity (device and inode), so that a
    log rotated to a new file is read from its start. None when the file is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": str(Path(path).resolve()), "offset": int(offset),
            "device": int(st.st_dev), "inode": int(st.st_ino)}


def resume_offset(path: str | Path, saved: Any) -> int:
    """The byte offset to go on following ``path`` from: the saved :func:`position`'s when it
    is of this same file (path, device and inode) and the file is at least that long, else 0
    (the start of a new, rotated or truncated file)."""
    if not isinstance(saved, dict):
        return 0
    offset = saved.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return 0
    now = position(path, offset)
    if now is None or any(saved.get(k) != now[k] for k in ("path", "device", "inode")):
        return 0
    try:
        return offset if os.path.getsize(path) >= offset else 0
    except OSError:
        return 0
