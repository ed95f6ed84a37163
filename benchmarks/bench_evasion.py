"""Evasion on the same rows, one run (issue 14): the steal-craft-refine chain against plain
HopSkipJump and ART's HopSkipJump defaults. Prints one JSON line per method and target.

    python benchmarks/bench_evasion.py [--seed 0] [--trees 30] [--skip-art]

Targets: the demo MLP and the demo's random forest (``--trees`` trees; 100 is MEASURED.md's
forest). Rows: the 20 correctly classified pool rows every evasion run selects at ``--seed``
(the same for all three methods). Methods:

- ``art-hsj-defaults``: ART 1.20's ``HopSkipJump`` with its defaults (50 iterations, 10,000
  evaluations, 100 initial evaluations) on a ``BlackBoxClassifier`` over the target, numpy
  seeded, every query counted;
- ``evasion-hopskipjump``: mlthreat's plain run (5 / 200 / 20, 600 queries per sample);
- ``evasion-chain``: mlthreat's chain with its defaults, the theft counted and shared.

L2 and L∞ are relative to the feature range (digits in [0, 1]: the plain norms).
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def art_defaults(target, x, y) -> dict[str, object]:
    import numpy as np
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    sent = [0]

    def predict(rows):
        rows = np.asarray(rows, dtype="float32").reshape(len(rows), -1)
        sent[0] += len(rows)
        return target.estimator.predict_proba(rows)

    classifier = BlackBoxClassifier(predict, (x.shape[1],), 10, clip_values=(0.0, 1.0))
    attack = HopSkipJump(classifier, targeted=False, norm=2, verbose=False)
    np.random.seed(0)
    start = time.perf_counter()
    out = attack.generate(x.astype("float32"))
    seconds = time.perf_counter() - start
    fooled = target.estimator.predict(out) != y
    l2 = np.linalg.norm(out - x, axis=1)[fooled]
    linf = np.abs(out - x).max(axis=1)[fooled]
    return {"median_l2": round(float(np.median(l2)), 4) if len(l2) else None,
            "median_linf": round(float(np.median(linf)), 4) if len(linf) else None,
            "misclassified": round(float(fooled.mean()), 4),
            "success_at_eps": round(float(np.mean(fooled & (np.linalg.norm(out - x, axis=1)
                                                            <= 0.75 * (1 + 1e-5)))), 4),
            "queries_per_sample": round(sent[0] / len(x), 1),
            "queries_per_sample_amortised": round(sent[0] / len(x), 1),
            "seconds": round(seconds, 1)}


def ours(run: str, target, data, seed: int) -> dict[str, object]:
    from mlthreat.assess import Assessment

    start = time.perf_counter()
    result = Assessment([target], data, techniques=[run], seed=seed,
                        params={run: {"n_samples": 20}}).run()
    seconds = time.perf_counter() - start
    f = result.findings()[0][1]
    m = f.metrics

    def get(name: str) -> object:
        return m[name].value if name in m else None

    return {"median_l2": get("median_l2"), "median_linf": get("median_linf"),
            "misclassified": get("misclassified_rate"),
            "success_at_eps": get("success_rate_at_eps"),
            "queries_per_sample": get("queries_per_sample"),
            "queries_per_sample_amortised": get("queries_per_sample_amortised") or
            get("queries_per_sample"),
            "seconds": round(seconds, 1), "status": f.status}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trees", type=int, default=30)
    ap.add_argument("--skip-art", action="store_true")
    args = ap.parse_args()

    import mlthreat.assess.demo as demo
    from mlthreat.assess import digits_demo
    from mlthreat.assess.techniques.base import RunContext
    from mlthreat.assess.techniques.chain import ChainEvasion

    demo.N_TREES = args.trees
    data = digits_demo(0)
    targets = demo.demo_targets(data, 0)[1:]
    for target in targets:
        rows = ChainEvasion()._select(RunContext(target, data, 0, args.seed))
        x, y = rows[0].reshape(len(rows[0]), -1), rows[1]
        name = f"{target.model_id}({args.trees})" if "forest" in target.model_id \
            else target.model_id
        if not args.skip_art:
            emit(method="art-hsj-defaults", target=name, seed=args.seed, rows=len(x),
                 **art_defaults(target, x, y))
        for run in ("evasion-hopskipjump", "evasion-chain"):
            emit(method=run, target=name, seed=args.seed, rows=len(x),
                 **ours(run, target, data, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
