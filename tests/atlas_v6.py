"""ATLAS data in format 6, made here for tests (no v6 file can be fetched from the test machines).

:func:`to_v6` converts a parsed legacy ``ATLAS.yaml`` to the v6 shape the atlas-data README
describes: kebab-case keys, sections keyed by ID, capitalised maturity and case-study type, and
the links moved into ``relationships``. :func:`release_2026_09` applies to it the content changes
ATLAS published after 5.6.0 that the tests rely on (IDs and names as published; descriptions of
new objects are placeholders written here). :func:`write_v6` saves a document as YAML.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

FORMAT_VERSION = "6.0.0"
MATRIX = "ATLAS-matrix"

# AML.T0019, AML.T0058 and AML.T0104 were removed in 2026.07; their content now lives under
# AML.T0115 Publish Poisoned AI Artifacts as .000-.002 (their short names here are placeholders).
MOVED_TO_T0115 = {"AML.T0019": ("AML.T0115.000", "Datasets"),
                  "AML.T0058": ("AML.T0115.001", "Models"),
                  "AML.T0104": ("AML.T0115.002", "AI Agent Tools")}
NEW_TECHNIQUES = ("AML.T0113", "AML.T0114", "AML.T0129", "AML.T0134")


def _kebab(obj: dict[str, Any], *drop: str) -> dict[str, Any]:
    rename = {"created_date": "created-date", "modified_date": "modified-date",
              "ATT&CK-reference": "attack-reference"}
    return {rename.get(k, k): v for k, v in obj.items() if k not in ("id", *drop)}


def to_v6(legacy: dict[str, Any], release: str = "2026.05") -> dict[str, Any]:
    """The v6 document holding the same objects and links as ``legacy`` (a parsed ATLAS.yaml)."""
    matrix = legacy["matrices"][0]
    rel: dict[str, dict[str, list[Any]]] = {MATRIX: {"sequences": [t["id"] for t in
                                                                    matrix["tactics"]]}}
    tactics = {t["id"]: {"object-type": "tactic", **_kebab(t, "object-type")}
               for t in matrix["tactics"]}
    techniques = {}
    for t in matrix["techniques"]:
        body = _kebab(t, "object-type", "tactics", "subtechnique-of")
        if t.get("maturity"):
            body["maturity"] = t["maturity"].capitalize()
        body["platforms"] = ["Predictive AI"]
        sub = "subtechnique-of" in t
        techniques[t["id"]] = {"object-type": "sub-technique" if sub else "technique", **body}
        links = rel.setdefault(t["id"], {})
        if sub:
            links["specializes"] = [t["subtechnique-of"]]
        if t.get("tactics"):
            links["achieves"] = list(t["tactics"])
    mitigations = {}
    for m in matrix.get("mitigations", []):
        body = _kebab(m, "object-type", "techniques", "ml-lifecycle", "category")
        phases, uses = [], []
        for item in m.get("ml-lifecycle", []):
            (uses if isinstance(item, dict) else phases).append(item)
        uses = list(m.get("techniques", [])) + uses
        body["categories"] = m.get("category") or []
        body["lifecycle-phases"] = phases
        mitigations[m["id"]] = {"object-type": "mitigation", **body}
        rel.setdefault(m["id"], {})["mitigates"] = [
            {"target": u, "description": ""} if isinstance(u, str) else
            {"target": u["id"], "description": u.get("use", "")} for u in uses]
    cases = {}
    for c in legacy.get("case-studies", []):
        body = {"object-type": "case-study", "name": c["name"], "summary": c.get("summary", ""),
                "type": str(c.get("case-study-type", "")).capitalize(),
                "date": c.get("incident-date"),
                "date-granularity": c.get("incident-date-granularity", "DATE")}
        for key in ("target", "actor", "reporter", "references"):
            if key in c:
                body[key] = c[key]
        cases[c["id"]] = body
        rel.setdefault(c["id"], {})["employs"] = [
            {"target": s["technique"], "tactic": s["tactic"], "step-id": i,
             "description": s.get("description", "")}
            for i, s in enumerate(c["procedure"])]
    return {
        "format-version": FORMAT_VERSION,
        "collection": {"id": "ATLAS-collection", "version": release,
                       "name": legacy.get("name", "ATLAS"),
                       "description": "Converted from the legacy layout for tests."},
        "matrix": {"id": MATRIX, "name": "ATLAS Matrix"},
        "tactics": tactics, "techniques": techniques, "mitigations": mitigations,
        "case-studies": cases, "relationships": rel,
    }


def release_2026_09(legacy: dict[str, Any]) -> dict[str, Any]:
    """The 5.6.0 content with the 2026.07-2026.09 changes the tests use, as release 2026.09."""
    doc = to_v6(legacy, "2026.09")
    tac, tech, mit, rel = (doc["tactics"], doc["techniques"], doc["mitigations"],
                           doc["relationships"])
    tac["AML.TA0001"]["name"] = "AI Attack Adaptation"
    seq = rel[MATRIX]["sequences"]
    seq.remove("AML.TA0001")
    seq.insert(2, "AML.TA0001")
    tech["AML.T0020"]["name"] = "Training Data Poisoning"
    mit["AML.M0004"]["name"] = "Limit AI Service Query Volume and Rate"
    tech["AML.T0115"] = {"object-type": "technique", "name": "Publish Poisoned AI Artifacts",
                         "description": "Parent of the publishing techniques (placeholder).",
                         "maturity": "Realized", "platforms": ["Predictive AI", "Generative AI"]}
    rel["AML.T0115"] = {"achieves": ["AML.TA0003"]}
    for old, (new, short) in MOVED_TO_T0115.items():
        body = copy.deepcopy(tech.pop(old))
        body.update({"object-type": "sub-technique", "name": short})
        tech[new] = body
        rel[new] = {"specializes": ["AML.T0115"]}
        del rel[old]
        for links in rel.values():  # mitigations and case studies now point at the new ID
            for kind in ("mitigates", "employs"):
                for item in links.get(kind, []):
                    if item["target"] == old:
                        item["target"] = new
    for tid in NEW_TECHNIQUES:
        tech[tid] = {"object-type": "technique", "name": f"Technique {tid} (placeholder)",
                     "description": "Added after 5.6.0 (placeholder text).",
                     "maturity": "Feasible", "platforms": ["Agentic AI"]}
        rel[tid] = {"achieves": ["AML.TA0005"]}
    return doc


def write_v6(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), "utf-8")
    return path
