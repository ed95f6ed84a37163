"""Release diffs on the official releases in ../shared/atlas-data/releases/."""

from __future__ import annotations

import copy

import pytest
import yaml
from atlas_paths import ATLAS_YAML, RELEASES
from atlas_v6 import MOVED_TO_T0115, release_2026_09, to_v6, write_v6

from mlthreat import kb as kbmod
from mlthreat.kb.diff import CONTENT_SIMILARITY, Change, diff, moved_positions, replacements


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


# -- across formats and releases: legacy 5.6.0 against format-6 2026.09 ---------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory) -> kbmod.KnowledgeBase:
    """The 2026.09 content release in format 6, converted once for the module."""
    legacy = yaml.load(ATLAS_YAML.read_text("utf-8"), Loader=yaml.CSafeLoader)
    path = tmp_path_factory.mktemp("v6") / "ATLAS-2026.09.yaml"
    return kbmod.load_file(write_v6(release_2026_09(copy.deepcopy(legacy)), path))


@pytest.fixture(scope="module")
def legacy_to_release(official, release):
    return diff(official, release)


def test_versions_name_the_releases(legacy_to_release):
    assert (legacy_to_release.old_version, legacy_to_release.new_version) == ("5.6.0", "2026.09")


def test_renamed(legacy_to_release):
    assert [(c.object_type, c.id, c.before, c.after) for c in legacy_to_release.of("renamed")] == [
        ("tactic", "AML.TA0001", "AI Attack Staging", "AI Attack Adaptation"),
        ("technique", "AML.T0020", "Poison Training Data", "Training Data Poisoning"),
        ("mitigation", "AML.M0004", "Restrict Number of AI Model Queries",
         "Limit AI Service Query Volume and Rate")]


def test_only_the_moved_tactic_is_moved(legacy_to_release):
    # every tactic from column 3 to 12 shifted one to the right, and none of them is reported
    assert legacy_to_release.of("moved") == [
        Change("moved", "tactic", "AML.TA0001", "AI Attack Adaptation", "column 13", "column 3")]


def test_removed_names_what_replaced_it(legacy_to_release):
    removed = {c.id: c.replaced_by for c in legacy_to_release.of("removed")}
    assert removed == {"AML.T0019": ("AML.T0115.000",), "AML.T0058": ("AML.T0115.001",),
                       "AML.T0104": ("AML.T0115.002",)}
    assert removed == {old: (new,) for old, (new, _) in MOVED_TO_T0115.items()}
    for c in legacy_to_release.of("removed"):
        assert (c.object_type, c.before, c.after) == ("technique", "", "")


def test_added(legacy_to_release):
    assert [(c.object_type, c.id) for c in legacy_to_release.of("added")] == [
        ("technique", "AML.T0115"), ("sub-technique", "AML.T0115.000"),
        ("sub-technique", "AML.T0115.001"), ("sub-technique", "AML.T0115.002"),
        ("technique", "AML.T0113"), ("technique", "AML.T0114"), ("technique", "AML.T0129"),
        ("technique", "AML.T0134")]


def test_links_and_procedures_follow_the_new_ids(legacy_to_release):
    """The rest of the diff is the links to the three removed IDs now pointing at their
    replacements: nothing else changed."""
    links = {(c.kind, c.id, c.before, c.after) for c in legacy_to_release.changes
             if c.kind.startswith("links-")}
    assert links == {
        ("links-removed", "AML.M0014", "AML.T0019", ""),
        ("links-added", "AML.M0014", "", "AML.T0115.000"),
        ("links-removed", "AML.M0023", "AML.T0019,AML.T0058", ""),
        ("links-added", "AML.M0023", "", "AML.T0115.000,AML.T0115.001"),
        ("links-removed", "AML.M0025", "AML.T0019", ""),
        ("links-added", "AML.M0025", "", "AML.T0115.000")}
    renumber = {old: new for old, (new, _) in MOVED_TO_T0115.items()}
    procedures = legacy_to_release.of("procedure-changed", "case-study")
    assert [c.id for c in procedures] == ["AML.CS0019", "AML.CS0025", "AML.CS0027", "AML.CS0031",
                                          "AML.CS0049", "AML.CS0053", "AML.CS0054"]
    for c in procedures:  # the same steps, a removed ID swapped for its replacement
        before = c.before.split(",")
        assert c.after.split(",") == [renumber.get(t, t) for t in before] != before
    assert legacy_to_release.counts() == {
        "renamed/tactic": 1, "moved/tactic": 1, "renamed/technique": 1, "added/technique": 5,
        "added/sub-technique": 3, "removed/technique": 3, "renamed/mitigation": 1,
        "links-added/mitigation": 3, "links-removed/mitigation": 3,
        "procedure-changed/case-study": 7}


def test_a_format_conversion_is_no_change(official, tmp_path):
    legacy = yaml.load(ATLAS_YAML.read_text("utf-8"), Loader=yaml.CSafeLoader)
    same = kbmod.load_file(write_v6(to_v6(legacy, "2026.05"), tmp_path / "v6.yaml"))
    result = diff(official, same)
    assert result.changes == () and (result.old_version, result.new_version) == ("5.6.0",
                                                                                 "2026.05")


def test_content_threshold_separates_siblings(official, release):
    """The two most alike descriptions of different techniques (AML.T0019 and AML.T0058, 0.70)
    stay under the threshold, so each removed technique has one replacement, not both."""
    from mlthreat.kb.diff import _jaccard, _words

    a, b = _words(official.get("AML.T0019")), _words(official.get("AML.T0058"))
    assert 0.65 < _jaccard(a, b) < CONTENT_SIMILARITY
    assert _jaccard(a, _words(release.get("AML.T0115.000"))) == 1.0


def _kb(techniques, retired=()):
    from mlthreat.kb.model import KnowledgeBase, Tactic

    return KnowledgeBase(version="x", tactics=(Tactic("AML.TA0000", "T"),),
                         techniques=tuple(techniques), mitigations=(), case_studies=(),
                         retired=tuple(retired))


def test_replaced_by_name_by_note_and_not_by_placeholder():
    from mlthreat.kb.model import Retired, Technique

    text = "Adversaries may publish poisoned artifacts to public registries for victims to use."
    gone = [Technique("AML.T0001", "Exfiltrate via ML Inference API", "one text, long enough"),
            Technique("AML.T0002", "Old", "Placeholder text."),
            Technique("AML.T0003", "Merged away", "another text entirely, nothing alike"),
            Technique("AML.T0004", "Reworded", text)]
    added = [Technique("AML.T0011", "Exfiltration via AI Inference API", "rewritten"),
             Technique("AML.T0012", "New", "Placeholder text."),
             Technique("AML.T0013", "Unrelated", "Added after 5.6.0 (placeholder text)."),
             Technique("AML.T0014", "Broader", text + " Agents too.")]
    new = _kb(added, [Retired(gone[2], "revoked", "AML.T0013")])
    assert replacements(_kb(gone), new, "techniques") == {
        "AML.T0001": ["AML.T0011"],  # the same name, loosely
        "AML.T0003": ["AML.T0013"],  # the data says so
        "AML.T0004": ["AML.T0014"]}  # the content carried over; the placeholders never match


@pytest.mark.parametrize(("old", "new", "moved"), [
    ("abcdef", "abcdef", {}),
    ("abcdefghijklm", "abmcdefghijkl", {"m": (13, 3)}),
    ("abcdef", "bcdefa", {"a": (1, 6)}),
    ("abcdef", "axbcdef", {}),  # an inserted column shifts the rest, moves none
    ("abcdef", "bdef", {}),  # so does a removed one
    ("abcdef", "cabdef", {"c": (3, 1)}),
    ("abcdef", "bcdeaf", {"a": (1, 5)}),
])
def test_moved_positions(old, new, moved):
    assert moved_positions(list(old), list(new)) == moved


def test_moved_positions_keeps_a_longest_run():
    # two runs of three are kept equally well: which one is a choice, how many moved is not
    assert len(moved_positions(list("abcdef"), list("baefcd"))) == 3
    assert len(moved_positions(list("abcdef"), list("fedcba"))) == 5


def test_change_stays_constructible_as_before():
    c = Change("renamed", "technique", "AML.T0020", "B", "A", "B")
    assert c.replaced_by == () and (c.before, c.after) == ("A", "B")
