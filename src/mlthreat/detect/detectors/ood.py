"""Out-of-distribution probing: clients whose queries fall outside the benign input distribution.

PRADA misses extraction with uniformly random synthetic queries (their distances look normal,
W near 0.99) and only tests after about 110 queries. This detector needs no such warm-up: at
calibration it learns the benign input distribution as a mean and a Ledoit-Wolf shrunk
covariance, and scores each query by its Mahalanobis distance. The cut-off is the ``quantile``
(default 0.99) of *out-of-sample* benign distances (two-fold: the model fitted on one half
scores the other), because in-sample distances of a 64-dimensional fit are optimistically small.
A client is flagged once it has sent ``min_queries`` queries and the fraction of them beyond the
cut-off reaches ``fraction``.

``fraction`` defaults to 0.5. Benign queries exceed the cut-off with probability about
``1 - quantile``, so 0.5 after 20 queries is many standard deviations away for benign
clients; ``calibrate`` lowers it to the smallest ``k / min_queries`` whose binomial tail
probability for a benign client is at most ``target_fpr`` (it never raises it above 0.5).

The detector cannot work without a benign model: ``observe`` before ``calibrate`` (or
``load_calibration``) raises CalibrationError rather than silently learning from whatever
traffic arrives first, which may be the attack.

References
----------
.. [1] O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
   matrices", Journal of Multivariate Analysis 88, 2004.
.. [2] M. Juuti, S. Szyller, S. Marchal, N. Asokan, "PRADA: Protecting against DNN Model
   Stealing Attacks", IEEE EuroS&P 2019 (random synthetic queries as the case PRADA misses).
.. [3] K. Lee, K. Lee, H. Lee, J. Shin, "A Simple Unified Framework for Detecting
   Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018 (Mahalanobis score).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector, client_state
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["OodDetector"]


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(x)
    return lw.location_, lw.precision_


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    z = x - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0))



def _new_client(ts: float) -> list[Any]:
    # first seen, last seen, queries, queries outside, flagged
    return [ts, ts, 0, 0, False]

class OodDetector(Detector):
    """Mahalanobis out-of-distribution detector over a Ledoit-Wolf benign model.

    Parameters
    ----------
    quantile : float, default 0.99
        Benign (out-of-sample) quantile of the Mahalanobis distance used as cut-off.
    fraction : float, default 0.5
        Flag when at least this fraction of a client's queries lie beyond the cut-off.
    min_queries : int, default 20
        Queries a client must send before it is tested.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    Raises
    ------
    CalibrationError
        From ``observe`` when the detector has no benign model, or when the input dimension
        differs from the calibration's.

    References
    ----------
    .. [1] O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
       matrices", J. Multivariate Analysis 88, 2004.

    Examples
    --------
    >>> det = OodDetector(min_queries=20)
    >>> det.validate()
    """

    name: ClassVar[str] = "ood"
    technique: ClassVar[str] = "AML.T0024.002"
    related: ClassVar[tuple[str, ...]] = ("AML.T0043.001",)
    defaults: ClassVar[dict[str, Any]] = {"quantile": 0.99, "fraction": 0.5,
                                          "min_queries": 20, "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Any]] = {
        **Detector._constraints,
        "quantile": (lambda v: isinstance(v, float) and 0.5 <= v < 1, "must be in [0.5, 1)"),
        "fraction": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "must be in (0, 1]"),
        "min_queries": (lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # client -> [first_seen, last_seen, n, n_outside, flagged]
        self._clients: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self.evicted = 0
        self._mean: np.ndarray | None = None
        self._precision: np.ndarray | None = None
        self._cutoff = math.inf
        self._calibration: dict[str, Any] = {}

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Score the batch's queries in one vectorised pass; return completed detections."""
        self.validate()
        if self._mean is None or self._precision is None:
            raise CalibrationError("ood needs calibrate(...) on benign traffic")
        if len(batch) == 0:
            return []
        x = np.asarray(batch.x, dtype=np.float64).reshape(len(batch), -1)
        if x.shape[1] != self._mean.shape[0]:
            line = "" if batch.line is None else f" (line {int(batch.line[0])} of {batch.source})"
            raise CalibrationError(f"ood: input dimension {x.shape[1]} does not match the "
                                   f"calibration's {self._mean.shape[0]}{line}")
        outside = _mahalanobis(x, self._mean, self._precision) > self._cutoff
        min_q, frac = int(self.params["min_queries"]), float(self.params["fraction"])
        out: list[Detection] = []
        for i, (cid, mid) in enumerate(zip(batch.client_id.tolist(), batch.model_id.tolist(),
                                           strict=True)):
            key = (cid, mid)
            ts = float(batch.ts[i])
            st, dropped = client_state(self._clients, key, self.params["max_clients"],
                                       _new_client, ts)
            self.evicted += dropped
            st[1] = ts
            st[2] += 1
            st[3] += int(outside[i])
            if not st[4] and st[2] >= min_q and st[3] / st[2] >= frac:
                st[4] = True
                out.append(Detection(
                    detector=self.name, technique=self.technique, client_id=cid, model_id=mid,
                    first_seen=st[0], last_seen=ts, queries_observed=st[2],
                    score=st[3] / st[2], threshold=frac,
                    unit="fraction of queries beyond the benign Mahalanobis cut-off",
                    evidence={"outside": st[3], "queries": st[2],
                              "mahalanobis_cutoff": round(self._cutoff, 6),
                              "quantile": self.params["quantile"]}))
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict so far."""
        min_q = int(self.params["min_queries"])
        out = []
        for (cid, mid), st in self._clients.items():
            if st[4]:
                verdict, reason = "flagged", f"{st[3]}/{st[2]} queries out of distribution"
            elif st[2] < min_q:
                verdict, reason = "untested", f"too few queries (n={st[2]} < min {min_q})"
            else:
                verdict, reason = "clear", f"{st[3]}/{st[2]} queries out of distribution"
            out.append(ClientStatus(self.name, cid, mid, verdict, st[2], reason))
        return out

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Learn the benign distribution and cut-off; set ``fraction`` for ``target_fpr``.

        Parameters
        ----------
        benign : iterable of EventBatch
            Benign traffic; at least ``2 * (d + 1)`` events for ``d`` input values.
        target_fpr : float
            Accepted probability that a benign client is flagged at its ``min_queries``-th query.
        """
        from scipy.stats import binom

        x = np.concatenate([np.asarray(b.x, dtype=np.float64).reshape(len(b), -1)
                            for b in benign if len(b)])
        if x.shape[0] < 2 * (x.shape[1] + 1):
            raise CalibrationError(f"ood: {x.shape[0]} benign events are too few to learn a "
                                   f"{x.shape[1]}-dimensional distribution")
        rng = np.random.default_rng(0)
        perm = rng.permutation(x.shape[0])
        a, b = x[perm[: len(perm) // 2]], x[perm[len(perm) // 2:]]
        oos = np.concatenate([_mahalanobis(b, *_fit(a)), _mahalanobis(a, *_fit(b))])
        q = float(self.params["quantile"])
        cutoff = float(np.quantile(oos, q))
        mean, precision = _fit(x)
        m = int(self.params["min_queries"])
        p = 1.0 - q
        k = next((k for k in range(1, m + 1) if binom.sf(k - 1, m, p) <= target_fpr), m)
        fraction = min(float(self.params["fraction"]), k / m)
        self.load_calibration({"detector": self.name, "mean": mean.tolist(),
                               "precision": precision.tolist(), "cutoff": cutoff,
                               "fraction": fraction, "quantile": q, "target_fpr": target_fpr,
                               "events": int(x.shape[0])})
        return self.calibration()

    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration)

    def load_calibration(self, data: dict[str, Any]) -> None:
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            precision = np.asarray(data["precision"], dtype=np.float64)
            cutoff = float(data["cutoff"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"ood: malformed calibration ({exc})") from exc
        if precision.shape != (mean.size, mean.size):
            raise CalibrationError("ood: calibration precision matrix does not match its mean")
        self._mean, self._precision, self._cutoff = mean, precision, cutoff
        if "fraction" in data:
            self.params["fraction"] = float(data["fraction"])
        self._calibration = dict(data)

    def checkpoint(self) -> dict[str, Any]:
        """Per-client counters, longest-idle first, as JSON-ready data."""
        return {"detector": self.name, "evicted": self.evicted,
                "clients": [[cid, mid, *st] for (cid, mid), st in self._clients.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.evicted = int(state["evicted"])
        self._clients = OrderedDict(((r[0], r[1]), list(r[2:])) for r in state["clients"])
