"""Look-ups and relations of the KnowledgeBase, on the embedded and official data."""

from __future__ import annotations

import pytest

from mlthreat import kb as kbmod
from mlthreat.kb.ids import find_ids, kind_of, parent_id

# AI Attack Staging in the order of the official ATLAS 5.6.0 file.
STAGING = ["AML.T0005", "AML.T0018", "AML.T0042", "AML.T0043", "AML.T0088", "AML.T0102"]


def test_lookups_by_id(embedded):
    t = embedded.technique("AML.T0043.001")
    assert t.name == "Black-Box Optimization"
    assert t.parent == "AML.T0043"
    assert embedded.kind("AML.T0043.001") == "sub-technique"
    assert embedded.kind("AML.TA0001") == "tactic"
    assert embedded.mitigation("AML.M0004").name == "Restrict Number of AI Model Queries"
    assert embedded.case_study("AML.CS0000").date_label == "2020"


def test_unknown_id_raises_with_suggestion(embedded):
    with pytest.raises(kbmod.UnknownIdError, match=r"AML\.T0043") as info:
        embedded.technique("AML.T0043.01")
    assert "did you mean" in str(info.value)
    with pytest.raises(kbmod.WrongKindError, match=r"^AML\.TA0001 is a tactic, not a technique$"):
        embedded.technique("AML.TA0001")


def test_techniques_of_tactic_in_matrix_order(embedded):
    staging = embedded.techniques_of("AML.TA0001")
    assert [t.id for t in staging] == STAGING
    with_subs = embedded.techniques_of("AML.TA0001", subtechniques=True)
    ids = [t.id for t in with_subs]
    assert ids.index("AML.T0043.000") == ids.index("AML.T0043") + 1
    total = sum(len(embedded.techniques_of(t.id)) for t in embedded.tactics)
    assert total == sum(len(t.tactics) for t in embedded.techniques if not t.parent)


def test_subtechniques_and_inherited_tactics(embedded):
    assert [s.id for s in embedded.subtechniques("AML.T0024")] == [
        "AML.T0024.000", "AML.T0024.001", "AML.T0024.002"]
    assert [t.id for t in embedded.tactics_of("AML.T0024.002")] == ["AML.TA0010"]
    assert [t.id for t in embedded.tactics_of("AML.T0015")] == [
        "AML.TA0004", "AML.TA0007", "AML.TA0011"]


def test_mitigations_of_include_parent_links(embedded):
    own = {m.id for m in embedded.mitigations_of("AML.T0024.002", inherit=False)}
    inherited = {m.id for m in embedded.mitigations_of("AML.T0024.002")}
    parent = {m.id for m in embedded.mitigations_of("AML.T0024")}
    assert own < inherited
    assert inherited == own | parent
    # AML.M0002 links AML.T0043.001 twice; it is listed once.
    ids = [m.id for m in embedded.mitigations_of("AML.T0043.001")]
    assert ids.count("AML.M0002") == 1


def test_duplicate_links_keep_both_use_texts(official):
    uses = official.uses_of("AML.M0002", "AML.T0043.001")
    assert len(uses) == 2 and uses[0] != uses[1]


def test_case_studies_using_and_frequency(embedded):
    direct = {c.id for c in embedded.case_studies_using("AML.T0043", subtechniques=False)}
    with_subs = {c.id for c in embedded.case_studies_using("AML.T0043")}
    assert direct <= with_subs
    assert "AML.CS0000" in with_subs  # uses AML.T0043.003
    freq = embedded.technique_frequency()
    expected = sum(1 for c in embedded.case_studies if "AML.T0040" in c.techniques)
    assert freq["AML.T0040"] == expected == 7


def test_search_ranks_name_matches_first(embedded):
    hits = embedded.search("extract model")
    assert hits[0].id == "AML.T0024.002"
    # "extraction" matches extract/extracted, never "extra"
    assert "AML.T0063" not in [h.id for h in embedded.search("model extraction")]
    assert embedded.search("membership inference")[0].id == "AML.T0024.000"
    assert all(h.score >= hits[-1].score for h in hits)
    assert embedded.search("AML.M0004")[0].id == "AML.M0004"
    assert embedded.search("") == []
    assert embedded.search("qwxzv nonsense") == []
    cs = embedded.search("Palo Alto")
    assert "AML.CS0000" in [h.id for h in cs]


def test_ids_helpers():
    assert kind_of("AML.T0024.002") == "sub-technique"
    assert kind_of("AML.CS0001") == "case-study"
    assert kind_of("ACME.M0001") == "mitigation"
    assert kind_of("T1059") is None
    assert kind_of("AML.T24") is None
    assert parent_id("AML.T0043.001") == "AML.T0043"
    assert parent_id("AML.T0043") is None
    assert find_ids("see AML.T0043.001, AML.TA0001; not T1059") == ["AML.T0043.001", "AML.TA0001"]


def test_load_prefers_argument_then_env(monkeypatch, tmp_path):
    from atlas_paths import STIX_BUNDLE

    assert kbmod.load().source == "embedded snapshot"
    monkeypatch.setenv("MLTHREAT_ATLAS", str(STIX_BUNDLE))
    assert kbmod.load().source == str(STIX_BUNDLE)


def test_load_names_the_environment_variable(monkeypatch, tmp_path):
    from mlthreat.kb.errors import DataFileError

    monkeypatch.setenv("MLTHREAT_ATLAS", str(tmp_path / "gone.yaml"))
    with pytest.raises(DataFileError) as info:
        kbmod.load()
    missing = "No such file or directory"
    assert str(info.value) == f"{tmp_path / 'gone.yaml'} (from MLTHREAT_ATLAS): {missing}"
    assert info.value.origin == "MLTHREAT_ATLAS" and info.value.reason == missing
    with pytest.raises(DataFileError) as info:
        kbmod.load(tmp_path / "gone.yaml")  # an argument is not blamed on the variable
    assert info.value.origin is None
    monkeypatch.delenv("MLTHREAT_ATLAS")
    (tmp_path / "x.yaml").write_text("just: text\n")
    monkeypatch.setenv("MLTHREAT_EXTENSIONS", str(tmp_path / "x.yaml"))
    with pytest.raises(DataFileError) as info:
        kbmod.load()
    assert str(info.value).startswith(f"{tmp_path / 'x.yaml'} (from MLTHREAT_EXTENSIONS)")
