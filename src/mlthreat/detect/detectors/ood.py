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

Calibration from the log itself (the default when no calibration is loaded)
----------------------------------------------------------------------------
Without ``calibrate`` or ``load_calibration`` the detector learns the benign model from the
population of the log it is reading. It holds back the first ``warmup_events`` events (default
2,000) until they come from at least ``warmup_clients`` (default 10) clients, fits on them, then
scores the held-back events and everything after them, so no query goes unscored (a detection
of a held-back query carries that query's own time and count). The fit is robust:

1. each client contributes at most ``fit_per_client`` (50) queries, so the model is one of the
   population of clients, not of the busiest one (an extraction burst of 447 queries weighs
   no more than a benign client);
2. a Ledoit-Wolf model is fitted on all of them and each client is scored by the median
   Mahalanobis distance of its queries; clients above the ``1 - trim`` quantile (top 5 %) of
   those scores, or more than 3 scaled MADs above their median, are dropped; this is done
   twice (refit on the rest, rescore, drop again);
3. the final model and the cut-off (the ``quantile`` of out-of-sample distances, two-fold
   *by client*, so a client's near-duplicates never score their own fold) come from the
   clients kept. ``fraction`` stays at its default.

The assumption is that **most clients in the warm-up are benign**. It fails when attackers
are a large share of the first clients (a log that starts with an attack campaign, or a model
served mostly to one automated caller): an attack that makes up more than the trimmed share of
the warm-up population becomes part of "benign" and is not flagged, and a model whose clients
are all alike in an unusual way flags none of them. If that can happen, calibrate on traffic
known to be benign (``mlthreat detect calibrate``): a loaded calibration always wins, and
the one learnt from the log is kept in ``calibration()`` (``"source": "log"``) so a state file
carries it. A log with fewer than ``warmup_clients`` clients is scored at its end
(:meth:`OodDetector.finish`) if it has that many clients and at least ``2 (d + 1)`` events,
else its clients are reported ``untested`` with the reason. The warm-up needs the whole
population in one process: on the Spark engine, which runs each client on its own, an
uncalibrated ``ood`` never sees ``warmup_clients`` clients and reports every client
``untested``; calibrate it there. At most 1,000 events of one client are held back (a client's
later events before the fit are not scored), which also bounds a Spark client's state.

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
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.constraints import Interval, Spec
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
    out: np.ndarray = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0))
    return out



_MAX_HELD_PER_CLIENT = 1000


def _client_scores(d: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Median of ``d`` per owner (``owner`` in ``0 .. n_owners - 1``)."""
    out = np.full(n_owners, np.nan)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(n_owners + 1))
    for o in range(n_owners):
        part = d[order[bounds[o]:bounds[o + 1]]]
        if part.size:
            out[o] = float(np.median(part))
    return out


def robust_fit(x: np.ndarray, owner: np.ndarray, *, trim: float, per_client: int,
               quantile: float, rounds: int = 2) -> dict[str, Any]:
    """A benign model from a population of clients most of whom are benign.

    Parameters
    ----------
    x : ndarray [n, d] float64
        Queries, in time order.
    owner : ndarray [n] int
        Client index of each query (``0 .. k - 1``).
    trim, per_client, quantile
        As :class:`OodDetector`'s parameters.

    Returns
    -------
    dict
        ``mean`` [d], ``precision`` [d, d], ``cutoff`` (Mahalanobis distance), the number of
        ``events`` and ``clients`` kept and of clients ``excluded``.
    """
    n_owners = int(owner.max()) + 1 if owner.size else 0
    # at most per_client queries per client: the first ones it sent
    order = np.argsort(owner, kind="stable")
    rank = np.empty(len(owner), dtype=np.int64)
    starts = np.searchsorted(owner[order], owner[order])
    rank[order] = np.arange(len(owner)) - starts
    use = rank < per_client
    x, owner = x[use], owner[use]
    keep = np.ones(n_owners, dtype=bool)
    for _ in range(rounds):
        rows = keep[owner]
        mean, precision = _fit(x[rows])
        score = _client_scores(_mahalanobis(x, mean, precision), owner, n_owners)
        med = float(np.nanmedian(score))
        mad = 1.4826 * float(np.nanmedian(np.abs(score - med)))
        limit = min(float(np.nanquantile(score, 1.0 - trim)) if trim > 0 else np.inf,
                    med + 3.0 * mad if mad > 0 else np.inf)
        keep = score <= max(limit, med)
    rows = keep[owner]
    xk, ok = x[rows], owner[rows]
    kept = np.flatnonzero(keep)
    fold = np.isin(ok, kept[np.random.default_rng(0).permutation(len(kept))[: len(kept) // 2]])
    a, b = xk[fold], xk[~fold]
    if min(len(a), len(b)) >= 2:
        oos = np.concatenate([_mahalanobis(b, *_fit(a)), _mahalanobis(a, *_fit(b))])
    else:  # too few clients to split: in-sample (optimistic) distances
        oos = _mahalanobis(xk, *_fit(xk))
    mean, precision = _fit(xk)
    return {"mean": mean, "precision": precision, "cutoff": float(np.quantile(oos, quantile)),
            "events": len(xk), "clients": len(kept),
            "excluded": int(n_owners - len(kept))}


def _new_client(ts: float) -> list[Any]:
    # first seen, last seen, queries, queries outside, flagged, near-duplicate steps, last input
    return [ts, ts, 0, 0, False, 0, None]

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
    warmup_events, warmup_clients : int, default 2000, 10
        Without a loaded calibration: events (and distinct clients among them) held back to
        learn the benign model from the log itself (module docstring).
    trim : float, default 0.05
        Share of the most anomalous warm-up clients left out of that fit.
    fit_per_client : int, default 50
        Queries one client contributes to that fit at most.
    chain_share : float, default 0.25
        A flagged client at least this share of whose queries lie within ``0.025 * sqrt(d)``
        (L2, input units) of its previous query is reported as AML.T0043.001 (a black-box
        evasion search walks in near-duplicate chains), not AML.T0024.002.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    Raises
    ------
    CalibrationError
        From ``observe`` when the input dimension differs from the calibration's.

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
                                          "min_queries": 20, "warmup_events": 2000,
                                          "warmup_clients": 10, "trim": 0.05,
                                          "fit_per_client": 50, "chain_share": 0.25,
                                          "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        "quantile": Interval(Real, 0.5, 1, closed="left"),
        **dict.fromkeys(("fraction", "chain_share"), Interval(Real, 0, 1, closed="right")),
        **dict.fromkeys(("min_queries", "fit_per_client"), Interval(Integral, 1, None)),
        **dict.fromkeys(("warmup_events", "warmup_clients"), Interval(Integral, 2, None)),
        "trim": Interval(Real, 0, 0.5, closed="left"),
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
        # warm-up of the calibration from the log: held-back events, in order
        self._held: list[tuple[str, str, float, np.ndarray]] = []
        self._held_clients: dict[tuple[str, str], int] = {}

    @property
    def calibrated(self) -> bool:
        """Whether a benign model is in place (loaded, calibrated or learnt from the log)."""
        return self._mean is not None

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Score the batch's queries in one vectorised pass; return completed detections.

        Without a benign model the events are held back until the warm-up is complete (module
        docstring), then scored with the rest."""
        self.validate()
        if len(batch) == 0:
            return []
        x = np.asarray(batch.x, dtype=np.float64).reshape(len(batch), -1)
        if self._mean is not None:  # held-back events (if a calibration came late) first
            return self._replay_held() + self._score(batch, x)
        if self._held and x.shape[1] != self._held[0][3].size:
            line = "" if batch.line is None else f" (line {int(batch.line[0])} of {batch.source})"
            raise CalibrationError(f"ood: input dimension {x.shape[1]} does not match the "
                                   f"held-back events' {self._held[0][3].size}{line}")
        need_e, need_c = int(self.params["warmup_events"]), int(self.params["warmup_clients"])
        cids, mids = batch.client_id.tolist(), batch.model_id.tolist()
        for i in range(len(batch)):
            key = (cids[i], mids[i])
            if self._held_clients.get(key, 0) >= _MAX_HELD_PER_CLIENT:
                continue  # one client alone cannot fill the warm-up (nor a Spark state)
            self._held.append((cids[i], mids[i], float(batch.ts[i]), x[i].copy()))
            self._held_clients[key] = self._held_clients.get(key, 0) + 1
            if len(self._held) >= need_e and len(self._held_clients) >= need_c:
                out = self._fit_held()
                rest = batch.take(np.arange(i + 1, len(batch)))
                if len(rest):
                    out += self._score(rest, x[i + 1:])
                return out
            if len(self._held) > 4 * need_e:  # too few clients for too long: keep the newest
                cid, mid, _, _ = self._held.pop(0)
                self._held_clients[(cid, mid)] -= 1
                if not self._held_clients[(cid, mid)]:
                    del self._held_clients[(cid, mid)]
        return []

    def finish(self) -> list[Detection]:
        """At the end of a log: learn the benign model from the held-back events if the
        warm-up never completed (at least ``warmup_clients`` clients and ``2 (d + 1)``
        events), and score them. Returns their detections."""
        if not self._held:
            return []
        if self._mean is not None:
            return self._replay_held()
        if len(self._held_clients) < int(self.params["warmup_clients"]) or \
                len(self._held) < 2 * (self._held[0][3].size + 1):
            return []
        return self._fit_held()

    def _fit_held(self) -> list[Detection]:
        held = self._held
        x = np.stack([h[3] for h in held])
        index: dict[tuple[str, str], int] = {}
        owner = np.array([index.setdefault((h[0], h[1]), len(index)) for h in held])
        fit = robust_fit(x, owner, trim=float(self.params["trim"]),
                         per_client=int(self.params["fit_per_client"]),
                         quantile=float(self.params["quantile"]))
        self.load_calibration({"detector": self.name, "source": "log",
                               "mean": fit["mean"].tolist(),
                               "precision": fit["precision"].tolist(), "cutoff": fit["cutoff"],
                               "fraction": float(self.params["fraction"]),
                               "quantile": float(self.params["quantile"]),
                               "events": fit["events"], "clients": fit["clients"],
                               "excluded_clients": fit["excluded"]})
        return self._replay_held()

    def _replay_held(self) -> list[Detection]:
        """Score the held-back events, in order, with the benign model now in place."""
        held = self._held
        if not held:
            return []
        self._held, self._held_clients = [], {}
        x = np.stack([h[3] for h in held])
        from mlthreat.detect.batch import EventBatch

        n = len(held)
        replay = EventBatch(ts=np.array([h[2] for h in held]),
                            client_id=np.array([h[0] for h in held], dtype=object),
                            model_id=np.array([h[1] for h in held], dtype=object),
                            x=x, label=np.full(n, -1, dtype=np.int64))
        return self._score(replay, x)

    def _score(self, batch: EventBatch, x: np.ndarray) -> list[Detection]:
        assert self._mean is not None and self._precision is not None
        if x.shape[1] != self._mean.shape[0]:
            line = "" if batch.line is None else f" (line {int(batch.line[0])} of {batch.source})"
            raise CalibrationError(f"ood: input dimension {x.shape[1]} does not match the "
                                   f"calibration's {self._mean.shape[0]}{line}")
        outside = _mahalanobis(x, self._mean, self._precision) > self._cutoff
        min_q, frac = int(self.params["min_queries"]), float(self.params["fraction"])
        near = 0.025 * math.sqrt(x.shape[1])
        chain_share = float(self.params["chain_share"])
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
            if st[4]:
                continue
            if st[6] is not None and float(np.sqrt(((x[i] - st[6]) ** 2).sum())) < near:
                st[5] += 1
            st[6] = x[i].tolist()
            if st[2] >= min_q and st[3] / st[2] >= frac:
                st[4] = True
                share = st[5] / max(1, st[2] - 1)
                st[6] = None  # no longer needed
                out.append(Detection(
                    detector=self.name, technique="AML.T0043.001" if share >= chain_share
                    else self.technique, client_id=cid, model_id=mid,
                    first_seen=st[0], last_seen=ts, queries_observed=st[2],
                    score=st[3] / st[2], threshold=frac,
                    unit="fraction of queries beyond the benign Mahalanobis cut-off",
                    evidence={"outside": st[3], "queries": st[2],
                              "mahalanobis_cutoff": round(self._cutoff, 6),
                              "quantile": self.params["quantile"],
                              "benign_model": self._calibration.get("source", "calibration"),
                              "near_duplicate_share": round(share, 4)}))
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict so far (held-back clients are ``untested``)."""
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
        if self._held_clients:
            why = (f"no benign model yet: learning it from the log needs "
                   f"{self.params['warmup_events']} events from {self.params['warmup_clients']} "
                   f"clients, the log has shown {len(self._held)} from "
                   f"{len(self._held_clients)} (or calibrate)")
            for (cid, mid), n in self._held_clients.items():
                out.append(ClientStatus(self.name, cid, mid, "untested", n, why))
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
        """The benign model in use; before one is learnt from the log,
        ``{"detector": "ood", "source": "log", "pending": True}`` (loading that back keeps
        the detector learning from the log)."""
        return dict(self._calibration) or {"detector": self.name, "source": "log",
                                           "pending": True}

    def load_calibration(self, data: dict[str, Any]) -> None:
        if data.get("pending") and data.get("source") == "log" and "mean" not in data:
            self._mean, self._precision, self._cutoff = None, None, math.inf
            self._calibration = {}
            return
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
        """Per-client counters, longest-idle first, and the events held back for learning
        the benign model from the log (``held``: client, model, time, input), as JSON-ready
        data."""
        return {"detector": self.name, "evicted": self.evicted,
                "clients": [[cid, mid, *st] for (cid, mid), st in self._clients.items()],
                "held": [[cid, mid, ts, x.tolist()] for cid, mid, ts, x in self._held]}

    def restore(self, state: dict[str, Any]) -> None:
        self.evicted = int(state["evicted"])
        self._clients = OrderedDict(((r[0], r[1]), [*r[2:], 0, None][:7])
                                    for r in state["clients"])
        self._held = [(str(r[0]), str(r[1]), float(r[2]), np.asarray(r[3], dtype=np.float64))
                      for r in state.get("held", [])]
        self._held_clients = {}
        for cid, mid, _, _ in self._held:
            self._held_clients[(cid, mid)] = self._held_clients.get((cid, mid), 0) + 1
