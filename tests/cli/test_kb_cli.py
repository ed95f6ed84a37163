"""The ``mlthreat kb`` commands, run as a user runs them: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from atlas_paths import ATLAS_YAML, CASE_STUDY_LAYERS, RELEASES, STIX_BUNDLE


def run(*args, env=None):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("MLTHREAT_ATLAS", None) if env is None or "MLTHREAT_ATLAS" not in env else None
    return subprocess.run([sys.executable, "-m", "mlthreat", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_matrix_table_and_json():
    out = run("kb", "matrix")
    assert out.returncode == 0, out.stderr
    for name in ("Reconnaissance", "AI Attack Staging", "Exfiltration", "Impact"):
        assert name in out.stdout
    assert "ATLAS data 5.6.0" in out.stdout
    data = json.loads(run("kb", "matrix", "--json").stdout)
    assert data["kind"] == "mlthreat.kb.matrix" and data["atlas_version"] == "5.6.0"
    assert len(data["tactics"]) == 16
    staging = next(t for t in data["tactics"] if t["id"] == "AML.TA0001")
    assert [t["id"] for t in staging["techniques"]][:2] == ["AML.T0005", "AML.T0018"]


def test_show_technique_json_and_text():
    data = json.loads(run("kb", "show", "AML.T0024.002", "--json").stdout)
    assert data["name"] == "Extract AI Model" and data["type"] == "sub-technique"
    assert [t["id"] for t in data["tactics"]] == ["AML.TA0010"]
    mits = {m["id"]: m["inherited"] for m in data["mitigations"]}
    assert mits["AML.M0004"] is False
    assert any(data["case_studies"])
    text = run("kb", "show", "AML.T0043").stdout
    assert "Black-Box Optimization" in text and "AML.M0015" in text


def test_show_with_official_file_has_use_texts():
    data = json.loads(run("kb", "show", "AML.T0000", "--json", "--atlas", str(ATLAS_YAML)).stdout)
    assert data["atlas_source"] == str(ATLAS_YAML)
    use = next(m for m in data["mitigations"] if m["id"] == "AML.M0000")["use"]
    assert use and use[0].startswith("Limit the connection")


def test_unknown_id_is_one_line_exit_2():
    out = run("kb", "show", "AML.T0043.01")
    assert out.returncode == 2
    assert out.stderr.strip() == ("mlthreat: error: unknown ATLAS ID 'AML.T0043.01' in ATLAS "
                                  "data 5.6.0 (did you mean AML.T0043.001?)")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("text,message", [
    ("T0043", "unknown ATLAS ID 'T0043' in ATLAS data 5.6.0 (did you mean AML.T0043?)"),
    ("aml.t43.1", "unknown ATLAS ID 'aml.t43.1' in ATLAS data 5.6.0 (did you mean "
                  "AML.T0043.001?)"),
    ("Craft Adversarial Data", "unknown ATLAS ID 'Craft Adversarial Data' in ATLAS data 5.6.0 "
                               "(did you mean AML.T0043?)"),
    ("Evade ML Model", "unknown ATLAS ID 'Evade ML Model' in ATLAS data 5.6.0 (did you mean "
                       "AML.T0015?)"),
    ("adversarial thing", "unknown ATLAS ID 'adversarial thing' in ATLAS data 5.6.0; search "
                          "names and descriptions with: mlthreat kb search 'adversarial thing'"),
    ("AML.T0199", "unknown ATLAS ID 'AML.T0199' in ATLAS data 5.6.0"),
    # hostile text is never echoed raw: a terminal escape stays escaped, a long ID is cut
    ("a\x1b[31mred", "unknown ATLAS ID 'a\\x1b[31mred' in ATLAS data 5.6.0; search names and "
                    "descriptions with: mlthreat kb search WORDS"),
    ("A" * 100_000, "unknown ATLAS ID '" + "A" * 60 + "…' in ATLAS data 5.6.0; search names and "
                    "descriptions with: mlthreat kb search WORDS"),
    ("", "unknown ATLAS ID '' in ATLAS data 5.6.0; search names and descriptions with: "
         "mlthreat kb search WORDS"),
])
def test_show_suggests_the_id_meant(text, message):
    out = run("kb", "show", text)
    assert out.returncode == 2
    assert out.stderr == f"mlthreat: error: {message}\n"
    assert out.stdout == ""


def test_bad_atlas_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "ATLAS.yaml"
    bad.write_text("matrices: [\n")
    out = run("kb", "matrix", "--atlas", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith(f"mlthreat: error: {bad}:2: invalid YAML")
    assert len(out.stderr.strip().splitlines()) == 1
    out = run("kb", "matrix", env={"MLTHREAT_ATLAS": str(tmp_path / "none.yaml")})
    assert out.returncode == 2
    assert out.stderr == (f"mlthreat: error: {tmp_path / 'none.yaml'} (from MLTHREAT_ATLAS): "
                          "No such file or directory\n")


@pytest.mark.parametrize("variable", ["MLTHREAT_ATLAS", "MLTHREAT_EXTENSIONS"])
def test_environment_variable_errors_name_the_variable(tmp_path, variable):
    layer = CASE_STUDY_LAYERS / "AML.CS0000.json"
    cases = {
        str(tmp_path / "gone.yaml"): "No such file or directory",
        str(tmp_path): "not a regular file",
        str(layer): ("not an ATLAS data file" if variable == "MLTHREAT_ATLAS"
                     else "field 'namespace': missing required field"),
    }
    for value, reason in cases.items():
        out = run("kb", "show", "AML.T0043", env={variable: value})
        assert out.returncode == 2, value
        assert out.stderr.startswith(f"mlthreat: error: {value} (from {variable})"), out.stderr
        assert reason in out.stderr and len(out.stderr.splitlines()) == 1
    # the same file given as an option is not blamed on the variable
    out = run("kb", "show", "AML.T0043", "--atlas", str(tmp_path / "gone.yaml"))
    assert out.stderr.startswith(f"mlthreat: error: {tmp_path / 'gone.yaml'}: No such file")


def test_search_and_case_study():
    data = json.loads(run("kb", "search", "membership", "inference", "--json").stdout)
    assert data["results"][0]["id"] == "AML.T0024.000"
    out = run("kb", "case-study", "AML.CS0000")
    assert out.returncode == 0
    lines = [line for line in out.stdout.splitlines() if " · " in line]
    assert len(lines) == 6
    assert "Pre-Print Repositories" in lines[0] and "Evade AI Model" in lines[-1]
    data = json.loads(run("kb", "case-study", "AML.CS0000", "--json").stdout)
    assert [s["technique"] for s in data["procedure"]] == [
        "AML.T0000.001", "AML.T0002.000", "AML.T0005", "AML.T0043.003", "AML.T0042",
        "AML.T0015"]


def test_diff_exit_codes():
    out = run("kb", "diff", str(RELEASES / "ATLAS-4.8.0.yaml"), str(RELEASES / "ATLAS-5.0.0.yaml"),
              "--json")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["counts"]["renamed/tactic"] == 2
    assert (data["old"]["atlas_version"], data["new"]["atlas_version"]) == ("4.8.0", "5.0.0")
    same = run("kb", "diff", str(ATLAS_YAML), "embedded")
    assert same.returncode == 0 and "No differences." in same.stdout


@pytest.fixture(scope="module")
def v6_files(tmp_path_factory):
    """The 5.6.0 file converted to format 6 as it is, and as release 2026.09; made once."""
    import copy

    import yaml
    from atlas_v6 import release_2026_09, to_v6, write_v6

    legacy = yaml.load(ATLAS_YAML.read_text("utf-8"), Loader=yaml.CSafeLoader)
    tmp = tmp_path_factory.mktemp("v6")
    return (write_v6(to_v6(copy.deepcopy(legacy), "2026.05"), tmp / "ATLAS-2026.05.yaml"),
            write_v6(release_2026_09(copy.deepcopy(legacy)), tmp / "ATLAS-2026.09.yaml"))


def test_diff_across_formats_names_replacements(v6_files):
    from jsonschema import Draft202012Validator

    from mlthreat.schemas import schema

    _, release = v6_files
    out = run("kb", "diff", str(ATLAS_YAML), str(release))
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith(f"ATLAS 5.6.0 ({ATLAS_YAML}) → 2026.09 ({release})")
    for old, new in (("AML.T0019", "AML.T0115.000 (Datasets)"),
                     ("AML.T0058", "AML.T0115.001 (Models)"),
                     ("AML.T0104", "AML.T0115.002 (AI Agent Tools)")):
        row = next(line for line in out.stdout.splitlines() if old in line)
        assert f"removed, replaced by {new}" in row
    assert "column 13" in out.stdout and "column 3" in out.stdout
    as_json = run("kb", "diff", str(ATLAS_YAML), str(release), "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    validator = Draft202012Validator(schema("mlthreat.kb.diff"))
    assert not list(validator.iter_errors(data))
    assert (data["old"]["atlas_version"], data["new"]["atlas_version"]) == ("5.6.0", "2026.09")
    removed = [c for c in data["changes"] if c["kind"] == "removed"]
    assert [(c["id"], c["replaced_by"]) for c in removed] == [
        ("AML.T0019", ["AML.T0115.000"]), ("AML.T0058", ["AML.T0115.001"]),
        ("AML.T0104", ["AML.T0115.002"])]
    assert all("replaced_by" not in c for c in data["changes"] if c["kind"] != "removed")
    moved = next(c for c in data["changes"] if c["kind"] == "moved")
    assert (moved["id"], moved["before"], moved["after"]) == ("AML.TA0001", "column 13",
                                                              "column 3")
    added = next(c for c in data["changes"] if c["kind"] == "added")
    for bad in ({**removed[0], "replaced_by": []}, {**removed[0], "replaced_by": ["T0115"]},
                {**added, "replaced_by": ["AML.T0115.000"]}, {**moved, "after": "AML.TA0003"},
                {**moved, "before": "column 0"}):
        assert list(validator.iter_errors({**data, "changes": [bad]})), bad


def test_diff_legacy_against_its_own_v6_conversion(v6_files):
    same, _ = v6_files
    out = run("kb", "diff", str(ATLAS_YAML), str(same))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No differences." in out.stdout and "5.6.0" in out.stdout and "2026.05" in out.stdout


def test_v6_release_through_atlas_and_check_of_newer_ids(v6_files, tmp_path):
    _, release = v6_files
    shown = run("kb", "show", "AML.T0115", "--atlas", str(release))
    assert shown.returncode == 0, shown.stderr
    assert "platforms: Predictive AI, Generative AI" in shown.stdout
    assert "ATLAS data 2026.09" in shown.stdout
    as_json = json.loads(run("kb", "show", "AML.T0115", "--json", "--atlas", str(release)).stdout)
    assert (as_json["atlas_version"], as_json["atlas_format_version"]) == ("2026.09", "6.0.0")
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("id\nAML.T0115.000\n")
    checked = run("kb", "check", str(mapping))  # under the embedded 5.6.0 data
    assert checked.returncode == 1
    assert "newer-id" in checked.stdout and "may be older than this mapping" in checked.stdout
    assert "unknown-id" not in checked.stdout
    assert run("kb", "check", str(mapping), "--atlas", str(release)).returncode == 0


def test_check_exit_codes(tmp_path):
    clean = run("kb", "check", str(CASE_STUDY_LAYERS / "AML.CS0001.json"))
    assert clean.returncode == 0, clean.stdout
    stale = tmp_path / "map.csv"
    stale.write_text("id,name\nAML.T0015,Evade ML Model\n")
    out = run("kb", "check", str(stale), "--json")
    assert out.returncode == 1
    finding = json.loads(out.stdout)["files"][0]["findings"][0]
    assert (finding["kind"], finding["suggestion_name"]) == ("outdated-name", "Evade AI Model")
    assert run("kb", "check", str(tmp_path / "missing.csv")).returncode == 2


def test_usage_errors_exit_2():
    assert run("kb", "show").returncode == 2
    assert run("kb", "export", "--format", "pdf").returncode == 2
    out = run("kb", "export", "--layer", "case-study")
    assert out.returncode == 2 and "--case-study" in out.stderr


@pytest.mark.parametrize("fmt,check", [
    ("navigator", lambda t: json.loads(t)["domain"] == "atlas-atlas"),
    ("markdown", lambda t: t.count("\n## ") == 16),
    ("csv", lambda t: t.splitlines()[0].startswith("tactic_id,tactic,technique_id")),
])
def test_export_formats(tmp_path, fmt, check):
    target = tmp_path / f"out.{fmt}"
    out = run("kb", "export", "--format", fmt, "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert check(target.read_text())


def test_export_case_study_layer_and_scores(tmp_path):
    out = run("kb", "export", "--layer", "case-study", "--case-study", "AML.CS0000")
    layer = json.loads(out.stdout)
    colored = {e["techniqueID"] for e in layer["techniques"] if e.get("color")}
    assert colored == {"AML.T0000.001", "AML.T0002.000", "AML.T0005", "AML.T0043.003",
                       "AML.T0042", "AML.T0015"}
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"AML.T0043.001": 3, "AML.T0024.002": 5}))
    layer = json.loads(run("kb", "export", "--layer", "scores", "--scores", str(scores)).stdout)
    got = {e["techniqueID"]: e.get("score") for e in layer["techniques"] if "score" in e}
    assert got == {"AML.T0043.001": 3, "AML.T0024.002": 5}
    scores.write_text(json.dumps({"AML.T9999": 1}))
    out = run("kb", "export", "--layer", "scores", "--scores", str(scores))
    assert out.returncode == 2 and "AML.T9999" in out.stderr


def test_stix_bundle_as_atlas_source():
    data = json.loads(run("kb", "show", "AML.TA0001", "--json", "--atlas", str(STIX_BUNDLE))
                      .stdout)
    assert data["shortname"] == "ai-attack-staging"
    assert data["atlas_version"].startswith("unknown (STIX bundle")


def test_case_study_from_the_stix_bundle_says_it_has_none():
    res = run("kb", "case-study", "AML.CS0000", "--atlas", str(STIX_BUNDLE))
    assert res.returncode == 2
    # the two warnings of the official bundle (AML.T0087, AML.T0096 modified before created)
    warnings, error = res.stderr.strip().splitlines()[:-1], res.stderr.strip().splitlines()[-1]
    assert [w.split(" (")[1][:9] for w in warnings] == ["AML.T0087", "AML.T0096"]
    assert all(w.startswith(f"mlthreat: warning: {STIX_BUNDLE}, entry attack-pattern--")
               for w in warnings)
    assert error == (
        f"mlthreat: error: AML.CS0000: the ATLAS data in use ({STIX_BUNDLE}) holds no case "
        "studies (the official STIX bundle has none); use ATLAS.yaml or the embedded snapshot")


def _hostile_bundle(tmp_path):
    """The official bundle with AML.T0015 revoked and the parent link of AML.T0051.001 gone."""
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    ext = {o["id"]: r["external_id"] for o in bundle["objects"]
           for r in o.get("external_references", ()) if r.get("source_name") == "mitre-atlas"}
    for o in bundle["objects"]:
        if ext.get(o["id"]) == "AML.T0015":
            o["revoked"] = True
    bundle["objects"] = [o for o in bundle["objects"] if not (
        o.get("relationship_type") == "subtechnique-of"
        and ext.get(o["source_ref"]) == "AML.T0051.001")]
    path = tmp_path / "hostile-stix.json"
    path.write_text(json.dumps(bundle, indent=1), encoding="utf-8")
    return path


def test_stix_bundle_warnings_on_stderr_and_in_check(tmp_path):
    path = _hostile_bundle(tmp_path)
    out = run("kb", "matrix", "--json", "--atlas", str(path))
    assert out.returncode == 0, out.stderr
    staging = {t["id"]: [x["id"] for x in t["techniques"]]
               for t in json.loads(out.stdout)["tactics"]}
    assert "AML.T0015" not in staging["AML.TA0007"]
    lines = out.stderr.splitlines()
    # 2 official dates + revoked + 6 mitigation links + inferred parent = 10: 5 shown, 5 counted
    assert len(lines) == 6 and all(line.startswith("mlthreat: warning: ") for line in lines)
    assert lines[-1] == f"mlthreat: warning: 5 more (mlthreat kb check {path} lists them all)"
    shown = run("kb", "show", "AML.T0015", "--atlas", str(path))
    assert shown.returncode == 0 and "status: revoked" in shown.stdout
    check = run("kb", "check", str(path), "--json")
    assert check.returncode == 1
    from jsonschema import Draft202012Validator

    from mlthreat.schemas import schema

    doc = json.loads(check.stdout)
    assert not list(Draft202012Validator(schema("mlthreat.kb.check")).iter_errors(doc))
    report = doc["files"][0]
    assert report["file_format"] == "stix-bundle"
    kinds = sorted((f["kind"], f["id"]) for f in report["findings"])
    assert kinds == sorted([("modified-before-created", "AML.T0087"),
                            ("modified-before-created", "AML.T0096"),
                            ("revoked", "AML.T0015"), ("parent-inferred", "AML.T0051.001")]
                           + [("retired-link", m) for m in ("AML.M0003", "AML.M0006",
                                                            "AML.M0009", "AML.M0010",
                                                            "AML.M0015", "AML.M0034")])
    revoked = next(f for f in report["findings"] if f["kind"] == "revoked")
    assert path.read_text().splitlines()[revoked["line"] - 1].strip().startswith('"id": "attack-')


def test_export_scores_from_a_layer_keeps_cells_and_comments(tmp_path):
    source = tmp_path / "old-layer.json"
    source.write_text(json.dumps({"name": "ours", "domain": "mitre-enterprise", "version": "3.0",
                                  "techniques": [
                                      {"techniqueID": "AML.T0015", "tactic": "impact",
                                       "score": 5, "comment": "seen in prod"},
                                      {"techniqueID": "AML.T0043", "score": 2}]}))
    out = run("kb", "export", "--layer", "scores", "--scores", str(source))
    assert out.returncode == 0, out.stderr
    assert out.stderr == (f"mlthreat: warning: {source}, field 'versions.layer': layer format 3.0 "
                          "is older than 4.3; read as 4.x (technique entries have kept their "
                          "fields)\n")
    cells = {(e["techniqueID"], e.get("tactic")): (e.get("score"), e.get("comment"))
             for e in json.loads(out.stdout)["techniques"]}
    assert cells == {("AML.T0015", "impact"): (5, "seen in prod"),
                     ("AML.T0043", "ai-attack-staging"): (2, None)}
