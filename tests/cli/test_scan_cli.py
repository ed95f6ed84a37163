"""``mlthreat scan`` from the command line: exit codes, table, JSON (against its schema), SARIF
(against the vendored OASIS schema), manifests, policies and bad input. Every file is built in
the test; none is ever loaded."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scan"))

from pickle_builders import call_p0, memo_confusion

from mlthreat.schemas import schema

SARIF_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif" / "sarif-schema-2.1.0.json"


def scan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "scan", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "good.pkl").write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(x, y)))
    (folder / "README.md").write_text("# a model card\n", "utf-8")
    return folder


def test_clean_folder_exits_0_and_json_validates(models: Path) -> None:
    out = scan(str(models), "--json", "--engines", "none")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert list(Draft202012Validator(schema("mlthreat.scan.report")).iter_errors(doc)) == []
    assert doc["verdicts"] == {"clean": 1, "findings": 0, "error": 0, "skipped": 1}
    assert doc["counts"]["critical"] == doc["counts"]["high"] == 0
    assert doc["findings"] == [] and doc["exit_code"] == 0


def test_disguised_malicious_pickle_fails_with_technique_and_mitigations(models: Path) -> None:
    (models / "weights.safetensors").write_bytes(call_p0("os", "system", "id"))
    out = scan(str(models), "--json", "--engines", "none")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert list(Draft202012Validator(schema("mlthreat.scan.report")).iter_errors(doc)) == []
    [f] = doc["findings"]
    assert (f["format"], f["severity"], f["rule"], f["symbol"], f["technique"]) == (
        "pickle", "critical", "pickle.dangerous-global", "os.system", "AML.T0011.000")
    assert f["path"].endswith("weights.safetensors") and f["location"] == "offset 0 (GLOBAL)"
    mitigations = {m["id"] for m in doc["techniques"]["AML.T0011.000"]["mitigations"]}
    assert {"AML.M0014", "AML.M0013", "AML.M0016", "AML.M0011"} <= mitigations
    # the table names the same, and says which mitigations apply
    table = scan(str(models), "--engines", "none")
    assert table.returncode == 1
    assert "os.system" in table.stdout and "AML.M0014 Verify AI Artifacts" in table.stdout
    assert "Findings: 1 critical." in table.stdout


@pytest.mark.parametrize(("fail_on", "code"), [("critical", 1), ("high", 1), ("never", 0)])
def test_fail_on(models: Path, fail_on: str, code: int) -> None:
    (models / "evil.bin").write_bytes(memo_confusion())
    out = scan(str(models), "--engines", "none", "--fail-on", fail_on)
    assert out.returncode == code, out.stderr


def test_engines_report_alongside_ours(models: Path) -> None:
    (models / "evil.pkl").write_bytes(call_p0("os", "system", "id"))
    doc = json.loads(scan(str(models / "evil.pkl"), "--json").stdout)
    # one finding, ours, with every engine that agreed on it listed
    [critical] = [f for f in doc["findings"] if f["severity"] == "critical"]
    assert (critical["engine"], critical["symbol"]) == ("mlthreat", "os.system")
    assert critical["engines"] == ["mlthreat", "fickling", "picklescan", "modelscan"]
    assert {e["engine"] for e in critical["details"]["engine_findings"]} == {
        "fickling", "picklescan", "modelscan"}
    assert list(Draft202012Validator(schema("mlthreat.scan.report")).iter_errors(doc)) == []


def test_sarif_validates_against_oasis_schema(models: Path, tmp_path: Path) -> None:
    (models / "evil.pkl").write_bytes(call_p0("builtins", "eval", "1+1"))
    sarif = tmp_path / "scan.sarif"
    out = scan(str(models), "-f", "sarif", "-o", str(sarif), "--engines", "none")
    assert out.returncode == 1 and out.stdout == ""
    doc = json.loads(sarif.read_text("utf-8"))
    oasis = json.loads(SARIF_SCHEMA.read_text("utf-8"))
    assert list(Draft7Validator(oasis).iter_errors(doc)) == []
    [result] = doc["runs"][0]["results"]
    assert result["ruleId"] == "pickle.dangerous-global" and result["level"] == "error"
    assert result["properties"]["technique"] == "AML.T0011.000"


def test_manifest_write_then_check_reports_changed_added_missing(models: Path) -> None:
    out = scan("manifest", str(models), "-o", str(models.parent / "manifest.json"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"2 files hashed (SHA-256) into {models.parent}/manifest.json"
    same = scan(str(models), "--manifest", str(models.parent / "manifest.json"), "--json",
                "--engines", "none")
    assert same.returncode == 0 and json.loads(same.stdout)["findings"] == []
    with (models / "good.pkl").open("ab") as fh:
        fh.write(b"\0")
    (models / "README.md").unlink()
    (models / "extra.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + b"{'descr': '<f4', "
                                       b"'fortran_order': False, 'shape': (1,), }".ljust(117)
                                       + b"\n" + b"\0\0\0\0")
    out = scan(str(models), "--manifest", str(models.parent / "manifest.json"), "--json",
               "--engines", "none")
    assert out.returncode == 1
    rules = sorted((f["rule"], Path(f["path"]).name, f["severity"], f["technique"])
                   for f in json.loads(out.stdout)["findings"])
    assert rules == [("manifest.added", "extra.npy", "medium", "AML.T0010.003"),
                     ("manifest.changed", "good.pkl", "high", "AML.T0010.003"),
                     ("manifest.missing", "README.md", "high", "AML.T0010.003"),
                     # the byte appended after the pickle's STOP is seen by the analyser too
                     ("pickle.trailing-data", "good.pkl", "low", "AML.T0010.003")]


def test_policy_file_allows_a_reviewed_global(models: Path, tmp_path: Path) -> None:
    (models / "thing.pkl").write_bytes(call_p0("mypkg.models", "Thing", "x"))
    out = scan(str(models), "--json", "--engines", "none")
    assert out.returncode == 1
    assert [f["rule"] for f in json.loads(out.stdout)["findings"]] == [
        "pickle.global-not-allowed"]
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed:\n  - mypkg.models.Thing\n", "utf-8")
    out = scan(str(models), "--json", "--engines", "none", "--policy", str(policy))
    assert out.returncode == 0, out.stdout
    policy.write_text("allowed: mypkg\n", "utf-8")
    out = scan(str(models), "--policy", str(policy))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"mlthreat: error: {policy}: field 'allowed' must be a list "
                                  "of 'module.name' or 'module.*' strings")


@pytest.mark.parametrize(("args", "message"), [
    (["/no/such/models"], "mlthreat: error: no such file or folder: /no/such/models"),
    (["{models}", "--fail-on", "severe"], "mlthreat: error: unknown severity 'severe' for "
     "--fail-on; choose one of critical, high, medium, low, info, never"),
    (["{models}", "--engines", "clamav"], "mlthreat: error: unknown engine(s) clamav; known: "
     "fickling, picklescan, modelscan"),
    (["{models}", "-f", "xml"], "mlthreat: error: unknown format 'xml'; choose one of table, "
     "json, sarif, cyclonedx"),
    (["{models}", "--public-key", "k.pem"], "mlthreat: error: --public-key and --certificate "
     "need --signature (or a model.sig in the scanned model folder)"),
])
def test_bad_usage_one_line_exit_2(models: Path, args: list[str], message: str) -> None:
    out = scan(*[a.format(models=models) for a in args])
    assert out.returncode == 2
    assert out.stderr.strip() == message
    assert "Traceback" not in out.stderr


def test_key_that_is_not_pem_is_a_one_line_error(models: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("notakey\n", "utf-8")
    sig = tmp_path / "model.sig"
    sig.write_text("{}", "utf-8")
    out = scan(str(models), "--signature", str(sig), "--public-key", str(key))
    assert out.returncode == 2
    assert out.stderr.startswith(f"mlthreat: error: {key}: not a PEM EC public key (")
    assert len(out.stderr.strip().splitlines()) == 1


def test_policy_replace_must_be_boolean(models: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("replace: yes please\nallowed: []\n", "utf-8")
    out = scan(str(models), "--policy", str(policy))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"mlthreat: error: {policy}: field 'replace' must be true "
                                  "or false")


def test_failed_write_keeps_the_earlier_report(models: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    assert scan(str(models), "--json", "-o", str(report), "--engines", "none").returncode == 0
    before = report.read_text("utf-8")
    out = scan(str(models), "--json", "-o", str(tmp_path / "no" / "such" / "dir" / "r.json"))
    assert out.returncode == 2 and "cannot write" in out.stderr
    assert report.read_text("utf-8") == before
    out = scan("manifest", str(models), "-o", str(tmp_path / "missing" / "m.json"))
    assert out.returncode == 2
    assert out.stderr.startswith(f"mlthreat: error: {tmp_path}/missing/m.json: cannot write")


def test_signature_in_the_model_folder_is_found_and_verified(tmp_path: Path) -> None:
    from builders import ec_key_pair
    from model_signing import signing

    private, public = ec_key_pair(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + b"{'descr': '<f4', "
                                        b"'fortran_order': False, 'shape': (1,), }".ljust(117)
                                        + b"\n" + b"\0\0\0\0")
    signing.Config().use_elliptic_key_signer(private_key=private).sign(model,
                                                                       model / "model.sig")
    out = scan(str(model), "--engines", "none", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["checks"] == [
        f"signature {model}/model.sig: an OpenSSF model signature, not verified; "
        "--public-key or --certificate verifies it"]
    out = scan(str(model), "--engines", "none", "--json", "--public-key", str(public))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["checks"] == [f"signature {model}/model.sig: verified"]
    (model / "weights.npy").write_bytes((model / "weights.npy").read_bytes()[:-4] + b"\1\0\0\0")
    out = scan(str(model), "--engines", "none", "--json", "--public-key", str(public))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["checks"] == [f"signature {model}/model.sig: does NOT verify"]
    assert [(f["rule"], f["severity"], f["technique"]) for f in doc["findings"]] == [
        ("signature.invalid", "critical", "AML.T0010.003")]


def test_symlink_out_of_the_folder_fails_and_follow_symlinks_scans_it(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    models.mkdir()
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(call_p0("os", "system", "id"))
    (models / "config.json").write_text("{}", "utf-8")
    (models / "pytorch_model.bin").symlink_to("../outside/evil.pkl")
    out = scan(str(models), "--engines", "none", "--fail-on", "high")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "scan.symlink-outside" in out.stdout and "-> ../outside/evil.pkl" in out.stdout
    assert f"{models}/pytorch_model.bin" in out.stdout and "Findings: 1 high." in out.stdout
    doc = json.loads(scan(str(models), "--engines", "none", "--json").stdout)
    (finding,) = doc["findings"]
    assert (finding["path"], finding["rule"], finding["severity"], finding["technique"]) == (
        f"{models}/pytorch_model.bin", "scan.symlink-outside", "high", "AML.T0011.000")
    assert finding["details"] == {"target": "../outside/evil.pkl"}
    assert str(outside / "evil.pkl") in finding["message"]

    followed = scan(str(models), "--engines", "none", "--json", "--follow-symlinks")
    assert followed.returncode == 1
    doc = json.loads(followed.stdout)
    assert [(f["path"], f["rule"], f["symbol"], f["severity"]) for f in doc["findings"]] == [
        (f"{models}/pytorch_model.bin", "pickle.dangerous-global", "os.system", "critical")]


# a file name carrying: an OSC 52 clipboard write, an OSC 8 link, CSI as C1 (U+009B), a
# right-to-left override (U+202E), a C0 control and rich markup
HOSTILE = ("a\x1b]52;c;ZXZpbA==\x07b\x1b]8;;https:evil.example\x07c\x9b31md"
           "\u202eq\x01[bold red]x[blink]y.pkl")
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\x01")
VISIBLE = r"a\x1b]52;c;ZXZpbA==\x07b\x1b]8;;https:evil.example\x07c\x9b31md\u202eq\x01" \
    "[bold red]x[blink]y.pkl"


def test_table_notes_and_progress_escape_hostile_file_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / HOSTILE).write_bytes(call_p0("os", "system", "id"))
    manifest = tmp_path / f"m{HOSTILE}.json"
    written = scan("manifest", str(models), "-o", str(manifest))
    assert written.returncode == 0, written.stderr
    out = scan(str(models), "--engines", "none", "--manifest", str(manifest))
    assert out.returncode == 1, out.stderr
    for raw in RAW:
        assert raw not in written.stdout + out.stdout + out.stderr
    assert written.stdout.strip().endswith(f"into {tmp_path}/m{VISIBLE}.json")
    # the table folds long cells: compare without the frame
    cells = "".join(line.split("│")[3].strip() for line in out.stdout.splitlines()
                    if line.startswith("│"))
    assert f"{models}/{VISIBLE}" in cells
    assert f"manifest {tmp_path}/m{VISIBLE}.json: every file matches" in out.stdout

    # the progress line (stderr, when a terminal)
    import io

    from mlthreat.cli.scan import _progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    show = _progress()
    assert show is not None
    show(1, 2, str(models / HOSTILE))
    for raw in RAW:
        assert raw not in err.getvalue().replace("\x1b[", "")  # rich's own colour codes
    assert VISIBLE in err.getvalue()


def test_hostile_policy_files_are_one_line(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"\x00" * 16)
    cases = {
        "dup.yaml": ("allowed: [a.b]\ndangerous: [c.d]\nallowed: [e.f]\n",
                     "key 'allowed' given twice (lines 1 and 3)"),
        "laughs.yaml": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                        + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                                  for p, c in zip("abcdefgh", "bcdefghi", strict=True))
                        + "allowed: *i\n", "aliases expand to more than"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        res = scan(str(model), "--policy", str(path))
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert reason in res.stderr and str(path) in res.stderr
