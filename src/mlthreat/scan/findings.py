"""What a scan reports: findings, their severities and ATLAS techniques, and the limits a scan
keeps to.

Every analyser (one module per format in :mod:`mlthreat.scan.formats`) reads a file object
without ever loading the model it holds, and returns :class:`Finding` objects; a file it cannot
parse raises :class:`FormatError`, which the scan turns into a finding (a file that cannot be
read is never "clean").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlthreat.errors import MlthreatError

__all__ = ["SEVERITIES", "TECHNIQUES", "Finding", "FormatError", "Limits", "printable",
           "severity_rank"]

# Most severe first; ``--fail-on`` compares ranks.
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")

# The ATLAS techniques scan findings are keyed by (names come from the knowledge base).
TECHNIQUES = {
    # a model file that runs code when loaded (unsafe global, Lambda layer, template code…)
    "unsafe": "AML.T0011.000",
    # code hidden inside the model (nested pickle/marshal payloads, obfuscated imports)
    "malware": "AML.T0018.002",
    # the artifact is not what was published (digest or signature mismatch, tampered file)
    "tampered": "AML.T0010.003",
}


def printable(text: str) -> str:
    """``text`` safe to print and to encode as UTF-8: undecodable bytes of a file name (kept by
    Python as lone surrogates) become ``\\xNN``, control characters (a terminal escape in a
    hostile file name) their ``\\x``/``\\u`` escapes."""
    if text.isprintable():
        return text
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)


def severity_rank(severity: str) -> int:
    """0 for ``critical`` … 4 for ``info``. Raises ValueError for an unknown severity."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Finding:
    """One problem in one file.

    Attributes
    ----------
    path : str
        The file; a member of an archive is ``archive!member`` (nested: ``a.zip!b.tar!c.pkl``).
    format : str
        The format the file was recognised as by its bytes (``pickle``, ``pytorch-zip``,
        ``numpy``, ``keras-h5``, ``onnx``, ``safetensors``, ``gguf``, ``skops``, ``zip`` …).
    severity : str
        One of :data:`SEVERITIES`.
    rule : str
        Stable rule ID (``pickle.global-not-allowed``, ``onnx.external-data-escape`` …).
    message : str
        One line for a person.
    technique : str
        Full ATLAS ID (one of :data:`TECHNIQUES`' values).
    location : str
        Where in the file: ``offset 123 (STACK_GLOBAL)``, ``layer 'lambda_1'``, ``entry data.pkl``.
    symbol : str
        The offending global (``os.system``), operator or type, when there is one.
    engine : str
        Who found it: ``mlthreat`` or the underlying scanner (``fickling``, ``picklescan``,
        ``modelscan``); for a merged finding, whose finding was kept.
    details : dict
        JSON-ready extra facts (sizes, digests, counts).
    engines : tuple of str
        Every scanner that reported this problem, once each (``("mlthreat", "fickling")``);
        empty means just ``engine``. Set when the scan merges the engines' findings on the same
        file and global (see :mod:`mlthreat.scan.merge`).
    """

    path: str
    format: str
    severity: str
    rule: str
    message: str
    technique: str
    location: str = ""
    symbol: str = ""
    engine: str = "mlthreat"
    details: dict[str, Any] = field(default_factory=dict)
    engines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "severity": self.severity,
                "rule": self.rule, "message": self.message, "technique": self.technique,
                "location": self.location, "symbol": self.symbol, "engine": self.engine,
                "engines": list(self.engines or (self.engine,)),
                "details": dict(self.details)}


class FormatError(MlthreatError):
    """A file that claims a format (by its bytes) but cannot be parsed as it: truncated,
    corrupt, or beyond a limit. ``location`` says where parsing stopped; ``findings`` holds
    what the analyser had found before (a payload followed by garbage stays a payload)."""

    def __init__(self, message: str, location: str = "",
                 findings: list[Finding] | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.findings: list[Finding] = list(findings or [])

    def within(self, member: str, before: list[Finding]) -> FormatError:
        """This error as seen from the archive holding ``member``: the message and location
        name the member, and the archive's findings so far come first."""
        return FormatError(f"{member}: {self}", f"entry {member}, {self.location}".rstrip(", "),
                           before + self.findings)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a scan's memory and time finite on hostile input.

    Attributes
    ----------
    max_opcodes : int
        Pickle opcodes read per stream before giving up (a finding, not a hang).
    max_header_bytes : int
        Largest metadata block read into memory (safetensors header, Keras config, GGUF
        string, ONNX message other than tensor data), in bytes.
    max_depth : int
        Archive nesting depth (zip in tar in zip …).
    max_members : int
        Members per archive.
    max_ratio : float
        Largest uncompressed/compressed size ratio accepted for an archive member (zip bombs).
    ratio_floor : int
        Members unpacking to at most this many bytes are exempt from ``max_ratio`` (an array
        of zeros compresses a thousandfold and is no bomb).
    max_unpacked_bytes : int
        Total bytes unpacked from one top-level file's archives.
    seconds_per_file : float
        Wall-clock budget per top-level file.
    """

    max_opcodes: int = 50_000_000
    max_header_bytes: int = 64 * 1024 * 1024
    max_depth: int = 4
    max_members: int = 100_000
    max_ratio: float = 200.0
    ratio_floor: int = 1 << 20
    max_unpacked_bytes: int = 16 * 1024**3
    seconds_per_file: float = 300.0

    def unpack_cap(self, compressed: int) -> int:
        """Most bytes a member of ``compressed`` bytes may unpack to before it counts as a
        decompression bomb."""
        return max(int(self.max_ratio * max(compressed, 0)), self.ratio_floor)
