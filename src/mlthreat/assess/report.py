"""The assessment report folder: ``report.json``, ``report.html``, ``layer.json``,
``queries.jsonl``.

``report.json`` (kind ``mlthreat.assessment``, schema ``mlthreat/schemas/assessment.schema.json``)
holds one object per technique run and target with its ATLAS IDs, status and reason, the rule
that decided it, metrics as ``{name: {"value", "unit", "n", "ci95", "note"}}``, the attack's
queries kept apart from the evaluation's, the time, and the knowledge base's mitigations. With a
mitigation, ``comparison`` lines up each run's headline metric before and after.

Each finding also carries what a reader needs to act on it: ``verdict`` says whether a
succeeded/failed verdict holds across the 95 % intervals of the metrics its rule compares
(``inconclusive`` when an interval crosses the threshold, so more samples could turn it), and an
``error`` run's ``next_step`` says what to do. :func:`ranked_mitigations` ranks the knowledge
base's mitigations of what succeeded, those ``assess --mitigation`` can verify first, each with
the command that verifies it.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat import __version__
from mlthreat.assess.mitigations import MITIGATIONS

if TYPE_CHECKING:
    from mlthreat.assess.finding import Finding
    from mlthreat.assess.runner import AssessmentResult, PlannedRun
    from mlthreat.assess.target import Target
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["KIND", "RULES", "SCHEMA_VERSION", "Criterion", "Rule", "assess_command",
           "finding_to_json", "is_demo", "layer_scores", "next_step", "plan_data",
           "ranked_mitigations",
           "report_data", "verdict", "write_report"]

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
    doc = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "mlthreat_version": __version__,
        **kb.provenance(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started)),
        "seed": result.seed,
        "budget": result.budget,
        "total_budget": result.total_budget,
        "run_timeout": result.run_timeout,
        "interrupted": result.interrupted,
        "seconds": result.seconds,
        "queries_total": result.queries_total,
        "data": result.data,
        "targets": targets,
        "mitigation": result.mitigation,
        "summary": result.counts(),
        "findings": findings,
        "comparison": _comparison(result) if result.mitigation else [],
        "tactic_names": {t: names[t] for f in findings for t in f["tactics"] if t in names},
        "files": dict(FILES),
    }
    for f in findings:
        f["verdict"] = verdict(f)
        f["next_step"] = next_step(f, doc)
    return doc


def plan_data(plan: Sequence[PlannedRun], targets: Sequence[Target],
              kb: KnowledgeBase) -> dict[str, Any]:
    """The ``mlthreat.assess.plan`` document (``mlthreat assess --list/--dry-run --json``):
    the targets and, per target and run, whether it applies and the most queries it sends.

    ``plan`` is :meth:`Assessment.plan`'s, ``targets`` the assessment's."""
    return {"kind": "mlthreat.assess.plan", "schema_version": 1, "atlas_version": kb.version,
            "targets": [t.describe() for t in targets], "runs": [vars(p) for p in plan]}


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


def write_report(result: AssessmentResult, out_dir: str | Path, kb: KnowledgeBase,
                 queries: str | Path | None = None) -> dict[str, Path]:
    """Write report.json, layer.json and report.html into ``out_dir`` (created), with the
    query log the run wrote to ``queries`` (a staging file, see
    :func:`mlthreat.files.staging_path`) as queries.jsonl. Returns the paths written, by role.

    The files are written as a set (:func:`mlthreat.files.write_set`): until every one is
    whole, the folder keeps the previous report, and report.json is renamed into place last.
    Without ``queries`` a queries.jsonl left by an earlier run is removed, so the folder never
    pairs one run's report with another's queries.

    Raises
    ------
    OutputError
        When a file cannot be written (named); the previous report is then untouched.
    """
    from mlthreat.files import write_set
    from mlthreat.kb.export import navigator

    out = Path(out_dir)
    data = report_data(result, kb)
    scores = layer_scores(data)
    if scores:
        layer = navigator.render(
            kb, layer="scores", scores=scores, name="mlthreat assessment",
        )
    else:
        layer = navigator.render(kb, layer="matrix", name="mlthreat assessment (nothing tested)")
    from mlthreat.assess.report_html import render_report

    files = {FILES["layer"]: layer, FILES["html"]: render_report(data, kb),
             FILES["json"]: json.dumps(data, indent=2, ensure_ascii=False) + "\n"}
    staged = {FILES["queries"]: queries} if queries is not None and Path(queries).exists() \
        else None
    written = write_set(out, files, staged)
    if staged is None:
        (out / FILES["queries"]).unlink(missing_ok=True)
    by_name = {name: role for role, name in FILES.items()}
    order = ("json", "html", "layer", "queries")
    found = {by_name[name]: path for name, path in written.items()}
    return {role: found[role] for role in order if role in found}


# -- verdicts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """One comparison of a run's rule: the run succeeds on it when metric ``metric`` is at least
    the run parameter ``param`` (at most, with ``at_most``)."""

    metric: str
    param: str
    at_most: bool = False

    def holds(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.at_most else value >= threshold


@dataclass(frozen=True)
class Rule:
    """A run's success rule: its criteria, all needed (``needs_all``) or any one."""

    criteria: tuple[Criterion, ...]
    needs_all: bool = True

    def decide(self, values: Sequence[float], thresholds: Sequence[float]) -> bool:
        held = [c.holds(v, t) for c, v, t in zip(self.criteria, values, thresholds, strict=True)]
        return all(held) if self.needs_all else any(held)


#: The success rules the runs declare (each run's ``rule()`` says it in words), found by the
#: threshold parameters and metrics a finding carries; the first that fits is used.
RULES: tuple[Rule, ...] = (
    Rule((Criterion("success_rate_at_eps", "min_success_rate"),)),  # every evasion run
    Rule((Criterion("auc", "min_auc"), Criterion("tpr_at_1pct_fpr", "min_tpr_at_1pct")),
         needs_all=False),  # membership inference
    Rule((Criterion("trigger_success_rate", "min_trigger_success"),
          Criterion("clean_accuracy_drop", "max_accuracy_drop", at_most=True))),  # backdoor
    Rule((Criterion("fraction_closer_than_baseline", "min_fraction"),)),  # model inversion
    Rule((Criterion("fidelity", "min_fidelity"),)),  # extraction
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verdict(finding: Mapping[str, Any]) -> dict[str, Any] | None:
    """Whether a ``succeeded``/``failed`` verdict holds across the 95 % intervals of the metrics
    its rule compares with its thresholds.

    The rule is decided again at the end of every interval least favourable to the attack and
    at the end most favourable to it; when the two differ, some value inside the intervals
    turns the verdict, and it is ``inconclusive``. A metric without an interval counts as its
    value. None for other statuses, for runs whose rule is not in :data:`RULES`, and when the
    stored metrics do not give the stored status (nothing then to vouch for).

    Returns
    -------
    dict or None
        ``{"inconclusive": bool, "intervals": bool (some compared metric has one),
        "checks": [{"metric", "value", "ci95", "op", "threshold", "crosses"}], "note": str}``.
    """
    status, metrics, params = finding["status"], finding["metrics"], finding["params"]
    if status not in ("succeeded", "failed"):
        return None
    rule = next((r for r in RULES if all(c.metric in metrics and c.param in params
                                         for c in r.criteria)), None)
    if rule is None:
        return None
    values, thresholds, worst, best, checks = [], [], [], [], []
    for c in rule.criteria:
        value, threshold = metrics[c.metric].get("value"), params[c.param]
        if not (_number(value) and _number(threshold)):
            return None
        ci = metrics[c.metric].get("ci95")
        low, high = (float(ci[0]), float(ci[1])) if ci else (value, value)
        values.append(value)
        thresholds.append(threshold)
        worst.append(high if c.at_most else low)  # the end least favourable to the attack
        best.append(low if c.at_most else high)
        checks.append({"metric": c.metric, "value": value, "ci95": [low, high] if ci else None,
                       "op": "<=" if c.at_most else ">=", "threshold": threshold,
                       "crosses": c.holds(worst[-1], threshold) != c.holds(best[-1],
                                                                           threshold)})
    if rule.decide(values, thresholds) != (status == "succeeded"):
        return None
    inconclusive = rule.decide(worst, thresholds) != rule.decide(best, thresholds)
    intervals = any(ch["ci95"] for ch in checks)
    crossing = [ch for ch in checks if ch["crosses"]]
    if inconclusive:
        note = "; ".join(f"the 95 % interval of {ch['metric']} [{ch['ci95'][0]:.3g}, "
                         f"{ch['ci95'][1]:.3g}] crosses the threshold {ch['threshold']:g}"
                         for ch in crossing)
        note = (f"inconclusive: {note}, so the true value may lie on either side; measure on "
                "more samples before relying on this verdict")
    elif intervals:
        note = "holds across the 95 % intervals of " + ", ".join(
            f"{ch['metric']}" for ch in checks if ch["ci95"])
    else:
        note = "no interval to check: " + ", ".join(ch["metric"] for ch in checks) + \
            " measured without one"
    return {"inconclusive": inconclusive, "intervals": intervals, "checks": checks,
            "note": note}


# -- what to do next ------------------------------------------------------------------------------
#: Reason prefixes of a run whose target failed (set by the runner), not the run itself.
_TARGET_FAILED = ("target failed: ", "not run: the target failed earlier")
_SCHEMES = ("sklearn:", "onnx:", "torch:", "python:", "http://", "https://")


def is_demo(report: Mapping[str, Any]) -> bool:
    """Whether ``report`` is of the built-in demo (its re-run commands are then exact)."""
    targets = report.get("targets") or []
    return bool(targets) and all(str(t.get("model_id", "")).startswith("demo-")
                                 for t in targets) and \
        str((report.get("data") or {}).get("source", "")).startswith("scikit-learn digits")


def assess_command(report: Mapping[str, Any], runs: Sequence[str], *,
                   mitigation: str | None = None, target: str | None = None,
                   out: str = "mlthreat-report-rerun") -> str:
    """The ``mlthreat assess`` command that runs ``runs`` again as this report did (same
    targets, data, seed and budget), behind ``mitigation`` when given, into ``out`` (never the
    default folder, so the report at hand is not overwritten).

    For the demo the command is exact. For a user's model the target and data are taken from
    the report (``TARGET`` when the target's description is not a ``--target`` spec), with
    the data options it recorded (``--label-column``, ``--members``, ``--non-members``,
    ``--feature-spec``); an http(s) target gets ``--yes``, as the user confirmed it before.
    """
    parts = ["mlthreat", "assess"]
    if not is_demo(report):
        described: Mapping[str, Any] = next(
            (t for t in report.get("targets") or []
             if target is None or t.get("model_id") == target), {})
        spec = str(described.get("description") or "")
        data = report.get("data") or {}
        parts += ["--target", spec if spec.startswith(_SCHEMES) else "TARGET",
                  "--data", str(data.get("source") or "DATA")]
        for option, value in (data.get("options") or {}).items():
            parts += [option, str(value)]
        if spec.startswith(("http://", "https://")):
            parts.append("--yes")  # the user confirmed attacking the endpoint the first time
    if report.get("seed"):
        parts += ["--seed", str(report["seed"])]
    if report.get("budget") is not None:
        parts += ["--budget", str(report["budget"])]
    parts += ["--techniques", ",".join(dict.fromkeys(runs))]
    if mitigation:
        parts += ["--mitigation", mitigation]
    parts += ["-o", out]
    return " ".join(shlex.quote(p) if p not in ("TARGET", "DATA") else p for p in parts)


def next_step(finding: Mapping[str, Any], report: Mapping[str, Any]) -> str | None:
    """What to do about an ``error`` run (None for other statuses): check the target when it
    was the target that failed, else run the run alone again to see whether it repeats."""
    if finding["status"] != "error":
        return None
    again = assess_command(report, [finding["run"]], target=finding["target"],
                           out=f"mlthreat-report-{finding['run']}")
    if str(finding.get("reason", "")).startswith(_TARGET_FAILED):
        return ("The target itself failed, so the run could not ask it: check that the model "
                "loads and answers one row of the data (for an http target: the URL, "
                "--timeout, --retries, --batch-size, --response-path), then run it again "
                f"alone: {again}")
    return (f"The run stopped on an error of its own; run it alone again to see whether it "
            f"repeats: {again}. If it does, change its parameters (--param "
            f"{finding['run']}.NAME=VALUE; `mlthreat assess --list` shows whether it applies) "
            "or report the reason above with report.json.")


# -- mitigations, ranked --------------------------------------------------------------------------
#: What each ``--mitigation`` kind does to the target's answers (see assess.mitigations).
_DOES = {"round": "scores rounded to {v:g} decimals", "top1": "the top label only, no scores",
         "noise": "Gaussian noise of standard deviation {v:g} on the scores",
         "reverse-sigmoid": "reverse-sigmoid perturbation of the scores, β {v:g}",
         "query-limit": "each attack refused after {v:g} queries"}


def _specs(atlas_id: str) -> list[tuple[str, str, float]]:
    """The ``--mitigation`` kinds that implement ``atlas_id``: (kind, spec, value)."""
    out = []
    for kind, (aid, needs_value, default) in MITIGATIONS.items():
        if aid == atlas_id:
            out.append((kind, f"{kind}:{default:g}" if needs_value else kind, default))
    return out


def _white_box_runs() -> set[str]:
    from mlthreat.assess.techniques import run_classes

    return {c.name for c in run_classes() if c.needs_access == "white-box"}


def ranked_mitigations(report: Mapping[str, Any], kb: KnowledgeBase) -> list[dict[str, Any]]:
    """The knowledge base's mitigations of every technique that succeeded against a target as
    deployed, ranked: first those ``mlthreat assess --mitigation`` can verify, then the others;
    within each, those that address more of the techniques that succeeded first, then by ID.

    A mitigation is verifiable when ``--mitigation`` implements it (:data:`MITIGATIONS`) and a
    black-box run it addresses succeeded: white-box runs are left out of the commands, since
    wrapping a target's answers does not stop an attacker who holds its weights. A query limit
    is set below the queries the cheapest of those runs sent, so that it bites; output
    obfuscation is not offered when every target answers with labels only.

    Returns
    -------
    list of dict
        ``{"id", "name", "techniques": [IDs], "runs": [run names], "verify": [{"mitigation":
        spec, "does", "note", "command"}], "left_out": [white-box run names]}``; ``verify`` is
        empty for a mitigation this tool cannot apply here.
    """
    entries: dict[str, dict[str, Any]] = {}
    queries: dict[str, list[int]] = {}
    white = _white_box_runs()
    for f in report["findings"]:
        if f["mitigation"] or f["status"] != "succeeded" or f["technique"] not in kb:
            continue
        for m in kb.mitigations_of(f["technique"]):
            e = entries.setdefault(m.id, {"id": m.id, "name": m.name, "techniques": [],
                                          "runs": [], "verify": [], "left_out": []})
            for key, value in (("techniques", f["technique"]), ("runs", f["run"])):
                if value not in e[key]:
                    e[key].append(value)
            if f["run"] not in white:
                queries.setdefault(m.id, []).append(int(f["queries"]))
    labels_only = all(t.get("output_kind") == "labels" for t in report.get("targets") or [])
    for e in entries.values():
        runs = [r for r in e["runs"] if r not in white]
        specs = _specs(e["id"]) if runs else []
        for kind, spec, value in specs:
            note = ""
            if kind == "query-limit":
                sent = [q for q in queries.get(e["id"], []) if q > 0]
                if not sent:
                    continue  # none of these runs queried the target: a limit cannot bite
                value = min(int(value), max(1, min(sent) // 2))
                spec = f"{kind}:{value:g}"
                note = f"below the {min(sent):,} queries the cheapest of these runs sent"
            elif labels_only:
                continue  # a target answering labels only has no scores to obfuscate
            e["verify"].append({
                "mitigation": spec, "does": _DOES[kind].format(v=value), "note": note,
                "command": assess_command(report, runs, mitigation=spec,
                                          out=f"mlthreat-report-{spec.replace(':', '-')}")})
        if e["verify"]:
            e["left_out"] = [r for r in e["runs"] if r in white]
    return sorted(entries.values(), key=lambda e: (not e["verify"], -len(e["techniques"]),
                                                   e["id"]))
