"""Detection with no calibration file: the default detectors on a small mixed log.

Log: scikit-learn's digits scaled to [0, 1]; a logistic regression trained on 900 rows answers
every query. 30 benign clients of 80 queries each (:func:`mlthreat.detect.evaluate.benign_events`
over 447 held-out rows, answered by the model); two clients sending uniformly random inputs
(random-query extraction), one sweeping 250 distinct held-out rows (natural-data extraction),
and one walking near-duplicate chains between two digits (the shape of a HopSkipJump search:
binary searches along a line, then small random steps), 130 queries each, interleaved in time.
Sizes are small: what is asserted (who is flagged and as which technique) does not depend on
the population being large, only on most of its clients being benign.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors.coverage import CoverageDetector
from mlthreat.detect.detectors.ood import OodDetector
from mlthreat.detect.engine import DEFAULT_DETECTORS, build_detectors, run_detectors
from mlthreat.detect.evaluate import benign_events
from mlthreat.testing import check_detector

EXTRACTION, EVASION = "AML.T0024.002", "AML.T0043.001"


def _batch(rows: list[tuple[float, str, np.ndarray]], model: LogisticRegression) -> EventBatch:
    rows = sorted(rows, key=lambda r: r[0])
    x = np.array([r[2] for r in rows], dtype=np.float32)
    n = len(rows)
    return EventBatch(ts=np.array([r[0] for r in rows]),
                      client_id=np.array([r[1] for r in rows], dtype=object),
                      model_id=np.full(n, "digits", dtype=object), x=x,
                      label=model.predict(x).astype(np.int64))


def _chain(x0: np.ndarray, x1: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A boundary search's shape: binary searches between two inputs, small steps between."""
    out, lo, hi = [], 0.0, 1.0
    while len(out) < n:
        mid = (lo + hi) / 2
        point = x0 + mid * (x1 - x0)
        out.append(point)
        for _ in range(3):
            out.append(np.clip(point + rng.normal(0, 0.005, point.size), 0, 1))
        lo, hi = (mid, hi) if rng.random() < 0.5 else (lo, mid)
        if hi - lo < 1e-3:
            lo, hi = 0.0, 1.0
    return np.asarray(out[:n])


@pytest.fixture(scope="module")
def log():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    train, held = perm[:900], perm[900:]
    model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
    events = benign_events(x[held], n_clients=30, queries=80, model_id="digits", seed=3)
    rows = [(e["ts"], e["client_id"], np.asarray(e["input"])) for e in events]
    t0 = events[0]["ts"] + 20.0
    for c in range(2):
        rows += [(t0 + c + 2.0 * i, f"random-{c}", q) for i, q in enumerate(rng.random((130, 64)))]
    sweep = x[held][rng.permutation(len(held))[:250]]
    rows += [(t0 + 0.3 + 0.5 * i, "sweeper", q) for i, q in enumerate(sweep)]
    chain = _chain(x[held[0]], x[held[1]], 130, rng)
    rows += [(t0 + 0.7 + 0.5 * i, "searcher", q) for i, q in enumerate(chain)]
    return _batch(rows, model)


def _chunks(batch: EventBatch, size: int) -> list[EventBatch]:
    return [batch.take(np.arange(s, min(s + size, len(batch))))
            for s in range(0, len(batch), size)]


def test_defaults_flag_each_attacker_by_technique_and_no_benign(log):
    from mlthreat import kb as kb_module

    assert {"ood", "coverage"} <= set(DEFAULT_DETECTORS)
    res = run_detectors(_chunks(log, 500), build_detectors(), kb_module.load())
    by_client: dict[str, set[str]] = {}
    for a in res.alerts:
        by_client.setdefault(a.client_id, set()).add(a.technique)
    assert not [c for c in by_client if c.startswith("benign")]
    assert by_client["random-0"] == by_client["random-1"] == {EXTRACTION}
    assert by_client["sweeper"] == {EXTRACTION}
    assert EVASION in by_client["searcher"] and EXTRACTION not in by_client["searcher"]
    # one alert per client and technique, across detectors
    keys = [(a.client_id, a.technique) for a in res.alerts]
    assert len(keys) == len(set(keys))
    sweep = [a for a in res.alerts if a.client_id == "sweeper"]
    assert [a.detector for a in sweep] == ["coverage"] and sweep[0].queries_observed <= 250


def test_ood_learns_from_the_log_leaving_attackers_out(log):
    det = OodDetector()
    found = [d for b in _chunks(log, 300) for d in det.observe(b)] + det.finish()
    assert {d.client_id for d in found} >= {"random-0", "random-1"}
    assert not [d for d in found if d.client_id.startswith("benign")]
    cal = det.calibration()
    assert cal["source"] == "log" and cal["excluded_clients"] >= 2
    # a loaded calibration wins over learning from the log, and is scored on at once
    explicit = OodDetector()
    explicit.load_calibration({k: v for k, v in cal.items() if k != "source"})
    assert explicit.observe(log.take(np.arange(50))) == [] and "source" not in \
        explicit.calibration()


def test_ood_warm_up_is_batch_invariant_and_survives_a_checkpoint(log):
    def canon(found):
        return [(d.client_id, d.technique, d.queries_observed, round(d.score, 9)) for d in found]

    params = {"warmup_events": 1500}
    whole = OodDetector(**params)
    want = [d for b in _chunks(log, 7 * 64) for d in whole.observe(b)] + whole.finish()
    other = OodDetector(**params)
    assert canon([d for b in _chunks(log, 777) for d in other.observe(b)] + other.finish()) \
        == canon(want)
    parts = _chunks(log, 300)
    first = OodDetector(**params)
    got = [d for b in parts[:3] for d in first.observe(b)]  # 900 events: still warming up
    assert got == [] and not first.calibrated
    saved = json.loads(json.dumps({"cal": first.calibration(), "state": first.checkpoint()}))
    second = OodDetector(**params)
    second.load_calibration(saved["cal"])
    second.restore(saved["state"])
    got += [d for b in parts[3:] for d in second.observe(b)] + second.finish()
    assert canon(got) == canon(want)
    assert second.statuses() == whole.statuses()


def test_ood_small_log_scored_at_its_end(log):
    head = log.take(np.arange(800))  # fewer than warmup_events, more than 10 clients
    det = OodDetector()
    assert det.observe(head) == []
    assert {s.verdict for s in det.statuses()} == {"untested"}
    det.finish()
    assert det.calibrated and det.calibration()["source"] == "log"
    assert "no benign model" not in " ".join(s.reason for s in det.statuses())


def test_coverage_conforms(log):
    benign = log.take(np.array([c.startswith("benign") for c in log.client_id.tolist()]))
    attack = log.take(np.array([not c.startswith("benign") for c in log.client_id.tolist()]))
    check_detector(CoverageDetector, _chunks(benign, 400), [attack])


def test_coverage_ignores_a_search_around_one_class(log):
    det = CoverageDetector(min_distinct=50)
    found = [d for b in _chunks(log, 500) for d in det.observe(b)]
    flagged = {d.client_id for d in found}
    assert "sweeper" in flagged and "searcher" not in flagged
    status = {s.client_id: s for s in det.statuses()}
    assert "evenness" in status["searcher"].reason
