"""The assessment report as one self-contained HTML page (``report.html``).

The page is what an analyst hands to a manager. From the ``report.json`` document
(:func:`mlthreat.assess.report.report_data`) it draws a header (targets, data, seed, versions,
queries, an interrupted warning), a summary table with one row per technique run, the matrix with
each tested cell coloured by its outcome, the knowledge base's mitigations for every technique that
succeeded, a before/after table when the suite also ran behind a mitigation, and one detail section
per run with its rule, reason, metrics, parameters and plots.

Sub-techniques are listed only under a technique one of whose sub-techniques was tested (as in
ATLAS's own Navigator layers), so the tested cells stand out. The tactics with a tested technique
come first, and tested techniques lead their column (the rest follow in ATLAS order), so what was
tested is in view without scrolling the matrix sideways. A cell tested against several targets is
coloured by the worst outcome in the order of :data:`OUTCOME_ORDER` (an attack that worked, then
a run that could not tell, then a run the model resisted, then one that did not apply), says for
each outcome on how many of the targets it happened ("succeeded on 1 of 2 targets") and lists
each run in its tooltip. Runs behind a mitigation appear in the tables but not on the matrix, as
in the Navigator layer.

A verdict whose 95 % interval crosses its rule's threshold is marked inconclusive (see
:func:`mlthreat.assess.report.verdict`), an ``error`` run shows its next step, and the mitigations
of what succeeded are ranked by :func:`mlthreat.assess.report.ranked_mitigations`: those
``mlthreat assess --mitigation`` can verify first, each with the command that verifies it.

Plots are inline SVG drawn by :mod:`mlthreat.render.plots` (no plotting library, no script): a
line plot for series with ``x`` and ``y`` (ROC with its chance diagonal, success against ε,
fidelity against queries; a ``baseline`` over the same ``x`` dashed), a histogram for series of
``values`` (``perturbation_l2``), and a grid of small images for series of ``images`` with their
``shape`` (a model inversion's reconstructions, one rectangle per pixel). The
templates write every element, so every piece of text is escaped by the shared templates of
:mod:`mlthreat.render`; the page loads nothing and runs no script. Same document, same page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlthreat import __version__
from mlthreat.assess.mitigations import MITIGATIONS
from mlthreat.assess.report import is_demo, ranked_mitigations
from mlthreat.kb.export import html as matrix_html
from mlthreat.kb.model import KnowledgeBase
from mlthreat.render import plots, render_page

__all__ = ["OUTCOME_ORDER", "render_report"]

Data = dict[str, Any]

#: Statuses from worst to best: the outcome a matrix cell shows when runs disagree.
OUTCOME_ORDER: tuple[str, ...] = ("succeeded", "error", "failed", "not-applicable")
_LABELS = {"succeeded": "succeeded", "failed": "failed", "error": "error",
           "not-applicable": "not applicable"}
_TITLES = {"roc": "ROC curve", "success_vs_eps": "Attack success by perturbation budget",
           "fidelity_vs_queries": "Surrogate fidelity by query budget",
           "perturbation_l2": "Perturbation L2 norms",
           "mse_per_class": "Reconstruction error per class",
           "reconstructions": "Reconstructed inputs"}
_AXES = {"perturbation_l2": ("L2 perturbation", "samples")}


def render_report(data: Mapping[str, Any], kb: KnowledgeBase) -> str:
    """The assessment report ``data`` as a self-contained HTML page.

    Parameters
    ----------
    data : mapping
        A ``report.json`` document (kind ``mlthreat.assessment``), as built by
        :func:`mlthreat.assess.report.report_data`.
    kb : KnowledgeBase
        Draws the matrix and names techniques, tactics and mitigations; it should be the one
        the report was resolved against.

    Returns
    -------
    str
        The HTML document; the same input always gives the same text.
    """
    findings = [_finding(kb, data, f, i) for i, f in enumerate(data["findings"], 1)]
    summary = data.get("summary", {})
    inconclusive = sum(1 for f in findings if f["inconclusive"] and not f["mitigation"])
    context: Data = {
        "title": "mlthreat assessment report",
        "generator": f"mlthreat {__version__}",
        "labels": _LABELS,
        "report": {
            "atlas_version": data["atlas_version"],
            "atlas_source": data["atlas_source"],
            "mlthreat_version": data["mlthreat_version"],
            "created": data["created"],
            "interrupted": bool(data["interrupted"]),
            "matrix_version": kb.version if kb.version != data["atlas_version"] else None,
        },
        "facts": _facts(data),
        "targets": [_target(t) for t in data["targets"]],
        "counts": [{"status": s, "label": _LABELS[s], "count": summary.get(s, 0)}
                   for s in OUTCOME_ORDER],
        "inconclusive": inconclusive,
        "findings": findings,
        "mitigated": any(f["mitigation"] for f in findings),
        "columns": _columns(kb, findings),
        "ranking": _ranking(kb, data, findings),
        "demo": is_demo(data),
        "mitigation": data.get("mitigation"),
        "comparison": [_comparison_row(kb, row) for row in data.get("comparison") or ()],
    }
    return render_page("report.html.j2", context)


# -- header and tables --------------------------------------------------------------------------
def _domain(domain: Mapping[str, Any]) -> str:
    """"58 integer, 4 constant, 2 binary columns; 1 one-hot group (inferred from the data)"."""
    kinds = ", ".join(f"{n} {k}" for k, n in (domain.get("kinds") or {}).items())
    groups = len(domain.get("one_hot") or [])
    return (f"{kinds} columns" + (f"; {groups} one-hot group{'s' if groups != 1 else ''}"
                                  if groups else "") + f" ({domain.get('source', '')})")


def _facts(data: Mapping[str, Any]) -> list[Data]:
    d = data.get("data") or {}
    rows = [f"{_num(d[k])} {label}" for k, label in (
        ("pool", "attacker pool"), ("eval", "evaluation"), ("members", "members"),
        ("non_members", "non-members")) if d.get(k) is not None]
    if d.get("features") is not None:
        rows.append(f"{_num(d['features'])} features")
    domain = d.get("domain")
    facts = [
        ("Data", d.get("source") or "not stated"),
        ("Rows", ", ".join(rows) or "not recorded"),
        *([("Feature domain", _domain(domain))] if domain else []),
        ("Data SHA-256", d.get("sha256") or "not recorded"),
        ("Seed", _num(data["seed"])),
        ("Query budget", _budget(data.get("budget"), data.get("total_budget"))),
        *([("Time limit", f"{_num(data['run_timeout'])} s per run's attack")]
          if data.get("run_timeout") is not None else []),
        ("Queries sent", f"{_num(data['queries_total'])} by the attacks in all"),
        ("Duration", f"{_num(data.get('seconds'))} s"),
        ("Mitigation", data.get("mitigation") or "none (runs against the target as deployed)"),
        ("ATLAS data", f"{data['atlas_version']} ({data['atlas_source']})"),
        ("mlthreat", data["mlthreat_version"]),
        ("Created", data["created"]),
    ]
    return [{"label": k, "value": v} for k, v in facts]


def _budget(per_run: int | None, total: int | None) -> str:
    each = f"{_num(per_run)} queries per run" if per_run is not None else "each run's default"
    return each + (f", {_num(total)} in all" if total is not None else "")


def _target(t: Mapping[str, Any]) -> Data:
    shape = t.get("input_shape")
    return {
        "model_id": t.get("model_id", ""),
        "description": t.get("description") or "",
        "kind": t.get("kind", ""),
        "access": t.get("access", ""),
        "output_kind": t.get("output_kind", ""),
        "task": t.get("task", ""),
        "input_shape": " \N{MULTIPLICATION SIGN} ".join(str(s) for s in shape) if shape else "",
        "n_classes": _num(t.get("n_classes")),
        "notes": list(t.get("notes") or []),
        "trusted_types": list(t.get("trusted_types") or []),
        "parity": t.get("parity"),
    }


def _ref(kb: KnowledgeBase, atlas_id: str, fallback: str = "") -> Data:
    known = atlas_id in kb
    return {"id": atlas_id, "name": kb.get(atlas_id).name if known else fallback,
            "known": known}


def _finding(kb: KnowledgeBase, data: Mapping[str, Any], f: Mapping[str, Any], index: int
             ) -> Data:
    tid = f["technique"]
    names = data.get("tactic_names") or {}
    tactics = [{"id": t, "name": names.get(t) or _ref(kb, t)["name"]} for t in f["tactics"]]
    metrics = [_metric(name, m) for name, m in f["metrics"].items()]
    anchor = f"finding-{index}"
    status = f["status"]
    verdict = f.get("verdict") or None
    return {
        "anchor": anchor,
        "target": f["target"],
        "mitigation": f["mitigation"],
        "run": f["run"],
        "run_title": f["name"],
        "technique": tid,
        "technique_name": _ref(kb, tid, f["name"])["name"],
        "tactics": tactics,
        "tactic_text": ", ".join(t["name"] or t["id"] for t in tactics) or "none",
        "related": [_ref(kb, r) for r in f["related_techniques"]],
        "status": status,
        "inconclusive": bool(verdict and verdict.get("inconclusive")),
        "verdict_note": str(verdict.get("note") or "") if verdict else "",
        "next_step": f.get("next_step") or "",
        "reason": f["reason"],
        "rule": f["rule"],
        "headline": metrics[0] if metrics else None,
        "metrics": metrics,
        "queries": _num(f["queries"]),
        "evaluation_queries": _num(f["evaluation_queries"]),
        "seconds": _num(f["seconds"]),
        "params": [{"name": k, "value": _plain(v)} for k, v in f["params"].items()],
        "evidence": [{"name": k, "value": str(v)} for k, v in f["evidence"].items()],
        "plots": _plots(f["curves"], anchor),
        "mitigations": _verifiable_first(_mitigations(kb, tid)) if status == "succeeded" else [],
    }


def _metric(name: str, m: Mapping[str, Any]) -> Data:
    value, unit = m.get("value"), m.get("unit") or ""
    ci = m.get("ci95")
    text = _num(value)
    if value is not None and unit and unit != "fraction":
        text += f" {unit}"
    return {
        "name": name,
        "value": _num(value),
        "unit": unit,
        "text": text,
        "n": _num(m["n"]) if m.get("n") is not None else "",
        "ci": f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "",
        "note": m.get("note") or "",
    }


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _num(value: Any) -> str:
    """A number as the page prints it: integers with thousands separators, others to 4
    significant digits; ``None`` as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:.4g}"


def _comparison_row(kb: KnowledgeBase, row: Mapping[str, Any]) -> Data:
    before, after = row.get("before"), row.get("after")
    change = ""
    if isinstance(before, int | float) and isinstance(after, int | float):
        delta = after - before
        change = ("+" if delta > 0 else "") + _num(round(delta, 12))
    return {
        "target": row["target"],
        "run": row["run"],
        "technique": row["technique"],
        "technique_name": _ref(kb, row["technique"])["name"],
        "metric": row.get("metric") or "",
        "unit": row.get("unit") or "",
        "before": _num(before),
        "after": _num(after),
        "change": change,
        "status_before": row["status_before"],
        "status_after": row["status_after"],
        "queries_before": _num(row.get("queries_before")),
        "queries_after": _num(row.get("queries_after")),
    }


# -- mitigations --------------------------------------------------------------------------------
def _mitigations(kb: KnowledgeBase, tid: str) -> list[Data]:
    """The knowledge base's mitigations of ``tid`` (its parent's included, marked ``via``)."""
    if tid not in kb:
        return []
    technique = kb.technique(tid)
    own = {m.id for m in kb.mitigations_of(tid, inherit=False)}
    out = []
    for m in kb.mitigations_of(tid):
        via = None if m.id in own else technique.parent
        uses = list(dict.fromkeys(u for u in kb.uses_of(m.id, via or tid) if u))
        out.append({"id": m.id, "name": m.name, "via": via, "uses": uses})
    return out


def _verifiable_first(mitigations: list[Data]) -> list[Data]:
    """``mitigations`` with those ``assess --mitigation`` can apply first (stable order)."""
    applied = {aid for aid, _, _ in MITIGATIONS.values()}
    return sorted(mitigations, key=lambda m: m["id"] not in applied)


def _ranking(kb: KnowledgeBase, data: Mapping[str, Any], findings: Sequence[Data]
             ) -> list[Data]:
    """:func:`ranked_mitigations` with, per mitigation, the techniques it addresses (named and
    linked to their first succeeded run) and its "use" texts for them."""
    first: dict[str, str] = {}
    for f in findings:
        if f["status"] == "succeeded" and not f["mitigation"]:
            first.setdefault(f["technique"], f["anchor"])
    out = []
    for rank, m in enumerate(ranked_mitigations(data, kb), 1):
        techniques = [{**_ref(kb, t), "anchor": first.get(t, "")} for t in m["techniques"]]
        uses = [{"technique": t, "text": u} for t in m["techniques"]
                for u in dict.fromkeys(kb.uses_of(m["id"], t)) if u]
        out.append({**m, "rank": rank, "technique_refs": techniques, "uses": uses})
    return out


# -- the matrix ---------------------------------------------------------------------------------
def _matrix_columns(kb: KnowledgeBase) -> list[Data]:
    """The matrix page's columns (tactics in matrix order, cells with nested sub-techniques).

    Reuses the matrix page's own builder so both pages draw the same matrix.
    """
    return matrix_html.matrix_columns(kb)


def _columns(kb: KnowledgeBase, findings: Sequence[Data]) -> list[Data]:
    """The matrix with outcomes. As in ATLAS's own Navigator layers, a technique's
    sub-techniques are listed only when one of them was tested; the others are counted. Tactics
    with a tested technique come first and tested techniques lead their column, each group in
    ATLAS order, so that what was tested is in view first."""
    tested: dict[str, list[Data]] = {}
    for f in findings:
        if not f["mitigation"]:
            tested.setdefault(f["technique"], []).append(f)
    columns = _matrix_columns(kb)
    for col in columns:
        count = 0
        for cell in col["cells"]:
            for c in (cell, *cell["subs"]):
                _mark(c, tested.get(c["id"], []))
                c["folded"] = 0
                count += c["outcome"] is not None
            cell["tested"] = cell["outcome"] is not None or any(
                sub["outcome"] for sub in cell["subs"])
            if not any(sub["outcome"] for sub in cell["subs"]):
                cell["folded"], cell["subs"] = len(cell["subs"]), []
            cell["subs"] = sorted(cell["subs"], key=lambda c: c["outcome"] is None)
        col["cells"] = sorted(col["cells"], key=lambda c: not c["tested"])
        col["tested"] = count
    return sorted(columns, key=lambda col: not col["tested"])


def _mark(cell: Data, runs: Sequence[Data]) -> None:
    """Give a matrix cell its outcome (the worst of ``runs``), link, tooltip, and per outcome
    on how many targets it happened (in how many runs, when one target was tested)."""
    if not runs:
        cell.update(outcome=None, href="", tooltip="", outcome_lines=[], inconclusive=False)
        return
    worst = min(runs, key=lambda f: OUTCOME_ORDER.index(f["status"]))
    lines = [f"{cell['id']} {cell['name']}"]
    lines += [f"{f['target']}: {_LABELS[f['status']]}"
              + (", inconclusive" if f["inconclusive"] else "") + f" ({f['run']})"
              for f in runs]
    targets = list(dict.fromkeys(f["target"] for f in runs))
    outcomes = []
    for status in OUTCOME_ORDER:
        these = [f for f in runs if f["status"] == status]
        if not these:
            continue
        text = _LABELS[status]
        if len(targets) > 1:
            hit = len({f["target"] for f in these})
            text += f" on {hit} of {len(targets)} targets"
        elif len(runs) > 1:
            text += f" in {len(these)} of {len(runs)} runs"
        doubtful = sum(1 for f in these if f["inconclusive"])
        if doubtful:
            text += (", inconclusive" if doubtful == len(these)
                     else f" ({doubtful} of {len(these)} runs inconclusive)")
        outcomes.append({"status": status, "text": text})
    cell.update(outcome=worst["status"], href=worst["anchor"], tooltip="\n".join(lines),
                outcome_lines=outcomes,
                inconclusive=all(f["inconclusive"] for f in runs
                                 if f["status"] == worst["status"]))


# -- plots --------------------------------------------------------------------------------------
def _plots(curves: Mapping[str, Any], prefix: str) -> list[Data]:
    """Each curve as a plot: a series with ``x`` and ``y`` as a line (ROC in the unit box with
    its diagonal), one with ``values`` (or a bare list) as a histogram; others are skipped."""
    out = []
    for i, (name, curve) in enumerate(curves.items(), 1):
        spec = {"values": curve} if isinstance(curve, list) else curve
        if not isinstance(spec, Mapping):
            continue
        x_default, y_default = _AXES.get(name, ("x", "y"))
        title = str(spec.get("title") or _TITLES.get(name, name.replace("_", " ")))
        labels: dict[str, str] = {
            "plot_id": f"{prefix}-plot-{i}",
            "title": title,
            "x_label": str(spec.get("x_label") or x_default),
            "y_label": str(spec.get("y_label") or y_default),
        }
        if "images" in spec and isinstance(spec["images"], list):
            plot = plots.image_grid(spec["images"], spec.get("shape") or (),
                                    plot_id=labels["plot_id"], title=title,
                                    labels=spec.get("labels"), value_range=spec.get("range"))
        elif "x" in spec and "y" in spec:
            baseline = spec.get("baseline")
            plot = plots.line_plot(spec["x"], spec["y"], unit_box=name == "roc",
                                   baseline=baseline if isinstance(baseline, list) else None,
                                   **labels)
        elif "values" in spec:
            plot = plots.histogram(spec["values"], **labels)
        else:
            continue
        out.append({**plot, "name": name})
    return out
