"""The documents ``mlthreat detect`` writes validate against their schemas: real outputs of
``detect run``, ``detect evaluate`` and ``detect calibrate`` run as processes on a small benign
log and a logged HopSkipJump attack, each alert line of ``--format jsonl``, and broken copies
that must fail."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mlthreat import __version__
from mlthreat.schemas import kinds, schema

KINDS = ("mlthreat.detect.alert", "mlthreat.detect.run", "mlthreat.detect.evaluation",
         "mlthreat.detect.calibration")


def detect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("MLTHREAT_ATLAS", None)
    env.pop("MLTHREAT_EXTENSIONS", None)
    return subprocess.run([sys.executable, "-m", "mlthreat", "detect", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def errors(doc: Any, kind: str) -> list[str]:
    validator = Draft202012Validator(schema(kind))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def assert_valid(doc: Any, kind: str) -> None:
    assert doc["kind"] == kind
    problems = errors(doc, kind)
    assert not problems, "\n".join(problems[:10])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benign.jsonl: 30 clients x 120 queries of digits scaled to [0, 1]; attack.jsonl:
    HopSkipJump with 2 samples against the demo MLP, as the assessment logs it."""
    from sklearn.datasets import load_digits

    from mlthreat.assess import Assessment, demo_targets, digits_demo
    from mlthreat.detect.evaluate import benign_events
    from mlthreat.events import QueryLog

    folder = tmp_path_factory.mktemp("detect-logs")
    data = digits_demo(0)
    mlp = demo_targets(data, 0)[1]
    log = QueryLog(folder / "attack.jsonl", "demo-mlp")
    Assessment([mlp], data, techniques=["evasion-hopskipjump"], budget=1200,
               params={"evasion-hopskipjump": {"n_samples": 2}}, query_log=log,
                   clients_per_run=2).run()
    log.close()
    x = load_digits().data / 16.0
    events = benign_events(x, n_clients=30, queries=120, model_id="demo-mlp")
    (folder / "benign.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return folder


@pytest.fixture(scope="module")
def outputs(logs: Path) -> dict[str, Any]:
    """One real document of each kind (the alerts: a list of jsonl lines)."""
    benign, attack = str(logs / "benign.jsonl"), str(logs / "attack.jsonl")
    alerts = logs / "alerts.jsonl"
    res = detect("run", benign, attack, "--detectors", "blacklight,prada,volume", "-o",
                 str(alerts), "--format", "jsonl", "--json")
    assert res.returncode == 1, res.stderr  # alerts were raised
    out: dict[str, Any] = {"mlthreat.detect.run": json.loads(res.stdout)}
    out["mlthreat.detect.alert"] = [json.loads(line)
                                    for line in alerts.read_text().splitlines()]
    cal = logs / "cal.json"
    res = detect("calibrate", benign, "-o", str(cal), "--target-fpr", "0.01")
    assert res.returncode == 0, res.stderr
    out["mlthreat.detect.calibration"] = json.loads(cal.read_text())
    res = detect("evaluate", benign, attack, "--detectors", "blacklight,prada,ood,knn",
                 "--calibration", str(cal), "--json")
    assert res.returncode == 0, res.stderr
    out["mlthreat.detect.evaluation"] = json.loads(res.stdout)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind):
    s = schema(kind)
    Draft202012Validator.check_schema(s)
    short = kind.removeprefix("mlthreat.")
    assert s["$id"] == f"https://mlthreat.invalid/schemas/{short}.schema.json"
    assert s["title"] and len(s["description"]) > 40
    assert s["properties"]["kind"] == {"const": kind}
    assert s["properties"]["schema_version"] == {"const": 1}
    assert {"kind", "schema_version", "mlthreat_version"} <= set(s["required"])
    assert s["additionalProperties"] is False
    assert kind in kinds()


@pytest.mark.parametrize("kind", ["mlthreat.detect.run", "mlthreat.detect.evaluation",
                                  "mlthreat.detect.calibration"])
def test_real_documents_validate(outputs, kind):
    doc = outputs[kind]
    assert_valid(doc, kind)
    assert doc["mlthreat_version"] == __version__
    if kind != "mlthreat.detect.calibration":  # calibration is not resolved against ATLAS
        assert doc["atlas_version"] and doc["atlas_source"] == "embedded snapshot"


def test_every_alert_line_validates(outputs):
    alerts = outputs["mlthreat.detect.alert"]
    # PRADA reports these HopSkipJump clients as AML.T0043.001 (near-duplicate chains), the
    # technique Blacklight already alerted on: one alert per client and technique
    assert "blacklight" in {a["detector"] for a in alerts}
    for alert in alerts:
        assert_valid(alert, "mlthreat.detect.alert")


def test_the_run_document_names_the_flagged_attackers(outputs):
    run = outputs["mlthreat.detect.run"]
    assert run["alerts"] == len(outputs["mlthreat.detect.alert"])
    assert "blacklight:demo-mlp-evasion-hopskipjump-1" in run["flagged"]


def _set(path: str, value: Any) -> Any:
    def mutate(doc: Any) -> None:
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        if value is _DELETE:
            del doc[last]
        elif isinstance(doc, list):
            doc[int(last)] = value
        else:
            doc[last] = value
    return mutate


_DELETE = object()

BROKEN = [
    ("mlthreat.detect.alert", "technique", "AML.T43"),
    ("mlthreat.detect.alert", "tactics/0/id", "AML.T0043"),
    ("mlthreat.detect.alert", "first_seen", 1.7e9),
    ("mlthreat.detect.alert", "queries_observed", 0),
    ("mlthreat.detect.alert", "mlthreat_version", _DELETE),
    ("mlthreat.detect.alert", "surprise", 1),
    ("mlthreat.detect.alert", "kind", "mlthreat.detect.run"),
    ("mlthreat.detect.run", "atlas_version", _DELETE),
    ("mlthreat.detect.run", "mlthreat_version", _DELETE),
    ("mlthreat.detect.run", "events", -1),
    ("mlthreat.detect.run", "suppression/admitted", "4"),
    ("mlthreat.detect.run", "read/0/skipped", {"gremlins": 1}),
    ("mlthreat.detect.run", "untested", [{"detector": "prada", "client_id": "c",
                                          "model_id": "m", "verdict": "untested",
                                          "queries_observed": 3, "reason": ""}]),
    ("mlthreat.detect.run", "schema_version", 2),
    ("mlthreat.detect.evaluation", "scores/0/rate", 1.5),
    ("mlthreat.detect.evaluation", "scores/0/ci95", [0.1]),
    ("mlthreat.detect.evaluation", "scores/0/truth", "malicious"),
    ("mlthreat.detect.evaluation", "scores/0/extra", True),
    ("mlthreat.detect.evaluation", "atlas_source", _DELETE),
    ("mlthreat.detect.calibration", "detectors/ood/mean", _DELETE),
    ("mlthreat.detect.calibration", "detectors/prada/detector", "knn"),
    ("mlthreat.detect.calibration", "detectors/volume/max_per_window", 0),
    ("mlthreat.detect.calibration", "target_fpr", 0.9),
    ("mlthreat.detect.calibration", "detectors/Bad Name", {"detector": "x"}),
    ("mlthreat.detect.calibration", "logs", "benign.jsonl"),
]


@pytest.mark.parametrize("kind,path,value", BROKEN,
                         ids=[f"{k.rsplit('.', 1)[1]}-{p}" for k, p, _ in BROKEN])
def test_broken_documents_fail(outputs, kind, path, value):
    doc = outputs[kind]
    doc = copy.deepcopy(doc[0] if isinstance(doc, list) else doc)
    _set(path, value)(doc)
    assert errors(doc, kind), f"{kind} accepted {path} = {value!r}"
