"""The closed loop: score detectors on labelled traffic, and make benign traffic to score them on.

Attack traffic is what ``mlthreat assess`` logs (``queries.jsonl``: ``truth: attack:<ATLAS ID>``
on the attack's queries; ``truth: evaluation`` rows are skipped). Benign traffic comes from
:func:`benign_events`. A client's truth is the attack technique if any of its events is an
attack, else ``benign``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.detect.batch import EventBatch
    from mlthreat.detect.detectors.base import Detector
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["DetectorScore", "benign_events", "evaluate"]


@dataclass(frozen=True)
class DetectorScore:
    """One detector against one kind of client (``truth``: an attack technique or ``benign``).

    ``rate`` is the fraction of those clients flagged (TPR for attacks, FPR for benign) with
    its 95 % Clopper-Pearson interval; ``median_queries`` the median number of queries a
    flagged client had sent when first flagged.
    """

    detector: str
    truth: str
    clients: int
    flagged: int
    rate: float
    ci95: tuple[float, float]
    median_queries: float | None


def evaluate(batches: Iterable[EventBatch], detectors: list[Detector], kb: KnowledgeBase
             ) -> list[DetectorScore]:
    """Run ``detectors`` over labelled ``batches`` and score them per kind of client.

    Raises
    ------
    DetectError
        When the events carry no ``truth`` labels.
    """
    import numpy as np

    from mlthreat.detect.engine import run_detectors
    from mlthreat.detect.errors import DetectError
    from mlthreat.stats import clopper_pearson

    truth_of: dict[str, str] = {}

    def labelled(stream: Iterable[EventBatch]) -> Iterable[EventBatch]:
        for batch in stream:
            if batch.truth is None:
                raise DetectError(f"{batch.source}: events carry no 'truth' labels; "
                                  "evaluation needs labelled traffic")
            for client, truth in zip(batch.client_id.tolist(), batch.truth.tolist(),
                                     strict=True):
                if truth == "evaluation":
                    continue
                if str(truth).startswith("attack:") or client not in truth_of:
                    truth_of[client] = str(truth)
            yield batch

    result = run_detectors(labelled(batches), detectors, kb, suppression_window=float("inf"),
                           per_detector=True)
    first: dict[tuple[str, str], int] = {}
    for alert in result.alerts:
        key = (alert.detector, alert.client_id)
        first[key] = min(first.get(key, alert.queries_observed), alert.queries_observed)
    scores = []
    kinds = sorted(set(truth_of.values()))
    for detector in detectors:
        for kind in kinds:
            clients = [c for c, t in truth_of.items() if t == kind]
            hits = [first[(detector.name, c)] for c in clients if (detector.name, c) in first]
            n, k = len(clients), len(hits)
            scores.append(DetectorScore(
                detector=detector.name, truth=kind.removeprefix("attack:"), clients=n,
                flagged=k, rate=k / n if n else 0.0, ci95=clopper_pearson(k, n) if n else
                (0.0, 1.0), median_queries=float(np.median(hits)) if hits else None))
    return scores


def benign_events(x: np.ndarray, *, n_clients: int = 1000, queries: int = 150,
                  popular: int = 50, popular_share: float = 0.2, retry_rate: float = 0.05,
                  model_id: str = "model", seed: int = 0, start: float = 1.7e9,
                  rate: float = 0.5, labels: Any = None) -> list[dict[str, Any]]:
    """Benign traffic as QueryEvent dicts.

    ``labels`` are the served model's answers, one per row of ``x`` (``model.predict(x)``);
    each event carries its row's as ``output.label``. Without them ``label`` is a placeholder,
    the row's position in ``x`` modulo 10: fine for input-only detectors (blacklight, knn, ood,
    volume, repeat) and for coverage (which only asks whether a client's answers are spread
    over the classes: placeholders are, like the digits demo's answers), wrong for PRADA, which
    keeps its growing sets per predicted class. On the
    digits demo's 450 non-members, 1,000 clients of 150 queries, seed 0, PRADA at its default
    ``delta`` flags 22 clients with placeholder labels and none with the demo MLP's answers
    (``tests/detect/test_prada_ood_volume.py``, ``benchmarks/README.md``).

    How rows are drawn, per client: ``queries`` requests; each is, with probability
    ``popular_share``, one of ``popular`` rows shared by every client (popular inputs, exact
    copies across clients), else a row drawn without replacement from the client's own slice
    of ``x`` (clients' private rows overlap only by chance); with probability ``retry_rate`` a
    request repeats the client's previous one exactly (a retry). Clients send at ``rate``
    queries per second on average (exponential gaps), interleaved in time order.
    """
    import numpy as np

    answers = None if labels is None else np.asarray(labels).tolist()
    if answers is not None and len(answers) != len(x):
        from mlthreat.errors import UsageError

        raise UsageError(f"benign_events: {len(answers)} labels for {len(x)} rows of x")
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(x), size=min(popular, len(x)), replace=False)
    events: list[tuple[float, dict[str, Any]]] = []
    for c in range(n_clients):
        t = start + rng.exponential(10.0)
        own = rng.permutation(len(x))
        previous = None
        for q in range(queries):
            if previous is not None and rng.random() < retry_rate:
                row = previous
            elif rng.random() < popular_share:
                row = int(rng.choice(pool))
            else:
                row = int(own[q % len(own)])
            previous = row
            t += rng.exponential(1.0 / rate)
            events.append((t, {"ts": round(t, 3), "client_id": f"benign-{c:04d}",
                               "model_id": model_id,
                               "input": [round(float(v), 6) for v in x[row]],
                               "output": {"label": int(row % 10) if answers is None
                                          else answers[row]}, "truth": "benign"}))
    events.sort(key=lambda item: item[0])
    return [e for _, e in events]
