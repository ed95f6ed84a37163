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
    # no near number (AML.T0109 is an unrelated technique) when nothing says what was meant
    assert ("newer-id", "AML.T0199", "AML.T0199", None) in kinds
    unknown = next(f for f in report.findings if f.kind == "newer-id")
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
        ("newer-id", "AML.T0010.009", "AML.T0010.009", "AML.T0010"),
    ]
    assert [f.line for f in report.findings] == [4, 6]
    notes = tmp_path / "notes.md"
    notes.write_text("# Threat model\n\nWe cover AML.T0043.001 and\nAML.T0051.009: not real.\n")
    report = check_file(embedded, notes)
    assert report.file_format == "text"
    assert [(f.kind, f.id, f.line) for f in report.findings] == [
        ("newer-id", "AML.T0051.009", 4)]
    # a prose line with a colon is valid YAML; notes are still read as text
    notes.write_text("# Notes\nWe cover AML.T0199 and AML.T0051.000 (LLM Prompt Injection: "
                     "Direct).\n")
    report = check_file(embedded, notes)
    assert (report.file_format, report.references_checked) == ("text", 2)
    assert [(f.kind, f.id, f.line) for f in report.findings] == [("newer-id", "AML.T0199", 2)]


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


def test_alias_bomb_is_walked_once(embedded, tmp_path):
    # "Billion laughs": nine levels of ten aliases, 10**9 leaves if aliases were expanded.
    lines = ["a: &a [AML.T0199, AML.T0043, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    # mlthreat.safeload refuses it before any walk (issue 11: aliases expand a bounded amount)
    with pytest.raises(kbmod.DataFileError, match=r"bomb.yaml:6: aliases expand to more than"):
        check_file(embedded, bomb)
    # One long string repeated through aliases is refused, not scanned a thousand times.
    text = "s: &s '" + "AML.T0043 " * 100_000 + "'\nm:\n" + "".join(
        f"  k{i}: *s\n" for i in range(1000))
    strings = tmp_path / "strings.yaml"
    strings.write_text(text)
    with pytest.raises(kbmod.DataFileError, match=r"strings.yaml: its aliases repeat more text"):
        check_file(embedded, strings)


def test_node_limit(tmp_path):
    from mlthreat.kb._scan import walk

    data = {"a": [[str(i)] for i in range(50)]}
    assert len(list(walk(data, tmp_path / "x.json", 10**6))) == 51
    with pytest.raises(kbmod.DataFileError, match=r"x.json: more than 100 values"):
        list(walk(data, tmp_path / "x.json", 10**6, limit=100))


def _deep(depth, leaf):
    node = [leaf]
    for _ in range(depth - 1):
        node = [leaf, node]
    return node


def test_deep_nesting(embedded, tmp_path, monkeypatch):
    # As deep as the JSON parser goes under pytest: the walk used to recurse past the limit.
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(_deep(900, "AML.T0043")))
    with pytest.raises(kbmod.DataFileError, match=r"nested deeper than 100 levels"):
        check_file(embedded, path)  # mlthreat.safeload's bound (issue 11)
    path.write_text(json.dumps(_deep(90, "AML.T0043")))
    assert check_file(embedded, path).references_checked == 90
    # Deeper than any parser here builds: the walk itself has no depth limit.
    from mlthreat.kb import sources

    monkeypatch.setattr(sources, "read_structured", lambda p: _deep(5000, "AML.T0199"))
    report = check_file(embedded, path)
    assert report.references_checked == 5000 and len(report.findings) == 5000
    deepest = max((f.location for f in report.findings), key=len)
    assert len(deepest) < 400 and "…" in deepest


def test_malformed_layer_entries(embedded, tmp_path):
    layer = {"name": "x", "domain": "atlas-atlas", "techniques": [
        {"techniqueID": "AML.T0015", "tactic": "defense-evasion"},
        {"techniqueID": 43},
        {"techniqueID": None, "tactic": "impact"},
        {"techniqueID": ["AML.T0015"]},
        {"techniqueID": "AML.T0015", "tactic": ["a"]},
        None,
        {"techniqueID": "AML.T0015", "tactic": ""},  # no tactic: every tactic of the technique
        {"techniqueID": "AML.T0015", "tactic": "reconnaissance"},
    ]}
    path = tmp_path / "layer.json"
    path.write_text(json.dumps(layer, indent=2))
    report = check_file(embedded, path)
    assert report.file_format == "layer"
    got = [(f.kind, f.location, f.found) for f in report.findings]
    assert got == [
        ("malformed-entry", "techniques[5]", "null"),
        ("malformed-entry", "techniques[1].techniqueID", "43"),
        ("malformed-entry", "techniques[2].techniqueID", "null"),
        ("malformed-entry", "techniques[3].techniqueID", '["AML.T0015"]'),
        ("malformed-entry", "techniques[4].tactic", '["a"]'),
        ("wrong-tactic", "techniques[7].tactic", "reconnaissance"),
    ]
    lines = path.read_text().splitlines()
    assert report.findings[0].line is None  # a bare null has nothing to find it by
    assert [lines[f.line - 1].strip() for f in report.findings[1:]] == [
        '"techniqueID": 43', '"techniqueID": null,', '"techniqueID": [',
        '"tactic": [',
        '"tactic": "reconnaissance"']
    messages = [f.message for f in report.findings]
    assert "not a number" in messages[1] and "not a list" in messages[4]
    assert report.findings[4].id == "AML.T0015" and report.findings[1].id == ""


def test_unknown_ids_get_no_near_number(embedded, tmp_path):
    # AML.T0038 is a gap in the numbering (AML.T0037 and AML.T0039 exist): neither near number
    # is suggested, since both name unrelated objects.
    assert embedded._suggest("AML.T0038") is None
    path = tmp_path / "notes.txt"
    path.write_text("AML.T0038 AML.T0038 AML.T0043.003x AML.T0026.001\n")
    report = check_file(embedded, path)
    assert [(f.line, f.kind, f.id, f.suggestion_id) for f in report.findings] == [
        (1, "unknown-id", "AML.T0038", None), (1, "unknown-id", "AML.T0038", None),
        (1, "unknown-id", "AML.T0026.001", None)]
    assert report.findings[0].message == "AML.T0038 is not in ATLAS 5.6.0"


def test_ids_past_the_data_say_it_may_be_older(embedded, tmp_path):
    path = tmp_path / "mapping.csv"
    path.write_text("id,name\nAML.T0115.000,Publish Poisoned Datasets\nAML.TA0017,x\n"
                    "AML.T0043.009,y\nAML.T0051.001,Indirect\n")
    report = check_file(embedded, path)
    assert [(f.line, f.kind, f.id, f.suggestion_id) for f in report.findings] == [
        (2, "newer-id", "AML.T0115.000", "AML.T0019"), (3, "newer-id", "AML.TA0017", None),
        (4, "newer-id", "AML.T0043.009", "AML.T0043")]
    hint = "so the data may be older than this mapping (run 'mlthreat kb update', or pass " \
        "--atlas with a newer ATLAS file)"
    assert [f.message for f in report.findings] == [
        f"AML.T0115.000 is past the data: in the loaded ATLAS 5.6.0 its highest technique is "
        f"AML.T0112, {hint}; the name beside it, 'Publish Poisoned Datasets', is AML.T0019's",
        f"AML.TA0017 is past the data: in the loaded ATLAS 5.6.0 its highest tactic is "
        f"AML.TA0015, {hint}",
        f"AML.T0043.009 is past the data: in the loaded ATLAS 5.6.0 AML.T0043's highest "
        f"sub-technique is AML.T0043.004, {hint}"]


def test_names_match_loosely_across_the_ml_to_ai_renames(embedded, tmp_path):
    path = tmp_path / "mapping.csv"
    path.write_text(
        "technique_id,technique_name\n"
        "AML.T0024,Exfiltrate via ML Inference API\n"      # 2: old name, another word form
        "AML.T0024,Exfiltrate via AI Inference API\n"      # 3: current name, word form: fine
        "AML.T0024,exfiltration via ai inference API\n"    # 4: case: fine
        "AML.T0024,Exfiltration via AI Inferance API\n"    # 5: a typo: fine
        "AML.T0040,ML Model Inference API Access\n"        # 6: the exact 4.5.1 name
        "AML.T0043,Craft Adversarial Data\n"               # 7: fine
        "AML.T0024.002,Evade ML Model\n"                   # 8: another technique's old name
        "AML.T0038,Craft Adversarial Data\n"               # 9: unknown ID (a gap), known name
        "AML.T0033,Exfiltrate via ML Inference API\n"      # 10: unknown ID, loose old name
        "AML.T0032,rate limiting\n"                        # 11: unknown ID, no name
    )
    report = check_file(embedded, path)
    assert [(f.line, f.kind, f.id, f.suggestion_id) for f in report.findings] == [
        (2, "outdated-name", "AML.T0024", "AML.T0024"),
        (6, "outdated-name", "AML.T0040", "AML.T0040"),
        (8, "name-mismatch", "AML.T0024.002", "AML.T0015"),
        (9, "unknown-id", "AML.T0038", "AML.T0043"),
        (10, "unknown-id", "AML.T0033", "AML.T0024"),
        (11, "unknown-id", "AML.T0032", None),
    ]
    by_line = {f.line: f for f in report.findings}
    assert by_line[2].message == (
        "'Exfiltrate via ML Inference API' matches 'Exfiltration via ML Inference API', the "
        "ATLAS 4.8.0 name of AML.T0024; it is now 'Exfiltration via AI Inference API'")
    assert by_line[2].suggestion_name == "Exfiltration via AI Inference API"
    assert by_line[6].message == ("'ML Model Inference API Access' is the ATLAS 4.5.1 name of "
                                  "AML.T0040; it is now 'AI Model Inference API Access'")
    assert by_line[9].message == ("AML.T0038 is not in ATLAS 5.6.0; the name beside it, "
                                  "'Craft Adversarial Data', is AML.T0043's")
    assert by_line[11].message == "AML.T0032 is not in ATLAS 5.6.0"


def test_every_old_release_name_beside_its_id_is_accepted_or_noted(embedded, tmp_path):
    """The 4.5 release (the "ML" names) and 4.8.0: each name beside its own ID is the current
    name or noted as an old one, never taken for another object's."""
    import csv

    from atlas_paths import RELEASES

    for release in ("ATLAS-4.5.2.yaml", "ATLAS-4.8.0.yaml"):
        old = kbmod.load_file(RELEASES / release)
        rows = [(o.id, o.name) for o in [*old.tactics, *old.techniques, *old.mitigations]
                if o.id in embedded]
        path = tmp_path / "old.csv"
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([("id", "name"), *rows])
        report = check_file(embedded, path)
        renamed = {i for i, name in rows if name != embedded.get(i).name}
        assert (len(rows), len(renamed)) == {"ATLAS-4.5.2.yaml": (116, 42),
                                             "ATLAS-4.8.0.yaml": (144, 38)}[release]
        assert {f.kind for f in report.findings} == {"outdated-name"}, release
        assert {f.id for f in report.findings} == renamed
        assert all(f.suggestion_id == f.id for f in report.findings)
