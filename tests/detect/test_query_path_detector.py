"""Blacklight's query-path rules (``detect/detectors/_paths.py``): binary-search bisection steps
reported as AML.T0043.001 before the fingerprints match, and probe clusters (tight runs of
copies around distinct records, jumps between them) reported as AML.T0024.000, on logs built
here: HopSkipJump run by the assessment, a binary search written out by hand, augmentation
probers, and benign, natural-data, random and Jacobian-style clients that must make neither
shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors._paths import PATH_DEFAULTS, QueryPath
from mlthreat.detect.detectors.blacklight import BlacklightDetector
from mlthreat.errors import UsageError


def _batch(x: Any, clients: Any, t0: float = 0.0) -> EventBatch:
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    return EventBatch(ts=t0 + np.arange(n, dtype=np.float64),
                      client_id=np.asarray(clients, dtype=object),
                      model_id=np.asarray(["demo-mlp"] * n, dtype=object), x=x,
                      label=np.zeros(n, dtype=np.int64), line=np.arange(1, n + 1),
                      source="test")


def _run(det: BlacklightDetector, *batches: EventBatch, chunk: int = 500) -> list[Any]:
    out = []
    for b in batches:
        for i in range(0, len(b), chunk):
            out += det.observe(b.take(np.arange(i, min(i + chunk, len(b)))))
    return out


def _first(found: list[Any]) -> dict[tuple[str, str], int]:
    """(client, technique) -> the query count of its detection."""
    return {(d.client_id, d.technique): d.queries_observed for d in found}


@pytest.fixture(scope="module")
def digits() -> Any:
    from mlthreat.assess import digits_demo

    return digits_demo()


def prober(records: np.ndarray, copies: int, client: str, seed: int = 0,
           t0: float = 0.0) -> EventBatch:
    """Augmentation-form label-only membership probing: each record, then ``copies`` copies
    with Gaussian noise (sd 0.02), one record at a time."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in records:
        rows.append(r)
        rows.extend(np.clip(r + rng.normal(0, 0.02, (copies, r.shape[0])), 0, 1))
    return _batch(np.asarray(rows), [client] * len(rows), t0=t0)


def bisection(x0: np.ndarray, starts: np.ndarray, client: str, steps: int = 8) -> EventBatch:
    """A decision-based search's opening: random starting points, then a binary search on
    the segment from the last of them to ``x0`` (each query the midpoint of what is left)."""
    rows = list(starts)
    lo, hi = 0.0, 1.0  # position on the segment from x0 (0) to the starting point (1)
    for k in range(steps):
        mid = (lo + hi) / 2
        rows.append(x0 + mid * (starts[-1] - x0))
        lo, hi = (lo, mid) if k % 2 else (mid, hi)
    return _batch(np.asarray(rows), [client] * len(rows))


def test_binary_search_is_reported_at_its_third_bisection_step(digits: Any) -> None:
    rng = np.random.default_rng(0)
    x0 = digits.x_members[0]
    one = bisection(x0, rng.random((1, 64)), "one-start")
    four = bisection(x0, rng.random((4, 64)), "four-starts")
    det = BlacklightDetector()
    found = _run(det, one, four, chunk=3)
    # the start, then midpoints: the 2nd midpoint's step is the 1st bisection step (query 3),
    # the 3rd bisection step is query 5; after four random starts, query 8
    assert [(d.client_id, d.technique, d.queries_observed, d.score, d.threshold, d.unit)
            for d in found] == [
        ("one-start", "AML.T0043.001", 5, 3.0, 3.0, "bisection steps"),
        ("four-starts", "AML.T0043.001", 8, 3.0, 3.0, "bisection steps")]
    assert found[0].evidence["rule"] == "bisection"
    # one detection per client: Blacklight's 3rd fingerprint match adds none
    assert {s.client_id: s.verdict for s in det.statuses()} == \
        {"one-start": "flagged", "four-starts": "flagged"}
    # bisection_steps is the knob
    assert _first(_run(BlacklightDetector(bisection_steps=5), one)) == \
        {("one-start", "AML.T0043.001"): 7}


@pytest.fixture(scope="module")
def hsj(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> EventBatch:
    """mlthreat's HopSkipJump on the demo MLP, 6 samples, one client each, from its log."""
    from mlthreat.assess import Assessment, demo_targets
    from mlthreat.events import QueryLog

    path = Path(tmp_path_factory.mktemp("hsj")) / "queries.jsonl"
    with QueryLog(path, "demo-mlp") as log:
        Assessment([demo_targets(digits)[1]], digits, techniques=["evasion-hopskipjump"],
                   params={"evasion-hopskipjump": {"n_samples": 6}}, query_log=log,
                   clients_per_run=6).run()
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    rows = [r for r in rows if str(r.get("truth", "")).startswith("attack:")]
    return _batch([r["input"] for r in rows], [r["client_id"] for r in rows], t0=1e6)


def test_hopskipjump_by_query_10_as_evasion_only(hsj: EventBatch) -> None:
    found = _run(BlacklightDetector(), hsj, chunk=64)
    clients = set(hsj.client_id.tolist())
    assert len(clients) == 6
    assert {d.client_id for d in found} == clients
    assert {d.technique for d in found} == {"AML.T0043.001"}  # never membership probing
    assert max(d.queries_observed for d in found) <= 10
    assert {d.evidence.get("rule") for d in found} == {"bisection"}
    # the fingerprint rule alone is later (its first queries are far apart)
    late = _run(BlacklightDetector(bisection_steps=10**6), hsj, chunk=64)
    assert min(d.queries_observed for d in late) > min(d.queries_observed for d in found)


@pytest.mark.parametrize(("records", "copies", "at"), [(30, 9, 41), (30, 10, 45), (15, 10, 45)])
def test_augmentation_probing_reported_at_the_fourth_probe_cluster(
        digits: Any, records: int, copies: int, at: int) -> None:
    batch = prober(digits.x_members[:records], copies, "prober")
    found = _run(BlacklightDetector(), batch, chunk=7)
    # near-duplicates first (evasion-like), then the 4th record's run closed by the jump to
    # the 5th record, query 4 * (copies + 1) + 1
    assert [(d.technique, d.queries_observed) for d in found] == \
        [("AML.T0043.001", 5), ("AML.T0024.000", at)]
    membership = found[1]
    assert (membership.score, membership.threshold, membership.unit) == \
        (4.0, 4.0, "probe clusters")
    assert membership.evidence["mean_cluster_queries"] == copies + 1
    assert membership.evidence["also_consistent_with"] == "AML.T0043.001"


def test_too_few_records_or_shuffled_copies_are_not_probe_clusters(digits: Any) -> None:
    few = prober(digits.x_members[:4], 10, "four-records")  # the 4th run never ends
    assert [d.technique for d in _run(BlacklightDetector(), few)] == ["AML.T0043.001"]
    # copies sent in random order: no runs, so only the cluster rule (20 clusters) can tell
    batch = prober(digits.x_members[:30], 10, "shuffled")
    order = np.random.default_rng(1).permutation(len(batch))
    shuffled = _batch(batch.x[order], batch.client_id[order])
    found = _run(BlacklightDetector(), shuffled)
    assert all(d.evidence.get("rule") != "probe clusters" for d in found)


def test_no_benign_natural_random_or_jacobian_client_makes_either_shape(digits: Any) -> None:
    from mlthreat.detect.evaluate import benign_events

    events = benign_events(digits.x_nonmembers, n_clients=300, queries=150, model_id="demo-mlp")
    rng = np.random.default_rng(2)
    xs = [e["input"] for e in events]
    cs = [e["client_id"] for e in events]
    pool = digits.x_pool
    for c in range(5):  # a sweep of natural rows, uniform random rows, Jacobian-style steps
        xs += list(pool[rng.permutation(len(pool))[:300]])
        cs += [f"natural-{c}"] * 300
        xs += list(rng.random((300, 64)))
        cs += [f"random-{c}"] * 300
        base = pool[rng.choice(len(pool), 150)]
        xs += list(base) + list(np.clip(base + 0.1 * rng.choice([-1.0, 1.0], base.shape), 0, 1))
        cs += [f"jacobian-{c}"] * 300
    order = rng.permutation(len(xs))
    batch = _batch(np.asarray(xs)[order], np.asarray(cs, dtype=object)[order])
    det = BlacklightDetector()
    found = _run(det, batch, chunk=1000)
    assert [d for d in found if d.evidence.get("rule") in ("bisection", "probe clusters")] == []
    paths = [st[11] for st in det._clients.values()]
    assert len(paths) == 315
    assert max(p.bisections for p in paths) == 0 and max(p.clusters for p in paths) == 0


def test_batching_and_checkpoint_keep_the_path(digits: Any) -> None:
    rng = np.random.default_rng(3)
    one = bisection(digits.x_members[1], rng.random((3, 64)), "search")
    probe = prober(digits.x_members[:8], 10, "prober", t0=100.0)
    # interleaved at random, each client's queries in their own order
    from_one = np.zeros(len(one) + len(probe), dtype=bool)
    from_one[rng.choice(len(from_one), size=len(one), replace=False)] = True
    xs = np.empty((len(from_one), 64), dtype=np.float32)
    cs = np.empty(len(from_one), dtype=object)
    xs[from_one], xs[~from_one] = one.x, probe.x
    cs[from_one], cs[~from_one] = one.client_id, probe.client_id
    both = _batch(xs, cs)
    whole = _run(BlacklightDetector(), both, chunk=10_000)
    assert sorted((d.client_id, d.technique, d.evidence.get("rule")) for d in whole) == [
        ("prober", "AML.T0024.000", "probe clusters"),
        ("prober", "AML.T0043.001", None), ("search", "AML.T0043.001", "bisection")]
    for cut in (3, 20, 47):
        first = BlacklightDetector()
        got = first.observe(both.take(np.arange(cut)))
        again = BlacklightDetector()
        again.restore(json.loads(json.dumps(first.checkpoint())))
        got += _run(again, both.take(np.arange(cut, len(both))), chunk=5)
        assert got == whole
    # a checkpoint from before the query path was kept restores with a fresh path
    det = BlacklightDetector()
    det.observe(both.take(np.arange(5)))
    state = det.checkpoint()
    for c in state["clients"]:
        del c[-1]
    old = BlacklightDetector()
    old.restore(state)
    assert all(st[11].last is None and st[11].bisections == 0 for st in old._clients.values())


def test_query_path_parameters_are_checked() -> None:
    for bad in ({"bisection_steps": 0}, {"bisection_ratio": (0.6, 0.4)},
                {"bisection_cos": 1.5}, {"probe_clusters": True}, {"probe_size": 2},
                {"probe_spread": 0.5}, {"probe_jump": 1.0}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            BlacklightDetector(**bad).validate()
    path = QueryPath()
    assert path.advance(np.zeros(4, np.float32), PATH_DEFAULTS) is None
    assert path.advance(np.zeros(4, np.float32), PATH_DEFAULTS) is None  # an exact repeat
    assert path.to_json()["visit_steps"] == 0
