"""Posture outputs: the JSON document, Markdown for tickets, and the folder ``--out`` writes.

Every output is drawn from the posture *document* (``kind: mlthreat.posture``), the
:meth:`PostureResult.to_dict` form wrapped in the envelope every mlthreat JSON output carries,
so a saved ``posture.json`` renders exactly like a fresh result.

The folder holds ``posture.json``, ``posture.html`` (:mod:`mlthreat.posture.report_html`),
``posture.md`` and ``layers/`` (:mod:`mlthreat.posture.layers`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlthreat import __version__
from mlthreat.errors import UsageError
from mlthreat.kb.model import KnowledgeBase
from mlthreat.posture.compute import PostureResult
from mlthreat.posture.diff import PostureDiff

__all__ = ["BAND_ORDER", "all_gaps", "diff_document", "load_posture", "plural", "posture_document",
           "render_markdown", "write_outputs"]

#: Priority bands from most to least urgent.
BAND_ORDER = ("high", "medium", "low")

Doc = Mapping[str, Any]


def _envelope(kind: str, kb: KnowledgeBase) -> dict[str, Any]:
    return {"kind": kind, "schema_version": 1, "mlthreat_version": __version__,
            **kb.provenance()}


def load_posture(path: str | Path, kb: KnowledgeBase,
                 rules: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The posture document of ``path``: a saved ``posture.json`` (text starting with ``{``),
    checked whole against its schema since it may have been edited, or a YAML profile
    assessed with ``rules`` over the built-in ones.

    Raises
    ------
    UsageError
        One line naming the file (and the line or field) for an unreadable, oversized or
        invalid file, or JSON of another kind.
    """
    from mlthreat import posture
    from mlthreat.safeload import parse_json, read_text

    text = read_text(path)
    if not text.lstrip().startswith("{"):
        ruleset = posture.load_rules(kb, rules)
        return posture_document(posture.assess_posture(posture.load_profile(path, kb), kb,
                                                       ruleset), kb)
    data = parse_json(text, path)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind != "mlthreat.posture":
        raise UsageError(f"{path}: kind: expected a profile or a saved posture.json "
                         f"(kind mlthreat.posture), not {kind!r}")
    from jsonschema import Draft202012Validator

    from mlthreat.schemas import schema

    error = next(iter(sorted(Draft202012Validator(schema("mlthreat.posture")).iter_errors(data),
                             key=lambda e: list(e.path))), None)
    if error is not None:
        where = error.json_path.removeprefix("$.") if error.path else "document"
        raise UsageError(f"{path}: {where}: {error.message[:200]}")
    document: dict[str, Any] = data  # a JSON object: it has a kind
    return document


def posture_document(result: PostureResult, kb: KnowledgeBase) -> dict[str, Any]:
    """The ``mlthreat.posture`` document: the envelope, then :meth:`PostureResult.to_dict`."""
    body = result.to_dict()
    body.pop("kind"), body.pop("schema_version")
    body.pop("atlas_version")  # the envelope carries it (the same value)
    return {**_envelope("mlthreat.posture", kb), **body}


def diff_document(diff: PostureDiff, kb: KnowledgeBase, old: str, new: str) -> dict[str, Any]:
    """The ``mlthreat.posture.diff`` document: the envelope, both sides' sources, the diff and
    ``worse`` (a gap opened or a coverage went down)."""
    body = diff.to_dict()
    body.pop("kind"), body.pop("schema_version")
    return {**_envelope("mlthreat.posture.diff", kb), "old": old, "new": new,
            "worse": is_worse(diff), **body}


def is_worse(diff: PostureDiff) -> bool:
    """Whether the posture got worse: a gap opened, or a technique's coverage went down."""
    return any(s.gaps_opened or s.coverage_down for s in diff.systems)


def all_gaps(doc: Doc) -> list[dict[str, Any]]:
    """Every gap of every system, each with its ``system``, highest priority first (then
    system and technique order, so the order is stable)."""
    rows = [{"system": s["name"], **g} for s in doc["systems"] for g in s["gaps"]]
    return sorted(rows, key=lambda g: (-g["priority"], g["system"], g["technique"]))


# -- Markdown -----------------------------------------------------------------------------------
_MD_SPECIAL = str.maketrans({"|": "\\|", "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ",
                             "\r": " ", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[",
                             "]": "\\]"})


def md(text: Any) -> str:
    """Data text made inert in Markdown: table pipes, HTML, emphasis and links escaped, one
    line."""
    return str(text).translate(_MD_SPECIAL)


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, with an ``s`` unless ``n`` is 1: ``1 system``, ``3 systems``.
    (``word`` may be a phrase ending in its noun: ``applicable technique``.)"""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _todo(g: Mapping[str, Any]) -> str:
    return ", ".join(f"{m['id']} {md(m['name'])} ({m['status'] or 'not declared'})"
                     for m in g["mitigations"]) or "none listed in the matrix"


def render_markdown(doc: Doc) -> str:
    """The posture as Markdown for tickets: an organisation-wide gap table, then per system a
    summary, its gap table and one checkbox per gap (what to implement, how to verify)."""
    lines = [f"# ML security posture: {md(doc['organisation'])}", "",
             f"ATLAS data {md(doc['atlas_version'])}; {plural(len(doc['systems']), 'system')}; "
             f"generated by mlthreat {md(doc['mlthreat_version'])} from {md(doc['source'])}.", ""]
    gaps = all_gaps(doc)
    lines += ["## Gaps by priority", ""]
    if gaps:
        lines += ["| Priority | Band | System | Technique | Status | Coverage |",
                  "|---:|---|---|---|---|---:|"]
        lines += [f"| {g['priority']:g} | {g['band']} | {md(g['system'])} | {g['technique']} "
                  f"{md(g['name'])} | {g['status']} | {_pct(g['coverage'])} |" for g in gaps]
    else:
        lines.append("No gaps: every applicable technique is covered.")
    for s in doc["systems"]:
        n = s["summary"]
        lines += ["", f"## {md(s['name'])}", "",
                  f"Owner {md(s['owner'])}; {md(s['kind'])}; exposure "
                  f"{', '.join(md(e) for e in s['exposure'])}.", "",
                  f"{plural(n['applicable'], 'applicable technique')}: {n['covered']} covered, "
                  f"{n['partial']} partial, {n['uncovered']} uncovered, {n['exposed']} exposed; "
                  f"mean coverage {_pct(n['mean_coverage'])}.", ""]
        if not s["gaps"]:
            lines.append("No gaps.")
            continue
        lines += ["| Priority | Band | Technique | Status | Coverage |",
                  "|---:|---|---|---|---:|"]
        lines += [f"| {g['priority']:g} | {g['band']} | {g['technique']} {md(g['name'])} | "
                  f"{g['status']} | {_pct(g['coverage'])} |" for g in s["gaps"]]
        lines += ["", "### Tasks", ""]
        for g in s["gaps"]:
            lines.append(f"- [ ] **{g['technique']} {md(g['name'])}** ({g['band']}, priority "
                         f"{g['priority']:g}, {g['status']}): "
                         + (f"implement {_todo(g)}" if g["mitigations"] else
                            "the matrix lists no mitigation for it; restrict access and "
                            "monitor"))
            for v in g["verify"]:
                ready = "" if v["ready"] else f" (needs {md(v['needs'])})"
                lines.append(f"  - verify: `{v['command']}`{ready}")
    return "\n".join(lines) + "\n"


# -- the output folder --------------------------------------------------------------------------
def write_outputs(doc: Doc, kb: KnowledgeBase, out: Path, layer_version: str | None = None
                  ) -> list[Path]:
    """Write every output of the posture ``doc`` into ``out`` (created if needed); return the
    paths written, ``posture.json`` first.

    Raises
    ------
    UsageError
        When ``out`` or a file in it cannot be written.
    """
    from mlthreat.posture.layers import posture_layers
    from mlthreat.posture.report_html import render_html

    files: dict[str, str] = {
        "posture.json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
        "posture.html": render_html(doc, kb),
        "posture.md": render_markdown(doc),
    }
    files.update({f"layers/{name}": text
                  for name, text in posture_layers(kb, doc, layer_version).items()})
    from mlthreat.files import OutputError, write_set

    # posture.json, the machine-readable result, goes in last: a set is whole or not at all
    ordered = {name: text for name, text in files.items() if name != "posture.json"}
    ordered["posture.json"] = files["posture.json"]
    try:
        written = write_set(out, ordered)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return [written[name] for name in files]
