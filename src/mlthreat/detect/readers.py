"""Read inference logs as :class:`~mlthreat.detect.batch.EventBatch` chunks.

Formats, chosen by suffix (``.jsonl``, ``.ndjson``, ``.json``, ``.log``, ``.csv``, ``.parquet``,
``.pq``; ``.gz`` for compressed JSONL/CSV) or, failing that, by content:

- JSONL: one QueryEvent per line (:mod:`mlthreat.events`), or one serving-log record per line
  when a mapping is given (:mod:`mlthreat.detect.mappings`).
- CSV: a header with the flat columns :data:`mlthreat.events.FLAT_COLUMNS` (``output_scores``
  and ``truth`` optional); ``input`` and ``output_scores`` are JSON arrays. A record is one
  physical line (quoted fields must not span lines).
- Parquet: the same columns, ``input`` / ``output_scores`` as lists; read by record batches of
  ``batch_size`` rows, never the whole file.

JSONL and CSV are streamed line by line; memory holds one batch. A UTF-8 byte-order mark at the
start of a file (Windows tools write one) is skipped, never taken as part of the first record.
``ts`` may be epoch seconds (number or numeric text), RFC 3339 text (an offset-less time is
taken as UTC) or a Parquet timestamp; it becomes epoch seconds (float64). Events are assumed
to be in time order within a file, as serving systems write them; the reader does not sort
(KServe events are emitted when request and response are both seen, so they may be slightly
out of order).

Normalisation: inputs are flattened to float32; the first good event fixes the input dimension
``d`` and the first event with scores fixes ``k``. Labels become int64: integers and integral
numbers as they are, ``None`` as ``-1``, a non-integral number (a regressor's output) as ``-1``,
and class-name strings as codes in order of first appearance (:attr:`LogReader.label_names`).
A batch has ``scores`` when any of its events has them; the rows of events without are NaN.

Bad records never stop a read and are never dropped silently: each is counted under its reason
in :class:`ReadStats` and, when ``quarantine`` is given, appended to that JSONL file as
``{"source", "line", "reason", "detail", "raw"}`` with the line verbatim (a line over the
``max_line_bytes`` cap: its first 1,024 bytes, and its length in ``detail``). Reasons:
:data:`REASONS`. Whole-file problems (missing or unreadable file, unknown format, missing CSV or
Parquet columns, bad mapping) raise :class:`~mlthreat.detect.errors.LogFormatError` when
iteration starts.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlthreat.detect._records import RecordBuilder, from_native
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.errors import LogFormatError
from mlthreat.detect.mappings import BadRecord, Item, Mapping, resolve_mapping

__all__ = ["BOM", "MAX_LINE_BYTES", "REASONS", "LogReader", "ReadStats", "detect_format",
           "quarantine_one", "read_events"]

#: why a record was skipped
REASONS = ("line_too_long", "bad_encoding", "bad_json", "not_object", "missing_field", "bad_ts",
           "bad_value", "non_finite", "dim_mismatch", "no_input", "unmatched")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".log": "jsonl",
             ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_REQUIRED = ("ts", "client_id", "model_id", "input", "output_label")
BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte-order mark a log may start with; skipped by every reader."""
MAX_LINE_BYTES = 16 << 20
"""Default cap on one JSONL line or CSV row, in bytes (an image of 224x224x3 floats as JSON is
about 2 MB): a longer line is quarantined as ``line_too_long`` without being held in memory."""
_HEAD_BYTES = 1024  # of an over-long line, kept in its quarantine record


@dataclass
class ReadStats:
    """Counts of one read, updated as it proceeds.

    ``lines`` counts records read (JSONL lines and CSV rows, not counting blank lines or the CSV
    header; Parquet rows); without a mapping ``lines == events + skipped_total``.
    """

    source: str = ""
    lines: int = 0
    blank: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line for the end of a run."""
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
        return (f"{self.source}: {self.lines} lines, {self.events} events, "
                f"{self.skipped_total} skipped" + (f" ({why})" if why else ""))


def detect_format(path: str | Path) -> str:
    """``jsonl``, ``csv`` or ``parquet``: by suffix, else by the first bytes."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    try:
        with _open_binary(path) as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.removeprefix(BOM).lstrip()
    if text.startswith(b"{"):
        return "jsonl"
    first = text.split(b"\n", 1)[0]
    if b"," in first and b"client_id" in first:
        return "csv"
    raise LogFormatError(f"{path}: unknown log format (expected JSONL, CSV or Parquet)")


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


class LogReader:
    """Iterate over a log file as :class:`EventBatch` chunks of at most ``batch_size`` events.

    Parameters
    ----------
    path : path
        The log file.
    mapping : {"kserve", "sagemaker"}, path of a YAML mapping, a mapping object, or None
        How to turn serving-log records into QueryEvents (None: the file holds QueryEvents).
    batch_size : int
        Events per batch (the last one may be smaller).
    quarantine : path or text file, optional
        Where bad records go, appended as JSONL.
    max_line_bytes : int
        Longest JSONL line or CSV row read, in bytes; longer ones are quarantined as
        ``line_too_long`` and read past in 1 MiB pieces, so memory stays bounded.

    Attributes
    ----------
    stats : ReadStats
        Counts of the current (or last) read.
    label_names : list of str
        Class names of string labels, indexed by their code.

    Examples
    --------
    >>> reader = LogReader("queries.jsonl", quarantine="bad.jsonl")  # doctest: +SKIP
    >>> for batch in reader: ...                                       # doctest: +SKIP
    >>> print(reader.stats.summary())                                  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, mapping: str | Path | Mapping | None = None,
                 batch_size: int = 4096, quarantine: str | Path | IO[str] | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = path
        self.mapping = mapping
        self.batch_size = batch_size
        self.quarantine = quarantine
        self.max_line_bytes = max_line_bytes
        self.stats = ReadStats(source=str(path))
        self.label_names: list[str] = []

    def __iter__(self) -> Iterator[EventBatch]:
        for name in ("batch_size", "max_line_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        path = Path(self.path)
        if not path.is_file():
            raise LogFormatError(f"{path}: " + ("a folder, not a log file" if path.is_dir()
                                                else "no such file"))
        fmt = detect_format(path)
        mapping = resolve_mapping(self.mapping, path)
        self.stats = ReadStats(source=str(path))
        self.label_names = []
        records = {"jsonl": self._jsonl, "csv": self._csv, "parquet": self._parquet}[fmt](path)
        return self._run(records, mapping, fmt)

    # -- records -----------------------------------------------------------------------------

    def _lines(self, path: Path) -> Iterator[tuple[int, str | BadRecord, str]]:
        """(line number, decoded text or the decoding error, raw text) of non-blank lines."""
        try:
            fh = _open_binary(path)
        except OSError as exc:
            raise LogFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None

        cap = self.max_line_bytes

        def gen() -> Iterator[tuple[int, str | BadRecord, str]]:
            with fh:
                number = 0
                while data := fh.readline(cap + 1):
                    number += 1
                    if number == 1:
                        data = data.removeprefix(BOM)
                    if len(data) > cap and not data.endswith(b"\n"):
                        size = len(data) + _skip_line(fh)
                        yield number, BadRecord("line_too_long", f"{size} bytes, over the "
                                                f"{cap}-byte line cap"), \
                            data[:_HEAD_BYTES].decode("utf-8", errors="replace")
                        continue
                    data = data.rstrip(b"\r\n")
                    if not data.strip():
                        self.stats.blank += 1
                        continue
                    raw = data.decode("utf-8", errors="replace")
                    try:
                        yield number, data.decode("utf-8"), raw
                    except UnicodeDecodeError as exc:
                        yield number, BadRecord("bad_encoding", str(exc)), raw
        return gen()

    def _jsonl(self, path: Path) -> Iterator[Item]:
        for number, text, raw in self._lines(path):
            if isinstance(text, BadRecord):
                yield number, raw, text
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                yield number, raw, BadRecord("bad_json", str(exc))
                continue
            yield number, raw, obj if isinstance(obj, dict) else BadRecord(
                "not_object", f"a JSON {type(obj).__name__}, not an object")

    def _csv(self, path: Path) -> Iterator[Item]:
        lines = self._lines(path)
        first = next(lines, None)
        if first is None:
            return iter(())
        header = [h.strip() for h in next(csv.reader([first[1]]))] \
            if isinstance(first[1], str) else []
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise LogFormatError(f"{path}: CSV header lacks column(s) {', '.join(missing)}")

        def gen() -> Iterator[Item]:
            for number, text, raw in lines:
                if isinstance(text, BadRecord):
                    yield number, raw, text
                    continue
                cells = next(csv.reader([text]))
                if len(cells) != len(header):
                    yield number, raw, BadRecord(
                        "missing_field", f"{len(cells)} fields, the header has {len(header)}")
                    continue
                yield number, raw, {h: (c if c != "" else None) for h, c in zip(header, cells,
                                                                                  strict=True)}
        return gen()

    def _parquet(self, path: Path) -> Iterator[Item]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise LogFormatError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in _REQUIRED if c not in pf.schema_arrow.names]
        if missing:
            raise LogFormatError(f"{path}: Parquet file lacks column(s) {', '.join(missing)}")

        def gen() -> Iterator[Item]:
            number = 0
            for rb in pf.iter_batches(batch_size=self.batch_size):
                for row in rb.to_pylist():
                    number += 1
                    yield number, json.dumps(row, default=str), row
        return gen()

    # -- events ------------------------------------------------------------------------------

    def _run(self, records: Iterator[Item], mapping: Mapping | None,
             fmt: str) -> Iterator[EventBatch]:
        quarantine, close = _Quarantine.open(self.quarantine)
        builder = RecordBuilder(self, str(self.path))
        try:
            for number, raw, obj in records:
                self.stats.lines += 1
                if isinstance(obj, BadRecord):
                    quarantine.write(self.stats, str(self.path), number, raw, obj)
                    continue
                try:
                    if mapping is not None:
                        items = mapping.feed(obj, number, raw)
                    else:
                        items = [(number, raw, from_native(obj) if fmt == "jsonl" else obj)]
                except BadRecord as bad:
                    quarantine.write(self.stats, str(self.path), number, raw, bad)
                    continue
                yield from self._add(items, builder, quarantine)
            if mapping is not None:
                yield from self._add(mapping.finish(), builder, quarantine)
            if builder.size:
                yield builder.flush()
        finally:
            if close:
                quarantine.close()

    def _add(self, items: list[Item], builder: RecordBuilder,
             quarantine: _Quarantine) -> Iterator[EventBatch]:
        for number, raw, rec in items:
            try:
                if isinstance(rec, BadRecord):
                    raise rec
                builder.add(number, rec)
            except BadRecord as bad:
                quarantine.write(self.stats, str(self.path), number, raw, bad)
                continue
            self.stats.events += 1
            if builder.size >= self.batch_size:
                yield builder.flush()


def _skip_line(fh: IO[bytes]) -> int:
    """Read past the rest of the current line in 1 MiB pieces; the bytes skipped (with the
    newline)."""
    skipped = 0
    while piece := fh.readline(1 << 20):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped


def quarantine_one(target: str | Path | IO[str] | None, stats: Any, source: str,
                   line: int, raw: str, reason: str, detail: str) -> None:
    """Count one bad record under ``reason`` in ``stats`` (anything with a ``skipped``
    counter) and append it to the ``target`` quarantine file, as a read would."""
    quarantine, close = _Quarantine.open(target)
    try:
        quarantine.write(stats, source, line, raw, BadRecord(reason, detail))
    finally:
        if close:
            quarantine.close()


def read_events(path: str | Path, *, mapping: str | Path | Mapping | None = None,
                batch_size: int = 4096,
                quarantine: str | Path | IO[str] | None = None) -> Iterator[EventBatch]:
    """The batches of one log file (see :class:`LogReader`, which also exposes the counts)."""
    return iter(LogReader(path, mapping=mapping, batch_size=batch_size, quarantine=quarantine))


class _Quarantine:
    def __init__(self, fh: IO[str] | None) -> None:
        self.fh = fh

    @classmethod
    def open(cls, target: str | Path | IO[str] | None) -> tuple[_Quarantine, bool]:
        if target is None:
            return cls(None), False
        if isinstance(target, str | Path):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            return cls(Path(target).open("a", encoding="utf-8")), True
        return cls(target), False

    def write(self, stats: ReadStats, source: str, line: int, raw: str, bad: BadRecord) -> None:
        stats.skipped[bad.reason] += 1
        if self.fh is not None:
            self.fh.write(json.dumps({"source": source, "line": line, "reason": bad.reason,
                                      "detail": bad.detail, "raw": raw},
                                     ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
