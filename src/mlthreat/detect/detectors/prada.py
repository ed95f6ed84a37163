"""PRADA: model-extraction detection from the distribution of query distances.

For each client PRADA keeps, per predicted class ``c``, a growing set ``G_c`` of earlier queries
and a threshold ``T_c``. Each new query's minimum L2 distance ``d`` to ``G_c`` of its class is
recorded in the client's distance list ``D``; when ``d > T_c`` the query joins ``G_c``, ``d``
joins ``D_c`` (the distances of the growing-set members) and
``T_c = max(T_c, mean(D_c) - std(D_c))``. The first query of a class starts ``G_c`` and records
no distance (there is nothing to measure it against), so with ten classes the client reaches
``min_queries = 100`` distances after about 110 queries, as the reference code does.

Natural queries give distances that are close to normally distributed; synthetic extraction
queries (Jacobian-based augmentation, HopSkipJump's probes) are small perturbations of earlier
queries and give a peaked, skewed distribution. Once ``len(D) >= min_queries`` every new query
runs a Shapiro-Wilk test on ``D`` and the client is flagged when ``W < delta``.

``delta`` defaults to 0.92. Juuti et al. do not fix one value: they choose δ per dataset from
benign traffic, trading false positives against detection. We measured it on 64-value digits
traffic (``tests/detect/test_prada_ood_volume.py``): the lowest W that 50 natural-data clients
reached over 150 queries was 0.939 (2nd percentile 0.949, median 0.974), while
Jacobian-augmentation clients were at 0.85-0.90 from their 100th distance, so 0.92 separates
them with room on both sides. ``calibrate`` replaces it with the ``target_fpr`` quantile of
benign clients' lowest W.

An exact retry of a growing-set member (distance 0) records no distance: retries are ordinary
client behaviour, and a handful of zeros alone drags natural traffic's W below δ (with them,
benign clients' lowest W fell to 0.935).

Which technique: extraction or evasion
---------------------------------------
A skewed distance distribution is what PRADA was built to see in extraction, but a
decision-based evasion search (HopSkipJump, Chen, Jordan & Wainwright 2020) skews it too: its
binary searches and gradient estimates are chains of near-duplicates of one input, what
Blacklight (Li et al. 2022) fingerprints. When a client is flagged, the share of its queries
that lie within ``near_duplicate`` (default ``None``: ``0.025 * sqrt(d)`` in input units, 0.2
for 64 values on [0, 1]) of the client's *previous* query decides: at least ``chain_share``
(0.25) and the detection is AML.T0043.001 (adversarial example crafted by black-box search),
else AML.T0024.002. Steps between consecutive queries, not distances to the growing sets:
Jacobian-based augmentation also sends a few points almost equal to earlier ones (a step
clipped back to the data range), 5-8 % of its distances on the logistic-regression target of
``tests/detect/test_prada_ood_volume.py``, but it moves from one lineage to the next between
consecutive queries. Measured on the digits demo (``benchmarks/detection.py``) when PRADA flags
them (query 102-105): 0.72-0.86 of HopSkipJump's steps are near-duplicates (membership
probing with noisy copies 0.77-0.83), none of Jacobian-based augmentation's (here and on the
test's target), natural data's or random queries'. The
client's last input is kept for this (``d`` floats per client). An extraction that itself
steps by less than ``near_duplicate`` between consecutive queries is reported as evasion.

A client whose distances are all identical (Shapiro-Wilk returns ``W = 1``) or have zero
variance, or who has sent enough queries but mostly exact repeats (a client repeating one query),
is reported ``untested`` ("degenerate distances"), never clear.

References
----------
.. [1] M. Juuti, S. Szyller, S. Marchal, N. Asokan, "PRADA: Protecting against DNN Model
   Stealing Attacks", IEEE EuroS&P 2019. https://arxiv.org/abs/1805.02628
.. [2] S. S. Shapiro, M. B. Wilk, "An analysis of variance test for normality (complete
   samples)", Biometrika 52, 1965.
.. [3] H. Li, S. Shan, E. Wenger, J. Zhang, H. Zheng, B. Y. Zhao, "Blacklight: Scalable
   Defense for Neural Networks against Query-Based Black-Box Attacks", USENIX Security 2022.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.constraints import Interval, Null, Spec
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["PradaDetector"]

_MAX_DISTANCES = 5000  # scipy's Shapiro-Wilk is accurate up to 5,000 values; keep the newest


@dataclass
class _Client:
    first_seen: float
    last_seen: float = 0.0
    n: int = 0
    growing: dict[int, list[list[float]]] = field(default_factory=dict)
    member_d: dict[int, list[float]] = field(default_factory=dict)
    thresholds: dict[int, float] = field(default_factory=dict)
    distances: list[float] = field(default_factory=list)
    repeats: int = 0
    w: float | None = None
    min_w: float | None = None
    flagged: bool = False
    near_steps: int = 0
    last: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"first_seen": self.first_seen, "last_seen": self.last_seen, "n": self.n,
                "growing": {str(k): v for k, v in self.growing.items()},
                "member_d": {str(k): v for k, v in self.member_d.items()},
                "thresholds": {str(k): v for k, v in self.thresholds.items()},
                "distances": self.distances, "repeats": self.repeats,
                "w": self.w, "min_w": self.min_w,
                "flagged": self.flagged, "near_steps": self.near_steps, "last": self.last}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Client:
        return cls(first_seen=d["first_seen"], last_seen=d["last_seen"], n=d["n"],
                   growing={int(k): v for k, v in d["growing"].items()},
                   member_d={int(k): v for k, v in d["member_d"].items()},
                   thresholds={int(k): v for k, v in d["thresholds"].items()},
                   distances=list(d["distances"]), repeats=d["repeats"], w=d["w"], min_w=d["min_w"],
                   flagged=d["flagged"], near_steps=int(d.get("near_steps", 0)),
                   last=d.get("last"))


def _shapiro(values: list[float]) -> float | None:
    """Shapiro-Wilk W of ``values``, or None when the values are degenerate."""
    from scipy.stats import shapiro

    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 3 or float(np.ptp(arr)) == 0.0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = float(shapiro(arr).statistic)
    if not np.isfinite(w) or w >= 1.0:
        return None
    return w


class PradaDetector(Detector):
    """PRADA (Juuti et al. 2019): Shapiro-Wilk test on per-client minimum query distances.

    Parameters
    ----------
    delta : float, default 0.92
        Flag a client when Shapiro-Wilk ``W < delta``.
    min_queries : int, default 100
        Distances a client needs before it is tested (the paper's 100).
    near_duplicate : float or None, default None
        L2 step (input units) between consecutive queries below which they are
        near-duplicates; ``None``: ``0.025 * sqrt(d)``.
    chain_share : float, default 0.25
        Share of a client's queries within ``near_duplicate`` of its previous query at which a
        flagged client is reported as AML.T0043.001 (a black-box evasion search) rather than
        AML.T0024.002.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    References
    ----------
    .. [1] M. Juuti, S. Szyller, S. Marchal, N. Asokan, "PRADA: Protecting against DNN Model
       Stealing Attacks", IEEE EuroS&P 2019.

    Examples
    --------
    >>> det = PradaDetector(delta=0.92)
    >>> det.validate()
    """

    name: ClassVar[str] = "prada"
    technique: ClassVar[str] = "AML.T0024.002"
    related: ClassVar[tuple[str, ...]] = ("AML.T0043.001",)
    defaults: ClassVar[dict[str, Any]] = {"delta": 0.92, "min_queries": 100,
                                          "near_duplicate": None, "chain_share": 0.25,
                                          "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        **dict.fromkeys(("delta", "chain_share"), Interval(Real, 0, 1, closed="right")),
        "min_queries": Interval(Integral, 3, None),
        "near_duplicate": [Null("scaled"), Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()
        self.evicted = 0
        self._calibration: dict[str, Any] = {}

    # -- streaming ---------------------------------------------------------------------------
    def observe(self, batch: EventBatch) -> list[Detection]:
        """Feed events in time order; return the detections they complete.

        Distances from a client's queries in the batch to its existing growing sets are computed
        in one matrix product per class; only the growing-set members the batch itself adds are
        compared one by one.
        """
        self.validate()
        found: list[tuple[int, Detection]] = []
        if len(batch) == 0:
            return []
        x = np.asarray(batch.x, dtype=np.float64).reshape(len(batch), -1)
        keys = list(zip(batch.client_id.tolist(), batch.model_id.tolist(), strict=True))
        order: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        for i, k in enumerate(keys):
            order.setdefault(k, []).append(i)
        for key, idx in order.items():
            for pos, det in self._observe_client(key, idx, batch, x):
                found.append((pos, det))
        last_pos = {k: v[-1] for k, v in order.items()}
        for k in sorted(last_pos, key=last_pos.__getitem__):
            self._clients.move_to_end(k)
        while len(self._clients) > self.params["max_clients"]:
            self._clients.popitem(last=False)
            self.evicted += 1
        found.sort(key=lambda t: t[0])
        return [d for _, d in found]

    def _observe_client(self, key: tuple[str, str], idx: list[int], batch: EventBatch,
                        x: np.ndarray) -> list[tuple[int, Detection]]:
        client = self._clients.get(key)
        if client is None:
            client = _Client(first_seen=float(batch.ts[idx[0]]))
            self._clients[key] = client
        labels = batch.label[idx].astype(np.int64)
        xs = x[idx]
        # distances to the growing sets as they stood before this batch, one product per class
        pre = np.full(len(idx), np.inf)
        new_members: dict[int, list[np.ndarray]] = {}
        for c in np.unique(labels):
            members = client.growing.get(int(c))
            if members:
                g = np.asarray(members, dtype=np.float64)
                rows = np.flatnonzero(labels == c)
                q = xs[rows]
                sq = ((q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T)
                pre[rows] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
        # each query's L2 step from the client's previous query (near-duplicate chains)
        prev = np.vstack([xs[:1] if client.last is None else np.asarray([client.last]),
                          xs[:-1]])
        steps = np.sqrt(((xs - prev) ** 2).sum(1))
        near = self.params["near_duplicate"]
        near = 0.025 * np.sqrt(xs.shape[1]) if near is None else float(near)
        first_ever = client.last is None
        client.last = xs[-1].tolist() if not client.flagged else None
        out: list[tuple[int, Detection]] = []
        delta = float(self.params["delta"])
        min_q = int(self.params["min_queries"])
        for j, i in enumerate(idx):
            c = int(labels[j])
            client.n += 1
            client.last_seen = float(batch.ts[i])
            if not (j == 0 and first_ever) and steps[j] < near:
                client.near_steps += 1
            added = new_members.setdefault(c, [])
            if not client.growing.get(c) and not added:
                added.append(xs[j])
                client.member_d.setdefault(c, [])
                client.thresholds.setdefault(c, 0.0)
                continue
            d = float(pre[j])
            if added:
                d = min(d, float(np.sqrt(((np.asarray(added) - xs[j]) ** 2).sum(1)).min()))
            if d == 0.0:
                client.repeats += 1  # an exact retry of a growing-set member: no new distance
                continue
            client.distances.append(d)
            if len(client.distances) > _MAX_DISTANCES:
                del client.distances[0]
            if d > client.thresholds[c]:
                added.append(xs[j])
                dc = client.member_d[c]
                dc.append(d)
                client.thresholds[c] = max(client.thresholds[c],
                                           float(np.mean(dc) - np.std(dc)))
            if client.flagged or len(client.distances) < min_q:
                continue
            w = _shapiro(client.distances)
            client.w = w
            if w is None:
                continue
            client.min_w = w if client.min_w is None else min(client.min_w, w)
            if w < delta:
                client.flagged = True
                share = client.near_steps / max(1, client.n - 1)
                chain = share >= float(self.params["chain_share"])
                out.append((i, Detection(
                    detector=self.name, technique="AML.T0043.001" if chain else self.technique,
                    client_id=key[0],
                    model_id=key[1], first_seen=client.first_seen, last_seen=client.last_seen,
                    queries_observed=client.n, score=w, threshold=delta,
                    unit="Shapiro-Wilk W (lower is worse)",
                    evidence={"shapiro_w": round(w, 6), "distances": len(client.distances),
                              "near_duplicate_share": round(share, 4),
                              "near_duplicate_distance": round(float(near), 6),
                              "growing_set_size": sum(len(v) for v in client.growing.values())
                              + sum(len(v) for v in new_members.values()),
                              "distance_mean": float(np.mean(client.distances)),
                              "distance_std": float(np.std(client.distances))})))
        for c, added in new_members.items():
            client.growing.setdefault(c, []).extend(a.tolist() for a in added)
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict: flagged, clear, or untested with the reason."""
        min_q = int(self.params["min_queries"])
        out = []
        for (cid, mid), c in self._clients.items():
            if c.flagged:
                verdict, reason = "flagged", f"W={c.min_w:.4f} < delta"
            elif len(c.distances) < min_q <= len(c.distances) + c.repeats:
                verdict = "untested"
                reason = f"degenerate distances ({c.repeats} exact repeats)"
            elif len(c.distances) < min_q:
                verdict = "untested"
                reason = f"too few queries (n={len(c.distances)} distances < min {min_q})"
            elif c.w is None:
                verdict, reason = "untested", "degenerate distances"
            else:
                verdict, reason = "clear", f"W={c.w:.4f}"
            out.append(ClientStatus(self.name, cid, mid, verdict, c.n, reason))
        return out

    # -- calibration -------------------------------------------------------------------------
    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``delta`` to the ``target_fpr`` quantile of benign clients' lowest W.

        Only benign clients with at least ``min_queries`` distances and non-degenerate
        distances count. Raises CalibrationError when there are none.
        """
        probe = PradaDetector(**{**self.params, "delta": 1e-12})
        for b in benign:
            probe.observe(b)
        ws = np.array([c.min_w for c in probe._clients.values() if c.min_w is not None])
        if ws.size == 0:
            raise CalibrationError("prada: no benign client had enough queries to calibrate on")
        delta = float(np.quantile(ws, target_fpr))
        self.params["delta"] = delta
        self._calibration = {"detector": self.name, "delta": delta, "target_fpr": target_fpr,
                             "clients": int(ws.size), "benign_min_w_median": float(np.median(ws))}
        return dict(self._calibration)

    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration) or {"detector": self.name,
                                           "delta": self.params["delta"]}

    def load_calibration(self, data: dict[str, Any]) -> None:
        if data.get("detector", self.name) != self.name or "delta" not in data:
            raise CalibrationError("prada: calibration has no 'delta' for detector 'prada'")
        self.params["delta"] = float(data["delta"])
        self._calibration = dict(data)

    # -- state -------------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """All per-client state, longest-idle first, as JSON-ready data."""
        return {"detector": self.name, "evicted": self.evicted,
                "clients": [{"client_id": k[0], "model_id": k[1], **c.to_json()}
                            for k, c in self._clients.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.evicted = int(state["evicted"])
        self._clients = OrderedDict(
            ((d["client_id"], d["model_id"]), _Client.from_json(d)) for d in state["clients"])
