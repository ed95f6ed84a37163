"""The scan: every input file recognised by its bytes, given to its analyser (and to the
third-party engines), archives opened as containers; never a model loaded.

Typical use::

    report = Scanner(engines=()).run(["models/"])
    print(report.to_dict()["counts"], report.exit_code("high"))

A file whose format is not a model format (text, JSON, images …) is *skipped* and counted,
not a finding; one *named* like a model (``.pkl``, ``.pt``, ``.onnx`` …) whose bytes match no
format is a medium ``scan.unrecognised`` finding (corrupt, truncated, or a format we do not
read: worth a look, but not evidence of code). A file that claims a model format but cannot
be parsed is never clean: it gets a ``scan.unparseable`` finding, plus whatever its analyser
found before the error. A bug in one analyser becomes a ``scan.internal-error`` finding and
the scan goes on.

Verdicts: ``error`` when part of the file was not scanned (a ``scan.*`` or ``archive.*``
rule); else ``findings`` when a finding counts; else ``clean``. A finding does not count when
it is ``info``, or when only third-party engines report it and rate it below ``medium``
(:data:`NOTE_BELOW`): the engines rate every import outside their own short lists ``low``
(fickling calls the ``OrderedDict`` update in every ``torch.save`` state_dict "likely
unsafe"), while which globals a model may import is decided by our allow-list, so those
ratings are notes. They stay in the report (and ``--fail-on low`` still fails on them); they
only leave the verdict clean. The engines' findings are merged with ours first
(:mod:`mlthreat.scan.merge`), so a global both we and an engine flag counts once, as ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from mlthreat.constraints import InstanceOf, Interval, ListOf, Spec, unknown, validate
from mlthreat.errors import UsageError
from mlthreat.scan.engines import _SUPPORTED as _ENGINE_FORMATS
from mlthreat.scan.engines import DEFAULT_MAX_ENGINE_BYTES, ENGINES, run_engines
from mlthreat.scan.findings import (
    SEVERITIES,
    Finding,
    FormatError,
    Limits,
    printable,
    severity_rank,
)
from mlthreat.scan.formats import ANALYZERS
from mlthreat.scan.merge import merge_findings
from mlthreat.scan.policy import Policy
from mlthreat.scan.sniff import CONTAINERS, sniff
from mlthreat.scan.walk import (
    Budget,
    Member,
    declared_bombs,
    iter_inputs,
    open_container,
    violation,
)

__all__ = ["NOTE_BELOW", "VERDICTS", "FileRecord", "ScanReport", "Scanner"]

VERDICTS: tuple[str, ...] = ("clean", "findings", "error", "skipped")
# Findings only third-party engines report, rated below this, do not make a verdict "findings".
NOTE_BELOW = "medium"
REPORT_KIND = "mlthreat.scan.report"
SCHEMA_VERSION = 1

Progress = Callable[[int, int | None, str], None]

_DEFAULT_LIMITS = Limits()
_HASH_CHUNK = 1 << 20
# Rules that mean part of a file was not scanned: its verdict is "error", not "findings".
_INCOMPLETE = ("scan.", "archive.", "pickle.nested-unscanned")
# Zip-based model formats: their analyser reads the zip whole (not unpacked as an archive).
_ZIP_MODELS = frozenset({"pytorch-zip", "npz", "keras-zip", "skops"})
# Extensions model files go by: a file so named whose bytes match no format is a (medium)
# finding, not a skip.
MODEL_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".bin",
                            ".npy", ".npz", ".h5", ".hdf5", ".keras", ".onnx", ".safetensors",
                            ".gguf", ".skops", ".sav", ".mar", ".pb"})
# Our format name -> the name engines.py knows it by.
_ENGINE_FORMAT = {"npz": "zip", "keras-zip": "keras"}


@dataclass(frozen=True)
class FileRecord:
    """One file the scan saw.

    Attributes
    ----------
    path : str
        As in findings (``archive!member`` for members).
    format : str or None
        As recognised by its bytes; ``None`` when not a model or archive format.
    size : int
        Bytes (of the unpacked member for archive members).
    sha256 : str
        Hex digest of the bytes, streamed; ``""`` when the file could not be read.
    verdict : str
        ``clean``, ``findings``, ``error`` (not completely scanned: unparseable, a bound hit,
        encrypted, an internal error) or ``skipped``. Engine-only findings below
        :data:`NOTE_BELOW` and ``info`` findings are notes: they leave a file ``clean``.
    note : str
        Why a file was skipped (``not a model file``, ``symbolic link (not followed)`` …).
    """

    path: str
    format: str | None
    size: int
    sha256: str
    verdict: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScanReport:
    """What :meth:`Scanner.run` found.

    Attributes
    ----------
    findings : list of Finding
        Ours and the engines', merged (one per file and global, ``engines`` lists who
        agreed), most severe first, then by path.
    files : list of FileRecord
        Every file seen, in scan order.
    engine_messages : list of str
        ``"<path>: <engine>: <message>"`` for engines skipped or failed.
    started : str
        ISO 8601 UTC time the scan started.
    seconds : float
        Wall-clock duration.
    """

    findings: list[Finding] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    engine_messages: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Findings per severity (every severity present, zero or more)."""
        out = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out

    def verdicts(self) -> dict[str, int]:
        """Files per verdict."""
        out = dict.fromkeys(VERDICTS, 0)
        for r in self.files:
            out[r.verdict] += 1
        return out

    def exit_code(self, fail_on: str = "high") -> int:
        """1 when a finding is at least as severe as ``fail_on``, else 0.

        Raises
        ------
        ValueError
            For a ``fail_on`` not in :data:`~mlthreat.scan.findings.SEVERITIES`.
        """
        limit = severity_rank(fail_on)
        return int(any(severity_rank(f.severity) <= limit for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (``kind`` ``mlthreat.scan.report``, ``schema_version`` 1)."""
        return {"kind": REPORT_KIND, "schema_version": SCHEMA_VERSION,
                "started": self.started, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "verdicts": self.verdicts(),
                "findings": [f.to_dict() for f in self.findings],
                "files": [r.to_dict() for r in self.files],
                "engine_messages": list(self.engine_messages)}


_CONSTRAINTS: dict[str, Spec] = {
    "policy": (None, InstanceOf(Policy)),
    "limits": InstanceOf(Limits),
    "engines": ListOf(InstanceOf(str, "an engine name"), empty=True),
    "max_engine_bytes": Interval(Integral, 0, None),
    "hash_files": "boolean",
    "follow_symlinks": "boolean",
}
_LIMIT_CONSTRAINTS: dict[str, Spec] = {
    **{f"limits.{name}": Interval(Integral, 0, None) for name in (
        "max_opcodes", "max_header_bytes", "max_depth", "ratio_floor", "max_unpacked_bytes")},
    "limits.max_members": Interval(Integral, 1, None),
    "limits.max_ratio": Interval(Real, 0, None, closed="neither"),
    "limits.seconds_per_file": Interval(Real, 0, None),
}


class Scanner:
    """Scan files, folders and archives for model files that run code when loaded.

    Parameters are stored as given (scikit-learn style) and checked by :meth:`validate`.

    Parameters
    ----------
    policy : Policy or None
        Allow-list; ``None`` means :meth:`Policy.default`.
    limits : Limits
        Bounds on memory, time and archive unpacking.
    engines : sequence of str
        Third-party engines to run as well (subset of
        :data:`~mlthreat.scan.engines.ENGINES`); empty for our analysers only.
    max_engine_bytes : int
        Files larger than this are not given to the engines (they hold a pickle in memory).
    hash_files : bool
        Record each file's SHA-256 (streamed). Hashing reads every byte, about 1-5 s per
        GiB; analysers mostly seek, so ``False`` makes scans of huge files much faster
        (``sha256`` is then ``""``).
    follow_symlinks : bool
        Scan what symbolic links inside a folder point to, under the link's name (each
        folder once; a loop is a finding). By default a link is not followed, and one that
        leads out of the folder, dangles or loops is a high-severity finding (see
        :mod:`mlthreat.scan.inputs`).
    """

    def __init__(self, policy: Policy | None = None, limits: Limits = _DEFAULT_LIMITS,
                 engines: Sequence[str] = ENGINES,
                 max_engine_bytes: int = DEFAULT_MAX_ENGINE_BYTES,
                 hash_files: bool = True, follow_symlinks: bool = False) -> None:
        self.policy = policy
        self.limits = limits
        self.engines = engines
        self.max_engine_bytes = max_engine_bytes
        self.hash_files = hash_files
        self.follow_symlinks = follow_symlinks

    def validate(self) -> Scanner:
        """Check the parameters; returns ``self``.

        Raises
        ------
        UsageError
            Wrong types, an unknown engine, or a non-positive bound.
        """
        params = {"policy": self.policy, "limits": self.limits, "engines": self.engines,
                  "max_engine_bytes": self.max_engine_bytes, "hash_files": self.hash_files,
                  "follow_symlinks": self.follow_symlinks}
        validate("Scanner", params, _CONSTRAINTS)
        missing = unknown("engine", self.engines, ENGINES)
        if missing:
            raise UsageError(missing)
        limits = {f"limits.{f.name}": getattr(self.limits, f.name)
                  for f in dataclasses.fields(self.limits)}
        validate("Scanner", limits, _LIMIT_CONSTRAINTS)
        return self

    def run(self, paths: Iterable[str | Path], progress: Progress | None = None) -> ScanReport:
        """Scan ``paths`` (files and folders, recursively).

        Parameters
        ----------
        paths : iterable of path
            Files or folders; a missing path is a usage error.
        progress : callable, optional
            Called ``progress(done_files, total_files, path)`` after each top-level file
            (``total_files`` is the number of top-level files found).

        Returns
        -------
        ScanReport

        Raises
        ------
        UsageError
            Invalid parameters or a path that does not exist.
        """
        self.validate()
        policy = self.policy if self.policy is not None else Policy.default()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        try:
            entries = list(iter_inputs(paths, bool(self.follow_symlinks)))
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        run = _Run(self, policy)
        with tempfile.TemporaryDirectory(prefix="mlthreat-scan-") as work:
            run.workdir = Path(work)
            for done, entry in enumerate(entries, 1):
                display = printable(str(entry.path))
                if entry.rule:
                    # a link that hides what it points to from the scan
                    target = printable(entry.target)
                    run.findings.append(violation(
                        entry.rule, display, "symlink", printable(entry.skipped)
                        + (f"; the link points to {target}" if target else ""),
                        f"-> {target}" if target else "", target=target))
                    run.files.append(FileRecord(display, None, 0, "", "error",
                                                printable(entry.skipped)))
                elif entry.skipped.startswith("cannot"):
                    # a folder we cannot list may hold anything: never "skipped" quietly
                    run.findings.append(violation("scan.unreadable", display, "folder",
                                                  f"not scanned: {entry.skipped}"))
                    run.files.append(FileRecord(display, None, 0, "", "error", entry.skipped))
                elif entry.skipped:
                    run.files.append(FileRecord(display, None, 0, "", "skipped",
                                                entry.skipped))
                else:
                    run.scan_file(entry.path, display, 0, Budget(self.limits))
                if progress is not None:
                    progress(done, len(entries), str(entry.path))
        findings = sorted(run.findings, key=lambda f: (severity_rank(f.severity), f.path))
        return ScanReport(findings=findings, files=run.files,
                          engine_messages=list(dict.fromkeys(run.messages)),
                          started=started, seconds=time.monotonic() - t0)


class _Run:
    """State of one :meth:`Scanner.run` call."""

    def __init__(self, scanner: Scanner, policy: Policy) -> None:
        self.s = scanner
        self.policy = policy
        self.limits = scanner.limits
        self.findings: list[Finding] = []
        self.files: list[FileRecord] = []
        self.messages: list[str] = []
        self.workdir = Path(".")

    def scan_file(self, real: Path, display: str, depth: int, budget: Budget) -> None:
        """Scan one file (``real`` on disk, reported as ``display``), recursing into
        containers. Never raises for the file's content."""
        own: list[Finding] = []
        fmt: str | None = None
        size, digest = 0, ""
        # a container's record comes before its members' records
        slot = len(self.files)
        first = len(self.findings)  # members' findings land after this
        self.files.append(FileRecord(display, None, 0, "", "error"))
        try:
            size = real.stat().st_size
            with real.open("rb") as fh:
                fmt = sniff(fh, display)
            if fmt is None:
                if Path(display).suffix.lower() in MODEL_SUFFIXES:
                    # named like a model, but no model format's bytes: corrupt or disguised
                    # medium: no format means nothing ran through our analysers, but also
                    # no evidence of code; unreadable is not the same as malicious
                    own.append(dataclasses.replace(violation(
                        "scan.unrecognised", display, "unknown",
                        f"named like a model file ({Path(display).suffix}) but its bytes "
                        "match no model format mlthreat reads: not scanned"),
                        severity="medium"))
                else:
                    self.files[slot] = FileRecord(display, None, size, "", "skipped",
                                                  "not a model or archive file")
                    return
            else:
                if self.s.hash_files:  # only files that are scanned: skipped ones may be huge
                    size, digest = _digest(real)
                if budget.expired():
                    own.append(violation("scan.timeout", display, fmt,
                                         f"not scanned: the {self.limits.seconds_per_file:g} s "
                                         "budget of its top-level file was spent"))
                elif fmt in ANALYZERS:
                    own.extend(self._analyse(real, display, fmt, size, budget))
                elif fmt in CONTAINERS:
                    own.extend(self._container(real, display, fmt, depth, budget))
        except OSError as exc:
            own.append(violation("scan.unparseable", display, fmt or "unknown",
                                 f"cannot read the file: {exc.strerror or exc}"))
        except Exception as exc:  # a bug must not stop the scan of the other files
            own.append(_internal(display, fmt or "unknown", "scan", exc))
        # an archive is as bad as the worst of its members
        members = self.findings[first:]
        self.findings.extend(own)
        self.files[slot] = FileRecord(display, fmt, size, digest, _verdict(own + members))

    def _analyse(self, real: Path, display: str, fmt: str, size: int,
                 budget: Budget) -> list[Finding]:
        out: list[Finding] = []
        analyze = ANALYZERS.load(fmt)
        bombs: list[Finding] = []
        with real.open("rb") as fh:
            if fmt in _ZIP_MODELS:
                bombs = declared_bombs(fh, display, fmt, self.limits)
                out.extend(bombs)
                fh.seek(0)
            try:
                out.extend(analyze(fh, path=display, size=size, limits=self.limits,
                                   policy=self.policy))
            except FormatError as exc:
                out.extend(exc.findings)
                where = f" at {exc.location}" if exc.location else ""
                out.append(violation("scan.unparseable", display, fmt,
                                     f"cannot parse as {fmt}{where}: {exc}", exc.location))
            except Exception as exc:  # an analyser bug: report it, scan on
                out.append(_internal(display, fmt, ANALYZERS[fmt], exc))
        if budget.expired():
            out.append(violation("scan.timeout", display, fmt,
                                 f"scanning took over {self.limits.seconds_per_file:g} s; "
                                 "engines not run"))
        elif not bombs:
            # engines inflate zip members in memory: never hand them a declared bomb
            out.extend(self._engines(real, display, fmt))
        return merge_findings(out)

    def _engines(self, real: Path, display: str, fmt: str) -> list[Finding]:
        efmt = _ENGINE_FORMAT.get(fmt, fmt)
        names = [e for e in self.s.engines if efmt in _ENGINE_FORMATS[e]]
        if not names:
            return []
        found, messages = run_engines(real, efmt, engines=names, limits=self.limits,
                                      max_bytes=self.s.max_engine_bytes)
        self.messages.extend(f"{display}: {m}" for m in messages)
        # engines saw the temporary copy of a member: report it under its scan name
        return [self._policy_checked(dataclasses.replace(f, path=display, format=fmt))
                for f in found]

    def _policy_checked(self, finding: Finding) -> Finding:
        """An engine's finding about a global the allow-list admits drops to ``info``: the
        engines flag every import outside the standard library (fickling calls joblib's
        array wrapper and numpy's random-state constructors critical), and a reviewed
        allow-list is what decides whether a scikit-learn model fails a build."""
        module, _, name = finding.symbol.rpartition(".")
        if not module or finding.severity == "info" or self.policy.verdict(module, name):
            return finding
        return dataclasses.replace(finding, severity="info", details={
            **finding.details, "engine_severity": finding.severity, "allowed_by_policy": True})

    def _container(self, real: Path, display: str, fmt: str, depth: int,
                   budget: Budget) -> list[Finding]:
        if depth >= self.limits.max_depth:
            return [violation("archive.too-deep", display, fmt,
                              f"archive nested {depth} levels deep; max_depth is "
                              f"{self.limits.max_depth}, so its members are not scanned",
                              depth=depth)]
        out: list[Finding] = []
        for item in open_container(real, fmt, display, budget, self.workdir):
            if isinstance(item, Finding):
                out.append(item)
            elif isinstance(item, Member):
                if item.path is None:
                    self.files.append(FileRecord(item.display, None, item.size, "",
                                                 "error" if item.unscanned else "skipped",
                                                 item.note))
                else:
                    self.scan_file(item.path, item.display, depth + 1, budget)
        return out


def _internal(display: str, fmt: str, where: str, exc: BaseException) -> Finding:
    return violation("scan.internal-error", display, fmt,
                     f"internal error in {where}: {type(exc).__name__}: {exc}",
                     exception=type(exc).__name__)


def _counts(finding: Finding) -> bool:
    """Whether ``finding`` makes a verdict ``findings`` (see the module docstring)."""
    if finding.severity == "info":
        return False
    only_engines = finding.engine != "mlthreat" and "mlthreat" not in finding.engines
    return not (only_engines and severity_rank(finding.severity) > severity_rank(NOTE_BELOW))


def _verdict(findings: list[Finding]) -> str:
    if any(f.rule.startswith(_INCOMPLETE) for f in findings):
        return "error"
    return "findings" if any(_counts(f) for f in findings) else "clean"


def _digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, streamed through one reused 1 MiB buffer (no
    allocation per chunk: multi-gigabyte files hash at disk speed)."""
    h = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    size = 0
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return size, h.hexdigest()
