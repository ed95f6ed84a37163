"""The matrix as one self-contained HTML page.

Tactics are the columns, in matrix order; under each, its techniques in matrix order with their
sub-techniques nested. Every cell links to an in-page detail view (``#AML.T0043``) that shows the
object's description, maturity, tactics, sub-techniques, mitigations and the case studies that use
it; mitigations, tactics and case studies (with their procedure, step by step) have detail views
too. Optional scores colour the cells on a gradient, with a legend. A filter box narrows the
cells by ID or name.

The page loads nothing: no scripts, styles, fonts or images from anywhere, and its
Content-Security-Policy forbids every network load. All text from the data is escaped by the
shared templates of :mod:`mlthreat.render`; only ``http``/``https`` reference URLs become links.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mlthreat import __version__
from mlthreat.errors import UsageError
from mlthreat.kb.model import (
    AttackReference,
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    Reference,
    Tactic,
    Technique,
)
from mlthreat.render import render_page

__all__ = ["FORMAT", "GRADIENT", "SUFFIX", "matrix_columns", "render"]

FORMAT = "html"
SUFFIX = ".html"

#: Score colours from low to high (ColorBrewer YlOrRd), interpolated linearly between stops.
GRADIENT: tuple[str, ...] = ("#ffffcc", "#fd8d3c", "#bd0026")

_ATLAS_SITE = "https://atlas.mitre.org"
_ATLAS_PATHS = {
    "tactic": "tactics",
    "technique": "techniques",
    "sub-technique": "techniques",
    "mitigation": "mitigations",
    "case-study": "studies",
}
_KIND_LABELS = {
    "tactic": "Tactic",
    "technique": "Technique",
    "sub-technique": "Sub-technique",
    "mitigation": "Mitigation",
    "case-study": "Case study",
}

Data = dict[str, Any]


def render(
    kb: KnowledgeBase,
    *,
    scores: Mapping[str, float] | None = None,
    title: str | None = None,
) -> str:
    """The matrix of ``kb`` as a self-contained HTML page.

    Parameters
    ----------
    kb : KnowledgeBase
        The matrix to draw; its version and source are named on the page.
    scores : mapping of technique ID to float, optional
        Colours each scored cell on :data:`GRADIENT` and shows the score. The scale runs from
        ``min(0, lowest score)`` to the highest score; the legend prints both ends.
    title : str, optional
        The page title; defaults to the knowledge base's name.

    Returns
    -------
    str
        The HTML document; the same input always gives the same text.

    Raises
    ------
    UnknownIdError
        When a scored ID is not a technique or sub-technique of ``kb``.
    UsageError
        When a score is not a finite number.
    """
    scale = _Scale.of(kb, scores or {})
    columns = [_column(kb, tactic, scale) for tactic in kb.tactics]
    context: Data = {
        "title": title if title is not None else kb.name,
        "generator": f"mlthreat {__version__}",
        "data": {"name": kb.name, "version": kb.version, "source": kb.source},
        "columns": columns,
        "total_cells": sum(col["cells_total"] for col in columns),
        "legend": scale.legend() if scale.scores else None,
        "tactics": [_tactic(kb, t) for t in kb.tactics],
        "techniques": [_technique(kb, t, scale) for t in kb.techniques],
        "mitigations": [_mitigation(kb, m) for m in kb.mitigations],
        "case_studies": [_case_study(kb, cs) for cs in kb.case_studies],
    }
    return render_page("matrix.html.j2", context)


# -- scores -------------------------------------------------------------------------------------
def matrix_columns(kb: KnowledgeBase, scores: Mapping[str, float] | None = None) -> list[Data]:
    """The matrix as plain data for templates: one entry per tactic in matrix order, holding its
    techniques (sub-techniques nested) with their score colour when ``scores`` are given.
    Shared by every page that draws the matrix."""
    scale = _Scale.of(kb, scores or {})
    return [_column(kb, tactic, scale) for tactic in kb.tactics]


class _Scale:
    """Maps scores onto the gradient; picks a legible text colour for each background."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        values = list(scores.values())
        self.low = min([0.0, *values])
        self.high = max(values) if values else 1.0
        if self.high <= self.low:
            self.high = self.low + 1.0

    @classmethod
    def of(cls, kb: KnowledgeBase, scores: Mapping[str, float]) -> _Scale:
        checked: dict[str, float] = {}
        for tid, value in scores.items():
            kb.technique(tid)  # raises UnknownIdError, with a suggestion, for a stray ID
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise UsageError(f"score for {tid} is not a finite number: {value!r}")
            checked[tid] = number
        return cls(checked)

    def cell(self, tid: str) -> Data | None:
        """Label and colours of a scored cell, or ``None`` when it has no score."""
        if tid not in self.scores:
            return None
        value = self.scores[tid]
        background = _gradient((value - self.low) / (self.high - self.low))
        return {"label": _number(value), "bg": background, "fg": _text_colour(background)}

    def legend(self) -> Data:
        n = len(GRADIENT) - 1
        stops = ", ".join(f"{colour} {100 * i // n}%" for i, colour in enumerate(GRADIENT))
        return {
            "low": _number(self.low),
            "high": _number(self.high),
            "css": f"linear-gradient(to right, {stops})",
            "count": len(self.scores),
        }


def _gradient(t: float) -> str:
    t = min(1.0, max(0.0, t))
    segments = len(GRADIENT) - 1
    i = min(int(t * segments), segments - 1)
    frac = t * segments - i
    a, b = _rgb(GRADIENT[i]), _rgb(GRADIENT[i + 1])
    return "#" + "".join(f"{round(x + (y - x) * frac):02x}" for x, y in zip(a, b, strict=True))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _text_colour(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (WCAG relative luminance)."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(background))
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}"


# -- the matrix ---------------------------------------------------------------------------------
def _column(kb: KnowledgeBase, tactic: Tactic, scale: _Scale) -> Data:
    cells = []
    for t in kb.techniques_of(tactic.id):
        subs = [_cell(s, scale) for s in kb.subtechniques(t.id)]
        cells.append({**_cell(t, scale), "subs": subs})
    return {
        "id": tactic.id,
        "name": tactic.name,
        "cells": cells,
        "cells_total": len(cells) + sum(len(c["subs"]) for c in cells),
    }


def _cell(t: Technique, scale: _Scale) -> Data:
    return {"id": t.id, "name": t.name, "score": scale.cell(t.id), "subs": []}


# -- detail views -------------------------------------------------------------------------------
def _ref(kb: KnowledgeBase, atlas_id: str) -> Data:
    """A link target: the ID, and its name when the knowledge base holds it."""
    known = atlas_id in kb
    return {"id": atlas_id, "name": kb.get(atlas_id).name if known else "", "known": known}


def _head(kb: KnowledgeBase, obj: Tactic | Technique | Mitigation | CaseStudy) -> Data:
    kind = kb.kind(obj.id)
    atlas = None
    if obj.id.startswith("AML."):  # organisation extensions use their own prefix
        atlas = f"{_ATLAS_SITE}/{_ATLAS_PATHS[kind]}/{obj.id}"
    return {"id": obj.id, "name": obj.name, "kind": _KIND_LABELS[kind], "atlas_url": atlas}


def _url(url: str) -> str | None:
    """``url`` if it is safe to link (``http``/``https`` with a host), else ``None``."""
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _references(refs: tuple[Reference, ...]) -> list[Data]:
    return [{"title": r.title or r.url, "url": _url(r.url)} for r in refs if r.title or r.url]


def _attack(ref: AttackReference | None) -> Data | None:
    return None if ref is None else {"id": ref.id, "url": _url(ref.url)}


def _tactic(kb: KnowledgeBase, tactic: Tactic) -> Data:
    return {
        **_head(kb, tactic),
        "description": tactic.description,
        "techniques": [_ref(kb, t.id) for t in kb.techniques_of(tactic.id)],
        "attack": _attack(tactic.attack_reference),
        "created": tactic.created,
        "modified": tactic.modified,
    }


def _technique(kb: KnowledgeBase, t: Technique, scale: _Scale) -> Data:
    own = {m.id for m in kb.mitigations_of(t.id, inherit=False)}
    mitigations = []
    for m in kb.mitigations_of(t.id):
        via = None if m.id in own else t.parent
        uses = [u for u in kb.uses_of(m.id, via or t.id) if u]
        mitigations.append({**_ref(kb, m.id), "via": via, "uses": uses})
    return {
        **_head(kb, t),
        "description": t.description,
        "maturity": t.maturity,
        "parent": _ref(kb, t.parent) if t.parent else None,
        "tactics": [_ref(kb, tac.id) for tac in kb.tactics_of(t.id)],
        "subtechniques": [_ref(kb, s.id) for s in kb.subtechniques(t.id)],
        "mitigations": mitigations,
        "case_studies": [
            {**_ref(kb, cs.id), "date": cs.date_label} for cs in kb.case_studies_using(t.id)
        ],
        "references": _references(t.references),
        "attack": _attack(t.attack_reference),
        "score": scale.cell(t.id),
        "created": t.created,
        "modified": t.modified,
    }


def _mitigation(kb: KnowledgeBase, m: Mitigation) -> Data:
    techniques: dict[str, list[str]] = {}
    for use in m.techniques:  # the official data links some pairs twice, with different texts
        uses = techniques.setdefault(use.technique, [])
        if use.use and use.use not in uses:
            uses.append(use.use)
    return {
        **_head(kb, m),
        "description": m.description,
        "category": list(m.category),
        "lifecycle": list(m.lifecycle),
        "techniques": [{**_ref(kb, tid), "uses": uses} for tid, uses in techniques.items()],
        "attack": _attack(m.attack_reference),
        "created": m.created,
        "modified": m.modified,
    }


def _case_study(kb: KnowledgeBase, cs: CaseStudy) -> Data:
    return {
        **_head(kb, cs),
        "summary": cs.summary,
        "date": cs.date_label,
        "type": cs.case_study_type,
        "target": cs.target,
        "actor": cs.actor,
        "reporter": cs.reporter,
        "steps": [
            {
                "tactic": _ref(kb, step.tactic),
                "technique": _ref(kb, step.technique),
                "description": step.description,
            }
            for step in cs.procedure
        ],
        "references": _references(cs.references),
        "attack": None,
        "created": "",
        "modified": "",
    }
