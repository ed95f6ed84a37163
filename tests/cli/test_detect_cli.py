"""``mlthreat detect`` end to end: attack traffic logged by a real assessment, benign traffic
from the documented generator, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlthreat.assess import Assessment, demo_targets, digits_demo
from mlthreat.detect.evaluate import benign_events
from mlthreat.events import QueryLog


def run(*args):
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "detect", *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """attack.jsonl: HopSkipJump (4 samples, one client each) and surrogate extraction against
    the demo MLP, as the assessment logs them; benign.jsonl: 120 clients of held-out rows."""
    folder = tmp_path_factory.mktemp("logs")
    data = digits_demo(0)
    mlp = demo_targets(data, 0)[1]
    log = QueryLog(folder / "attack.jsonl", "demo-mlp")
    Assessment([mlp], data, techniques=["evasion-hopskipjump"], budget=2400,
               params={"evasion-hopskipjump": {"n_samples": 4}}, query_log=log,
                   clients_per_run=4).run()
    log.close()
    events = benign_events(data.x_nonmembers, n_clients=120, queries=120, model_id="demo-mlp")
    (folder / "benign.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return folder


def test_run_raises_ocsf_alerts_for_attackers_only(tmp_path, logs):
    alerts = tmp_path / "alerts.jsonl"
    res = run("run", str(logs / "benign.jsonl"), str(logs / "attack.jsonl"), "--detectors",
              "blacklight,volume", "-o", str(alerts), "--format", "ocsf")
    assert res.returncode == 1, res.stderr  # alerts were raised
    found = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert found and all(a["class_uid"] == 2004 for a in found)
    clients = {a["evidences"][0]["actor"]["user"]["uid"] for a in found}
    assert not any(c.startswith("benign-") for c in clients)
    assert {f"demo-mlp-evasion-hopskipjump-{i}" for i in range(1, 5)} <= clients
    attack = found[0]["finding_info"]["attacks"][0]
    assert attack["technique"]["uid"] == "AML.T0043"
    assert attack["sub_technique"]["uid"] == "AML.T0043.001"
    assert attack["tactic"]["uid"] == "AML.TA0001"


def test_evaluate_reports_rates(logs):
    res = run("evaluate", str(logs / "benign.jsonl"), str(logs / "attack.jsonl"),
              "--detectors", "blacklight", "--json")
    assert res.returncode == 0, res.stderr
    scores = {s["truth"]: s for s in json.loads(res.stdout)["scores"]}
    assert scores["benign"]["clients"] == 120 and scores["benign"]["flagged"] == 0
    hsj = scores["AML.T0043.001"]
    assert hsj["clients"] == 4 and hsj["rate"] == 1.0
    assert hsj["median_queries"] <= 20  # the target for black-box evasion


def test_malformed_lines_are_quarantined(tmp_path, logs):
    lines = (logs / "benign.jsonl").read_text().splitlines()[:200]
    lines[10] = "{not json"
    lines[20] = json.dumps({"ts": 1, "client_id": "x", "model_id": "m", "input": [0.1],
                            "output": {"label": 1}})
    lines[30] = json.dumps({"client_id": "x"})
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    quarantine = tmp_path / "q.jsonl"
    res = run("run", str(path), "--detectors", "volume", "--quarantine", str(quarantine),
              "--json", "-o", str(tmp_path / "a.jsonl"))
    assert res.returncode == 0, res.stderr
    read = json.loads(res.stdout)["read"][0]
    assert (read["events"], sum(read["skipped"].values())) == (197, 3)
    bad = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [b["line"] for b in bad] == [11, 21, 31]


def test_calibrate_then_run(tmp_path, logs):
    cal = tmp_path / "cal.json"
    res = run("calibrate", str(logs / "benign.jsonl"), "--detectors", "ood", "-o", str(cal),
              "--target-fpr", "0.01")
    assert res.returncode == 0, res.stderr
    data = json.loads(cal.read_text())
    assert data["kind"] == "mlthreat.detect.calibration" and "ood" in data["detectors"]
    res = run("run", str(logs / "benign.jsonl"), "--detectors", "ood", "--calibration",
              str(cal), "--json", "-o", str(tmp_path / "a.jsonl"))
    assert res.returncode == 0 and json.loads(res.stdout)["alerts"] == 0
    # without a calibration, ood learns the benign distribution from the log it reads
    res = run("run", str(logs / "benign.jsonl"), "--detectors", "ood", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["alerts"] == 0


@pytest.mark.parametrize("args,message", [
    (["run", "/nonexistent.jsonl"], "no such file"),
    (["run", "x.jsonl", "--detectors", "magic"], "unknown detector magic"),
    (["run", "x.jsonl", "--format", "pdf"], "unknown alert format"),
])
def test_bad_input_one_line_exit_2(args, message):
    res = run(*args)
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_calibration_file(tmp_path, logs):
    bad = tmp_path / "cal.json"
    bad.write_text('{"kind": "something else"}')
    res = run("run", str(logs / "benign.jsonl"), "--calibration", str(bad))
    assert res.returncode == 2 and "not an mlthreat calibration file" in res.stderr


def test_evaluate_scores_each_detector_on_its_own(logs):
    """Two detectors that both catch HopSkipJump clients: each is credited with all of them,
    whichever raised its alert first."""
    res = run("evaluate", str(logs / "benign.jsonl"), str(logs / "attack.jsonl"),
              "--detectors", "blacklight,knn", "--json")
    scores = {(s["detector"], s["truth"]): s for s in json.loads(res.stdout)["scores"]}
    assert scores[("blacklight", "AML.T0043.001")]["flagged"] == 4
    assert scores[("knn", "AML.T0043.001")]["flagged"] == 4


def test_folder_and_all_garbage_logs_are_errors(tmp_path):
    res = run("run", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"mlthreat: error: {tmp_path}: a folder, not a log file"
    garbage = tmp_path / "wrong.jsonl"
    garbage.write_text("not json\n{\"ts\": 1}\n[1, 2]\n", "utf-8")
    res = run("run", str(garbage), "--quarantine", str(tmp_path / "bad.jsonl"))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"mlthreat: error: {garbage}: no valid QueryEvent in 3 "
                                  f"malformed line(s); they are in {tmp_path / 'bad.jsonl'}")
    assert len((tmp_path / "bad.jsonl").read_text("utf-8").splitlines()) == 3


def test_summary_counts_evaluation_queries_it_ignored(tmp_path, logs):
    res = run("run", str(logs / "attack.jsonl"), "--json", "--detectors", "volume")
    doc = json.loads(res.stdout)
    lines = [json.loads(x) for x in (logs / "attack.jsonl").read_text().splitlines()]
    evaluation = sum(1 for e in lines if e.get("truth") == "evaluation")
    assert evaluation > 0
    assert doc["ignored"] == evaluation and doc["events"] == len(lines) - evaluation


def test_output_file_is_replaced_unless_appending(tmp_path, logs):
    alerts = tmp_path / "alerts.jsonl"
    args = ("run", str(logs / "attack.jsonl"), "--detectors", "blacklight", "-o", str(alerts))
    assert run(*args, "--format", "ecs").returncode == 1
    first = alerts.read_text().splitlines()
    assert len(first) == 4  # one per HopSkipJump client
    assert run(*args, "--format", "ecs").returncode == 1
    assert alerts.read_text().splitlines() == first  # replaced, not doubled
    assert run(*args, "--format", "ecs", "--append").returncode == 1
    assert alerts.read_text().splitlines() == first + first
    # appending another format is refused, naming the file and both formats
    res = run(*args, "--format", "ocsf", "--append")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"mlthreat: error: cannot append ocsf alerts to {alerts}: it holds ecs alerts "
        "(use --format ecs or another file)"]
    assert alerts.read_text().splitlines() == first + first  # untouched
    res = run("run", str(logs / "attack.jsonl"), "--append")
    assert res.returncode == 2 and res.stderr.strip() == "mlthreat: error: --append needs -o FILE"


def test_hec_output_reaches_the_collector_it_names(tmp_path, monkeypatch):
    """-o http://HOST:PORT/services/collector/event delivers to that collector, with the token
    from the environment (it was read as a file path 'http:/HOST:PORT/…' before)."""
    from model_server import ModelServer

    log = tmp_path / "replay.jsonl"
    log.write_text("".join(json.dumps({"ts": 1.7e9 + i, "client_id": "loop", "model_id": "m",
                                       "input": [0.5, 0.25], "output": {"label": 1}}) + "\n"
                           for i in range(40)))
    monkeypatch.setenv("MLTHREAT_HEC_TOKEN", "t0ken")
    with ModelServer(lambda payload, headers: {"text": "Success", "code": 0},
                     path="/services/collector/event") as server:
        res = run("run", str(log), "--detectors", "repeat", "-o", server.url)
        received = list(server.requests)
    assert res.returncode == 1, res.stderr
    assert not (tmp_path / "http:").exists()
    request, = received
    assert request["path"] == "/services/collector/event"
    assert request["headers"]["Authorization"] == "Splunk t0ken"
    assert request["json"]["event"]["technique"] == "AML.T0029"
    assert request["json"]["event"]["client_id"] == "loop"


def test_hostile_calibration_file_is_one_line(tmp_path):
    log = tmp_path / "q.jsonl"
    log.write_text(json.dumps({"ts": 1.7e9, "client_id": "c", "model_id": "m",
                               "input": [0.5], "output": {"label": 1}}) + "\n")
    dup = tmp_path / "cal.json"
    dup.write_text('{"kind": "mlthreat.detect.calibration",\n "detectors": {},\n'
                   ' "kind": "other"}\n')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    for path, reason in ((dup, "key 'kind' given twice (lines 1 and 3)"),
                         (deep, "nested deeper than 100 levels")):
        res = run("run", str(log), "--calibration", str(path))
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert reason in res.stderr and str(path) in res.stderr
