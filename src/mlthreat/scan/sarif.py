"""Scan findings as a SARIF 2.1.0 log (OASIS Static Analysis Results Interchange Format), for
code-scanning dashboards.

Layout: one run; ``tool.driver`` is ``mlthreat`` with one reporting descriptor per rule ID
(ATLAS technique ID and name in its ``properties``, the technique's mitigations from the
knowledge base, IDs and names, in its ``help``); one result per finding.

Levels: ``critical``/``high`` → ``error``, ``medium`` → ``warning``, ``low``/``info`` →
``note``. Our severity is kept in ``result.properties.severity`` and, as the numeric
``security-severity`` code-scanning services read, on the rule (the worst of its results).

Locations: ``artifactLocation.uri`` is always the file **on disk** — for a finding inside an
archive (``a.zip!b.tar!c.pkl``) that is the outer archive ``a.zip``, because a SARIF viewer
can only open real files — percent-encoded (RFC 3986, ``/`` kept). It is relative: to the
current folder when the file lies under it, else to the scanned root holding it, named by a
``uriBaseId`` (``SCANROOT0`` …) that ``run.originalUriBaseIds`` maps to the root's
``file://`` URI. The member chain and the in-file location go in a logical location of kind
``resource``: ``fullyQualifiedName`` is the full ``archive!member`` path followed by
`` @ <location>`` when there is one, ``name`` the innermost member or location. The finding's
own ``path`` is kept verbatim in ``result.properties.path``.

One result per problem: the scan has already merged the engines' findings on the same file
and global (:mod:`mlthreat.scan.merge`); ``result.properties.engines`` lists every scanner
that reported it and ``properties.engine`` the one whose finding was kept.

``partialFingerprints["mlthreatFinding/v1"]`` is a SHA-256 over rule, place, symbol, location
and engine (:func:`fingerprint`), the place being the path relative to the current folder or to
the scanned root (with the root's base ID), never the absolute path: the same problem in the
same place keeps its identity between runs, and a folder keeps it when it moves or is checked
out elsewhere and scanned by absolute path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlthreat.scan.findings import SEVERITIES, Finding, severity_rank

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["LEVELS", "SARIF_SCHEMA", "Locator", "fingerprint", "to_sarif"]

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note",
          "info": "note"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0",
                      "info": "0.0"}


def _technique_name(kb: KnowledgeBase, technique: str) -> str:
    try:
        return kb.get(technique).name
    except Exception:  # an ID this knowledge base does not have
        return ""


def _mitigations(kb: KnowledgeBase, technique: str) -> list[tuple[str, str]]:
    try:
        return [(m.id, m.name) for m in kb.mitigations_of(technique)]
    except Exception:
        return []


def _rule(rule_id: str, findings: list[Finding], kb: KnowledgeBase) -> dict[str, Any]:
    first = findings[0]
    technique = first.technique
    name = _technique_name(kb, technique)
    mitigations = _mitigations(kb, technique)
    worst = min((f.severity for f in findings), key=severity_rank)
    title = f"{technique} {name}".strip()
    if mitigations:
        lines = [f"- {mid} {mname}" for mid, mname in mitigations]
        text = f"ATLAS {title}. Mitigations:\n" + "\n".join(lines)
        markdown = (f"ATLAS **{technique}** {name}. Mitigations:\n\n"
                    + "\n".join(f"- **{mid}** {mname}" for mid, mname in mitigations))
    else:
        text = f"ATLAS {title}. The knowledge base lists no mitigation for it."
        markdown = text
    return {
        "id": rule_id,
        "name": "".join(p.capitalize() for p in rule_id.replace("-", ".").split(".")),
        "shortDescription": {"text": f"{rule_id} ({title})"},
        # the rule in general: a result's message names its own global, file and place
        "fullDescription": {"text": f"Rule {rule_id} of the mlthreat model scanner. Its "
                                    f"findings are mapped to ATLAS {title}; each result's "
                                    "message says what was found and where."},
        "defaultConfiguration": {"level": LEVELS[worst]},
        "help": {"text": text, "markdown": markdown},
        "properties": {
            "atlas_technique": technique,
            "atlas_technique_name": name,
            "atlas_mitigations": [{"id": mid, "name": mname} for mid, mname in mitigations],
            "security-severity": _SECURITY_SEVERITY[worst],
            "tags": ["security", "ml-model", technique],
        },
    }


class Locator:
    """Turns a finding's on-disk path into a relative, percent-encoded URI.

    A path is relative to the current folder when it lies under it (or was given relative),
    else to the first scanned root holding it, named ``SCANROOT<i>`` (its index in
    ``scanned``); :attr:`bases` collects the roots used, as ``file:`` URIs.
    """

    def __init__(self, scanned: Iterable[str]) -> None:
        self.cwd = Path.cwd().resolve()
        self.roots: list[Path] = []
        for s in scanned:
            p = Path(s).resolve()
            self.roots.append(p if p.is_dir() else p.parent)
        self.bases: dict[str, str] = {}

    def relative(self, disk_path: str) -> tuple[str, str]:
        """``(base ID, path)``: the path (POSIX, not encoded) relative to the current folder
        (base ID ``""``) or to a scanned root (``SCANROOT<i>``); an absolute path under
        neither stays absolute, with base ID ``""``."""
        p = Path(disk_path)
        if not p.is_absolute():
            return "", PurePosixPath(*p.parts).as_posix()
        p = Path(os.path.normpath(p))
        for base_id, root in [("", self.cwd)] + [(f"SCANROOT{i}", r)
                                                 for i, r in enumerate(self.roots)]:
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            if base_id:
                self.bases[base_id] = root.as_uri().rstrip("/") + "/"
            return base_id, rel.as_posix()
        return "", p.as_posix()

    def locate(self, disk_path: str) -> dict[str, Any]:
        """A SARIF ``artifactLocation``: ``uri`` and, relative to a scanned root, its
        ``uriBaseId``; a path outside every root is an absolute ``file:`` URI."""
        base_id, rel = self.relative(disk_path)
        if base_id:
            return {"uri": quote(rel, safe="/"), "uriBaseId": base_id}
        if PurePosixPath(rel).is_absolute():
            return {"uri": Path(rel).as_uri()}
        return {"uri": quote(rel, safe="/")}


def fingerprint(f: Finding, locator: Locator) -> str:
    """SHA-256 (hex) over the finding's rule, place, global, location in the file and engine.

    The place is the file's path as :meth:`Locator.relative` gives it (relative to the current
    folder, or to its scanned root and that root's base ID) with the archive member chain, so
    a folder scanned by absolute path gives the same fingerprints wherever it sits; a path
    given relative hashes as it always has. SARIF's ``partialFingerprints`` and the CycloneDX
    finding ``bom-ref`` both use it.
    """
    disk, bang, member = f.path.partition("!")
    base_id, rel = locator.relative(disk)
    # NUL never occurs in a path: a base ID cannot be mistaken for a folder name
    place = (f"{base_id}\x00{rel}" if base_id else rel) + bang + member
    key = "\x1f".join((f.rule, place, f.symbol, f.location, f.engine))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def to_sarif(findings: Iterable[Finding], *, kb: KnowledgeBase, tool_version: str,
             scanned: list[str]) -> dict[str, Any]:
    """A SARIF 2.1.0 log (a JSON-ready dict) of ``findings``.

    Parameters
    ----------
    findings : iterable of Finding
    kb : KnowledgeBase
        For technique names and mitigations (a technique it lacks gets an empty name).
    tool_version : str
        mlthreat's version, as ``tool.driver.version``.
    scanned : list of str
        The paths given to the scan; kept in ``run.properties.scanned`` and used as the base
        of URIs for files outside the current folder.

    Raises
    ------
    ValueError
        For a finding whose severity is not one of :data:`~mlthreat.scan.findings.SEVERITIES`.
    """
    items = list(findings)
    for f in items:
        if f.severity not in SEVERITIES:
            raise ValueError(f"finding {f.rule} has unknown severity {f.severity!r}")
    by_rule: dict[str, list[Finding]] = {}
    for f in items:
        by_rule.setdefault(f.rule, []).append(f)
    rule_ids = sorted(by_rule)
    index = {r: i for i, r in enumerate(rule_ids)}
    locator = Locator(scanned)
    results = []
    for f in items:
        disk, _, member = f.path.partition("!")
        logical_name = member.rsplit("!", 1)[-1] if member else ""
        fqn = f.path if member else ""
        if f.location:
            fqn = f"{fqn or f.path} @ {f.location}"
            logical_name = f.location
        location: dict[str, Any] = {
            "physicalLocation": {"artifactLocation": locator.locate(disk)}}
        if fqn:
            location["logicalLocations"] = [
                {"name": logical_name, "fullyQualifiedName": fqn, "kind": "resource"}]
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": LEVELS[f.severity],
            "message": {"text": f.message},
            "locations": [location],
            "partialFingerprints": {"mlthreatFinding/v1": fingerprint(f, locator)},
            "properties": {"severity": f.severity, "technique": f.technique,
                           "engine": f.engine, "engines": list(f.engines or (f.engine,)),
                           "symbol": f.symbol, "format": f.format,
                           "path": f.path, "details": dict(f.details)},
        })
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "mlthreat",
            "version": tool_version,
            "semanticVersion": tool_version,
            "rules": [_rule(r, by_rule[r], kb) for r in rule_ids],
            "properties": kb.provenance(),
        }},
        "columnKind": "unicodeCodePoints",
        "results": results,
        "invocations": [{"executionSuccessful": True}],
        "properties": {"scanned": list(scanned)},
    }
    if locator.bases:
        run["originalUriBaseIds"] = {k: {"uri": v} for k, v in sorted(locator.bases.items())}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
