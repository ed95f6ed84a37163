"""ATT&CK Navigator layers (domain ``atlas-atlas``) of the matrix, and a reader for them.

Four layers are built from a :class:`~mlthreat.kb.model.KnowledgeBase`: the whole matrix, one
case study's procedure, how often case studies use each technique, and arbitrary per-technique
scores (for example attack success rates from an assessment). Entries follow the conventions of
the official ATLAS layers: a top-level technique has one entry per tactic (``tactic`` is the
tactic's short name) and ``showSubtechniques``; a sub-technique entry has no tactic (Navigator
then shows it under every tactic of its parent), and when a sub-technique is marked its parent
is listed unmarked with ``showSubtechniques: true``, only so that Navigator expands it.

Two layer formats are written: ``"4.3"`` (Navigator 4.6.4, the version the ATLAS Navigator
ran up to the legacy data) and ``"4.5"`` (the current Navigator format, which ATLAS's own layers
use since the format-6 content releases; no ``attack`` version, since the data is not ATT&CK).
Each builder defaults to the format that suits its data (:func:`default_layer_version`).
:func:`read_layer` reads any 4.x layer back.

References
----------
MITRE ATT&CK Navigator layer file format, versions 4.3 and 4.5
(``layers/spec`` in github.com/mitre-attack/attack-navigator).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from mlthreat import __version__
from mlthreat.errors import UsageError
from mlthreat.kb.ids import kind_of
from mlthreat.kb.layers import Layer, is_number, read_layer
from mlthreat.kb.model import KnowledgeBase, Tactic

__all__ = [
    "DOMAIN",
    "FORMAT",
    "LAYERS",
    "LAYER_VERSIONS",
    "SUFFIX",
    "Layer",
    "case_study_layer",
    "default_layer_version",
    "frequency_layer",
    "matrix_layer",
    "read_layer",
    "render",
    "scores_layer",
]

FORMAT = "navigator"
SUFFIX = ".json"
DOMAIN = "atlas-atlas"
#: Layer format version -> the ``versions`` object written for it.
LAYER_VERSIONS: dict[str, dict[str, str]] = {
    "4.3": {"layer": "4.3", "navigator": "4.6.4"},
    "4.5": {"layer": "4.5", "navigator": "5.1.0"},
}
LAYERS = ("matrix", "case-study", "frequency", "scores")
MARK_COLOR = "#C8E6C9"
GRADIENT = ["#FFFFFF", "#E53935"]

_Key = tuple[str, str | None]  # (techniqueID, tactic short name or None)
_FIELD_ORDER = ("showSubtechniques", "score", "color", "comment")
ScoreKey = str | tuple[str, str | None]  # a technique ID, or (technique ID, tactic or None)
# Mapping is invariant in its key: accept maps keyed by IDs alone, by cells alone, or by both.
ScoreMap = Mapping[str, float] | Mapping[_Key, float] | Mapping[ScoreKey, float]
CommentMap = Mapping[str, str] | Mapping[_Key, str] | Mapping[ScoreKey, str]


def default_layer_version(kb: KnowledgeBase) -> str:
    """The layer format that suits ``kb``: ``"4.5"`` for format-6 data (ATLAS publishes its
    layers for Navigator 5.x since the content releases began), ``"4.3"`` before (the format of
    the ATLAS Navigator 4.6.4)."""
    return "4.5" if kb.format_version.split(".")[0] == "6" else "4.3"


def _versions(layer_version: str | None, kb: KnowledgeBase) -> dict[str, str]:
    if layer_version is None:
        layer_version = default_layer_version(kb)
    try:
        return dict(LAYER_VERSIONS[layer_version])
    except (KeyError, TypeError):
        raise UsageError(
            f"unsupported Navigator layer format {layer_version!r}; "
            f"choose one of {', '.join(LAYER_VERSIONS)}"
        ) from None


def _shortname(tactic: Tactic) -> str:
    return tactic.shortname or re.sub(r"[^a-z0-9]+", "-", tactic.name.lower()).strip("-")


def _slots(kb: KnowledgeBase, technique_id: str) -> list[str | None]:
    """The tactic short names a technique's entries go under (``[None]`` if it has none)."""
    names: list[str | None] = [_shortname(t) for t in kb.tactics_of(technique_id)]
    return names or [None]


class _Entries:
    """Technique entries keyed by (technique, tactic), merged and emitted in a stable order."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._rank = {_shortname(t): i for i, t in enumerate(kb.tactics)}
        self._items: dict[_Key, dict[str, Any]] = {}

    def __contains__(self, key: _Key) -> bool:
        return key in self._items

    def mark(self, technique_id: str, tactic: str | None, **fields: Any) -> None:
        entry = self._items.setdefault((technique_id, tactic), {})
        if tactic is not None or kind_of(technique_id) == "technique":
            entry.setdefault("showSubtechniques", False)
        entry.update(fields)

    def expand(self, parent_id: str, tactic: str | None) -> None:
        self.mark(parent_id, tactic, showSubtechniques=True)

    def build(self) -> list[dict[str, Any]]:
        def order(key: _Key) -> tuple[str, int, str]:
            tid, tactic = key
            rank = -1 if tactic is None else self._rank.get(tactic, len(self._rank))
            return tid, rank, tactic or ""

        out = []
        for tid, tactic in sorted(self._items, key=order):
            fields = self._items[(tid, tactic)]
            entry: dict[str, Any] = {"techniqueID": tid}
            if tactic is not None:
                entry["tactic"] = tactic
            entry.update((k, fields[k]) for k in _FIELD_ORDER if k in fields)
            out.append(entry)
        return out


def _layer(
    kb: KnowledgeBase,
    layer_version: str | None,
    name: str,
    description: str,
    entries: _Entries,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "versions": _versions(layer_version, kb),
        "domain": DOMAIN,
        "metadata": [
            {"name": "atlas_data_version", "value": kb.version},
            *([{"name": "atlas_format_version", "value": kb.format_version}]
              if kb.format_version else []),
            {"name": "generated_by", "value": f"mlthreat {__version__}"},
            *({"name": k, "value": v} for k, v in metadata),
        ],
        "name": name,
        "description": description,
        "techniques": entries.build(),
        **extra,
    }


def matrix_layer(kb: KnowledgeBase, layer_version: str | None = None) -> dict[str, Any]:
    """Every technique and sub-technique of the matrix, coloured and expanded.

    Parameters
    ----------
    kb : KnowledgeBase
        The matrix to draw.
    layer_version : {"4.3", "4.5"}, optional
        Layer file format (default: :func:`default_layer_version` of ``kb``).

    Returns
    -------
    dict
        The layer, ready for :func:`json.dumps`.

    Raises
    ------
    UsageError
        For an unsupported ``layer_version``.

    Examples
    --------
    >>> from mlthreat.kb import load
    >>> layer = matrix_layer(load())
    >>> layer["techniques"][0]["techniqueID"], layer["techniques"][0]["tactic"]
    ('AML.T0000', 'reconnaissance')
    """
    _versions(layer_version, kb)
    entries = _Entries(kb)
    for t in kb.techniques:
        if t.parent is None:
            for tactic in _slots(kb, t.id):
                entries.mark(t.id, tactic, showSubtechniques=True, color=MARK_COLOR)
        else:
            entries.mark(t.id, None, color=MARK_COLOR)
    n = len(kb.techniques)
    return _layer(
        kb, layer_version, f"{kb.name} matrix", f"All {n} techniques and sub-techniques of "
        f"{kb.name} {kb.version}, by tactic.", entries,
        legendItems=[{"label": "Technique", "color": MARK_COLOR}],
    )


def case_study_layer(
    kb: KnowledgeBase, case_study_id: str, layer_version: str | None = None
) -> dict[str, Any]:
    """The techniques one case study's procedure uses, coloured under the tactic of each step.

    Parameters
    ----------
    kb : KnowledgeBase
        Holds the case study.
    case_study_id : str
        ``AML.CS0000``-style ID.
    layer_version : {"4.3", "4.5"}, optional
        Layer file format (default: :func:`default_layer_version` of ``kb``).

    Returns
    -------
    dict
        The layer; its name is the case study's name, its description the knowledge base's
        summary of it.

    Raises
    ------
    UnknownIdError
        When the knowledge base holds no such case study.
    UsageError
        For an unsupported ``layer_version``.

    Examples
    --------
    >>> from mlthreat.kb import load
    >>> layer = case_study_layer(load(), "AML.CS0000")
    >>> [e["techniqueID"] for e in layer["techniques"] if "color" in e][:3]
    ['AML.T0000.001', 'AML.T0002.000', 'AML.T0005']
    """
    _versions(layer_version, kb)
    cs = kb.case_study(case_study_id)
    entries = _Entries(kb)
    for step in cs.procedure:
        t = kb.technique(step.technique)
        owner = t.parent or t.id
        tactics = [_shortname(kb.tactic(step.tactic))] if step.tactic else _slots(kb, owner)
        for tactic in tactics:
            if t.parent is None:
                entries.mark(t.id, tactic, color=MARK_COLOR)
            else:
                entries.expand(t.parent, tactic)
        if t.parent is not None:
            entries.mark(t.id, None, color=MARK_COLOR)
    meta = [("case_study", cs.id)]
    if cs.id.startswith("AML."):
        meta.append(("url", f"https://atlas.mitre.org/studies/{cs.id}"))
    return _layer(
        kb, layer_version, cs.name, cs.summary, entries, metadata=tuple(meta),
        legendItems=[{"label": "Used in the procedure", "color": MARK_COLOR}],
    )


def frequency_layer(kb: KnowledgeBase, layer_version: str | None = None) -> dict[str, Any]:
    """A heat map of how often the case studies' procedures use each technique.

    The score of a top-level technique under a tactic is the number of procedure steps, over
    all case studies, that use that technique for that tactic; a sub-technique's score is the
    number of steps that use it, whatever the tactic. A case study that uses a technique at two
    steps counts twice, and a parent is not credited with its sub-techniques' steps. This is
    the rule the official ATLAS frequency layer follows, so the scores agree with it exactly.

    Parameters
    ----------
    kb : KnowledgeBase
        Holds the case studies.
    layer_version : {"4.3", "4.5"}, optional
        Layer file format (default: :func:`default_layer_version` of ``kb``).

    Returns
    -------
    dict
        The layer; every technique is scored (0 when unused), the gradient runs from 0 to the
        number of case studies.

    Raises
    ------
    UsageError
        For an unsupported ``layer_version``.
    """
    _versions(layer_version, kb)
    counts: Counter[_Key] = Counter()
    for cs in kb.case_studies:
        for step in cs.procedure:
            t = kb.technique(step.technique)
            if t.parent is not None:
                counts[(t.id, None)] += 1
            else:
                tactics = [_shortname(kb.tactic(step.tactic))] if step.tactic else _slots(kb, t.id)
                counts.update((t.id, tactic) for tactic in tactics)
    entries = _Entries(kb)
    for t in kb.techniques:
        if t.parent is None:
            for tactic in _slots(kb, t.id):
                entries.mark(t.id, tactic, showSubtechniques=True, score=counts[(t.id, tactic)])
        else:
            entries.mark(t.id, None, score=counts[(t.id, None)])
    for (tid, tactic), n in counts.items():  # a step under a tactic its technique does not list
        if (tid, tactic) not in entries:
            entries.mark(tid, tactic, showSubtechniques=True, score=n)
    n_cs = len(kb.case_studies)
    top = max([n_cs, 1, *counts.values()])
    return _layer(
        kb, layer_version, f"{kb.name} case-study frequency",
        f"Procedure steps using each technique, over the {n_cs} case studies of {kb.name} "
        f"{kb.version}.", entries,
        gradient={"colors": list(GRADIENT), "minValue": 0, "maxValue": top},
    )


def _cells(kb: KnowledgeBase, values: ScoreMap | CommentMap) -> dict[_Key, Any]:
    """Values by (technique, tactic) cell: a technique ID or ``(ID, None)`` fills every cell of
    the technique (each tactic of a top-level technique; the one tactic-less entry of a
    sub-technique), ``(ID, tactic)`` only that cell, and wins over the former there."""
    general: dict[str, Any] = {}
    cells: dict[_Key, Any] = {}
    for key, value in values.items():
        tid, tactic = (key, None) if isinstance(key, str) else key
        kb.technique(tid)
        if tactic is None:
            general[tid] = value
        else:
            cells[(tid, tactic)] = value
    out: dict[_Key, Any] = {}
    for tid, value in general.items():
        slots = _slots(kb, tid) if kb.technique(tid).parent is None else [None]
        out.update(((tid, tactic), value) for tactic in slots)
    out.update(cells)
    return out


def scores_layer(
    kb: KnowledgeBase,
    scores: ScoreMap,
    name: str,
    description: str = "",
    layer_version: str | None = None,
    comments: CommentMap | None = None,
) -> dict[str, Any]:
    """A layer scoring the given techniques, for example attack success rates.

    Parameters
    ----------
    kb : KnowledgeBase
        Resolves the technique IDs and their tactics.
    scores : mapping of technique ID, or of (technique ID, tactic short name or None), to float
        Finite scores. A technique ID (or ``(ID, None)``) scores every cell of the technique: a
        top-level technique under each of its tactics, a sub-technique once without a tactic;
        ``(ID, tactic)`` scores that one cell, over the technique's own score there. A scored
        sub-technique's parent is expanded.
    name, description : str
        Layer name and description.
    layer_version : {"4.3", "4.5"}, optional
        Layer file format (default: :func:`default_layer_version` of ``kb``).
    comments : mapping, optional
        Entry comments, keyed as ``scores``.

    Returns
    -------
    dict
        The layer, with a gradient from ``min(0, lowest score)`` to the highest score.

    Raises
    ------
    UnknownIdError
        For an ID that is not a technique of the knowledge base.
    UsageError
        For a score that is not a finite number, or an unsupported ``layer_version``.

    Examples
    --------
    >>> from mlthreat.kb import load
    >>> layer = scores_layer(load(), {"AML.T0024.002": 0.9}, "Extraction")
    >>> [(e["techniqueID"], e.get("score")) for e in layer["techniques"]]
    [('AML.T0024', None), ('AML.T0024.002', 0.9)]
    >>> layer = scores_layer(load(), {("AML.T0015", "impact"): 2}, "One cell")
    >>> [(e["techniqueID"], e.get("tactic"), e.get("score")) for e in layer["techniques"]]
    [('AML.T0015', 'impact', 2)]
    """
    _versions(layer_version, kb)
    for key, value in scores.items():
        if not is_number(value):
            tid = key if isinstance(key, str) else key[0]
            raise UsageError(f"score of {tid} must be a finite number, not {value!r}")
    entries = _Entries(kb)
    cells = _cells(kb, scores)
    notes = _cells(kb, comments or {})
    for tid, tactic in sorted({*cells, *notes}, key=lambda k: (k[0], k[1] or "")):
        fields: dict[str, Any] = {}
        if (tid, tactic) in cells:
            fields["score"] = cells[(tid, tactic)]
        if (tid, tactic) in notes:
            fields["comment"] = notes[(tid, tactic)]
        entries.mark(tid, tactic, **fields)
        parent = kb.technique(tid).parent
        if parent is not None:
            for slot in _slots(kb, parent):
                entries.expand(parent, slot)
    values = list(cells.values())
    low = min([0.0, *values])
    high = max([*values, low])
    return _layer(
        kb, layer_version, name, description, entries,
        gradient={"colors": list(GRADIENT), "minValue": low,
                  "maxValue": high if high > low else low + 1},
    )


def render(
    kb: KnowledgeBase,
    *,
    layer: str = "matrix",
    case_study: str | None = None,
    scores: ScoreMap | None = None,
    name: str | None = None,
    layer_version: str | None = None,
    comments: CommentMap | None = None,
) -> str:
    """One layer as JSON text: 2-space indent, entries sorted, same bytes for the same input.

    Parameters
    ----------
    kb : KnowledgeBase
        The matrix.
    layer : {"matrix", "case-study", "frequency", "scores"}
        Which layer to build (see the ``*_layer`` functions).
    case_study : str, optional
        The case study ID; required for, and only allowed with, ``layer="case-study"``.
    scores : mapping, optional
        Required for, and only allowed with, ``layer="scores"``; keyed as in
        :func:`scores_layer`.
    name : str, optional
        Replaces the layer's name.
    layer_version : {"4.3", "4.5"}, optional
        Layer file format (default: :func:`default_layer_version` of ``kb``).
    comments : mapping, optional
        Entry comments for ``layer="scores"``, keyed as ``scores``.

    Returns
    -------
    str
        The layer file's text, ending in a newline.

    Raises
    ------
    UsageError
        For an unknown layer, a missing or misplaced option, or an unsupported format.
    """
    _versions(layer_version, kb)
    if case_study is not None and layer != "case-study":
        raise UsageError("case_study only applies to layer='case-study'")
    if scores is not None and layer != "scores":
        raise UsageError("scores only apply to layer='scores'")
    if comments and layer != "scores":
        raise UsageError("comments only apply to layer='scores'")

    def need(value: Any, option: str) -> Any:
        if value is None:
            raise UsageError(f"layer={layer!r} needs {option}")
        return value

    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "matrix": lambda: matrix_layer(kb, layer_version),
        "case-study": lambda: case_study_layer(kb, need(case_study, "case_study"), layer_version),
        "frequency": lambda: frequency_layer(kb, layer_version),
        "scores": lambda: scores_layer(
            kb, need(scores, "scores"), name or "Technique scores", layer_version=layer_version,
            comments=comments,
        ),
    }
    if layer not in builders:
        raise UsageError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
    data = builders[layer]()
    if name:
        data["name"] = name
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
