"""The posture as one self-contained HTML page (``posture.html``).

Drawn from the posture document (:func:`mlthreat.posture.report.posture_document`): a header
with the organisation's counts, the matrix as a heat map of organisation-wide coverage (the
weakest value over the systems, see :func:`mlthreat.posture.layers.organisation_view`), the gap
table of every system sorted by priority, and one section per system (summary, gaps with their
mitigations and verify commands, every applicable technique). A small script adds a system
picker that shows one system's section and gaps; without it every section is shown.

The matrix is the matrix page's own (:func:`mlthreat.kb.export.html.matrix_columns`). As on the
assessment report, a technique's sub-techniques are listed only when one of them applies; the
others are counted. Every text is written by the autoescaping templates of
:mod:`mlthreat.render`; the script reads only ``value`` and ``data-`` attributes and sets only
``hidden``, so no data is ever parsed as HTML. The page loads nothing from the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlthreat import __version__
from mlthreat.kb.export import html as matrix_html
from mlthreat.kb.model import KnowledgeBase
from mlthreat.posture.layers import STATUS_ORDER, organisation_view, system_slugs
from mlthreat.posture.report import all_gaps
from mlthreat.render import render_page

__all__ = ["STATUS_TEXT", "render_html"]

Data = dict[str, Any]

#: What each status means, as the legend says it.
STATUS_TEXT = {"exposed": "evidence shows the attack works", "uncovered": "nothing covers it",
               "partial": "some coverage, below 75%", "covered": "coverage of 75% or more"}


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def render_html(doc: Mapping[str, Any], kb: KnowledgeBase) -> str:
    """The posture document ``doc`` as a self-contained HTML page (same input, same text)."""
    slugs = dict(zip((s["name"] for s in doc["systems"]),
                     system_slugs([s["name"] for s in doc["systems"]]), strict=True))
    view = {t["id"]: t for t in organisation_view(doc)}
    gaps = [{**g, "slug": slugs[g["system"]], "coverage_text": _pct(g["coverage"])}
            for g in all_gaps(doc)]
    counts = {s: sum(1 for t in view.values() if t["status"] == s) for s in STATUS_ORDER}
    context: Data = {
        "title": f"ML security posture: {doc['organisation']}",
        "generator": f"mlthreat {__version__}",
        "doc": {"organisation": doc["organisation"], "source": doc["source"],
                "atlas_version": doc["atlas_version"], "atlas_source": doc["atlas_source"],
                "mlthreat_version": doc["mlthreat_version"]},
        "statuses": [{"status": s, "text": STATUS_TEXT[s], "count": counts[s]}
                     for s in STATUS_ORDER],
        "applicable": len(view),
        "columns": _columns(kb, view),
        "gaps": gaps,
        "systems": [_system(s, slugs[s["name"]]) for s in doc["systems"]],
    }
    return render_page("posture.html.j2", context)


def _system(s: Mapping[str, Any], slug: str) -> Data:
    return {
        "name": s["name"], "slug": slug, "owner": s["owner"], "kind": s["kind"],
        "exposure": ", ".join(s["exposure"]), "summary": s["summary"],
        "mean_coverage": _pct(s["summary"]["mean_coverage"]),
        "gaps": [{**g, "coverage_text": _pct(g["coverage"])} for g in s["gaps"]],
        "techniques": [{"id": t["id"], "name": t["name"], "status": t["status"],
                        "coverage_text": _pct(t["coverage"]), "priority": t["priority"],
                        "band": t["band"],
                        "reasons": [a["reason"] for a in t["applicability"]]}
                       for t in s["techniques"]],
    }


def _columns(kb: KnowledgeBase, view: Mapping[str, Mapping[str, Any]]) -> list[Data]:
    """The matrix with each applicable cell's organisation-wide status; sub-techniques shown
    only under a technique one of whose sub-techniques applies."""
    columns = matrix_html.matrix_columns(kb)
    for col in columns:
        applicable = 0
        for cell in col["cells"]:
            for c in (cell, *cell["subs"]):
                _mark(c, view.get(c["id"]))
                c["folded"] = 0
            if not any(sub["status"] for sub in cell["subs"]):
                cell["folded"], cell["subs"] = len(cell["subs"]), []
            applicable += sum(1 for c in (cell, *cell["subs"]) if c["status"])
        col["applicable"] = applicable
        col["shown"] = len(col["cells"]) + sum(len(c["subs"]) for c in col["cells"])
    return columns


def _mark(cell: Data, entry: Mapping[str, Any] | None) -> None:
    if entry is None:
        cell.update(status=None, coverage=None, coverage_text="", tooltip="")
        return
    lines = [f"{cell['id']} {cell['name']}: {entry['status']}, coverage "
             f"{_pct(entry['coverage'])} (weakest system)"]
    lines += [f"{r['name']}: {r['status']}, coverage {_pct(r['coverage'])}, priority "
              f"{r['priority']:g}" for r in entry["systems"]]
    cell.update(status=entry["status"], coverage=round(100 * entry["coverage"]),
                coverage_text=_pct(entry["coverage"]), tooltip="\n".join(lines))
