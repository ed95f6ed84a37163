"""k-nearest-neighbour stateful detection of query-based black-box attacks.

Chen, Carlini & Wagner keep each client's recent queries and flag the client when a new
query's mean distance to its ``k`` nearest earlier queries falls below a threshold: attacks
that estimate gradients or search a decision boundary send long runs of near-duplicates,
benign clients do not.

Differences from the paper, for small tabular or image inputs
-------------------------------------------------------------
- Distances are L2 on the raw inputs (the paper uses a learned similarity encoder for
  CIFAR-10 images; 64-value inputs need none).
- ``k`` is 10 (the paper's 50 is for a 10,000-query history) and ``buffer_size`` 100 per
  client, so a client can be tested from its 11th distinct query.
- The default ``threshold`` is ``0.1 * sqrt(d)``: a root-mean-square difference of 0.1 per
  value for inputs scaled to [0, 1] (0.8 for ``d = 64``; measured on held-out digits, benign
  clients' smallest mean 10-NN distance is about 1.8, HopSkipJump's about 0.3).
  ``calibrate`` sets it from benign traffic.
- Exact repeats of a query in the client's buffer are retries: neither tested nor stored.

State: ``buffer_size * d * 4`` bytes per client (25.6 KB for ``d = 64``), at most
``max_clients`` clients (longest-idle evicted). Not vectorised across events (one distance
computation per event, against the client's buffer); exempt from the throughput target.

References
----------
Steven Chen, Nicholas Carlini, David Wagner. "Stateful Detection of Black-Box Adversarial
Attacks". ACM SPAI 2020 (arXiv:1907.05587).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.constraints import Interval, Null, Rule, Spec
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector, client_state
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["KnnDetector"]



def _new_client(ts: float, dim: int) -> list[Any]:
    # queries, tested, first seen, last seen, flagged, lowest score, repeats, buffer, next slot
    import numpy as np

    return [0, 0, ts, ts, False, math.inf, 0, np.zeros((0, dim), dtype=np.float32), 0]

class KnnDetector(Detector):
    """Per-client k-NN distance detector (Chen, Carlini & Wagner 2020); see the module
    docstring.

    Parameters
    ----------
    k : int
        Neighbours averaged (default 10).
    buffer_size : int
        Recent distinct queries kept per client (default 100; at least ``k``).
    threshold : float or None
        Mean k-NN L2 distance below which a query is suspicious; ``None``: ``0.1 * sqrt(d)``.
    max_clients : int
        Clients tracked (longest-idle evicted).
    """

    name: ClassVar[str] = "knn"
    technique: ClassVar[str] = "AML.T0043.001"
    related: ClassVar[tuple[str, ...]] = ("AML.T0015", "AML.T0024.000")
    defaults: ClassVar[dict[str, Any]] = {"max_clients": 100_000, "k": 10, "buffer_size": 100,
                                          "threshold": None}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        **dict.fromkeys(("k", "buffer_size"), Interval(Integral, 1, None)),
        "threshold": [Null("scaled"), Interval(Real, 0, None, closed="neither")],
    }
    _rules: ClassVar[tuple[Rule, ...]] = (
        Rule("buffer_size", lambda p: p["buffer_size"] >= p["k"], "at least k ({k!r})"),)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._reset()

    def _reset(self) -> None:
        self._cfg: dict[str, Any] | None = None
        # (model, client) -> [queries, tested, first_seen, last_seen, flagged, min_score,
        #                     repeats, buffer ndarray [n, d], next slot]
        self._clients: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._evicted_clients = 0

    def _config(self, batch: EventBatch) -> dict[str, Any]:
        dim = batch.dim
        if self._cfg is None:
            if dim < 1:
                raise CalibrationError(f"{self.name}: inputs must be 2-D [n, d] with d >= 1")
            thr = self.params["threshold"] or 0.1 * math.sqrt(dim)
            self._cfg = {"dim": dim, "k": self.params["k"], "threshold": float(thr)}
        self._check_dim(batch, self._cfg["dim"])
        return self._cfg

    def observe(self, batch: EventBatch) -> list[Detection]:
        import numpy as np

        if len(batch) == 0:
            return []
        cfg = self._config(batch)
        k, thr, size = cfg["k"], cfg["threshold"], self.params["buffer_size"]
        x = np.asarray(batch.x, dtype=np.float32)
        out: list[Detection] = []
        table = self._clients
        for i, (client, model, ts) in enumerate(zip(batch.client_id.tolist(),
                                                    batch.model_id.tolist(),
                                                    batch.ts.tolist(), strict=True)):
            key = (str(model), str(client))
            st, dropped = client_state(table, key, self.params["max_clients"], _new_client,
                                       ts, cfg["dim"])
            self._evicted_clients += dropped
            st[0] += 1
            st[3] = ts
            buf = st[7]
            dist = np.sqrt(((buf - x[i]) ** 2).sum(axis=1)) if len(buf) else buf[:, 0]
            if len(dist) and dist.min() == 0.0:
                st[6] += 1  # an exact retry
                continue
            if len(dist) >= k:
                score = float(np.partition(dist, k - 1)[:k].mean())
                st[1] += 1
                st[5] = min(st[5], score)
                if score < thr and not st[4]:
                    st[4] = True
                    out.append(self._detection(key, st))
            if len(buf) < size:
                st[7] = np.vstack((buf, x[i:i + 1]))
            else:
                buf[st[8]] = x[i]
                st[8] = (st[8] + 1) % size
        return out

    def _detection(self, key: tuple[str, str], st: list[Any]) -> Detection:
        cfg = self._cfg
        assert cfg is not None
        return Detection(
            detector=self.name, technique=self.technique, client_id=key[1], model_id=key[0],
            first_seen=float(st[2]), last_seen=float(st[3]), queries_observed=int(st[0]),
            score=float(st[5]), threshold=float(cfg["threshold"]),
            unit="mean L2 distance to the k nearest earlier queries (lower is worse)",
            evidence={"k": cfg["k"], "tested_queries": int(st[1]),
                      "exact_repeats": int(st[6])})

    def statuses(self) -> list[ClientStatus]:
        k = self._cfg["k"] if self._cfg else self.params["k"]
        out = []
        for (model, client), st in self._clients.items():
            if st[4]:
                verdict, reason = "flagged", ""
            elif st[1]:
                verdict, reason = "clear", ""
            else:
                verdict = "untested"
                reason = (f"{len(st[7])} distinct queries, at most k={k} "
                          f"({st[6]} exact repeats ignored)")
            out.append(ClientStatus(self.name, client, model, verdict, int(st[0]), reason))
        return out

    @property
    def evicted_clients(self) -> int:
        return self._evicted_clients

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``threshold`` so that at most ``target_fpr`` of the benign clients tested would
        be flagged: the lowest per-client score is the statistic (a client is flagged by its
        lowest query score)."""
        if not 0.0 <= target_fpr < 1.0:
            raise CalibrationError(f"{self.name}: target_fpr must be in [0, 1)")
        probe = type(self)(**{**self.params, "threshold": 1e-300})
        probe.validate()
        for batch in benign:
            probe.observe(batch)
        scores = sorted(st[5] for st in probe._clients.values() if st[1])
        if probe._cfg is None or not scores:
            raise CalibrationError(f"{self.name}: no benign client with more than k distinct "
                                   "queries to calibrate on")
        allowed = math.floor(target_fpr * len(scores))
        thr = scores[allowed]  # flagged when strictly below: the ``allowed`` lowest clients
        cfg = dict(probe._cfg, threshold=float(thr))
        self._reset()
        self._cfg = cfg
        return self.calibration()

    def calibration(self) -> dict[str, Any]:
        if self._cfg is None:
            return {"detector": self.name, "dim": None}
        return {"detector": self.name, **self._cfg}

    def load_calibration(self, data: dict[str, Any]) -> None:
        if data.get("detector") != self.name:
            raise CalibrationError(f"{self.name}: calibration is for {data.get('detector')!r}")
        if data.get("dim") is None:
            self._cfg = None
            return
        missing = [key for key in ("dim", "k", "threshold") if key not in data]
        if missing:
            raise CalibrationError(f"{self.name}: calibration lacks {', '.join(missing)}")
        self._cfg = {"dim": int(data["dim"]), "k": int(data["k"]),
                     "threshold": float(data["threshold"])}

    def checkpoint(self) -> dict[str, Any]:
        clients = []
        for (model, client), st in self._clients.items():
            clients.append([model, client, *st[:5],
                            None if math.isinf(st[5]) else st[5], st[6], st[7].tolist(),
                            st[8]])
        return {"version": 1, "calibration": self.calibration(), "clients": clients,
                "evicted_clients": self._evicted_clients}

    def restore(self, state: dict[str, Any]) -> None:
        import numpy as np

        if state.get("version") != 1:
            raise CalibrationError(f"{self.name}: unknown checkpoint version "
                                   f"{state.get('version')!r}")
        self._reset()
        self.load_calibration(state["calibration"])
        self._evicted_clients = int(state["evicted_clients"])
        dim = self._cfg["dim"] if self._cfg else 0
        for model, client, q, t, first, last, flagged, best, rep, buf, slot in state["clients"]:
            arr = np.asarray(buf, dtype=np.float32).reshape(-1, dim)
            self._clients[(model, client)] = [q, t, first, last, flagged,
                                              math.inf if best is None else best, rep, arr,
                                              slot]
