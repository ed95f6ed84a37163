"""PRADA, OOD and volume detectors on real digits traffic and synthetic attack traffic.

Benign traffic: scikit-learn's digits scaled to [0, 1]; a logistic-regression target trained on
900 rows labels every query. Each of 50 benign clients draws 150 rows from the 897 held-out rows
(without replacement), then re-sends about 5 % of them (retries), in random order, with
timestamps about 3 s apart. Calibration uses a second, disjoint set of clients.

Attack traffic: Jacobian-based dataset augmentation (Papernot et al. 2017): a few seed rows,
then each round every point is perturbed by ``lambda * sign`` of the surrogate's gradient of its
predicted class, and the new points are queried.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors.ood import OodDetector
from mlthreat.detect.detectors.prada import PradaDetector
from mlthreat.detect.detectors.volume import VolumeDetector
from mlthreat.detect.errors import CalibrationError
from mlthreat.errors import UsageError


def make_batch(ts, clients, x, labels, model="digits") -> EventBatch:
    n = len(ts)
    return EventBatch(ts=np.asarray(ts, dtype=np.float64),
                      client_id=np.asarray(clients, dtype=object),
                      model_id=np.full(n, model, dtype=object),
                      x=np.asarray(x, dtype=np.float32).reshape(n, -1),
                      label=np.asarray(labels, dtype=np.int64))


def chunks(batch: EventBatch, size: int):
    for s in range(0, len(batch), size):
        yield batch.take(np.arange(s, min(s + size, len(batch))))


@pytest.fixture(scope="module")
def world():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    train, held = perm[:900], perm[900:]
    target = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    return {"x": x, "y": y, "train": train, "held": held, "target": target}


def benign_traffic(world, n_clients=50, per_client=150, seed=1, prefix="benign"):
    rng = np.random.default_rng(seed)
    x, held, target = world["x"], world["held"], world["target"]
    rows, ts, clients = [], [], []
    for c in range(n_clients):
        pick = rng.choice(held, per_client, replace=False)
        retries = rng.choice(pick, max(1, per_client // 20))
        seq = rng.permutation(np.concatenate([pick, retries]))
        t0 = rng.uniform(0, 100)
        rows.append(x[seq])
        ts.append(t0 + np.cumsum(rng.uniform(1, 5, len(seq))))
        clients += [f"{prefix}-{c}"] * len(seq)
    xs, tss = np.concatenate(rows), np.concatenate(ts)
    order = np.argsort(tss, kind="stable")
    xs, tss, clients = xs[order], tss[order], np.asarray(clients, dtype=object)[order]
    return make_batch(tss, clients, xs, target.predict(xs))


def jacobian_queries(world, n_queries=300, n_seeds=10, lam=0.1, seed=0):
    """Papernot-style augmentation against a logistic-regression surrogate."""
    rng = np.random.default_rng(seed)
    x, target = world["x"], world["target"]
    pool = rng.choice(world["held"], n_seeds, replace=False)
    points = x[pool]
    surrogate = LogisticRegression(max_iter=500).fit(points, target.predict(points))
    queries = [points]
    while sum(len(q) for q in queries) < n_queries:
        labels = target.predict(points)
        surrogate = LogisticRegression(max_iter=500).fit(points, labels)
        p = surrogate.predict_proba(points)
        w = surrogate.coef_
        cls = np.searchsorted(surrogate.classes_, surrogate.predict(points))
        grad = p[np.arange(len(points)), cls][:, None] * (w[cls] - p @ w)
        new = np.clip(points + lam * np.sign(grad), 0, 1)
        queries.append(new)
        points = np.concatenate([points, new])
    q = np.concatenate(queries)[:n_queries]
    return q, target.predict(q)


def attack_batch(world, kind, n_clients, t0=500.0, n_queries=300):
    parts = []
    for c in range(n_clients):
        if kind == "jacobian":
            q, lab = jacobian_queries(world, n_queries, seed=c)
        else:
            q = np.random.default_rng(100 + c).uniform(0, 1, (n_queries, 64))
            lab = world["target"].predict(q)
        ts = t0 + c * 0.5 + np.arange(n_queries) * 2.0
        parts.append((ts, [f"{kind}-{c}"] * n_queries, q, lab))
    ts = np.concatenate([p[0] for p in parts])
    order = np.argsort(ts, kind="stable")
    return make_batch(ts[order], np.concatenate([p[1] for p in parts])[order],
                      np.concatenate([p[2] for p in parts])[order],
                      np.concatenate([p[3] for p in parts])[order])


def merge(*batches):
    ts = np.concatenate([b.ts for b in batches])
    order = np.argsort(ts, kind="stable")
    return make_batch(ts[order], np.concatenate([b.client_id for b in batches])[order],
                      np.concatenate([b.x for b in batches])[order],
                      np.concatenate([b.label for b in batches])[order])


def run(det, batch, size=256):
    found = []
    for b in chunks(batch, size):
        found += det.observe(b)
    return found


# -- PRADA ---------------------------------------------------------------------------------
def test_prada_flags_jacobian_extraction_and_no_benign(world):
    log = merge(benign_traffic(world), attack_batch(world, "jacobian", 5))
    det = PradaDetector()
    found = run(det, log)
    flagged = {d.client_id: d for d in found}
    attackers = {f"jacobian-{c}" for c in range(5)}
    assert attackers <= set(flagged)
    assert not [c for c in flagged if c.startswith("benign")]
    # augmentation steps are not near-duplicate chains: extraction, not evasion
    assert {flagged[c].technique for c in attackers} == {"AML.T0024.002"}
    qtd = sorted(flagged[c].queries_observed for c in attackers)
    assert qtd[-1] <= 200
    ws = [flagged[c].score for c in attackers]
    assert max(ws) < 0.92
    status = {s.client_id: s for s in det.statuses()}
    benign_w = [float(s.reason.split("=")[1]) for c, s in status.items()
                if c.startswith("benign")]
    assert all(s.verdict == "clear" for c, s in status.items() if c.startswith("benign"))
    assert min(benign_w) > 0.92
    print(f"\nPRADA queries to detection {qtd}, attacker W {np.round(ws, 3).tolist()}, "
          f"benign final W min {min(benign_w):.3f} median {np.median(benign_w):.3f}")
    assert all("shapiro_w" in d.evidence and "x" not in d.evidence for d in found)


def test_prada_untested_short_and_degenerate_clients(world):
    x = world["x"][world["held"][:50]]
    short = make_batch(np.arange(50.0), ["short"] * 50, x, world["target"].predict(x))
    same = np.repeat(world["x"][world["held"][:1]], 150, axis=0)
    degenerate = make_batch(np.arange(150.0) + 100, ["same"] * 150, same,
                            world["target"].predict(same))
    det = PradaDetector()
    assert run(det, merge(short, degenerate)) == []
    status = {s.client_id: s for s in det.statuses()}
    assert status["short"].verdict == "untested"
    assert status["short"].reason.startswith("too few queries")
    assert status["short"].queries_observed == 50
    assert status["same"].verdict == "untested"
    assert status["same"].reason.startswith("degenerate distances")


def test_prada_calibration_round_trip(world):
    det = PradaDetector()
    cal = det.calibrate(chunks(benign_traffic(world, 40, seed=7, prefix="cal"), 500), 0.01)
    assert 0.9 < cal["delta"] < 1.0
    other = PradaDetector()
    other.load_calibration(json.loads(json.dumps(det.calibration())))
    assert other.params["delta"] == cal["delta"]
    found = run(other, merge(benign_traffic(world, 20, seed=8), attack_batch(world, "jacobian", 2)))
    assert {d.client_id for d in found} == {"jacobian-0", "jacobian-1"}
    print(f"\nPRADA calibrated delta {cal['delta']:.4f} over {cal['clients']} benign clients")


# -- OOD -----------------------------------------------------------------------------------
def calibrated_ood(world):
    det = OodDetector()
    det.calibrate(chunks(benign_traffic(world, 30, seed=11, prefix="cal"), 1000), 0.001)
    return det


def test_ood_flags_random_queries_and_no_benign(world):
    det = calibrated_ood(world)
    log = merge(benign_traffic(world), attack_batch(world, "random", 5, n_queries=200))
    found = run(det, log)
    flagged = {d.client_id: d for d in found}
    assert set(flagged) == {f"random-{c}" for c in range(5)}
    assert max(d.queries_observed for d in found) <= 200
    status = {s.client_id: s for s in det.statuses()}
    assert all(s.verdict == "clear" for c, s in status.items() if c.startswith("benign"))
    print(f"\nOOD queries to detection {[d.queries_observed for d in found]}, "
          f"fraction threshold {det.params['fraction']}, cutoff {det.calibration()['cutoff']:.2f}")


def test_ood_holds_back_until_calibrated_and_checks_dimension(world):
    b = make_batch([0.0], ["c"], np.zeros((1, 64)), [0])
    held = OodDetector()
    assert held.observe(b) == [] and held.finish() == []  # one client: no population to learn
    (status,) = held.statuses()
    assert status.verdict == "untested" and "no benign model yet" in status.reason
    det = calibrated_ood(world)
    with pytest.raises(CalibrationError, match="dimension"):
        det.observe(make_batch([0.0], ["c"], np.zeros((1, 10)), [0]))
    again = OodDetector()
    again.load_calibration(json.loads(json.dumps(det.calibration())))
    assert again.observe(b) == [] and again.statuses()[0].verdict == "untested"


# -- Volume --------------------------------------------------------------------------------
def test_volume_flags_burst_not_slow_client():
    burst_ts = np.linspace(0, 10, 2000)
    slow_ts = np.linspace(0, 600, 100)
    ts = np.concatenate([burst_ts, slow_ts])
    clients = ["burst"] * 2000 + ["slow"] * 100
    order = np.argsort(ts, kind="stable")
    log = make_batch(ts[order], np.asarray(clients, dtype=object)[order],
                     np.zeros((2100, 2)), np.zeros(2100))
    det = VolumeDetector()
    found = run(det, log, 300)
    assert [d.client_id for d in found] == ["burst"]
    assert found[0].queries_observed == 601
    status = {s.client_id: s.verdict for s in det.statuses()}
    assert status == {"burst": "flagged", "slow": "clear"}


def test_volume_calibration():
    rng = np.random.default_rng(0)
    ts = np.sort(rng.uniform(0, 3600, 2000))
    log = make_batch(ts, [f"c{i % 20}" for i in range(2000)], np.zeros((2000, 1)), np.zeros(2000))
    det = VolumeDetector()
    cal = det.calibrate([log], 0.001)
    assert 1 <= cal["max_per_window"] < 600
    assert run(VolumeDetector(**det.params), log) == []


# -- state ---------------------------------------------------------------------------------
def canon(found):
    return [(d.client_id, d.queries_observed, round(d.score, 12)) for d in found]


@pytest.mark.parametrize("kind", ["prada", "ood", "volume"])
def test_checkpoint_restore_gives_identical_detections(world, kind):
    log = merge(benign_traffic(world, 10), attack_batch(world, "jacobian", 2),
                attack_batch(world, "random", 2, t0=600.0))
    def fresh():
        det = {"prada": PradaDetector, "ood": OodDetector,
               "volume": lambda: VolumeDetector(max_per_window=25)}[kind]()
        if kind == "ood":
            det.load_calibration(calibrated_ood(world).calibration())
        return det
    parts = list(chunks(log, 300))
    whole = fresh()
    expected = [d for b in parts for d in whole.observe(b)]
    assert expected
    first = fresh()
    got = [d for b in parts[:3] for d in first.observe(b)]
    state = json.loads(json.dumps(first.checkpoint()))
    second = fresh()
    second.restore(state)
    got += [d for b in parts[3:] for d in second.observe(b)]
    assert canon(got) == canon(expected)
    assert second.statuses() == whole.statuses()


@pytest.mark.parametrize("cls", [PradaDetector, OodDetector, VolumeDetector])
def test_eviction_is_bounded_and_counted(world, cls):
    det = cls(max_clients=5)
    if cls is OodDetector:
        det.load_calibration(calibrated_ood(world).calibration())
    log = benign_traffic(world, 12, per_client=20)
    run(det, log, 40)
    assert len(det.statuses()) <= 5
    assert det.evicted >= 7
    assert len(det.checkpoint()["clients"]) <= 5


def test_prada_benign_fpr_on_the_documented_generator():
    """The benchmark's benign traffic, smaller: ``benign_events`` over the digits demo's 450
    non-members, 300 clients of 150 queries (seed 0). Answered by the demo MLP (``labels=``),
    PRADA at its default delta flags none (lowest W 0.9302); with the generator's placeholder
    labels (row position modulo 10, not a model's answer) it flags 3, its per-class growing
    sets then mixing digits at random. On 1,000 clients (benchmarks/detection.py) the same
    traffic gives 0 and 22: the 22/1,000 once reported against benchmarks/README.md's 0/1,000.
    """
    from mlthreat.assess import demo_targets, digits_demo
    from mlthreat.detect.evaluate import benign_events

    data = digits_demo(0)
    mlp = demo_targets(data, seed=0)[1].estimator
    x = data.x_nonmembers

    def prada_on(labels):
        events = benign_events(x, n_clients=300, queries=150, model_id="demo-mlp", seed=0,
                               labels=labels)
        batch = make_batch([e["ts"] for e in events], [e["client_id"] for e in events],
                           np.asarray([e["input"] for e in events]),
                           [e["output"]["label"] for e in events], model="demo-mlp")
        det = PradaDetector()
        found = run(det, batch, size=8192)
        lowest = min(s.min_w for s in det._clients.values() if s.min_w is not None)
        return {d.client_id: d.queries_observed for d in found}, lowest, det.statuses()

    answered, lowest, statuses = prada_on(mlp.predict(x))
    assert answered == {}
    assert [s.verdict for s in statuses].count("clear") == 300
    assert lowest == pytest.approx(0.9302, abs=1e-4)
    placeholder, lowest, _ = prada_on(None)
    assert len(placeholder) == 3 and np.median(list(placeholder.values())) == 123
    assert lowest == pytest.approx(0.903, abs=1e-3)
    with pytest.raises(UsageError, match="3 labels for 450 rows"):
        benign_events(x, labels=[1, 2, 3])
