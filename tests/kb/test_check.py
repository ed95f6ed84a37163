"""The stale-mapping check on layers, CSV, JSON, YAML and prose, against ATLAS 5.6.0."""

from __future__ import annotations

import json

import pytest
from atlas_paths import ATLAS_DATA, CASE_STUDY_LAYERS

from mlthreat import kb as kbmod
from mlthreat.kb.check import check_file


def _kinds(report):
    return [(f.kind, f.id, f.found, f.suggestion_id) for f in report.findings]


def test_official_layers_are_clean(embedded):
    for path in [ATLAS_DATA / "navigator-data/default-navigator-layers/atlas_layer_matrix.json",
                 *sorted(CASE_STUDY_LAYERS.glob("*.json"))]:
        report = check_file(embedded, path)
        assert report.findings == (), path
        assert report.file_format == "layer"
    matrix = check_file(embedded, ATLAS_DATA / "navigator-data/default-navigator-layers/"
                        "atlas_layer_matrix.json")
    assert matrix.references_checked == 180  # one entry per (technique, tactic)


def test_layer_with_legacy_tactics_and_unknown_id(embedded, tmp_path):
    layer = json.loads((CASE_STUDY_LAYERS / "AML.CS0000.json").read_text())
    for entry in layer["techniques"]:
        if entry.get("tactic") == "ai-attack-staging":
            entry["tactic"] = "ml-attack-staging"
    layer["techniques"].append({"techniqueID": "AML.T0015", "tactic": "reconnaissance"})
    layer["techniques"].append({"techniqueID": "AML.T0199"})
    path = tmp_path / "layer.json"
    path.write_text(json.dumps(layer, indent=2))
    report = check_file(embedded, path)
    kinds = _kinds(report)
    legacy = [k for k in kinds if k[0] == "legacy-tactic"]
    assert len(legacy) == 3
    assert all(k[2] == "ml-attack-staging" and k[3] == "AML.TA0001" for k in legacy)
    assert ("wrong-tactic", "AML.T0015", "reconnaissance", "AML.TA0004") in kinds
    assert ("unknown-id", "AML.T0199", "AML.T0199", "AML.T0109") in kinds
    unknown = next(f for f in report.findings if f.kind == "unknown-id")
    assert path.read_text().splitlines()[unknown.line - 1].strip() == '"techniqueID": "AML.T0199"'


def test_csv_names_old_wrong_and_current(embedded, tmp_path):
    path = tmp_path / "mapping.csv"
    path.write_text(
        "technique_id,technique_name,control\n"
        "AML.T0015,Evade ML Model,WAF\n"
        "AML.T0024.002,Extract AI Model,rate limit\n"
        "AML.T0024.002,Evade AI Model,oops\n"
        "AML.TA0001,ML Attack Staging,none\n"
        "AML.T0043,Craft Adversarial Data,Defense Evasion\n"
    )
    report = check_file(embedded, path)
    assert report.file_format == "csv"
    assert report.references_checked == 5
    assert _kinds(report) == [
        ("outdated-name", "AML.T0015", "Evade ML Model", "AML.T0015"),
        ("name-mismatch", "AML.T0024.002", "Evade AI Model", "AML.T0015"),
        ("outdated-name", "AML.TA0001", "ML Attack Staging", "AML.TA0001"),
    ]
    assert [f.line for f in report.findings] == [2, 4, 5]
    assert report.findings[0].suggestion_name == "Evade AI Model"


def test_yaml_and_prose(embedded, tmp_path):
    controls = tmp_path / "controls.yaml"
    controls.write_text(
        "controls:\n"
        "  - control: rate limiting\n"
        "    atlas: AML.M0004\n"
        "    name: Restrict Number of ML Model Queries\n"
        "  - control: signing\n"
        "    atlas: [AML.T0010.003, AML.T0010.009]\n"
    )
    report = check_file(embedded, controls)
    assert report.file_format == "structured"
    assert _kinds(report) == [
        ("outdated-name", "AML.M0004", "Restrict Number of ML Model Queries", "AML.M0004"),
        ("unknown-id", "AML.T0010.009", "AML.T0010.009", "AML.T0010.005"),
    ]
    assert [f.line for f in report.findings] == [4, 6]
    notes = tmp_path / "notes.md"
    notes.write_text("# Threat model\n\nWe cover AML.T0043.001 and\nAML.T0051.009: not real.\n")
    report = check_file(embedded, notes)
    assert report.file_format == "text"
    assert [(f.kind, f.id, f.line) for f in report.findings] == [
        ("unknown-id", "AML.T0051.009", 4)]


def test_unreadable_and_malformed_files(embedded, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"techniques": [\n')
    with pytest.raises(kbmod.DataFileError, match=r"bad.json:2: invalid JSON"):
        check_file(embedded, bad)
    with pytest.raises(kbmod.DataFileError, match="No such file"):
        check_file(embedded, tmp_path / "nope.csv")
    binary = tmp_path / "blob.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(kbmod.DataFileError, match="not UTF-8"):
        check_file(embedded, binary)
