"""The end of a detection run and of an evaluation, from Python (:mod:`mlthreat.detect.report`),
and ``mlthreat detect run|evaluate --json`` printing exactly their ``to_dict()``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mlthreat import detect, kb
from mlthreat.cli import app
from mlthreat.detect import EvaluationReport, LogFormatError, RunReport
from mlthreat.detect.evaluate import benign_events


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """Benign clients and one bulk client, as QueryEvent JSONL with truth labels."""
    rows = np.random.default_rng(0).uniform(0, 1, size=(200, 8))
    events = benign_events(rows, n_clients=20, queries=30, model_id="m")
    bulk = [{**events[0], "client_id": "bulk", "ts": 1.7e9 + i * 0.01,
             "truth": "attack:AML.T0024.002"} for i in range(600)]
    path = tmp_path_factory.mktemp("logs") / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in [*events, *bulk]))
    return path


def _run(path):
    base = kb.load()
    reader = detect.LogReader(path)
    result = detect.run_detectors(reader, detect.resolve_detectors(["volume", "repeat"]), base)
    return RunReport(result, [reader.stats], base)


def test_run_report_counts(log):
    report = _run(log)
    assert report.exit_code == 1 and report.skipped == 0
    assert ("repeat", "bulk") in report.flagged  # one input sent 600 times
    doc = report.to_dict()
    assert doc["kind"] == "mlthreat.detect.run" and doc["alerts"] == len(report.result.alerts)
    assert doc["flagged"] == [f"{d}:{c}" for d, c in report.flagged]
    report.check_read()  # events were read: nothing to raise


def test_cli_run_json_equals_to_dict(log):
    res = CliRunner().invoke(app, ["detect", "run", str(log), "--detectors", "volume,repeat",
                                   "--json"])
    assert res.exit_code == 1, res.output
    expected = json.dumps(_run(log).to_dict(), indent=2, ensure_ascii=False) + "\n"
    assert res.stdout == expected


def test_cli_evaluate_json_equals_to_dict(log):
    res = CliRunner().invoke(app, ["detect", "evaluate", str(log), "--detectors", "volume",
                                   "--json"])
    assert res.exit_code == 0, res.output
    base = kb.load()
    reader = detect.LogReader(log)
    scores = detect.evaluate(reader, detect.resolve_detectors(["volume"]), base)
    report = EvaluationReport(scores, [reader.stats], base)
    assert report.measured_fpr
    assert res.stdout == json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def test_all_malformed_is_an_error_naming_the_parameter(tmp_path):
    garbage = tmp_path / "wrong.jsonl"
    garbage.write_text("not json\n[1, 2]\n", "utf-8")
    report = _run(garbage)
    with pytest.raises(LogFormatError) as caught:
        report.check_read()
    assert str(caught.value) == (f"{garbage}: no valid QueryEvent in 2 malformed line(s); "
                                 "pass quarantine= to keep them")
    with pytest.raises(LogFormatError, match=r"they are in bad\.jsonl$"):
        report.check_read("bad.jsonl")
