"""Release diffs on the official releases in ../shared/atlas-data/releases/."""

from __future__ import annotations

import pytest
import yaml
from atlas_paths import ATLAS_YAML, RELEASES

from mlthreat import kb as kbmod
from mlthreat.kb.diff import diff


def _raw(path):
    data = yaml.load(path.read_text("utf-8"), Loader=yaml.CSafeLoader)
    m = data["matrices"][0]
    out = {o["id"]: o["name"] for section in ("tactics", "techniques", "mitigations")
           for o in m[section]}
    out.update({c["id"]: c["name"] for c in data.get("case-studies", [])})
    return out


@pytest.mark.parametrize("old,new", [
    ("ATLAS-4.5.2.yaml", "ATLAS-4.8.0.yaml"),
    ("ATLAS-4.8.0.yaml", "ATLAS-5.0.0.yaml"),
    ("ATLAS-5.0.0.yaml", None),
    ("ATLAS-4.5.2.yaml", None),
])
def test_added_removed_renamed_match_raw_files(old, new):
    old_path = RELEASES / old
    new_path = RELEASES / new if new else ATLAS_YAML
    a, b = _raw(old_path), _raw(new_path)
    result = diff(kbmod.load_file(old_path), kbmod.load_file(new_path))
    assert {c.id for c in result.of("added")} == set(b) - set(a)
    assert {c.id for c in result.of("removed")} == set(a) - set(b)
    assert {c.id for c in result.of("renamed")} == {i for i in a.keys() & b.keys()
                                                    if a[i] != b[i]}


def test_ml_to_ai_renames_and_new_tactic():
    result = diff(kbmod.load_file(RELEASES / "ATLAS-4.8.0.yaml"),
                  kbmod.load_file(RELEASES / "ATLAS-5.0.0.yaml"))
    assert (result.old_version, result.new_version) == ("4.8.0", "5.0.0")
    tactics = {(c.id, c.before, c.after) for c in result.of("renamed", "tactic")}
    assert tactics == {("AML.TA0000", "ML Model Access", "AI Model Access"),
                       ("AML.TA0001", "ML Attack Staging", "AI Attack Staging")}
    evade = next(c for c in result.of("renamed") if c.id == "AML.T0015")
    assert (evade.before, evade.after) == ("Evade ML Model", "Evade AI Model")
    assert [(c.id, c.name) for c in result.of("added", "tactic")] == [
        ("AML.TA0014", "Command and Control")]
    assert result.counts()["renamed/technique"] == 18


def test_moves_between_tactics():
    result = diff(kbmod.load_file(RELEASES / "ATLAS-5.0.0.yaml"), kbmod.load_file(ATLAS_YAML))
    old = kbmod.load_file(RELEASES / "ATLAS-5.0.0.yaml")
    new = kbmod.load_file(ATLAS_YAML)
    expected = {t.id for t in new.techniques if t.id in old and not t.parent
                and old.technique(t.id).tactics != t.tactics}
    moved = result.of("moved")
    assert {c.id for c in moved} == expected and len(expected) == 3
    for c in moved:
        assert c.before == ",".join(old.technique(c.id).tactics)
        assert c.after == ",".join(new.technique(c.id).tactics)


def test_case_studies_are_compared():
    result = diff(kbmod.load_file(RELEASES / "ATLAS-4.8.0.yaml"), kbmod.load_file(ATLAS_YAML))
    added = result.of("added", "case-study")
    assert len(added) == 30 and added[0].id == "AML.CS0027"
    assert len(result.of("renamed", "case-study")) == 1


def test_no_difference_with_itself(official):
    assert diff(official, official).changes == ()
