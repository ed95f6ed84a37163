"""ATLAS data in format 6 (the monthly content releases since May 2026): the official 5.6.0 file
converted to the v6 shape loads as the same matrix; the release-2026.09 changes load as
published; malformed v6 files give one line naming the entry."""

from __future__ import annotations

import copy

import pytest
import yaml
from atlas_paths import ATLAS_YAML
from atlas_v6 import release_2026_09, to_v6, write_v6

from mlthreat import kb as kbmod
from mlthreat.kb.serialize import to_dict


@pytest.fixture(scope="module")
def legacy_doc():
    return yaml.safe_load(ATLAS_YAML.read_text("utf-8"))


@pytest.fixture(scope="module")
def v6_path(legacy_doc, tmp_path_factory):
    return write_v6(to_v6(legacy_doc), tmp_path_factory.mktemp("v6") / "ATLAS-2026.05.yaml")


def _without_platforms(data):
    for t in data["techniques"]:
        assert t.pop("platforms") == ["Predictive AI"]
    return data


def test_converted_5_6_0_is_the_same_matrix(official, v6_path):
    v6 = kbmod.load_file(v6_path)
    assert (v6.version, v6.format_version) == ("2026.05", "6.0.0")
    assert (official.version, official.format_version) == ("5.6.0", "")
    old, new = to_dict(official), _without_platforms(to_dict(v6))
    old.pop("atlas_version")
    new.pop("atlas_version"), new.pop("format_version")
    assert new == old  # IDs, names, order, relations, maturity, procedures and use texts
    assert v6.technique("AML.T0051.001").maturity == "demonstrated"
    assert v6.case_study("AML.CS0000").case_study_type == "exercise"
    assert [t.id for t in v6.tactics][12] == "AML.TA0001"


def test_release_2026_09_changes(legacy_doc, tmp_path):
    kb = kbmod.load_file(write_v6(release_2026_09(legacy_doc), tmp_path / "r.yaml"))
    assert kb.version == "2026.09"
    assert [t.id for t in kb.tactics][:3] == ["AML.TA0002", "AML.TA0003", "AML.TA0001"]
    staging = kb.tactic("AML.TA0001")
    assert (staging.name, staging.shortname) == ("AI Attack Adaptation", "ai-attack-adaptation")
    for gone in ("AML.T0019", "AML.T0058", "AML.T0104"):
        assert gone not in kb
    assert [t.id for t in kb.subtechniques("AML.T0115")] == [
        "AML.T0115.000", "AML.T0115.001", "AML.T0115.002"]
    assert [t.name for t in kb.tactics_of("AML.T0115.001")] == ["Resource Development"]
    assert kb.technique("AML.T0115").platforms == ("Predictive AI", "Generative AI")
    assert kb.technique("AML.T0020").name == "Training Data Poisoning"
    assert kb.mitigation("AML.M0004").name == "Limit AI Service Query Volume and Rate"


def _broken(doc, tmp_path, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return write_v6(doc, tmp_path / "bad.yaml")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update({"format-version": "7.0.0"}),
     "field 'format-version': ATLAS data format 7.0.0 is not supported: this mlthreat reads "
     "format 6.x"),
    (lambda d: d["collection"].update({"version": "September"}),
     ":2, entry collection, field 'version': content release 'September' is not YYYY.MM or "
     "YYYY.MM.N"),
    (lambda d: d["relationships"]["AML.CS0000"]["employs"].insert(1, 42),
     r"entry AML.CS0000, field 'employs': relationships.AML.CS0000.employs\[1\]: expected an "
     "ATLAS ID or a mapping holding one under 'target'"),
    (lambda d: d["relationships"]["AML.CS0000"]["employs"][0].pop("tactic"),
     r"employs\[0\]: a procedure step needs the 'tactic' it serves"),
    (lambda d: d["relationships"]["ATLAS-matrix"]["sequences"].append("AML.TA0099"),
     "the matrix sequences tactic AML.TA0099, which the file does not hold"),
    (lambda d: d["relationships"]["AML.T0000"].pop("achieves"),
     "entry AML.T0000, field 'relationships': a technique needs an 'achieves' or a "
     "'specializes'"),
    (lambda d: d["relationships"]["AML.M0000"]["mitigates"].append("AML.T0999"),
     "entry AML.M0000, field 'techniques': refers to 'AML.T0999', which is not a technique "
     "in this file"),
    (lambda d: d["relationships"].update({"AML.T0998": {"achieves": ["AML.TA0002"]}}),
     "relationships from 'AML.T0998', which the file does not hold"),
    (lambda d: d["techniques"]["AML.T0000"].pop("name"),
     "entry AML.T0000, field 'name': missing required"),
])
def test_malformed_v6_gives_one_line(legacy_doc, tmp_path, change, message):
    path = _broken(to_v6(legacy_doc), tmp_path, change)
    with pytest.raises(kbmod.DataFileError, match=message) as err:
        kbmod.load_file(path)
    assert str(err.value).startswith(f"{path}") and "\n" not in str(err.value)


def test_a_relationship_error_points_into_relationships(legacy_doc, tmp_path):
    path = _broken(to_v6(legacy_doc), tmp_path,
                   lambda d: d["relationships"]["AML.CS0000"]["employs"].insert(1, 42))
    with pytest.raises(kbmod.DataFileError) as err:
        kbmod.load_file(path)
    lines = path.read_text().splitlines()
    assert lines[err.value.line - 1] == "  AML.CS0000:"
    assert "relationships:" in lines[:err.value.line]


def test_items_as_ids_or_mappings_and_unread_types(legacy_doc, tmp_path):
    doc = to_v6(legacy_doc)
    doc["relationships"]["AML.T0000"]["achieves"] = [{"id": "AML.TA0002", "note": "x"}]
    doc["relationships"]["AML.T0000"]["related-to"] = ["AML.T0001"]
    doc["collection"]["version"] = 2026.10  # unquoted in YAML: read as the float 2026.1
    kb = kbmod.load_file(write_v6(doc, tmp_path / "ok.yaml"))
    assert kb.technique("AML.T0000").tactics == ("AML.TA0002",)
    assert kb.version == "2026.10"
    (warning,) = kb.warnings
    assert (warning.code, warning.atlas_id) == ("unknown-relationship", "AML.T0000")
    assert "'related-to'" in warning.message


@pytest.fixture(scope="module")
def release(legacy_doc, tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "ATLAS-2026.09.yaml"
    return kbmod.load_file(write_v6(release_2026_09(legacy_doc), path))


def _findings(kb, path):
    from mlthreat.kb.check import check_file

    return [(f.kind, f.id, f.found, f.suggestion_id) for f in check_file(kb, path).findings]


def test_tactic_short_names_resolve_under_either_data(embedded, release, tmp_path):
    import json

    layer = tmp_path / "layer.json"
    layer.write_text(json.dumps({"techniques": [
        {"techniqueID": "AML.T0005", "tactic": "ai-attack-adaptation"},
        {"techniqueID": "AML.T0005", "tactic": "ai-attack-staging"}]}))
    assert _findings(embedded, layer) == [
        ("newer-tactic", "AML.T0005", "ai-attack-adaptation", "AML.TA0001")]
    assert _findings(release, layer) == [
        ("legacy-tactic", "AML.T0005", "ai-attack-staging", "AML.TA0001")]
    from mlthreat.kb.check import check_file

    (notice,) = check_file(embedded, layer).findings
    assert notice.message == ("'ai-attack-adaptation' is what ATLAS 2026.08 calls AML.TA0001, "
                              "newer than the loaded 5.6.0, where it is 'ai-attack-staging': "
                              "read as AML.TA0001")


def test_check_against_a_newer_release(release, tmp_path):
    sheet = tmp_path / "mapping.csv"
    sheet.write_text("id,name\nAML.T0115.000,Datasets\nAML.T0019,Publish Poisoned Datasets\n"
                     "AML.T0020,Poison Training Data\n"
                     "AML.M0004,Restrict Number of AI Model Queries\n")
    assert _findings(release, sheet) == [
        ("unknown-id", "AML.T0019", "AML.T0019", None),
        ("outdated-name", "AML.T0020", "Poison Training Data", "AML.T0020"),
        ("outdated-name", "AML.M0004", "Restrict Number of AI Model Queries", "AML.M0004")]
    from mlthreat.kb.check import check_file

    gone, renamed, _ = check_file(release, sheet).findings
    # the snapshot's descriptions are ours, not the official ones: content cannot tie AML.T0019
    # to AML.T0115.000, and the names differ
    assert gone.message == ("AML.T0019 (Publish Poisoned Datasets) was last in ATLAS 5.6.0 and "
                            "is gone from 2026.09")
    assert renamed.message == ("'Poison Training Data' is the ATLAS 5.6.0 name of AML.T0020; "
                               "it is now 'Training Data Poisoning'")


def test_exports_follow_the_data(embedded, release):
    import json

    from mlthreat.kb.export import navigator, stix

    layer = json.loads(navigator.render(release))
    assert layer["versions"] == {"layer": "4.5", "navigator": "5.1.0"}
    assert {"name": "atlas_format_version", "value": "6.0.0"} in layer["metadata"]
    assert {"name": "atlas_data_version", "value": "2026.09"} in layer["metadata"]
    assert [e["tactic"] for e in layer["techniques"]
            if e["techniqueID"] == "AML.T0005"] == ["ai-attack-adaptation"]
    assert json.loads(navigator.render(embedded))["versions"]["layer"] == "4.3"
    assert json.loads(navigator.render(release, layer_version="4.3"))["versions"]["layer"] == \
        "4.3"
    bundle = json.loads(stix.render(release))
    ids = {ref["external_id"] for o in bundle["objects"]
           for ref in o.get("external_references", []) if ref.get("source_name") == "mitre-atlas"}
    assert {"AML.T0115", "AML.T0115.000", "AML.TA0001", "AML.M0004"} <= ids
    assert "AML.T0019" not in ids


def test_snapshot_tool_takes_a_v6_release(legacy_doc, v6_path, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from atlas_paths import RELEASES

    tool = Path(__file__).resolve().parents[2] / "tools" / "build_snapshot.py"
    out = tmp_path / "snapshot.json"
    done = subprocess.run([sys.executable, str(tool), str(v6_path), "--releases",
                           str(RELEASES / "ATLAS-5.0.0.yaml"), str(ATLAS_YAML), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    snap = kbmod.load_file(out)
    assert (snap.version, snap.format_version, snap.source) == ("2026.05", "6.0.0", str(out))
    assert len(snap) == len(kbmod.load())
    assert json.loads(out.read_text())["history"]["releases"] == ["5.0.0", "5.6.0"]
    newer = write_v6(release_2026_09(legacy_doc), tmp_path / "ATLAS-2026.09.yaml")
    refused = subprocess.run([sys.executable, str(tool), str(newer), "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert refused.stderr.startswith("no description of ours for 8 objects: ['AML.T0115'")


def test_check_names_the_id_that_took_a_removed_ones_name(legacy_doc, tmp_path):
    from mlthreat.kb.check import check_file

    doc = release_2026_09(legacy_doc)
    doc["techniques"]["AML.T0135"] = doc["techniques"].pop("AML.T0006")
    doc["relationships"]["AML.T0135"] = doc["relationships"].pop("AML.T0006")
    for links in doc["relationships"].values():
        for item in links.get("mitigates", []) + links.get("employs", []):
            if item["target"] == "AML.T0006":
                item["target"] = "AML.T0135"
    renumbered = kbmod.load_file(write_v6(doc, tmp_path / "renumbered.yaml"))
    sheet = tmp_path / "mapping.csv"
    sheet.write_text("id\nAML.T0006\n")
    (finding,) = check_file(renumbered, sheet).findings
    assert (finding.kind, finding.suggestion_id) == ("unknown-id", "AML.T0135")
    assert finding.message == ("AML.T0006 (Active Scanning) was last in ATLAS 5.6.0 and is "
                               "gone from 2026.09; replaced by AML.T0135 (Active Scanning)")
