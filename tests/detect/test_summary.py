"""The end-of-run summary: per ATLAS technique, which clients were flagged by which detectors,
with counts, including the detections that suppression folded into another detector's alert.

Traffic: benign clients from the documented generator over scikit-learn's digits, a prober
sending near-duplicates of one digit (Gaussian noise, sigma 0.01) every 2 s, and a replayer
sending one digit 150 times, 10 per second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from mlthreat import kb as kb_module
from mlthreat.detect.engine import build_detectors, run_detectors
from mlthreat.detect.evaluate import benign_events
from mlthreat.detect.readers import LogReader


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Any:
    x = load_digits().data / 16.0
    benign = benign_events(x, n_clients=20, queries=100, model_id="digits", seed=3)
    start = min(e["ts"] for e in benign)
    rng = np.random.default_rng(7)
    probe = np.clip(x[3] + rng.normal(0, 0.01, (60, x.shape[1])), 0, 1)
    events = benign + [
        {"ts": start + 20.0 + 2.0 * i, "client_id": "prober", "model_id": "digits",
         "input": [round(float(v), 6) for v in row], "output": {"label": 3}}
        for i, row in enumerate(probe)] + [
        {"ts": start + 30.0 + 0.1 * i, "client_id": client, "model_id": "digits",
         "input": [round(float(v), 6) for v in x[7]], "output": {"label": 7}}
        for i in range(150) for client in ("replayer", "healthcheck")]
    path = tmp_path_factory.mktemp("summary") / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in sorted(events, key=lambda e: e["ts"])),
                    "utf-8")
    return path


NAMES = ["blacklight", "knn", "volume", "repeat"]
PARAMS = {"volume": {"window_seconds": 10.0, "max_per_window": 50}}


def test_summary_counts_detectors_behind_suppressed_alerts(log):
    kb = kb_module.load()
    result = run_detectors(LogReader(log), build_detectors(NAMES, PARAMS), kb,
                           allow_list=["healthcheck"])
    got = [t.to_dict() for t in result.summary(kb)]
    assert got == [
        {"technique": "AML.T0029", "technique_name": "Denial of AI Service",
         "tactics": ["AML.TA0011"], "alerts": 1, "clients": [
             {"client_id": "replayer", "model_id": "digits", "alerts": 1,
              "detectors": [{"detector": "repeat", "detections": 1, "queries_observed": 17}]}]},
        {"technique": "AML.T0034", "technique_name": "Cost Harvesting",
         "tactics": ["AML.TA0011"], "alerts": 1, "clients": [
             {"client_id": "replayer", "model_id": "digits", "alerts": 1,
              "detectors": [{"detector": "volume", "detections": 1, "queries_observed": 51}]}]},
        {"technique": "AML.T0043.001", "technique_name": "Black-Box Optimization",
         "tactics": ["AML.TA0001"], "alerts": 1, "clients": [
             {"client_id": "prober", "model_id": "digits", "alerts": 1,
              "detectors": [{"detector": "blacklight", "detections": 1, "queries_observed": 4},
                            {"detector": "knn", "detections": 1,
                             "queries_observed": 11}]}]}]
    # two detectors, one alert for the prober; the allow-listed health check nowhere
    assert len(result.alerts) == 3
    assert result.suppression == {"admitted": 3, "suppressed": 1, "allow_listed": 2}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "detect", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_run_ends_with_the_summary_on_the_terminal_and_in_json(log, tmp_path):
    args = ("run", str(log), "--detectors", "blacklight,knn,repeat", "--allow", "healthcheck",
            "-o", str(tmp_path / "alerts.jsonl"))
    res = cli(*args)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-4:] == [
        "AML.T0029 Denial of AI Service: 1 client, 1 alert",
        "  replayer (model digits): repeat at query 17; 1 alert",
        "AML.T0043.001 Black-Box Optimization: 1 client, 1 alert",
        "  prober (model digits): blacklight at query 4, knn at query 11; 1 alert"]
    doc = json.loads(cli(*args, "--json").stdout)
    assert [(t["technique"], [c["client_id"] for c in t["clients"]], t["alerts"])
            for t in doc["summary"]] == [("AML.T0029", ["replayer"], 1),
                                         ("AML.T0043.001", ["prober"], 1)]
    assert [d["detector"] for d in doc["summary"][1]["clients"][0]["detectors"]] == [
        "blacklight", "knn"]
