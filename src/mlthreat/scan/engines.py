"""Second opinions: run the well-kept third-party scanners on one file and turn their results
into :class:`~mlthreat.scan.findings.Finding` objects (``engine`` set to the scanner's name).

None of the engines loads the model. Each API used here was read in the installed source:

``fickling`` 0.1.12
    :meth:`fickling.fickle.StackedPickle.load` disassembles a stream with
    :func:`pickletools.genops` and :func:`fickling.analysis.check_safety` runs its analyses on
    the symbolic interpretation of the opcodes (an AST); neither calls :func:`pickle.load`
    (only ``fickling.load``/``fickling.loads``, never used here, unpickle after the check).
    It keeps **every opcode with its argument bytes in memory**, so it costs about the size of
    the pickle; a zip member is read whole into memory before analysis.
``picklescan`` 1.0.5
    :func:`picklescan.scanner.scan_pickle_bytes`, :func:`~picklescan.scanner.scan_numpy` and
    :func:`~picklescan.scanner.scan_zip_bytes` list the globals a stream names, by
    :func:`pickletools.genops` over the open file (streamed, but the opcode list of one pickle
    is kept in memory); ``scan_numpy`` reads only the ``.npy`` header with
    :func:`numpy.lib.format.read_array_header_1_0` (never ``numpy.load``). We call these
    per format instead of ``scan_file_path``, which chooses by file extension and so can be
    misled by a renamed file.
``modelscan`` 0.8.8
    :meth:`modelscan.modelscan.ModelScan.scan` with the default settings. Its pickle scanners
    are picklescan-style ``genops`` walks; the Keras/H5 scanners read the ``model_config``
    JSON (``h5py`` attributes, or ``config.json`` in a ``.keras`` zip) and never build the
    model; the SavedModel scanner parses the protobuf and needs TensorFlow (absent: reported
    as an engine error). ModelScan picks its scanners by file *extension*, so the file is
    scanned through a symbolic link named after the format we recognised by its bytes
    (``model.pkl``, ``model.pt`` …).

Standard output: fickling writes warnings to ``sys.stdout`` on malformed pickles, and native
code under any engine could write to file descriptor 1 directly; a scan whose report goes to
stdout (``--json``, ``-f sarif``) must print exactly one document. So every engine runs with
fd 1 pointed at a temporary file (``os.dup2``, which catches native writes too) and
``sys.stdout`` at a text buffer; whatever an engine printed is kept out of the report and
summarised as one engine message (``fickling: printed 180 bytes to standard output (not
shown): Warning: malformed pickle …``).

Size cap: engines are skipped (and the skip is reported) for a file larger than
``max_bytes``, :data:`DEFAULT_MAX_ENGINE_BYTES` (1 GiB) unless given, because fickling holds
the whole pickle in memory and the other two hold a pickle's opcode list. Our own analysers,
which stream, still scan such a file.

Severity mapping (theirs → ours):

========================  ======================================================  ========
engine                    their level                                             ours
========================  ======================================================  ========
fickling                  ``OVERTLY_MALICIOUS``, ``LIKELY_OVERTLY_MALICIOUS``     critical
fickling                  ``LIKELY_UNSAFE``, ``SUSPICIOUS``                       low
fickling                  ``POSSIBLY_UNSAFE``                                     info
fickling                  ``LIKELY_SAFE``                                         (none)
picklescan                ``dangerous``                                           critical
picklescan                ``suspicious``                                          low
picklescan                ``innocuous``                                           (none)
modelscan                 ``CRITICAL`` / ``HIGH`` / ``MEDIUM`` / ``LOW``          same
========================  ======================================================  ========

fickling's ``LIKELY_UNSAFE`` and picklescan's ``suspicious`` mean "imports something outside
the standard library / outside our short allow-list": every scikit-learn or NumPy pickle gets
them, so they are ``low`` (the allow-list verdict is our own analyser's job).

A finding's technique is ``TECHNIQUES["unsafe"]``, or ``TECHNIQUES["malware"]`` when the
named global is on the default policy's ``payload`` list (``marshal.loads``, ``pickle.loads``
…). Rule IDs are ``<engine>.<their rule, in kebab case>`` (``fickling.unsafe-imports``,
``modelscan.unsafe-operator``) or ``picklescan.unsafe-global`` (picklescan names no rules).
``symbol`` is the named global normalised to ``module.name``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, Limits, printable

__all__ = ["DEFAULT_MAX_ENGINE_BYTES", "ENGINES", "engine_versions", "run_engines"]

ENGINES: tuple[str, ...] = ("fickling", "picklescan", "modelscan")

DEFAULT_MAX_ENGINE_BYTES = 1024**3

# Formats (as recognised by our sniffer) each engine can read.
_ZIPS = frozenset({"pytorch-zip", "zip", "skops"})
_SUPPORTED: dict[str, frozenset[str]] = {
    "fickling": frozenset({"pickle"}) | _ZIPS,
    "picklescan": frozenset({"pickle", "numpy"}) | _ZIPS,
    "modelscan": frozenset({"pickle", "numpy", "keras-h5", "keras"}) | _ZIPS,
}
# The file name modelscan is shown, since it chooses scanners by extension.
_MODELSCAN_SUFFIX = {"pickle": ".pkl", "numpy": ".npy", "keras-h5": ".h5", "keras": ".keras",
                     "pytorch-zip": ".pt", "zip": ".zip", "skops": ".zip"}
_PICKLE_MEMBER = re.compile(r"\.(pkl|pickle|bin)$|(^|/)data\.pkl$", re.IGNORECASE)
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def engine_versions() -> dict[str, str]:
    """The installed version of each engine (``"not installed"`` when it cannot be found)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in ENGINES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_engines(path: Path, fmt: str, *, engines: Sequence[str] = ENGINES, limits: Limits,
                max_bytes: int = DEFAULT_MAX_ENGINE_BYTES) -> tuple[list[Finding], list[str]]:
    """Run the named engines on one file, never loading it.

    Parameters
    ----------
    path : Path
        The file (not a directory).
    fmt : str
        Its format as recognised by its bytes (``pickle``, ``pytorch-zip``, ``numpy`` …).
    engines : sequence of str
        A subset of :data:`ENGINES`.
    limits : Limits
        ``max_members`` bounds the zip members fickling reads.
    max_bytes : int
        Files larger than this are not given to any engine (see the module docstring).

    Returns
    -------
    (findings, messages)
        Findings with ``engine`` set, and one message per engine that was skipped, does not
        support ``fmt``, or failed (``"picklescan: …"``). An engine's crash never stops the
        others.

    Raises
    ------
    ValueError
        For an engine name not in :data:`ENGINES`.
    """
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    findings: list[Finding] = []
    messages: list[str] = []
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [], [f"{e}: cannot read {path}: {exc.strerror or exc}" for e in engines]
    if size > max_bytes:
        return [], [f"{e}: skipped, {size} bytes is over the engine size cap of {max_bytes}"
                    for e in engines]
    runners = {"fickling": _run_fickling, "picklescan": _run_picklescan,
               "modelscan": _run_modelscan}
    for name in engines:
        if fmt not in _SUPPORTED[name]:
            messages.append(f"{name}: does not support format {fmt!r}")
            continue
        printed: list[str] = []
        try:
            with _stdout_captured(printed):
                found, notes = runners[name](path, fmt, limits, max_bytes)
        except Exception as exc:  # a third-party engine must never stop the scan
            messages.append(f"{name}: failed: {type(exc).__name__}: {exc}")
            continue
        finally:
            messages.extend(f"{name}: {p}" for p in printed)
        findings.extend(found)
        messages.extend(f"{name}: {n}" for n in notes)
    return findings, messages


# --- helpers -------------------------------------------------------------------------------

_PRINTED_SHOWN = 160  # characters of an engine's stray output quoted in its message


@contextmanager
def _stdout_captured(printed: list[str]) -> Iterator[None]:
    """Run the body with file descriptor 1 on a temporary file and ``sys.stdout`` on a string
    buffer; afterwards append a one-line summary of anything written to ``printed``.

    Redirecting ``sys.stdout`` alone would miss C extensions and ``os.write(1, …)``;
    redirecting fd 1 alone would miss text still in Python's buffer when we restore it. Both
    are swapped, our own buffered output is flushed first so it is not captured, and fd 1 is
    restored in ``finally`` whatever the engine raised.
    """
    text = io.StringIO()
    with contextlib.ExitStack() as stack:
        try:
            sys.stdout.flush()
            saved = os.dup(1)
        except (OSError, ValueError, AttributeError):  # no fd 1 (embedded use): text only
            saved = -1
        sink = stack.enter_context(tempfile.TemporaryFile())
        if saved >= 0:
            os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(text):
                yield
        finally:
            if saved >= 0:
                # what went to the real stdout object is still in its buffer: into the sink
                if sys.__stdout__ is not None:
                    with contextlib.suppress(OSError, ValueError):
                        sys.__stdout__.flush()
                os.dup2(saved, 1)
                os.close(saved)
            sink.seek(0)
            raw = sink.read().decode("utf-8", "replace") + text.getvalue()
            if raw.strip():
                first = printable(raw.strip().splitlines()[0][:_PRINTED_SHOWN])
                printed.append(f"printed {len(raw)} characters to standard output "
                               f"(kept out of the report): {first}")

def _kebab(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unsafe-global"


_PAYLOAD_POLICY: Any = None


def _technique(symbol: str) -> str:
    """``malware`` when the default policy lists ``symbol`` as a payload unpacker."""
    global _PAYLOAD_POLICY
    if not symbol or "." not in symbol:
        return TECHNIQUES["unsafe"]
    if _PAYLOAD_POLICY is None:
        from mlthreat.scan.policy import Policy

        _PAYLOAD_POLICY = Policy(allowed=(), payload=Policy.default().payload)
    module, name = symbol.rsplit(".", 1)
    verdict = _PAYLOAD_POLICY.verdict(module, name)
    return TECHNIQUES["malware"] if verdict and verdict[1] == "payload" else TECHNIQUES["unsafe"]


def _finding(path: Path, fmt: str, engine: str, severity: str, rule: str, message: str,
             symbol: str, location: str = "", details: dict[str, Any] | None = None) -> Finding:
    return Finding(path=str(path), format=fmt, severity=severity, rule=f"{engine}.{rule}",
                   message=message, technique=_technique(symbol), location=location,
                   symbol=symbol, engine=engine, details=details or {})


# --- fickling ------------------------------------------------------------------------------

def _fickling_severity(level: Any) -> str | None:
    from fickling.analysis import Severity

    if level >= Severity.LIKELY_OVERTLY_MALICIOUS:
        return "critical"
    if level >= Severity.SUSPICIOUS:
        return "low"
    if level >= Severity.POSSIBLY_UNSAFE:
        return "info"
    return None


_FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+([\w.]+)")
_CALLEE = re.compile(r"^(?:\w+:\s*)?([A-Za-z_][\w]*)")


def _fickling_symbol(trigger: str, imported: dict[str, str]) -> str:
    """``module.name`` from a fickling trigger (``from os import system``, ``system('id')``,
    ``_var0: system('id')``, ``LogisticRegression.__new__(...)``)."""
    m = _FROM_IMPORT.match(trigger)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = _CALLEE.match(trigger)
    if m and m.group(1) in imported:
        return imported[m.group(1)]
    return ""


def _fickling_stream(path: Path, fmt: str, fh: BinaryIO, location: str) -> list[Finding]:
    from fickling.analysis import check_safety
    from fickling.fickle import StackedPickle

    out: list[Finding] = []
    seen: set[tuple[str, str, str]] = set()
    stacked = StackedPickle.load(fh, fail_on_decode_error=False)
    for index, pickled in enumerate(stacked):
        imported: dict[str, str] = {}
        for node in pickled.properties.imports:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        where = location + (f"pickle #{index}" if len(stacked) > 1 else "")
        for result in check_safety(pickled).results:
            severity = _fickling_severity(result.severity)
            if severity is None:
                continue
            trigger = result.trigger or ""
            symbol = _fickling_symbol(trigger, imported)
            rule = _kebab(result.analysis_name or "unsafe-global")
            key = (rule, symbol, result.message or "")
            if key in seen:
                continue
            seen.add(key)
            out.append(_finding(path, fmt, "fickling", severity, rule,
                                result.message or "fickling reports an unsafe pickle", symbol,
                                where.strip(", "),
                                {"engine_severity": result.severity.name, "trigger": trigger}))
    return out


def _run_fickling(path: Path, fmt: str, limits: Limits,
                  max_bytes: int) -> tuple[list[Finding], list[str]]:
    import io
    import zipfile

    if fmt == "pickle":
        with path.open("rb") as fh:
            return _fickling_stream(path, fmt, fh, ""), []
    findings: list[Finding] = []
    notes: list[str] = []
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_members:
            notes.append(f"only the first {limits.max_members} of {len(infos)} members read")
            infos = infos[: limits.max_members]
        for info in infos:
            if info.file_size > max_bytes:
                notes.append(f"member {info.filename} skipped, over the size cap")
                continue
            with zf.open(info) as member:
                head = member.read(2)
            if not (_PICKLE_MEMBER.search(info.filename) or head in _PICKLE_MAGIC):
                continue
            data = zf.read(info)
            findings.extend(_fickling_stream(path, fmt, io.BytesIO(data),
                                             f"entry {info.filename}, "))
    return findings, notes


# --- picklescan ----------------------------------------------------------------------------

def _run_picklescan(path: Path, fmt: str, limits: Limits,
                    max_bytes: int) -> tuple[list[Finding], list[str]]:
    from picklescan.scanner import SafetyLevel, scan_numpy, scan_pickle_bytes, scan_zip_bytes

    with path.open("rb") as fh:
        if fmt == "pickle":
            result = scan_pickle_bytes(fh, str(path))
        elif fmt == "numpy":
            result = scan_numpy(fh, str(path))
        else:
            result = scan_zip_bytes(fh, str(path))
    notes = ["could not parse every pickle in the file (scan_err)"] if result.scan_err else []
    findings: list[Finding] = []
    seen: set[str] = set()
    for g in result.globals:
        if g.safety == SafetyLevel.Innocuous:
            continue
        symbol = f"{g.module}.{g.name}"
        if symbol in seen:
            continue
        seen.add(symbol)
        severity = "critical" if g.safety == SafetyLevel.Dangerous else "low"
        findings.append(_finding(path, fmt, "picklescan", severity, "unsafe-global",
                                 f"picklescan: {g.safety.value} global {symbol}", symbol,
                                 details={"engine_severity": g.safety.value}))
    return findings, notes


# --- modelscan -----------------------------------------------------------------------------

_MODELSCAN_SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MEDIUM": "medium", "LOW": "low"}


@contextmanager
def _named_as(path: Path, suffix: str) -> Iterator[Path]:
    """A symbolic link to ``path`` whose name ends in ``suffix`` (``path`` itself if it
    already does or a link cannot be made)."""
    if path.suffix.lower() == suffix:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlthreat-modelscan-") as tmp:
        link = Path(tmp) / f"model{suffix}"
        try:
            link.symlink_to(path.resolve())
        except OSError:
            yield path
            return
        yield link


def _run_modelscan(path: Path, fmt: str, limits: Limits,
                   max_bytes: int) -> tuple[list[Finding], list[str]]:
    import logging

    from modelscan.modelscan import ModelScan

    logging.getLogger("modelscan").setLevel(logging.CRITICAL)
    findings: list[Finding] = []
    notes: list[str] = []
    with _named_as(path, _MODELSCAN_SUFFIX[fmt]) as target:
        scanner = ModelScan()
        scanner.scan(target)
        shown = str(target)
        for issue in scanner.issues.all_issues:
            d = issue.details
            module = str(getattr(d, "module", ""))
            operator = str(getattr(d, "operator", ""))
            symbol = f"{module}.{operator}" if module and operator else module or operator
            source = str(getattr(d, "source", ""))
            member = source[len(shown) + 1:] if source.startswith(shown + ":") else ""
            findings.append(_finding(
                path, fmt, "modelscan", _MODELSCAN_SEVERITY.get(issue.severity.name, "high"),
                _kebab(issue.code.name),
                f"modelscan: unsafe operator {symbol}", symbol,
                f"entry {member}" if member else "",
                {"engine_severity": issue.severity.name,
                 "engine_scanner": str(getattr(d, "scanner", ""))}))
        for error in scanner.errors:
            notes.append(f"error: {str(error).replace(shown, path.name)}")
        for skipped in scanner.skipped:
            # modelscan names the file by a path of its own making: keep the member part
            source = str(skipped.source)
            where = source[len(shown) + 1:] if source.startswith(shown + ":") else ""
            notes.append(f"skipped {where or 'the file'}: {skipped.message}")
    # it repeats one error per member of an archive: once is enough
    return findings, list(dict.fromkeys(notes))
