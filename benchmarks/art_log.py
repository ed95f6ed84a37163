"""A mixed query log whose attacks are run by ART itself, not by mlthreat: the detectors'
out-of-house test. Writes one JSONL file of QueryEvents.

    OPENBLAS_NUM_THREADS=1 python benchmarks/art_log.py OUT.jsonl [--benign-clients 1000]
        [--seed 0]

Target: a scikit-learn ``MLPClassifier((64,))`` trained on 900 rows of scikit-learn's digits
scaled to [0, 1] (the same split as ``mlthreat.assess.digits_demo``: 450 held-out non-members,
447 rows as the attacker's pool), wrapped in an ART ``ScikitlearnClassifier`` subclass that
writes every row ART sends to ``predict`` as a QueryEvent of the current client (label and
class scores as the model answered). Attacks (ART 1.20):

* ``art-hsj-<i>``: ``HopSkipJump`` (untargeted L2, 5 initial evaluations, at most 200
  evaluations per gradient estimate, 10 iterations), one pool row per client, 10 clients;
* ``art-random-<i>``: ``CopycatCNN`` extraction fed 300 uniformly random inputs in [0, 1]^64
  (ART queries the victim on the inputs it is given), 5 clients;
* ``art-natural-<i>``: ``KnockoffNets`` (``sampling_strategy="random"``) fed 300 pool rows,
  5 clients;
* ``art-membership-<i>``: ``LabelOnlyDecisionBoundary`` (membership inference by the distance
  to the decision boundary, found with HopSkipJump: ``max_iter=2, max_eval=100,
  init_eval=5``) on 3 member rows per client, 5 clients.

The thief for the two extraction attacks is a scikit-learn MLP behind a thin wrapper that drops
the ``batch_size``/``nb_epochs`` ART passes to ``fit`` (MEASURED.md). ART sends queries in
batches with no notion of time; each attack client's queries are given timestamps at 1 query/s
(exponential gaps), starting at a random minute into the benign span. Benign traffic:
:func:`mlthreat.detect.evaluate.benign_events` over the 450 non-members, answered by the MLP
(as in ``benchmarks/detection.py``). Truths: ``attack:AML.T0043.001`` (HopSkipJump),
``attack:AML.T0024.002`` (extraction), ``attack:AML.T0024.000`` (membership).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--benign-clients", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from art.attacks.evasion import HopSkipJump
    from art.attacks.extraction import CopycatCNN, KnockoffNets
    from art.attacks.inference.membership_inference import LabelOnlyDecisionBoundary
    from art.estimators.classification.scikitlearn import ScikitlearnClassifier
    from detection import benign, write
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    warnings.simplefilter("ignore", ConvergenceWarning)
    t0 = time.perf_counter()
    seed = args.seed
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, train_size=900, random_state=seed,
                                                  stratify=y)
    x_non, x_pool, _, _ = train_test_split(x_rest, y_rest, train_size=450,
                                                random_state=seed, stratify=y_rest)
    model = MLPClassifier((64,), max_iter=500, random_state=seed).fit(x_tr, y_tr)
    rng = np.random.default_rng(seed + 2000)
    np.random.seed(seed)  # HopSkipJump's random start is drawn from numpy's global state
    start = 1.7e9
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    class Logged(ScikitlearnClassifier):  # type: ignore[misc]
        """Every row ART sends is one query of the current client."""

        def predict(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
            scores = super().predict(x, **kwargs)
            rows = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
            for row, sc in zip(rows, np.asarray(scores), strict=True):
                current["t"] += rng.exponential(1.0)
                events.append({"ts": round(float(current["t"]), 3),
                               "client_id": current["client"], "model_id": "art-mlp",
                               "input": np.round(row, 6).tolist(),
                               "output": {"label": int(np.argmax(sc)),
                                          "scores": np.round(sc, 6).tolist()},
                               "truth": current["truth"]})
            return scores

    victim = Logged(model, clip_values=(0.0, 1.0))

    class Thief(ScikitlearnClassifier):  # type: ignore[misc]
        def fit(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> None:
            super().fit(x, y)

    def client(name: str, truth: str) -> None:
        current.update(client=name, truth=truth, t=start + 60.0 * rng.random())

    for i in range(10):
        client(f"art-hsj-{i}", "attack:AML.T0043.001")
        attack = HopSkipJump(victim, targeted=False, norm=2, max_iter=10, max_eval=200,
                             init_eval=5, verbose=False)
        attack.generate(x_pool[i:i + 1])
    for i in range(5):
        client(f"art-random-{i}", "attack:AML.T0024.002")
        thief = Thief(MLPClassifier((64,), max_iter=200, random_state=i), clip_values=(0, 1))
        noise = rng.random((300, 64)).astype(np.float32)
        CopycatCNN(victim, batch_size_query=50, nb_epochs=1, nb_stolen=300,
                   use_probability=False).extract(noise, thieved_classifier=thief)
    for i in range(5):
        client(f"art-natural-{i}", "attack:AML.T0024.002")
        thief = Thief(MLPClassifier((64,), max_iter=200, random_state=i), clip_values=(0, 1))
        rows = x_pool[rng.permutation(len(x_pool))[:300]]
        KnockoffNets(victim, batch_size_query=50, nb_epochs=1, nb_stolen=300,
                     sampling_strategy="random").extract(rows, y=None, thieved_classifier=thief)
    for i in range(5):
        client(f"art-membership-{i}", "attack:AML.T0024.000")
        mia = LabelOnlyDecisionBoundary(victim, distance_threshold_tau=0.5)
        members = rng.choice(len(x_tr), 3, replace=False)
        mia.infer(x_tr[members], y_tr[members], max_iter=2, max_eval=100, init_eval=5,
                  verbose=False)
    n_attack = len(events)
    events += benign(model, x_non, args.benign_clients, seed, "benign-", start,
                     model_id="art-mlp")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(events, args.out)
    print(f"{n_attack} attack + {len(events) - n_attack} benign events in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
