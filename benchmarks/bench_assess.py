"""Assessment timings (issue 3 targets: the default demo under 90 s; mlthreat's overhead over
ART called directly under 10 %). Prints one JSON line per figure.

    python benchmarks/bench_assess.py [--skip-demo]

1. ``mlthreat assess`` on the demo, end to end (a subprocess, as a user runs it), with the
   seconds of each run from report.json.
2. HopSkipJump on the demo MLP, 20 correctly classified pool rows, 5 init / 200 eval / 20 iter:
   through mlthreat (accounting and query logging on) and through ART's HopSkipJump on a
   BlackBoxClassifier directly, same rows, same parameters; queries per sample for both, and
   for ART's defaults on 3 rows (ART's defaults spend about 24k queries per sample).
3. Extraction and membership on the demo MLP (``--attacks``): ``extraction-surrogate``
   fidelity at 50 and 100 queries (seeds 0-2) with its fidelity-against-queries curve, and
   ``membership-lira`` with its defaults (16 shadows, all 900 members and 450 non-members):
   AUC, TPR at 1 % FPR with counts and 95 % interval, seconds. ``--anchor REV`` also runs
   the same figures on the code of git revision REV (its ``src`` unpacked to a temporary
   folder and run in a subprocess), so both sets come from one run on one machine load:

       python benchmarks/bench_assess.py --skip-demo --skip-hsj --attacks --anchor 966c8de
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def demo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlthreat", "assess", "-q", "-o", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        report = json.loads((Path(tmp) / "report.json").read_text())
    emit(figure="demo_wall_seconds", value=round(total, 1), runs_seconds=report["seconds"],
         attack_queries=report["queries_total"])
    for f in report["findings"]:
        emit(figure="demo_run_seconds", target=f["target"], run=f["run"], status=f["status"],
             seconds=f["seconds"], queries=f["queries"])


def hopskipjump() -> None:
    import numpy as np
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    from mlthreat.assess import Assessment, demo_targets, digits_demo
    from mlthreat.events import QueryLog

    data = digits_demo(0)
    mlp = demo_targets(data, 0)[1]
    import art.attacks.evasion  # noqa: F401 - both sides start with ART already imported
    params = {"n_samples": 20, "max_iter": 20, "max_eval": 200, "init_eval": 5}
    timings = {}
    for logging in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            log = QueryLog(Path(tmp) / "q.jsonl", "demo-mlp") if logging else None
            start = time.perf_counter()
            result = Assessment([mlp], data, techniques=["evasion-hopskipjump"],
                                budget=20 * 600, params={"evasion-hopskipjump": params},
                                query_log=log).run()
            timings[logging] = time.perf_counter() - start
            if log is not None:
                log.close()
        finding = result.findings()[0][1]
        emit(figure="hsj_mlthreat", query_log=logging, seconds=round(timings[logging], 2),
             queries=finding.queries,
             queries_per_sample=finding.metrics["queries_per_sample"].value,
             success_at_eps=finding.metrics["success_rate_at_eps"].value,
             median_l2=finding.metrics["median_l2"].value)
    ours = timings[True]

    model = mlp.estimator
    correct = model.predict(data.x_pool) == data.y_pool
    rows = data.x_pool[correct][:20]
    calls = [0]

    def predict(x: np.ndarray) -> np.ndarray:
        calls[0] += len(x)
        return np.asarray(model.predict_proba(x))

    art_clf = BlackBoxClassifier(predict, input_shape=(64,), nb_classes=10, clip_values=(0, 1))
    np.random.seed(0)
    attack = HopSkipJump(art_clf, targeted=False, norm=2, max_iter=20, max_eval=200,
                         init_eval=5, init_size=100, verbose=False)
    start = time.perf_counter()
    adv = attack.generate(rows)
    art_seconds = time.perf_counter() - start
    l2 = np.linalg.norm((adv - rows).reshape(len(rows), -1), axis=1)
    emit(figure="hsj_art_direct", seconds=round(art_seconds, 2), queries=calls[0],
         queries_per_sample=calls[0] / len(rows), median_l2=float(np.median(l2)))
    emit(figure="hsj_overhead", with_query_log=round(ours / art_seconds - 1, 3),
         without_query_log=round(timings[False] / art_seconds - 1, 3))

    calls[0] = 0
    defaults = HopSkipJump(art_clf, targeted=False, norm=2, verbose=False)
    start = time.perf_counter()
    defaults.generate(rows[:3])
    emit(figure="hsj_art_defaults", seconds=round(time.perf_counter() - start, 2),
         queries_per_sample=calls[0] / 3)


def attacks(code: str) -> None:
    """Extraction at 50 and 100 queries and LiRA's defaults on the demo MLP, as this checkout
    runs them (``code`` labels the lines: ``current`` or ``anchor <rev>``)."""
    from mlthreat.assess import demo_targets, digits_demo
    from mlthreat.assess.techniques.base import RunContext
    from mlthreat.assess.techniques.extraction import SurrogateExtraction
    from mlthreat.assess.techniques.membership import LiraMembership

    data = digits_demo(0)
    mlp = demo_targets(data, 0)[1]
    strategies = ["random"]
    if "strategy" in SurrogateExtraction.defaults:
        strategies = [SurrogateExtraction.defaults["strategy"], "random"]
    for strategy in dict.fromkeys(strategies):
        params = {"strategy": strategy} if "strategy" in SurrogateExtraction.defaults else {}
        for budget in (50, 100):
            for seed in (0, 1, 2):
                ctx = RunContext(mlp, data, budget=budget, run_name="extraction-surrogate",
                                 technique=SurrogateExtraction.technique, seed=seed)
                start = time.perf_counter()
                f = SurrogateExtraction(**params).run(ctx)
                emit(figure="extraction_demo_mlp", code=code, strategy=strategy,
                     budget=budget, seed=seed, fidelity=f.metrics["fidelity"].value,
                     queries=f.queries, seconds=round(time.perf_counter() - start, 2),
                     curve=f.curves["fidelity_vs_queries"])
    load = os.getloadavg()[0]
    ctx = RunContext(mlp, data, budget=10_000, run_name="membership-lira",
                     technique=LiraMembership.technique, seed=0)
    start = time.perf_counter()
    f = LiraMembership().run(ctx)
    m = f.metrics
    emit(figure="lira_demo_mlp", code=code, seconds=round(time.perf_counter() - start, 2),
         load_before=round(load, 2), load_after=round(os.getloadavg()[0], 2),
         n_shadow=LiraMembership.defaults["n_shadow"],
         variance=LiraMembership.defaults["variance"], queries=f.queries,
         auc=m["auc"].value, auc_ci=m["auc"].ci, tpr_at_1pct_fpr=m["tpr_at_1pct_fpr"].value,
         tpr_ci=m["tpr_at_1pct_fpr"].ci, tpr_note=m["tpr_at_1pct_fpr"].note)


def anchor(rev: str) -> None:
    """Run :func:`attacks` on the code of git revision ``rev``, in a subprocess."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        subprocess.run([sys.executable, __file__, "--skip-demo", "--skip-hsj", "--attacks",
                        "--label", f"anchor {rev}"], check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-hsj", action="store_true")
    ap.add_argument("--attacks", action="store_true",
                    help="extraction at 50/100 queries and LiRA on the demo MLP")
    ap.add_argument("--anchor", metavar="REV", help="also run --attacks on git revision REV")
    ap.add_argument("--label", default="current", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.skip_demo:
        demo()
    if not args.skip_hsj:
        hopskipjump()
    if args.attacks:
        if args.anchor:
            anchor(args.anchor)
        attacks(args.label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
