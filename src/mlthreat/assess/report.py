"""The assessment report folder: ``report.json``, ``report.html``, ``layer.json``,
``queries.jsonl``.

``report.json`` (kind ``mlthreat.assessment``, schema ``mlthreat/schemas/assessment.schema.json``)
holds one object per technique run and target with its ATLAS IDs, status and reason, the rule
that decided it, metrics as ``{name: {"value", "unit", "n", "ci95", "note"}}``, the attack's
queries kept apart from the evaluation's, the time, and the knowledge base's mitigations. With a
mitigation, ``comparison`` lines up each run's headline metric before and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat import __version__

if TYPE_CHECKING:
    from mlthreat.assess.finding import Finding
    from mlthreat.assess.runner import AssessmentResult
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["KIND", "SCHEMA_VERSION", "finding_to_json", "layer_scores", "report_data",
           "write_report"]

KIND = "mlthreat.assessment"
SCHEMA_VERSION = 1
FILES = {"json": "report.json", "html": "report.html", "layer": "layer.json",
         "queries": "queries.jsonl"}


def finding_to_json(finding: Finding, target: str, mitigation: str | None) -> dict[str, Any]:
    """One Finding as report data (plain JSON types)."""
    return {
        "target": target,
        "mitigation": mitigation,
        "run": finding.run,
        "technique": finding.technique,
        "name": finding.name,
        "tactics": list(finding.tactics),
        "tactic": finding.tactics[0] if finding.tactics else None,
        "related_techniques": list(finding.related_techniques),
        "status": finding.status,
        "reason": finding.reason,
        "rule": finding.rule,
        "metrics": {k: m.to_json() for k, m in finding.metrics.items()},
        "queries": finding.queries,
        "evaluation_queries": finding.evaluation_queries,
        "seconds": finding.seconds,
        "params": finding.params,
        "mitigations": list(finding.mitigations),
        "curves": finding.curves,
        "evidence": finding.evidence,
    }


def _metric_value(finding: Finding, name: str | None) -> Any:
    return finding.metrics[name].value if name and name in finding.metrics else None


def _comparison(result: AssessmentResult) -> list[dict[str, Any]]:
    before = {(t, f.run): f for t, f in result.findings()}
    rows = []
    for target, after in result.findings(mitigated=True):
        first = before.get((target, after.run))
        if first is None:
            continue
        name = next(iter(first.metrics), None) or next(iter(after.metrics), None)
        rows.append({
            "target": target, "run": after.run, "technique": after.technique, "metric": name,
            "unit": first.metrics[name].unit if name and name in first.metrics else None,
            "before": _metric_value(first, name), "after": _metric_value(after, name),
            "status_before": first.status, "status_after": after.status,
            "queries_before": first.queries, "queries_after": after.queries,
        })
    return rows


def report_data(result: AssessmentResult, kb: KnowledgeBase) -> dict[str, Any]:
    """The ``report.json`` document."""
    findings = [finding_to_json(f, r.target["model_id"], r.mitigation)
                for r in result.results for f in r.findings]
    targets = []
    for r in result.results:
        if r.mitigation is None:
            targets.append(r.target)
    names = {t.id: t.name for t in kb.tactics}
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "mlthreat_version": __version__,
        "atlas_version": kb.version,
        "atlas_source": kb.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started)),
        "seed": result.seed,
        "budget": result.budget,
        "total_budget": result.total_budget,
        "interrupted": result.interrupted,
        "seconds": result.seconds,
        "queries_total": result.queries_total,
        "data": result.data,
        "targets": targets,
        "mitigation": result.mitigation,
        "summary": {s: sum(1 for f in findings if f["status"] == s and not f["mitigation"])
                    for s in ("succeeded", "failed", "not-applicable", "error")},
        "findings": findings,
        "comparison": _comparison(result) if result.mitigation else [],
        "tactic_names": {t: names[t] for f in findings for t in f["tactics"] if t in names},
        "files": dict(FILES),
    }


def layer_scores(report: dict[str, Any]) -> dict[str, float]:
    """Per tested technique: 1 when some run of it succeeded against some target, else 0
    (runs that did not apply or errored are left out). Mitigated runs do not count."""
    scores: dict[str, float] = {}
    for f in report["findings"]:
        if f["mitigation"] or f["status"] not in ("succeeded", "failed"):
            continue
        value = 1.0 if f["status"] == "succeeded" else 0.0
        scores[f["technique"]] = max(value, scores.get(f["technique"], 0.0))
    return scores


def write_report(result: AssessmentResult, out_dir: str | Path, kb: KnowledgeBase
                 ) -> dict[str, Path]:
    """Write report.json, layer.json and report.html into ``out_dir`` (created); the query log
    is written during the run. Returns the paths written, by role."""
    from mlthreat.kb.export import navigator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(result, kb)
    paths = {role: out / name for role, name in FILES.items()}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    scores = layer_scores(data)
    if scores:
        layer = navigator.render(
            kb, layer="scores", scores=scores, name="mlthreat assessment",
        )
    else:
        layer = navigator.render(kb, layer="matrix", name="mlthreat assessment (nothing tested)")
    paths["layer"].write_text(layer, "utf-8")
    from mlthreat.assess.report_html import render_report

    paths["html"].write_text(render_report(data, kb), "utf-8")
    return {k: v for k, v in paths.items() if v.exists()}
