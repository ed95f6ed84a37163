"""Detection throughput on 64-dimensional inputs (issue 4: the stateful detector should keep up
with 50,000 events/s on one core), against a straightforward per-event Python loop of the same
algorithm, and memory per stored query and per tracked client. One JSON line per figure.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_detect.py [--events N] [--batch N]

Traffic: scikit-learn digits scaled to [0, 1] sent by 1,000 clients, interleaved: half the
queries exact copies of 50 popular rows, half a held-out row with Gaussian noise (sd 0.05),
so most inputs are distinct and many are near-duplicates (the matching work is real). Rows of
HopSkipJump-like probing are not needed for speed: matching costs the same for any client.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import tracemalloc
from collections import Counter

import numpy as np

from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors._fingerprints import WINDOW_KEYS as _WINDOW_KEYS
from mlthreat.detect.detectors.blacklight import BlacklightDetector
from mlthreat.detect.detectors.knn import KnnDetector


def traffic(n: int, seed: int = 0) -> EventBatch:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = x[rng.integers(len(x), size=n)]
    popular = rng.random(n) < 0.5
    rows[popular] = x[rng.integers(50, size=int(popular.sum()))]
    noisy = ~popular
    rows[noisy] = np.clip(rows[noisy] + rng.normal(0, 0.05, (int(noisy.sum()), 64)), 0, 1)
    clients = np.array([f"client-{i}" for i in rng.integers(1000, size=n)], dtype=object)
    return EventBatch(ts=np.arange(n, dtype=np.float64), client_id=clients,
                      model_id=np.array(["m"] * n, dtype=object), x=rows,
                      label=np.zeros(n, dtype=np.int64))


_MASK = (1 << 64) - 1


def _mix(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def _window_hash(values: list[int]) -> int:
    keys = _WINDOW_KEYS
    return _mix((0x9E3779B97F4A7C15 + sum(v * keys[k % len(keys)]
                                        for k, v in enumerate(values))) & _MASK)


def reference(batch: EventBatch, cfg: dict, cap: int, max_fp: int) -> list[int]:
    """The same algorithm, one event at a time in plain Python: the same window hash computed
    per window with Python integers, a dict index, a Counter of candidates. Returns per-event
    overlaps (-1 for exact repeats); ``main`` checks they equal the detector's."""
    q, w, step, top_n = cfg["quantization"], cfg["window"], cfg["step"], cfg["top_n"]
    index: dict[int, list[int]] = {}
    seen: dict[bytes, int] = {}
    nxt = 0
    out = []
    for x in batch.x:
        key = x.tobytes()
        s = seen.get(key)
        if s is not None and s >= nxt - max_fp:
            out.append(-1)
            continue
        v = [math.floor(t / q) & _MASK for t in x.tolist()]
        hs = {_window_hash(v[i:i + w]) for i in range(0, len(v) - w + 1, step)}
        fp = sorted(hs, reverse=True)[:top_n]
        c: Counter[int] = Counter()
        for h in fp:
            lst = index.setdefault(h, [])
            c.update(s for s in lst[-cap:] if s >= nxt - max_fp)
            lst.append(nxt)
        out.append(max(c.values(), default=0))
        seen[key] = nxt
        nxt += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--reference-events", type=int, default=20_000)
    args = ap.parse_args()
    data = traffic(args.events)

    det = BlacklightDetector()
    det.validate()
    det.observe(data.take(np.arange(1000)))  # warm-up (numpy, first-batch set-up)
    det = BlacklightDetector()
    start = time.perf_counter()
    flagged = 0
    for i in range(0, args.events, args.batch):
        flagged += len(det.observe(data.take(np.arange(i, min(i + args.batch, args.events)))))
    took = time.perf_counter() - start
    cfg = det.calibration()
    print(json.dumps({"figure": "blacklight events/s, vectorised", "events": args.events,
                      "batch": args.batch, "seconds": round(took, 3),
                      "events_per_s": round(args.events / took), "target": 50_000,
                      "window": cfg["window"], "top_n": cfg["top_n"],
                      "flagged_clients": flagged}))

    n_ref = min(args.reference_events, args.events)
    head = data.take(np.arange(n_ref))
    start = time.perf_counter()
    ref = reference(head, cfg, det.params["max_postings"], det.params["max_fingerprints"])
    took_ref = time.perf_counter() - start
    # the same overlaps, per client in order, from the vectorised detector
    check = BlacklightDetector()
    check._record = {}
    for i in range(0, n_ref, args.batch):
        check.observe(head.take(np.arange(i, min(i + args.batch, n_ref))))
    by_client: dict[str, list[int]] = {}
    for c, o in zip(head.client_id.tolist(), ref, strict=True):
        by_client.setdefault(c, []).append(o)
    agrees = by_client == {c: v for (_, c), v in check._record.items()}
    print(json.dumps({"figure": "blacklight events/s, per-event Python loop",
                      "events": n_ref, "seconds": round(took_ref, 3),
                      "events_per_s": round(n_ref / took_ref),
                      "speed_up": round((args.events / took) / (n_ref / took_ref), 1),
                      "same_overlaps_as_vectorised": agrees}))

    # memory per stored query: a full store of distinct inputs
    n_fp = 50_000
    distinct = traffic(n_fp, seed=1)
    distinct = EventBatch(ts=distinct.ts, client_id=np.array(["c"] * n_fp, dtype=object),
                          model_id=distinct.model_id,
                          x=np.clip(distinct.x + np.random.default_rng(2).normal(
                              0, 0.01, distinct.x.shape), 0, 1).astype(np.float32),
                          label=distinct.label)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    det = BlacklightDetector(max_fingerprints=n_fp)
    for i in range(0, n_fp, args.batch):
        det.observe(distinct.take(np.arange(i, i + args.batch)))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(json.dumps({"figure": "blacklight bytes per stored query", "stored":
                      det.stored_fingerprints(), "bytes_per_query":
                      round(used / det.stored_fingerprints()),
                      "fingerprint_bytes": 8 * cfg["top_n"]}))

    # memory per tracked client: clients that only send one repeated input
    n_cl = 50_000
    det = BlacklightDetector()
    det.observe(distinct.take(np.arange(1)))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    clients = np.array([f"client-{i:06d}" for i in range(n_cl)], dtype=object)
    same = EventBatch(ts=np.arange(n_cl, dtype=np.float64), client_id=clients,
                      model_id=np.array(["m"] * n_cl, dtype=object),
                      x=np.repeat(distinct.x[:1], n_cl, axis=0),
                      label=np.zeros(n_cl, dtype=np.int64))
    del clients
    det.observe(same)
    del same
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(json.dumps({"figure": "blacklight bytes per tracked client", "clients": n_cl,
                      "bytes_per_client": round(used / n_cl)}))

    # kNN variant (exempt from the target): per-event distances to the client's buffer
    n_knn = min(50_000, args.events)
    knn = KnnDetector()
    knn.validate()
    start = time.perf_counter()
    for i in range(0, n_knn, args.batch):
        knn.observe(data.take(np.arange(i, min(i + args.batch, n_knn))))
    took = time.perf_counter() - start
    full = sum(len(st[7]) == knn.params["buffer_size"] for st in knn._clients.values())
    print(json.dumps({"figure": "knn events/s", "events": n_knn, "seconds": round(took, 3),
                      "events_per_s": round(n_knn / took),
                      "bytes_per_client_full_buffer": knn.params["buffer_size"] * 64 * 4,
                      "clients_with_full_buffer": full}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
