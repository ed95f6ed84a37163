"""The scan report a user reads: what the scanner found, with the integrity checks of the
folder (a digest manifest, an OpenSSF model signature) merged in, each technique's name and
mitigations from the knowledge base, and the exit code a ``fail_on`` severity gives.

``ScanResult.to_dict()`` is the document ``mlthreat scan --json`` writes (kind
``mlthreat.scan.report``, schema ``mlthreat/schemas/scan.report.schema.json``), and
``ScanResult.to_json()`` its exact text; the command line is a thin layer over
:func:`build_report`.

Example::

    from mlthreat import kb
    from mlthreat.scan.report import build_report
    from mlthreat.scan.scanner import Scanner

    found = Scanner().run(["models/"])
    result = build_report(found, ["models/"], kb.load(), manifest="manifest.json")
    print(result.exit_code, result.notes)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.errors import UsageError
from mlthreat.scan.findings import SEVERITIES, Finding, severity_rank

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase
    from mlthreat.scan.scanner import ScanReport

__all__ = ["FAIL_ON", "REPORT_KIND", "SIGNATURE_NAME", "ScanResult", "build_report",
           "check_integrity", "signature_in", "technique_info"]

REPORT_KIND = "mlthreat.scan.report"
#: The file name model-signing gives a signature by default.
SIGNATURE_NAME = "model.sig"
#: What ``fail_on`` takes: a severity, or ``never``.
FAIL_ON: tuple[str, ...] = (*SEVERITIES, "never")


def signature_in(paths: Sequence[str | Path]) -> Path | None:
    """``model.sig`` in the one model folder scanned, if there is one."""
    if len(paths) == 1 and Path(paths[0]).is_dir() and \
            (Path(paths[0]) / SIGNATURE_NAME).is_file():
        return Path(paths[0]) / SIGNATURE_NAME
    return None


def technique_info(kb: KnowledgeBase, findings: Sequence[Finding]) -> dict[str, Any]:
    """Name and mitigations (from the knowledge base; a parent's count for its
    sub-techniques) of every technique ``findings`` name, by ID in order."""
    out: dict[str, Any] = {}
    for tid in sorted({f.technique for f in findings}):
        if tid not in kb:
            out[tid] = {"name": "", "mitigations": []}
            continue
        out[tid] = {"name": kb.get(tid).name,
                    "mitigations": [{"id": m.id, "name": m.name}
                                    for m in kb.mitigations_of(tid)]}
    return out


def check_integrity(paths: Sequence[str | Path], *, manifest: str | Path | None = None,
                    signature: str | Path | None = None,
                    public_key: str | Path | None = None,
                    certificate_chain: Sequence[str | Path] | None = None,
                    verify_hint: str = "public_key or certificate_chain",
                    ) -> tuple[list[Finding], list[str]]:
    """The findings and one-line notes of the integrity checks of the one folder (or file)
    in ``paths``.

    Parameters
    ----------
    paths : list of path
        What was scanned; a check needs exactly one.
    manifest : path, optional
        SHA-256 manifest (:func:`mlthreat.scan.manifest.write_manifest`) to check the files
        against: files added, missing or changed are findings.
    signature : path, optional
        OpenSSF model signature (Sigstore bundle) to verify with ``public_key`` or
        ``certificate_chain``. Without one, a ``model.sig`` in the folder is verified when a
        key is given, and noted as not verified when none is.
    public_key, certificate_chain : path, optional
        What made the signature.
    verify_hint : str
        What the note on a ``model.sig`` left unverified says would verify it (the command
        line names its options here).

    Returns
    -------
    findings : list of Finding
        Manifest differences, then a signature that does not verify.
    notes : list of str
        What each check concluded.

    Raises
    ------
    UsageError
        For a check over more or fewer than one path, or a key without a signature to verify.
    """
    notes: list[str] = []
    findings: list[Finding] = []
    found = signature_in(paths) if signature is None else None
    if (public_key or certificate_chain) and signature is None:
        if found is None:
            raise UsageError(f"public_key and certificate_chain need a signature (or a "
                             f"{SIGNATURE_NAME} in the scanned model folder)")
        signature, found = found, None
    if found is not None:
        notes.append(f"signature {found}: an OpenSSF model signature, not verified; "
                     f"{verify_hint} verifies it")
    if manifest is not None:
        from mlthreat.scan.manifest import check_manifest

        if len(paths) != 1:
            raise UsageError("a manifest checks one folder or file; give exactly one path")
        checked = check_manifest(manifest, paths[0])
        findings += checked
        notes.append(f"manifest {manifest}: " + (
            f"{len(checked)} difference(s)" if checked else "every file matches"))
    if signature is not None:
        from mlthreat.scan.signing import verify_signature

        if len(paths) != 1:
            raise UsageError("a signature verifies one model folder; give exactly one path")
        bad = verify_signature(paths[0], signature, public_key=public_key,
                               certificate_chain=list(certificate_chain or []) or None)
        findings += bad
        notes.append(f"signature {signature}: " + ("does NOT verify" if bad else "verified"))
    return findings, notes


@dataclass(frozen=True)
class ScanResult:
    """A scan with its integrity checks, as reported.

    Attributes
    ----------
    report : ScanReport
        The scanner's report with the checks' findings merged in (most severe first, then by
        path).
    kb : KnowledgeBase
        What the findings' techniques resolve against.
    notes : list of str
        What each integrity check concluded (``checks`` in the document).
    fail_on : str
        The least severe finding that fails the scan, or ``never``.
    """

    report: ScanReport
    kb: KnowledgeBase
    notes: list[str] = field(default_factory=list)
    fail_on: str = "high"

    @property
    def findings(self) -> list[Finding]:
        return self.report.findings

    @property
    def exit_code(self) -> int:
        """1 when a finding is at least as severe as ``fail_on``, else 0."""
        return 0 if self.fail_on == "never" else self.report.exit_code(self.fail_on)

    def to_dict(self) -> dict[str, Any]:
        """The ``mlthreat.scan.report`` document, fields in their fixed order."""
        from mlthreat import __version__

        body = self.report.to_dict()
        for key in ("kind", "schema_version"):
            body.pop(key)
        return {"kind": REPORT_KIND, "schema_version": 1, "mlthreat_version": __version__,
                **self.kb.provenance(), **body,
                "techniques": technique_info(self.kb, self.report.findings),
                "checks": list(self.notes), "fail_on": self.fail_on,
                "exit_code": self.exit_code}

    def to_json(self) -> str:
        """:meth:`to_dict` as text, the bytes ``mlthreat scan --json`` writes (once encoded
        as UTF-8 with ``backslashreplace``)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def build_report(report: ScanReport, paths: Sequence[str | Path], kb: KnowledgeBase, *,
                 manifest: str | Path | None = None, signature: str | Path | None = None,
                 public_key: str | Path | None = None,
                 certificate_chain: Sequence[str | Path] | None = None,
                 fail_on: str = "high",
                 verify_hint: str = "public_key or certificate_chain") -> ScanResult:
    """The report of a scan of ``paths`` with the integrity checks of
    :func:`check_integrity` merged into its findings.

    ``report`` is left as it was; the result holds a copy with the checks' findings.

    Raises
    ------
    UsageError
        For a ``fail_on`` not in :data:`FAIL_ON`, or as :func:`check_integrity`.
    """
    if fail_on not in FAIL_ON:
        raise UsageError(f"unknown severity {fail_on!r} for fail_on; choose one of "
                         f"{', '.join(FAIL_ON)}")
    extra, notes = check_integrity(paths, manifest=manifest, signature=signature,
                                   public_key=public_key, certificate_chain=certificate_chain,
                                   verify_hint=verify_hint)
    if extra:
        report = dataclasses.replace(report, findings=sorted(
            report.findings + extra, key=lambda f: (severity_rank(f.severity), f.path)))
    return ScanResult(report, kb, notes, fail_on)
