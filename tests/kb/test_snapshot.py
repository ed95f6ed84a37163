"""The embedded snapshot holds the facts of the official ATLAS 5.6.0 file, in our own words."""

from __future__ import annotations

import re

import yaml
from atlas_paths import ATLAS_YAML


def _facts(kb):
    return {
        "tactics": [(t.id, t.name, t.shortname, t.attack_reference, t.created, t.modified)
                    for t in kb.tactics],
        "techniques": [(t.id, t.name, t.tactics, t.parent, t.maturity, t.attack_reference,
                        t.created, t.modified, tuple(r.url for r in t.references))
                       for t in kb.techniques],
        "mitigations": [(m.id, m.name, tuple(u.technique for u in m.techniques), m.category,
                         m.lifecycle, m.attack_reference, m.created, m.modified)
                        for m in kb.mitigations],
        "case_studies": [(c.id, c.name, c.incident_date, c.date_granularity, c.case_study_type,
                          c.target, c.actor, c.reporter, c.references,
                          tuple((s.tactic, s.technique) for s in c.procedure))
                         for c in kb.case_studies],
    }


def test_snapshot_facts_equal_official_file(embedded, official):
    assert embedded.version == official.version == "5.6.0"
    ours, theirs = _facts(embedded), _facts(official)
    for section in ours:
        assert ours[section] == theirs[section], section


def test_snapshot_counts_and_relations_match_raw_yaml(embedded):
    raw = yaml.load(ATLAS_YAML.read_text("utf-8"), Loader=yaml.CSafeLoader)
    matrix = raw["matrices"][0]
    assert [t["id"] for t in matrix["tactics"]] == [t.id for t in embedded.tactics]
    assert len(embedded.tactics) == 16
    assert len(embedded.techniques) == 170
    assert sum(1 for t in embedded.techniques if t.parent) == 69
    assert len(embedded.mitigations) == 35
    assert len(embedded.case_studies) == 57
    for t in matrix["techniques"]:
        ours = embedded.technique(t["id"])
        assert ours.name == t["name"]
        assert ours.parent == t.get("subtechnique-of")
        assert list(ours.tactics) == t.get("tactics", [])
    links = {(m["id"], link["id"]) for m in matrix["mitigations"] for link in m["techniques"]}
    # The two links filed under ml-lifecycle in the official file count as technique links.
    links |= {("AML.M0018", "AML.T0052.001"), ("AML.M0034", "AML.T0052.001")}
    ours = {(m.id, u.technique) for m in embedded.mitigations for u in m.techniques}
    assert ours == links


def test_snapshot_text_is_our_own(embedded, official):
    """Descriptions are ours: short, and sharing no 8-word run with the official text."""

    def grams(text, n=8):
        words = re.findall(r"[a-z0-9]+", text.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    for ours in embedded:
        theirs = official.get(ours.id)
        text = getattr(ours, "summary", None) or ours.description
        official_text = getattr(theirs, "summary", None) or theirs.description
        assert text, ours.id
        assert len(re.findall(r"[.!?](\s|$)", text)) <= 4, ours.id
        assert not grams(text) & grams(official_text), ours.id
    # Left empty on purpose: filled only when the official file is loaded.
    assert all(not s.description for c in embedded.case_studies for s in c.procedure)
    assert all(not u.use for m in embedded.mitigations for u in m.techniques)
    assert official.uses_of("AML.M0000", "AML.T0000")[0].startswith("Limit the connection")


def test_history_records_ml_to_ai_renames():
    from mlthreat.kb.sources.snapshot import history

    h = history()
    assert h["releases"] == ["4.5.1", "4.8.0", "5.0.0"]
    assert ["ML Attack Staging", "4.8.0"] in h["names"]["AML.TA0001"]
    assert ["Evade ML Model", "4.8.0"] in h["names"]["AML.T0015"]
