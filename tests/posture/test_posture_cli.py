"""``mlthreat posture`` as a user runs it: real processes on the shipped example profile.

``report`` (terminal, ``--json``, ``--out`` with every file, ``--fail-on``), layers that
``mlthreat kb check`` reads back cleanly, ``diff`` between profiles and saved runs, ``example``
and its refusal to overwrite, and one-line errors with exit 2 for a bad profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mlthreat.kb import KnowledgeBase
from mlthreat.posture import assess_posture, example_profile_text, load_profile
from mlthreat.posture.report import all_gaps
from mlthreat.schemas import schema

SYSTEMS = ("credit-score-api", "fraud-amount-model", "help-chatbot", "id-document-reader")
M0015_PLANNED = """      - id: AML.M0015                    # Adversarial Input Detection
        status: planned"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    for name in ("MLTHREAT_ATLAS", "MLTHREAT_EXTENSIONS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "mlthreat", "posture", *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def assert_valid(doc: Any) -> None:
    problems = [f"{e.json_path}: {e.message}"
                for e in Draft202012Validator(schema(doc["kind"])).iter_errors(doc)]
    assert not problems, "\n".join(problems[:10])


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example profile written out by ``mlthreat posture example -o``."""
    path = tmp_path_factory.mktemp("example") / "profile.yaml"
    res = run("example", "-o", str(path))
    assert res.returncode == 0, res.stderr
    assert path.read_text("utf-8") == example_profile_text()
    return path


@pytest.fixture(scope="module")
def expected(example: Path, embedded: KnowledgeBase) -> Any:
    """The API's result on the example, which the CLI must agree with."""
    return assess_posture(load_profile(example, embedded), embedded)


@pytest.fixture(scope="module")
def out(example: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("report") / "out"
    res = run("report", str(example), "--out", str(folder))
    assert res.returncode == 0, res.stderr
    return folder, res.stdout


def test_example_to_stdout_and_no_overwrite(tmp_path):
    res = run("example")
    assert res.returncode == 0 and res.stdout == example_profile_text()
    target = tmp_path / "p.yaml"
    target.write_text("mine\n")
    res = run("example", "-o", str(target))
    assert res.returncode == 2
    assert res.stderr.strip() == f"mlthreat: error: {target} exists; pass --force to overwrite it"
    assert target.read_text() == "mine\n"
    assert run("example", "-o", str(target), "--force").returncode == 0
    assert target.read_text("utf-8") == example_profile_text()


def test_json_agrees_with_the_api(example, expected):
    res = run("report", str(example), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert_valid(doc)
    assert doc["kind"] == "mlthreat.posture" and doc["organisation"] == "Northwind Lending"
    assert [s["name"] for s in doc["systems"]] == list(SYSTEMS)
    api = expected.system("credit-score-api")
    top = api.gaps[0]
    cli = doc["systems"][0]
    assert cli["gaps"][0]["technique"] == top.technique
    assert cli["gaps"][0]["priority"] == top.priority and cli["gaps"][0]["band"] == top.band
    known = api.technique("AML.T0024.002")
    row = next(t for t in cli["techniques"] if t["id"] == "AML.T0024.002")
    assert (row["status"], row["coverage"], row["priority"]) == (
        known.status, known.coverage, known.priority)
    assert cli["summary"] == api.summary


def test_terminal_summary(out, expected):
    folder, stdout = out
    assert "Northwind Lending: 4 systems" in stdout
    for s in expected.systems:
        n = s.summary
        assert s.name in stdout
        assert (f"{n['applicable']} applicable: {n['covered']} covered, {n['partial']} partial, "
                f"{n['uncovered']} uncovered, {n['exposed']} exposed") in stdout
        assert s.gaps[0].technique in stdout
    assert "Wrote 13 files to" in stdout and str(folder / "posture.html") in stdout


def test_out_writes_every_file(out, expected, embedded):
    folder, _ = out
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    layers = sorted(f"layers/{who}-{what}.json" for who in ("organisation", *SYSTEMS)
                    for what in ("coverage", "gaps"))
    assert names == sorted(["posture.json", "posture.html", "posture.md", *layers])
    doc = json.loads((folder / "posture.json").read_text("utf-8"))
    assert_valid(doc)
    assert doc["systems"][0]["gaps"][0]["technique"] == expected.systems[0].gaps[0].technique
    html = (folder / "posture.html").read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html

    cov = json.loads((folder / "layers/credit-score-api-coverage.json").read_text("utf-8"))
    assert cov["versions"]["layer"] == "4.3" and cov["domain"] == "atlas-atlas"
    assert cov["gradient"]["minValue"] == 0 and cov["gradient"]["maxValue"] == 100
    t = expected.system("credit-score-api").technique("AML.T0024.002")
    entry = next(e for e in cov["techniques"] if e["techniqueID"] == "AML.T0024.002")
    assert entry["score"] == round(100 * t.coverage, 1)
    assert entry["comment"].startswith(f"{t.status}: coverage")
    gaps = json.loads((folder / "layers/credit-score-api-gaps.json").read_text("utf-8"))
    top = expected.system("credit-score-api").gaps[0]
    scored = {e["techniqueID"]: e["score"] for e in gaps["techniques"] if "score" in e}
    assert scored[top.technique] == top.priority
    assert set(scored) == {g.technique for g in expected.system("credit-score-api").gaps}


def test_layers_pass_kb_check(out):
    folder, _ = out
    layers = sorted((folder / "layers").glob("*.json"))
    assert len(layers) == 10
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("MLTHREAT_ATLAS", None)
    env.pop("MLTHREAT_EXTENSIONS", None)
    for layer in layers:
        res = subprocess.run([sys.executable, "-m", "mlthreat", "kb", "check", str(layer),
                              "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, (layer.name, res.stdout, res.stderr)
        report = json.loads(res.stdout)
        assert report["findings"] == 0
        assert report["files"][0]["file_format"] == "layer"


def test_markdown_has_the_top_gap_and_checkboxes(out, expected):
    folder, _ = out
    text = (folder / "posture.md").read_text("utf-8")
    doc = json.loads((folder / "posture.json").read_text("utf-8"))
    top = all_gaps(doc)[0]
    row = (f"| {top['priority']:g} | {top['band']} | {top['system']} | {top['technique']} "
           f"{top['name']} | {top['status']} |")
    table = text.split("## Gaps by priority", 1)[1]
    assert table.split("|---:|---|---|---|---|---:|\n", 1)[1].startswith(row)
    for s in expected.systems:
        assert f"\n## {s.name}\n" in text
        assert f"- [ ] **{s.gaps[0].technique} " in text
    assert text.count("- [ ] ") == sum(len(s.gaps) for s in expected.systems)


def test_fail_on(example):
    assert run("report", str(example), "--fail-on", "high").returncode == 1
    assert run("report", str(example), "--fail-on", "never").returncode == 0
    res = run("report", str(example), "--fail-on", "sometimes")
    assert res.returncode == 2 and "--fail-on takes one of high, medium, low, never" in res.stderr


@pytest.mark.parametrize(("old", "new", "message"), [
    ("      - id: AML.M0004 ", "      - id: AML.M9999 ",
     "systems[0].mitigations[0].id: unknown mitigation ID 'AML.M9999' in ATLAS data"),
    ("        status: partial\n        note: Scores",
     "        status: halfway\n        note: Scores",
     "systems[0].mitigations[1].status: must be one of planned, partial, implemented"),
    ("        score: 3\n", "        score: 9\n",
     "systems[0].detections[0].score: must be a whole number from 0 to 5"),
    ("    owner: risk-ml@northwind.example     # a team or person who answers for it\n", "",
     "systems[0].owner: required field is missing"),
])
def test_bad_profile_is_one_line_exit_2(tmp_path, example, old, new, message):
    text = example.read_text("utf-8")
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1), "utf-8")
    res = run("report", str(bad), "--json")
    assert res.returncode == 2 and res.stdout == ""
    line, = res.stderr.splitlines()
    prefix = f"mlthreat: error: {bad}:"
    assert line.startswith(prefix), line
    where, rest = line[len(prefix):].split(": ", 1)
    assert where.isdigit()
    assert rest.startswith(message), line


def test_evidence_of_the_wrong_kind(tmp_path, example):
    (tmp_path / "evidence.json").write_text(json.dumps({"kind": "mlthreat.kb.matrix"}))
    text = example.read_text("utf-8").replace(
        "    evidence:                            # mlthreat outputs",
        "    evidence: [evidence.json]            # mlthreat outputs", 1)
    text = text.replace("      []\n", "", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, "utf-8")
    res = run("report", str(bad))
    assert res.returncode == 2
    line, = res.stderr.splitlines()
    assert line.startswith(f"mlthreat: error: {bad}:") and "systems[0].evidence[0]" in line


def test_diff_shows_the_coverage_increase(tmp_path, example, out):
    folder, _ = out
    text = example.read_text("utf-8")
    assert M0015_PLANNED in text
    new = tmp_path / "new.yaml"
    new.write_text(text.replace(M0015_PLANNED, M0015_PLANNED.replace("planned", "implemented"),
                                1), "utf-8")
    res = run("diff", str(example), str(new), "--json")
    assert res.returncode == 0, res.stderr  # better, not worse
    doc = json.loads(res.stdout)
    assert_valid(doc)
    assert doc["changed"] and not doc["worse"]
    credit = next(s for s in doc["systems"] if s["name"] == "credit-score-api")
    assert {"technique": "AML.T0015", "old": 0.0, "new": 0.5, "delta": 0.5} in credit[
        "coverage_up"]
    assert not credit["coverage_down"] and not credit["gaps_opened"]
    others = [s for s in doc["systems"] if s["name"] != "credit-score-api"]
    assert not any(s["changed"] for s in others)

    text_out = run("diff", str(example), str(new)).stdout
    assert "coverage up   AML.T0015: 0% → 50%" in text_out

    # the other way round, from a saved run: the posture got worse, exit 1
    res = run("diff", str(folder / "posture.json"), str(new))
    assert res.returncode == 0
    res = run("diff", str(new), str(folder / "posture.json"), "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["worse"]
    credit = next(s for s in doc["systems"] if s["name"] == "credit-score-api")
    assert [c["technique"] for c in credit["coverage_down"]] == ["AML.T0015"]

    same = run("diff", str(example), str(folder / "posture.json"))
    assert same.returncode == 0 and "No differences." in same.stdout


def test_diff_rejects_other_documents(tmp_path, example):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "mlthreat.kb.matrix"}))
    res = run("diff", str(other), str(example))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"mlthreat: error: {other}: kind: expected a profile or a "
                                  "saved posture.json (kind mlthreat.posture), not "
                                  "'mlthreat.kb.matrix'")
    twice = tmp_path / "twice.json"
    twice.write_text('{"kind": "mlthreat.posture",\n "kind": "mlthreat.posture"}')
    res = run("diff", str(twice), str(example))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"mlthreat: error: {twice}:2: key 'kind' given twice "
                                  "(lines 1 and 2)")
    deep = tmp_path / "deep.json"
    deep.write_text("{" + '"a": {' * 5000 + "}" * 5001)
    res = run("diff", str(deep), str(example))
    assert res.returncode == 2 and "nested deeper than 100 levels" in res.stderr
    assert "Traceback" not in res.stderr


def test_diff_checks_an_edited_saved_posture_against_its_schema(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    assert run("example", "-o", str(profile)).returncode == 0
    saved = tmp_path / "posture.json"
    out = run("report", str(profile), "--json")
    doc = json.loads(out.stdout)
    doc["systems"][0]["techniques"] = [{"junk": 1}]
    saved.write_text(json.dumps(doc), "utf-8")
    res = run("diff", str(saved), str(profile))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"mlthreat: error: {saved}: systems[0].techniques[0]: "
                                  "'id' is a required property")
