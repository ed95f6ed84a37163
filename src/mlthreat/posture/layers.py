"""ATT&CK Navigator layers of a posture: coverage and gaps, per system and organisation-wide.

Built from the posture document (``posture.json``, or :meth:`PostureResult.to_dict`) with the
layer helpers of :mod:`mlthreat.kb.export.navigator`, so entries follow the same conventions as
every other layer mlthreat writes (a top-level technique once per tactic, a sub-technique
without a tactic and its parent expanded).

Coverage layer
    Every applicable technique, ``score = coverage x 100`` (0-100) on a red-amber-green
    gradient; the comment gives the status, coverage, priority and why the technique applies.
Gaps layer
    Every gap (applicable and not covered), ``score = priority`` (0-100) on a white-red
    gradient; the comment gives the band, status and the mitigations still to implement.

Organisation-wide, a technique counts once with its weakest value over the systems it applies
to: the lowest coverage, the worst status (exposed, uncovered, partial, covered), the highest
priority; the comment names each system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mlthreat.kb.export.navigator import _Entries, _layer, _slots
from mlthreat.kb.model import KnowledgeBase
from mlthreat.posture.report import plural

__all__ = ["COVERAGE_GRADIENT", "GAPS_GRADIENT", "STATUS_ORDER", "organisation_view",
           "posture_layers", "slug"]

#: Red (no coverage) through amber to green (full coverage).
COVERAGE_GRADIENT = ["#E53935", "#FDD835", "#43A047"]
#: White (no priority) to red (highest priority).
GAPS_GRADIENT = ["#FFFFFF", "#E53935"]
#: Statuses from worst to best: the organisation-wide status is the worst over the systems.
STATUS_ORDER = ("exposed", "uncovered", "partial", "covered")

Doc = Mapping[str, Any]


def slug(name: str) -> str:
    """A file-name-safe form of a system name (``Credit Score API`` -> ``credit-score-api``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-")


def system_slugs(names: Sequence[str]) -> list[str]:
    """One distinct slug per system name, in order; ``system-N`` when a name has no letters or
    digits, ``-2``, ``-3`` … appended when two names give the same slug."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names, 1):
        base = slug(name) or f"system-{i}"
        candidate, n = base, 1
        while candidate in seen or candidate.startswith("organisation"):
            n += 1
            candidate = f"{base}-{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def organisation_view(doc: Doc) -> list[dict[str, Any]]:
    """Every technique applicable to at least one system, with its weakest value over them.

    Each entry: ``id``, ``name``, ``parent``, ``tactics``, ``status`` (worst), ``coverage``
    (lowest), ``priority`` and ``band`` (highest), ``systems`` (one row per system: ``name``,
    ``status``, ``coverage``, ``priority``, ``band``). Sorted by ID.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for system in doc["systems"]:
        for t in system["techniques"]:
            row = {"name": system["name"], "status": t["status"], "coverage": t["coverage"],
                   "priority": t["priority"], "band": t["band"]}
            entry = by_id.setdefault(t["id"], {
                "id": t["id"], "name": t["name"], "parent": t["parent"],
                "tactics": list(t["tactics"]), "systems": []})
            entry["systems"].append(row)
    for entry in by_id.values():
        rows = entry["systems"]
        entry["status"] = min((r["status"] for r in rows), key=STATUS_ORDER.index)
        entry["coverage"] = min(r["coverage"] for r in rows)
        top = max(rows, key=lambda r: r["priority"])
        entry["priority"], entry["band"] = top["priority"], top["band"]
    return [by_id[k] for k in sorted(by_id)]


def _percent(coverage: float) -> float:
    return round(100.0 * coverage, 1)


def _build(kb: KnowledgeBase, layer_version: str | None, name: str, description: str,
           scores: Mapping[str, float], comments: Mapping[str, str], gradient: list[str],
           metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A layer scoring ``scores`` (technique ID -> 0-100) with a comment on each scored entry."""
    entries = _Entries(kb)
    for tid in sorted(scores):
        t = kb.technique(tid)
        if t.parent is None:
            for tactic in _slots(kb, t.id):
                entries.mark(t.id, tactic, score=scores[tid])
        else:
            entries.mark(t.id, None, score=scores[tid])
            for tactic in _slots(kb, t.parent):
                entries.expand(t.parent, tactic)
    layer = _layer(kb, layer_version, name, description, entries, metadata=metadata,
                   gradient={"colors": list(gradient), "minValue": 0, "maxValue": 100})
    for entry in layer["techniques"]:
        # _Entries writes only showSubtechniques, score and colour; comments are added here
        if "score" in entry and entry["techniqueID"] in comments:
            entry["comment"] = comments[entry["techniqueID"]]
    return layer


def _coverage_comment(t: Mapping[str, Any]) -> str:
    why = "; ".join(a["reason"] for a in t.get("applicability", ()))
    text = (f"{t['status']}: coverage {_percent(t['coverage']):g}%, priority "
            f"{t['priority']:g} ({t['band']})")
    return f"{text}. Applies because: {why}" if why else text


def _gap_comment(g: Mapping[str, Any]) -> str:
    todo = ", ".join(f"{m['id']} ({m['status'] or 'not declared'})" for m in g["mitigations"])
    return (f"{g['band']} priority, {g['status']}, coverage {_percent(g['coverage']):g}%. "
            f"Mitigations to implement: {todo or 'none listed in the matrix'}")


def _system_layers(kb: KnowledgeBase, doc: Doc, system: Mapping[str, Any],
                   layer_version: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    org = doc["organisation"]
    meta = (("organisation", org), ("system", system["name"]))
    techniques = system["techniques"]
    coverage = _build(
        kb, layer_version, f"{system['name']}: coverage",
        f"Coverage of the {plural(len(techniques), 'ATLAS technique')} that "
        f"{'applies' if len(techniques) == 1 else 'apply'} to {system['name']} "
        f"({org}); score = coverage x 100.",
        {t["id"]: _percent(t["coverage"]) for t in techniques},
        {t["id"]: _coverage_comment(t) for t in techniques}, COVERAGE_GRADIENT, meta)
    gaps = system["gaps"]
    gap_layer = _build(
        kb, layer_version, f"{system['name']}: gaps",
        f"The {plural(len(gaps), 'applicable technique')} {system['name']} ({org}) does not "
        "cover yet; score = priority (0-100).",
        {g["technique"]: g["priority"] for g in gaps},
        {g["technique"]: _gap_comment(g) for g in gaps}, GAPS_GRADIENT, meta)
    return coverage, gap_layer


def _org_layers(kb: KnowledgeBase, doc: Doc, layer_version: str | None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    org = doc["organisation"]
    view = organisation_view(doc)
    meta = (("organisation", org),)

    def per_system(t: Mapping[str, Any], key: str) -> str:
        return "; ".join(f"{r['name']}: {r['status']}, "
                         + (f"coverage {_percent(r['coverage']):g}%" if key == "coverage"
                            else f"priority {r['priority']:g}")
                         for r in t["systems"])

    coverage = _build(
        kb, layer_version, f"{org}: coverage",
        f"Coverage of the {plural(len(view), 'ATLAS technique')} that "
        f"{'applies' if len(view) == 1 else 'apply'} to "
        + (f"at least one of the {len(doc['systems'])} systems" if len(doc["systems"]) != 1
           else "the one system") + f" of {org}; score = the lowest coverage x 100.",
        {t["id"]: _percent(t["coverage"]) for t in view},
        {t["id"]: f"{t['status']} (worst over systems). {per_system(t, 'coverage')}"
         for t in view}, COVERAGE_GRADIENT, meta)
    gapped = [t for t in view if t["status"] != "covered"]
    gaps = _build(
        kb, layer_version, f"{org}: gaps",
        f"The {plural(len(gapped), 'technique')} not covered on at least one system of {org}; "
        "score = the highest priority (0-100).",
        {t["id"]: max(r["priority"] for r in t["systems"] if r["status"] != "covered")
         for t in gapped},
        {t["id"]: per_system({"systems": [r for r in t["systems"] if r["status"] != "covered"]},
                             "priority") for t in gapped}, GAPS_GRADIENT, meta)
    return coverage, gaps


def posture_layers(kb: KnowledgeBase, doc: Doc, layer_version: str | None = None
                   ) -> dict[str, str]:
    """Every layer of a posture as ``{file name: JSON text}``.

    File names: ``organisation-coverage.json``, ``organisation-gaps.json`` and, per system,
    ``<slug>-coverage.json`` and ``<slug>-gaps.json`` (see :func:`system_slugs`).

    Raises
    ------
    UnknownIdError
        When the document names a technique ``kb`` does not hold (a posture saved against
        other ATLAS data).
    """
    layers: dict[str, dict[str, Any]] = {}
    layers["organisation-coverage.json"], layers["organisation-gaps.json"] = _org_layers(
        kb, doc, layer_version)
    names = [s["name"] for s in doc["systems"]]
    for system, name in zip(doc["systems"], system_slugs(names), strict=True):
        layers[f"{name}-coverage.json"], layers[f"{name}-gaps.json"] = _system_layers(
            kb, doc, system, layer_version)
    return {k: json.dumps(v, indent=2, ensure_ascii=False) + "\n" for k, v in layers.items()}
