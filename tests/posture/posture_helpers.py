"""Builders for posture tests: profile YAML written to a temporary folder, and evidence
documents built by hand in the shapes their schemas define."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from mlthreat import __version__
from mlthreat.kb import KnowledgeBase


def write_profile(folder: Path, text: str, name: str = "profile.yaml") -> Path:
    """Write dedented YAML ``text`` to ``folder/name`` and return the path."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), "utf-8")
    return path


def write_json(folder: Path, name: str, data: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(data), "utf-8")
    return path


def assessment_report(kb: KnowledgeBase, findings: list[tuple[str, str]],
                      mitigated: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """A ``report.json`` (kind mlthreat.assessment, schema 1) with one finding per
    ``(technique, status)`` against target ``demo`` as deployed, and ``mitigated`` ones behind
    a ``round:2`` mitigation."""

    def finding(technique: str, status: str, mitigation: str | None) -> dict[str, Any]:
        tactics = [t.id for t in kb.tactics_of(technique)]
        return {
            "target": "demo", "mitigation": mitigation, "run": f"run-{technique}",
            "technique": technique, "name": "a run", "tactics": tactics,
            "tactic": tactics[0] if tactics else None, "related_techniques": [],
            "status": status, "reason": f"{status} on purpose", "rule": "a rule",
            "metrics": {"fidelity": {"value": 0.9, "unit": "fraction", "n": 100}},
            "queries": 10, "evaluation_queries": 0, "seconds": 0.1, "params": {},
            "mitigations": [m.id for m in kb.mitigations_of(technique)], "curves": {},
            "evidence": {},
        }

    rows = [finding(t, s, None) for t, s in findings]
    rows += [finding(t, s, "round:2") for t, s in mitigated]
    return {
        "kind": "mlthreat.assessment", "schema_version": 1, "mlthreat_version": __version__,
        "atlas_version": kb.version, "atlas_source": kb.source,
        "created": "2026-01-01T00:00:00Z", "seed": 0, "budget": None, "total_budget": None,
        "interrupted": False, "seconds": 1.0, "queries_total": 10,
        "data": {"source": "digits", "sha256": "", "pool": 10, "eval": 10, "members": None,
                 "non_members": None, "features": 64},
        "targets": [{"kind": "sklearn", "model_id": "demo", "description": "demo",
                     "input_shape": [64], "n_classes": 10, "output_kind": "scores",
                     "access": "black-box", "task": "classification"}],
        "mitigation": "round:2" if mitigated else None,
        "summary": {s: sum(1 for _, x in findings if x == s)
                    for s in ("succeeded", "failed", "not-applicable", "error")},
        "findings": rows, "comparison": [], "tactic_names": {}, "files": {
            "json": "report.json", "html": "report.html", "layer": "layer.json",
            "queries": "queries.jsonl"},
    }


def detection_evaluation(kb: KnowledgeBase,
                         rates: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A ``detect evaluate --json`` document: ``rates[detector][truth] = rate``."""
    scores = []
    for detector, by_truth in rates.items():
        for truth, rate in by_truth.items():
            flagged = round(rate * 100)
            scores.append({"detector": detector, "truth": truth, "clients": 100,
                           "flagged": flagged, "rate": rate, "ci95": [0.0, 1.0],
                           "median_queries": None})
    return {"kind": "mlthreat.detect.evaluation", "schema_version": 1,
            "mlthreat_version": __version__, "atlas_version": kb.version,
            "atlas_source": kb.source,
            "read": [{"source": "logs.jsonl", "lines": 10, "events": 10, "skipped": {}}],
            "scores": scores}


def scan_report(findings: list[tuple[str, str]]) -> dict[str, Any]:
    """An ``mlthreat scan --json`` document with ``(technique, severity)`` findings."""
    return {"kind": "mlthreat.scan.report", "schema_version": 1, "findings": [
        {"path": "model.pkl", "format": "pickle", "severity": severity, "rule": "unsafe-global",
         "message": "loads os.system", "technique": technique}
        for technique, severity in findings]}
