"""Loading the official files: ATLAS.yaml (5.x and older releases) and the STIX 2.1 bundle."""

from __future__ import annotations

import json

import pytest
from atlas_paths import ATLAS_YAML, RELEASES

from mlthreat import kb as kbmod


def test_official_yaml_quirks(official):
    m18 = official.mitigation("AML.M0018")
    assert "AML.T0052.001" in [u.technique for u in m18.techniques]
    assert all(isinstance(x, str) for x in m18.lifecycle)
    assert "Deployment" in m18.lifecycle
    assert official.case_study("AML.CS0000").procedure[0].description.startswith("We identified")


def test_stix_bundle_matches_yaml(official, official_stix):
    assert official_stix.version.startswith("unknown (STIX bundle")
    assert [t.id for t in official_stix.tactics] == [t.id for t in official.tactics]
    assert [t.shortname for t in official_stix.tactics] == [t.shortname for t in official.tactics]
    for t in official.techniques:
        s = official_stix.technique(t.id)
        assert (s.name, s.parent, s.tactics) == (t.name, t.parent, t.tactics), t.id
    yaml_links = {(m.id, u.technique) for m in official.mitigations for u in m.techniques}
    stix_links = {(m.id, u.technique) for m in official_stix.mitigations for u in m.techniques}
    # The bundle lacks exactly the two links the YAML files under ml-lifecycle.
    assert yaml_links - stix_links == {("AML.M0018", "AML.T0052.001"),
                                       ("AML.M0034", "AML.T0052.001")}
    assert stix_links <= yaml_links
    assert official_stix.case_studies == ()


@pytest.mark.parametrize("name,version,tactics,techniques,mitigations,cases", [
    ("ATLAS-4.5.2.yaml", "4.5.1", 14, 82, 20, 22),
    ("ATLAS-4.8.0.yaml", "4.8.0", 14, 104, 26, 27),
    ("ATLAS-5.0.0.yaml", "5.0.0", 15, 130, 26, 33),
])
def test_older_releases_load(name, version, tactics, techniques, mitigations, cases):
    k = kbmod.load_file(RELEASES / name)
    assert (k.version, len(k.tactics), len(k.techniques), len(k.mitigations),
            len(k.case_studies)) == (version, tactics, techniques, mitigations, cases)


def test_malformed_yaml_names_line(tmp_path):
    bad = tmp_path / "ATLAS.yaml"
    bad.write_text("id: ATLAS\nversion: 1\nmatrices:\n  - id: [unclosed\n")
    with pytest.raises(kbmod.DataFileError) as info:
        kbmod.load_file(bad)
    assert str(info.value).startswith(f"{bad}:")
    assert info.value.line == 5  # the end of input, where the bracket was still open


def test_wrong_schema_names_entry_and_field(tmp_path):
    text = ATLAS_YAML.read_text("utf-8").replace(
        "  - id: AML.T0000.001\n    name: Pre-Print Repositories\n",
        "  - id: AML.T0000.001\n    nome: Pre-Print Repositories\n", 1)
    bad = tmp_path / "ATLAS.yaml"
    bad.write_text(text)
    with pytest.raises(kbmod.DataFileError) as info:
        kbmod.load_file(bad)
    err = info.value
    assert (err.entry, err.field) == ("AML.T0000.001", "name")
    assert text.splitlines()[err.line - 1].strip() == "- id: AML.T0000.001"


def test_malformed_id_and_unknown_format(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("version: 1\nmatrices:\n- tactics:\n  - id: TA0001\n    name: X\n"
                   "  techniques: []\n")
    with pytest.raises(kbmod.DataFileError, match="malformed ATLAS ID 'TA0001'"):
        kbmod.load_file(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(kbmod.DataFileError, match="not an ATLAS data file"):
        kbmod.load_file(other)
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "bundle",\n "objects": [}\n')
    with pytest.raises(kbmod.DataFileError, match=r"broken.json:2: invalid JSON"):
        kbmod.load_file(broken)
    with pytest.raises(kbmod.DataFileError, match="No such file"):
        kbmod.load_file(tmp_path / "missing.yaml")


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(kbmod.DataFileError, match="invalid YAML"):
        kbmod.load_file(evil)


def test_a_top_level_technique_with_a_parent_is_refused(tmp_path):
    # AML.T0000 under AML.T0001 and back: the pair left the matrix silently (no tactics of
    # their own, each the other's sub-technique)
    import yaml

    data = yaml.safe_load(ATLAS_YAML.read_text(encoding="utf-8"))
    techniques = {t["id"]: t for t in data["matrices"][0]["techniques"]}
    for tid, parent in (("AML.T0000", "AML.T0001"), ("AML.T0001", "AML.T0000")):
        techniques[tid].pop("tactics", None)
        techniques[tid]["subtechnique-of"] = parent
    path = tmp_path / "ATLAS.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(kbmod.DataFileError, match=r"entry AML.T0000, field 'subtechnique-of': "
                                                  r"AML.T0000 is not a sub-technique ID but has "
                                                  r"parent AML.T0001"):
        kbmod.load_file(path)
