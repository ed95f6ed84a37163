"""``mlthreat assess`` as a user runs it: real processes, real model files, a real local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skops.io as sio
from model_server import ModelServer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression


def run(*args, stdin=None, timeout=600):
    # the tests folder is importable, as pytest's pythonpath makes it, for python: entry points
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "COLUMNS": "160",
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    env.pop("MLTHREAT_ATLAS", None)
    return subprocess.run([sys.executable, "-m", "mlthreat", "assess", *args],
                          capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=stdin if stdin is not None else subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """A binary logistic regression on breast-cancer data scaled to [0, 1] (30 features), saved
    with skops, and the rows as CSV with a label column."""
    folder = tmp_path_factory.mktemp("cancer")
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    model = LogisticRegression(max_iter=5000).fit(x[:300], y[:300])
    sio.dump(model, folder / "model.skops")
    header = ",".join(f"f{i}" for i in range(30)) + ",label"
    rows = [",".join(f"{v:.6f}" for v in row) + f",{label}" for row, label in zip(x, y,
                                                                                 strict=True)]
    (folder / "rows.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder, model


def test_user_model_equation_solving(tmp_path, cancer):
    folder, _ = cancer
    out = tmp_path / "report"
    res = run("--target", f"sklearn:{folder / 'model.skops'}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "extraction-equations", "-o", str(out),
              "--json", "--fail-on", "succeeded")
    assert res.returncode == 1, res.stderr  # it succeeded, and --fail-on says so
    report = json.loads(res.stdout)
    finding, = report["findings"]
    assert (finding["technique"], finding["status"], finding["queries"]) == (
        "AML.T0024.002", "succeeded", 31)
    assert finding["metrics"]["fidelity"]["value"] == 1.0
    assert sorted(p.name for p in out.iterdir()) == [
        "layer.json", "queries.jsonl", "report.html", "report.json"]
    lines = (out / "queries.jsonl").read_text().splitlines()
    attack = [json.loads(line) for line in lines if "attack:AML.T0024.002" in line]
    assert len(attack) == 31


def test_http_target_equation_solving(tmp_path, cancer):
    folder, model = cancer

    def respond(payload, headers):
        rows = np.asarray(payload["instances"], dtype="float64")
        return {"predictions": model.predict_proba(rows).tolist()}

    with ModelServer(respond) as server:
        res = run("--target", server.url, "--data", str(folder / "rows.csv"), "--label-column",
                  "label", "--techniques", "extraction-equations", "-o", str(tmp_path / "r"),
                  "--json", "--yes", "--batch-size", "16")
        assert res.returncode == 0, res.stderr
        finding, = json.loads(res.stdout)["findings"]
        assert (finding["status"], finding["queries"]) == ("succeeded", 31)
        assert finding["metrics"]["fidelity"]["value"] == 1.0
        assert len(server.requests) >= 2  # 31 rows in batches of 16


def test_http_target_asks_first(cancer):
    folder, _ = cancer
    res = run("--target", "http://127.0.0.1:9/v1/models/m:predict", "--data",
              str(folder / "rows.csv"), "--label-column", "label")
    assert res.returncode == 2
    assert "needs confirmation: pass --yes" in res.stderr


def test_unreachable_endpoint_exits_2(tmp_path, cancer):
    folder, _ = cancer
    res = run("--target", "http://127.0.0.1:9/v1/models/m:predict", "--data",
              str(folder / "rows.csv"), "--label-column", "label", "--yes", "--retries", "0",
              "--timeout", "2", "--techniques", "AML.T0024", "-o", str(tmp_path / "r"), "-q")
    assert res.returncode == 2, res.stdout
    assert "holds what ran" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {f["status"] for f in report["findings"]} == {"error"}


def test_fail_on_looks_behind_the_mitigation(tmp_path, cancer):
    folder, _ = cancer
    common = ("--target", f"sklearn:{folder / 'model.skops'}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "extraction-equations", "-q",
              "--fail-on", "succeeded")
    assert run(*common, "-o", str(tmp_path / "a")).returncode == 1
    # rounding defeats equation-solving: the mitigated deployment holds
    assert run(*common, "--mitigation", "round:2", "-o", str(tmp_path / "b")).returncode == 0


def test_dry_run_and_list_send_nothing(tmp_path):
    res = run("--dry-run", "--techniques", "extraction-equations,evasion-whitebox", "-o",
              str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert "nothing was sent" in res.stdout
    assert not (tmp_path / "r").exists()
    plan = json.loads(run("--list", "--json").stdout)["runs"]
    by = {(p["target"], p["run"]): p for p in plan}
    assert by[("demo-mlp", "evasion-whitebox")]["applicable"] is False
    assert by[("demo-logreg", "extraction-equations")]["planned_queries"] == 195  # 3 x (d+1)
    assert by[("demo-logreg", "poisoning-backdoor")]["applicable"] is True  # the demo's fit


@pytest.mark.parametrize("args,message", [
    (["--target", "sklearn:/nonexistent/model.skops", "--data", "x.csv"], "x.csv: no such file"),
    (["--target", "onnx:/nonexistent.onnx", "--data", "/nonexistent.csv"], "no such file"),
    (["--data", "x.csv"], "--data, --feature-spec and --reference-target need --target"),
    (["--techniques", "AML.T9999"], "no technique run for AML.T9999"),
    (["--mitigation", "shuffle"], "unknown mitigation 'shuffle'"),
    (["--param", "nonsense"], "expected RUN.PARAM=VALUE"),
    (["--fail-on", "failed"], "--fail-on takes 'succeeded'"),
    (["--clip", "1,0"], "LOW < HIGH"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    res = run(*args)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_pickle_needs_trust(tmp_path, cancer):
    import pickle

    folder, model = cancer
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    res = run("--target", f"sklearn:{path}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "extraction-equations")
    assert res.returncode == 2 and "--trust-pickle" in res.stderr
    res = run("--target", f"sklearn:{path}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "extraction-equations",
              "--trust-pickle", "-o", str(tmp_path / "r"), "-q")
    assert res.returncode == 0, res.stderr


def test_shape_mismatch(tmp_path, cancer):
    folder, _ = cancer
    short = tmp_path / "short.csv"
    short.write_text("a,b,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,0\n0.7,0.8,1\n")
    res = run("--target", f"sklearn:{folder / 'model.skops'}", "--data", str(short),
              "--label-column", "label")
    assert res.returncode == 2
    assert "has 2 features; the model takes inputs of shape (30,)" in res.stderr


@pytest.fixture(scope="module")
def raw_digits_forest(tmp_path_factory):
    """What a user has: a random forest saved with skops on the raw digits (integer pixels
    0..16, four corner pixels 0 in every row) and those rows as CSV."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    folder = tmp_path_factory.mktemp("forest")
    x, y = load_digits(return_X_y=True)
    sio.dump(RandomForestClassifier(30, random_state=0).fit(x[:900], y[:900]),
             folder / "rf.skops")
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    np.savetxt(folder / "rows.csv", np.column_stack([x[900:], y[900:]]), delimiter=",",
               fmt="%d", header=header, comments="")
    return folder


def test_skops_forest_on_constant_columns_runs_without_error(tmp_path, raw_digits_forest):
    folder = raw_digits_forest
    out = tmp_path / "report"
    res = run("--target", f"sklearn:{folder / 'rf.skops'}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "evasion-hopskipjump,evasion-transfer",
              "--param", "evasion-hopskipjump.n_samples=4",
              "--param", "evasion-transfer.n_samples=10", "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    from jsonschema import Draft202012Validator

    from mlthreat.schemas import schema

    errors = list(Draft202012Validator(schema(report["kind"])).iter_errors(report))
    assert not errors, errors[0].message
    assert report["targets"][0]["trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert report["data"]["domain"]["kinds"]["constant"] == 4
    by_run = {f["run"]: f for f in report["findings"]}
    assert {f["status"] for f in by_run.values()} <= {"succeeded", "failed"}
    for finding in by_run.values():
        m = finding["metrics"]
        # integer pixels: every raw adversarial row leaves the domain; projected rows are
        # re-checked and can only do as well as the raw ones
        assert m["domain_violation_rate"]["value"] == 1.0
        assert m["feasible_success_rate_at_eps"]["value"] <= m["success_rate_at_eps"]["value"]
    assert "sklearn.tree._tree.Tree" in run(
        "--target", f"sklearn:{folder / 'rf.skops'}", "--data", str(folder / "rows.csv"),
        "--label-column", "label", "--dry-run").stdout


def test_a_run_in_error_exits_2_with_a_next_step(tmp_path, raw_digits_forest):
    folder = raw_digits_forest
    out = tmp_path / "report"
    res = run("--target", f"sklearn:{folder / 'rf.skops'}", "--data", str(folder / "rows.csv"),
              "--label-column", "label", "--techniques", "poisoning-backdoor,extraction-surrogate",
              "--fit", "python:assess_helpers:broken_fit", "-o", str(out), "-q",
              timeout=900)
    assert res.returncode == 2, res.stderr
    line, = res.stderr.strip().splitlines()
    assert "1 run(s) ended in error, first rf poisoning-backdoor: RuntimeError: training data " \
           "loader is not configured" in line
    assert "Next: rerun it alone with --techniques poisoning-backdoor" in line
    report = json.loads((out / "report.json").read_text())
    assert [f["status"] for f in report["findings"]] == ["succeeded", "error"]


def test_reference_target_parity_of_an_onnx_export(tmp_path, cancer):
    """The ONNX export under test, its scikit-learn original as the reference: the labels agree
    on every evaluation row, and the findings are the ONNX model's."""
    from skl2onnx import to_onnx

    folder, model = cancer
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(to_onnx(model, np.zeros((1, 30), dtype="float32"),
                                  target_opset=17).SerializeToString())
    out = tmp_path / "report"
    args = ("--target", f"onnx:{onnx_path}", "--reference-target",
            f"sklearn:{folder / 'model.skops'}", "--data", str(folder / "rows.csv"),
            "--label-column", "label", "--techniques", "extraction-equations", "-o", str(out))
    res = run(*args, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    from jsonschema import Draft202012Validator

    from mlthreat.schemas import schema

    assert Draft202012Validator(schema(report["kind"])).is_valid(report)
    target, = report["targets"]
    assert target["kind"] == "onnx"
    parity = target["parity"]
    assert parity["reference"] == f"sklearn:{folder / 'model.skops'}"
    assert parity["rows"] == 285 and parity["agree"] == 285 and parity["rate"] == 1.0
    assert report["findings"][0]["target"] == "model"
    shown = run(*args)
    assert "285 of 285 evaluation rows get the same label from sklearn:" in \
        shown.stdout.replace("\n", " ")


@pytest.mark.parametrize("width", [60, 100])  # a list below 72 columns, a table above
def test_list_never_cuts_an_atlas_id(width):
    import re

    env = {**os.environ, "COLUMNS": str(width)}
    res = subprocess.run([sys.executable, "-m", "mlthreat", "assess", "--list"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    ids = re.findall(r"AML\.T[\w.…]*", res.stdout)
    assert len(ids) >= 20  # two demo targets, ten runs each
    assert all(re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", i) for i in ids), ids


def test_an_http_reference_target_needs_confirmation_too(tmp_path, cancer):
    folder, _model = cancer
    with ModelServer(lambda payload, headers: {"predictions": [0] * len(payload["instances"])}
                     ) as server:
        res = run("--target", f"sklearn:{folder / 'model.skops'}", "--reference-target",
                  server.url, "--n-features", "30", "--data", str(folder / "rows.csv"),
                  "--label-column", "label", "--techniques", "extraction-equations",
                  "-o", str(tmp_path / "out"))
        assert res.returncode == 2
        assert res.stderr.strip().endswith("querying an http(s) --reference-target needs "
                                           "confirmation: pass --yes")
        assert server.requests == []


def _start_long_run(folder, out):
    """A boundary-attack run that takes a minute or more, started in the background; returns
    the process once its first queries are in the staging log (the runs have begun)."""
    import time

    env = {**os.environ, "COLUMNS": "160"}
    env.pop("MLTHREAT_ATLAS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlthreat", "assess", "--target",
         f"sklearn:{folder / 'model.skops'}", "--data", str(folder / "rows.csv"),
         "--label-column", "label", "--techniques", "extraction-equations,evasion-boundary",
         "--param", "evasion-boundary.n_samples=60", "-o", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    staging = out / f".queries.jsonl.{proc.pid}.partial"
    deadline = time.monotonic() + 60
    while not (staging.exists() and staging.stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    return proc


def test_kill_keeps_the_previous_report_and_sigterm_saves_the_partial_one(tmp_path, cancer):
    import signal

    folder, _ = cancer
    out = tmp_path / "report"
    first = run("--target", f"sklearn:{folder / 'model.skops'}", "--data",
                str(folder / "rows.csv"), "--label-column", "label", "--techniques",
                "extraction-equations", "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["layer.json", "queries.jsonl", "report.html", "report.json"]

    killed = _start_long_run(folder, out)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    # the previous set is whole and untouched; the dead run left only a hidden staging file
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} \
        == before

    termed = _start_long_run(folder, out)
    termed.send_signal(signal.SIGTERM)
    _, err = termed.communicate(timeout=60)
    assert termed.returncode == 143, err
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    assert [f["run"] for f in report["findings"]][:1] == ["extraction-equations"]
    queries = (out / "queries.jsonl").read_text().splitlines()
    assert queries and all(json.loads(line)["model_id"] == "model" for line in queries)
    assert not [p for p in out.iterdir() if p.name.startswith(".queries.jsonl.")
                and str(termed.pid) in p.name]


def test_a_failed_write_keeps_the_previous_report(tmp_path, monkeypatch, cancer):
    """Out of space while writing report.html: the error names it, the previous set stays."""
    from mlthreat import files
    from mlthreat.assess import Assessment, load_data, load_target, write_report
    from mlthreat.kb import load as load_kb

    folder, _ = cancer
    kb = load_kb()
    data = load_data(folder / "rows.csv", label_column="label")
    target = load_target(f"sklearn:{folder / 'model.skops'}")
    result = Assessment([target], data, techniques=["extraction-equations"], kb=kb).run()
    out = tmp_path / "report"
    write_report(result, out, kb)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = files._write_staged

    def full_disk(path, data):
        if path.name == "report.html":
            raise files._fail(path, OSError(28, "No space left on device"))
        return real(path, data)

    monkeypatch.setattr(files, "_write_staged", full_disk)
    with pytest.raises(files.OutputError, match=r"cannot write .*report\.html: No space left"):
        write_report(result, out, kb)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
