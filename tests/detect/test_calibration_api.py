"""The calibration API (:mod:`mlthreat.detect.calibration`) as a notebook user calls it, and
the command line writing exactly what it returns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mlthreat import detect
from mlthreat.cli import app
from mlthreat.detect import Calibration, CalibrationError, DetectError
from mlthreat.detect.engine import load_state, save_state
from mlthreat.detect.evaluate import benign_events


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    """A benign log as a user has one: QueryEvent JSONL of 30 clients on 8-feature rows."""
    rows = np.random.default_rng(0).uniform(0, 1, size=(200, 8))
    events = benign_events(rows, n_clients=30, queries=40, model_id="m")
    path = tmp_path_factory.mktemp("logs") / "benign.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_calibrate_save_load_round_trip(tmp_path, benign):
    cal = detect.calibrate_detectors([benign], ["volume", "ood"], target_fpr=0.05)
    assert set(cal.detectors) == {"volume", "ood"} and cal.logs == (str(benign),)
    path = detect.save_calibration(cal, tmp_path / "cal.json")
    assert detect.load_calibration(path) == cal
    assert cal.to_dict()["kind"] == "mlthreat.detect.calibration"


def test_cli_writes_calibration_to_json_byte_for_byte(tmp_path, benign):
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(app, ["detect", "calibrate", str(benign), "--detectors",
                                   "volume,ood", "--target-fpr", "0.05", "-o", str(out)])
    assert res.exit_code == 0, res.output
    cal = detect.calibrate_detectors([benign], ["volume", "ood"], target_fpr=0.05)
    assert out.read_text("utf-8") == cal.to_json()
    assert json.loads(out.read_text("utf-8")) == cal.to_dict()


def test_load_calibration_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"kind": "something"}')
    with pytest.raises(CalibrationError, match="not an mlthreat calibration file"):
        detect.load_calibration(path)


def test_resolve_defaults_add_calibrated_detectors():
    cal = Calibration({"knn": {}})  # knn is not a default; calibrating it runs it
    names = [d.name for d in detect.resolve_detectors(calibration=Calibration({}))]
    assert "knn" not in names
    with pytest.raises(CalibrationError):  # knn's calibration is loaded, so it is checked
        detect.resolve_detectors(calibration=cal)


def test_calibration_wins_over_state(tmp_path):
    """A state holds volume at 7 per window; an explicit calibration of 50 wins over it, and
    without one the state's calibration is restored."""
    held = detect.resolve_detectors(["volume"], calibration=Calibration(
        {"volume": {"max_per_window": 7}}))
    state = tmp_path / "state.json"
    save_state(state, held)
    restored = detect.resolve_detectors(["volume"], state=state)
    assert restored[0].params["max_per_window"] == 7
    explicit = detect.resolve_detectors(["volume"], state=load_state(state),
                                        calibration=Calibration({"volume": {"max_per_window":
                                                                            50}}))
    assert explicit[0].params["max_per_window"] == 50
    # the detectors a state holds run by default
    assert "volume" in [d.name for d in detect.resolve_detectors(state=state)]
    # a state path that does not exist yet is a first run
    assert detect.resolve_detectors(["volume"], state=tmp_path / "new.json")


def test_state_errors_name_the_source(tmp_path):
    with pytest.raises(DetectError, match="mystate: not an mlthreat detector state"):
        detect.resolve_detectors(["volume"], state={"kind": "x"}, source="mystate")


def test_state_suppression_checked():
    assert detect.state_suppression({}) is None
    good = {"suppression": {"last": [["c1", "AML.T0024.002", 1.7e9]]}}
    assert detect.state_suppression(good) == good["suppression"]
    with pytest.raises(DetectError, match=r"s\.json: bad 'suppression'"):
        detect.state_suppression({"suppression": {"last": [["c1", 2]]}}, "s.json")
