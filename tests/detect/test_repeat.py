"""The repeat detector: a client replaying one exact input is reported (AML.T0029), benign
clients sharing popular inputs are not, and its state survives a restart.

Benign traffic is the documented generator's (:func:`mlthreat.detect.evaluate.benign_events`)
over scikit-learn's digits scaled to [0, 1]."""

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
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors.repeat import RepeatDetector
from mlthreat.detect.engine import build_detectors, run_detectors
from mlthreat.detect.evaluate import benign_events, evaluate


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return load_digits().data.astype(np.float32) / 16.0


@pytest.fixture(scope="module")
def kb() -> Any:
    return kb_module.load()


def batch(events: list[dict[str, Any]]) -> EventBatch:
    n = len(events)
    truth = [e.get("truth") for e in events]
    return EventBatch(ts=np.array([e["ts"] for e in events], dtype=np.float64),
                      client_id=np.array([e["client_id"] for e in events], dtype=object),
                      model_id=np.array([e["model_id"] for e in events], dtype=object),
                      x=np.array([e["input"] for e in events], dtype=np.float32),
                      label=np.array([e["output"]["label"] for e in events], dtype=np.int64),
                      truth=np.array(truth, dtype=object), line=np.arange(1, n + 1),
                      source="test")


def batches(events: list[dict[str, Any]], size: int = 97) -> list[EventBatch]:
    return [batch(events[i:i + size]) for i in range(0, len(events), size)]


def replay(x: np.ndarray, start: float, n: int = 150, client: str = "replayer") -> list[Any]:
    """One identical query, ``n`` times, one every 3 s (below any rate limit)."""
    row = [round(float(v), 6) for v in x[7]]
    return [{"ts": start + 3.0 * i, "client_id": client, "model_id": "digits", "input": row,
             "output": {"label": 7}, "truth": "attack:AML.T0029"} for i in range(n)]


@pytest.fixture(scope="module")
def traffic(x: np.ndarray) -> list[dict[str, Any]]:
    benign = benign_events(x, n_clients=40, queries=150, model_id="digits", seed=2)
    start = min(e["ts"] for e in benign)
    return sorted(benign + replay(x, start + 5.0), key=lambda e: e["ts"])


def test_one_identical_query_150_times_is_reported(traffic, kb):
    # the detectors that ran by default before: nothing on the replaying client
    before = run_detectors(batches(traffic), build_detectors(["prada", "blacklight", "volume"]),
                           kb)
    assert [a for a in before.alerts if a.client_id == "replayer"] == []
    prada = [s for s in before.statuses if s.client_id == "replayer" and s.detector == "prada"]
    assert [(s.verdict, s.reason) for s in prada] == [
        ("untested", "degenerate distances (149 exact repeats)")]

    result = run_detectors(batches(traffic), build_detectors(), kb)  # today's defaults
    mine = [a for a in result.alerts if a.client_id == "replayer" or a.detector == "repeat"]
    assert [(a.detector, a.technique, a.technique_name, a.client_id, a.queries_observed,
             a.score, a.threshold) for a in mine] == [
        ("repeat", "AML.T0029", "Denial of AI Service", "replayer", 17, 16.0, 15.0)]
    (alert,) = mine
    assert alert.tactics == ({"id": "AML.TA0011", "name": "Impact"},)
    assert alert.evidence["repeats_in_window"] == 16
    assert alert.evidence["distinct_inputs_in_window"] == 1
    assert alert.evidence["also_consistent_with"] == "AML.T0034.000"
    assert alert.last_seen - alert.first_seen == 3.0 * 16
    repeat = {s.client_id: s for s in result.statuses if s.detector == "repeat"}
    assert repeat["replayer"].verdict == "flagged"
    assert repeat["replayer"].reason == "at most 99 exact repeats of one input in 100 queries"
    assert all(s.verdict == "clear" for c, s in repeat.items() if c != "replayer")
    assert len(repeat) == 41


def test_popular_inputs_shared_across_clients_never_add_up(x, kb):
    """300 clients each send the same popular input 10 times among 40 queries: 3,000 copies
    across clients, 9 repeats per client, no alert."""
    rng = np.random.default_rng(0)
    popular = [round(float(v), 6) for v in x[0]]
    events = []
    for c in range(300):
        rows = [popular] * 10 + [[round(float(v), 6) for v in x[rng.integers(1, len(x))]]
                                 for _ in range(30)]
        for i in rng.permutation(40):
            events.append({"ts": 1000.0 + c + 0.01 * len(events), "client_id": f"c{c}",
                           "model_id": "m", "input": rows[i], "output": {"label": 0}})
    events.sort(key=lambda e: e["ts"])
    det = RepeatDetector()
    found = [d for b in batches(events) for d in det.observe(b)]
    assert found == []
    peaks = {c.peak for c in det._clients.values()}
    assert max(peaks) == 9 and len(det._clients) == 300


def test_repeats_count_in_a_sliding_window_of_queries():
    """An input sent every 7th query, 1,000 queries long: 143 copies in all but never more than
    15 in 100 queries, so at most 14 repeats: clear. Every 6th query: 17 in 100, flagged."""
    def client(every: int) -> EventBatch:
        n = 1000
        x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)  # all different...
        x[::every] = -1.0  # ...but one input, every ``every`` queries
        return EventBatch(ts=np.arange(n, dtype=float), client_id=np.array(["c"] * n, object),
                          model_id=np.array(["m"] * n, object), x=x,
                          label=np.zeros(n, np.int64))

    det = RepeatDetector()
    assert det.observe(client(7)) == []
    (status,) = det.statuses()
    assert (status.verdict, status.queries_observed) == ("clear", 1000)
    assert status.reason == "at most 14 exact repeats of one input in 100 queries"
    det = RepeatDetector()
    (found,) = det.observe(client(6))
    assert (found.score, found.queries_observed) == (16.0, 97)  # the 17th copy, query 97


def test_calibration_and_benign_false_positive_rate(x, kb):
    """1,000 benign clients of 150 queries: none flagged by the default threshold, and the
    calibration at 0.1 % lands at twice the benign peak quantile (and flags none either)."""
    benign = benign_events(x, n_clients=1000, queries=150, model_id="digits", seed=0)
    (score,) = evaluate(batches(benign, 4096), [RepeatDetector()], kb)
    assert (score.truth, score.clients, score.flagged) == ("benign", 1000, 0)
    assert score.ci95[1] < 0.0037
    det = RepeatDetector()
    cal = det.calibrate(batches(benign, 4096), 0.001)
    # the benign peaks: at most 6 repeats, the 99.9th percentile between 5 and 6
    assert cal["benign_peak_quantile"] == pytest.approx(5.001)
    assert cal["max_repeats"] == 11 == det.params["max_repeats"]  # ceil(2 * 5.001)
    assert (cal["clients"], cal["window"]) == (1000, 100)
    (score,) = evaluate(batches(benign, 4096), [det], kb)
    assert score.flagged == 0
    fresh = RepeatDetector()
    fresh.load_calibration(json.loads(json.dumps(cal)))
    assert fresh.params["max_repeats"] == 11


def test_checkpoint_restore_equals_one_run(traffic):
    once = RepeatDetector()
    want = [d for b in batches(traffic) for d in once.observe(b)]
    cut = next(i for i, e in enumerate(traffic) if e["client_id"] == "replayer") + 8 * 41
    first, second = RepeatDetector(), RepeatDetector()
    got = [d for b in batches(traffic[:cut]) for d in first.observe(b)]
    assert got == []  # the replay straddles the restart
    second.restore(json.loads(json.dumps(first.checkpoint())))
    got += [d for b in batches(traffic[cut:]) for d in second.observe(b)]
    assert got == want and len(want) == 1
    assert second.statuses() == once.statuses()
    assert second.checkpoint() == once.checkpoint()


def test_cli_state_keeps_the_repeat_windows(tmp_path, x):
    """``detect run --state``: a replay split across two runs is reported in the second, at
    the same query as in one run."""
    events = replay(x, 1000.0, n=30)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text("".join(json.dumps(e) + "\n" for e in events[:10]), "utf-8")
    two.write_text("".join(json.dumps(e) + "\n" for e in events[10:]), "utf-8")
    state, alerts = tmp_path / "state.json", tmp_path / "alerts.jsonl"
    env = {**os.environ, "COLUMNS": "160"}

    def cli(log: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlthreat", "detect", "run", str(log),
                               "--state", str(state), "-o", str(alerts), "--append"],
                              capture_output=True, text=True, env=env, timeout=600)

    assert cli(one).returncode == 0
    saved = json.loads(state.read_text())["detectors"]
    assert set(saved) == {"prada", "blacklight", "volume", "repeat", "ood", "coverage"}
    (client,) = saved["repeat"]["state"]["clients"]
    assert (client["n"], client["peak"], len(client["recent"])) == (10, 9, 10)
    res = cli(two)
    assert res.returncode == 1, res.stderr
    (alert,) = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert (alert["detector"], alert["technique"], alert["queries_observed"]) == (
        "repeat", "AML.T0029", 17)
