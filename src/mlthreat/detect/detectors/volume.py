"""Volume: per-client query rate over a sliding window against a baseline.

Cost harvesting (AML.T0034) and denial of AI service (AML.T0029) show up first as volume: a
client sending far more queries per window than benign clients ever do. The detector counts each
client's queries in the last ``window_seconds`` and flags the client, once, when the count
exceeds ``max_per_window``.

The uncalibrated baseline is 600 queries per 60-second window (10 queries/s sustained for a
minute), far above interactive use and below what a scripted harvester sends. ``calibrate``
sets it to ``margin`` (default 2) times the benign clients' peak window count at the
``1 - target_fpr`` quantile over clients (with ``target_fpr = 0.001``, the 99.9th percentile).

State per client is bounded: only the timestamps inside the window are kept, and never more
than ``max_per_window + 1`` of them (one more is enough to know the limit was passed).

References
----------
.. [1] MITRE ATLAS, AML.T0034 Cost Harvesting and AML.T0029 Denial of AI Service,
   https://atlas.mitre.org/
.. [2] F. Tramèr, F. Zhang, A. Juels, M. Reiter, T. Ristenpart, "Stealing Machine Learning
   Models via Prediction APIs", USENIX Security 2016 (query volumes of extraction).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.constraints import Interval, Spec
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector, client_state
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["VolumeDetector"]


class _Client:
    __slots__ = ("first_seen", "flagged", "last_seen", "n", "peak", "window")

    def __init__(self, first_seen: float, limit: int) -> None:
        self.first_seen = first_seen
        self.last_seen = first_seen
        self.n = 0
        self.peak = 0
        self.flagged = False
        self.window: deque[float] = deque(maxlen=limit + 1)


class VolumeDetector(Detector):
    """Sliding-window query-rate detector.

    Parameters
    ----------
    window_seconds : float, default 60
        Length of the sliding window.
    max_per_window : int, default 600
        Flag a client whose count in one window exceeds this.
    margin : float, default 2.0
        Multiplier on the benign quantile when calibrating.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    References
    ----------
    .. [1] MITRE ATLAS AML.T0034 Cost Harvesting, https://atlas.mitre.org/techniques/AML.T0034

    Examples
    --------
    >>> det = VolumeDetector(window_seconds=60, max_per_window=600)
    >>> det.validate()
    """

    name: ClassVar[str] = "volume"
    technique: ClassVar[str] = "AML.T0034"
    related: ClassVar[tuple[str, ...]] = ("AML.T0029",)
    defaults: ClassVar[dict[str, Any]] = {"window_seconds": 60.0, "max_per_window": 600,
                                          "margin": 2.0, "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        "window_seconds": Interval(Real, 0, None, closed="neither"),
        "max_per_window": Interval(Integral, 1, None),
        "margin": Interval(Real, 1, None),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()
        self.evicted = 0
        self._calibration: dict[str, Any] = {}

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Count the batch's events per client window; return completed detections."""
        self.validate()
        window = float(self.params["window_seconds"])
        limit = int(self.params["max_per_window"])
        out: list[Detection] = []
        ts_all = np.asarray(batch.ts, dtype=np.float64).tolist()
        for ts, cid, mid in zip(ts_all, batch.client_id.tolist(), batch.model_id.tolist(),
                                strict=True):
            key = (cid, mid)
            c, dropped = client_state(self._clients, key, self.params["max_clients"], _Client,
                                      ts, limit)
            self.evicted += dropped
            c.n += 1
            c.last_seen = ts
            w = c.window
            w.append(ts)
            while w and w[0] <= ts - window:
                w.popleft()
            count = len(w)
            c.peak = max(c.peak, count)
            if not c.flagged and count > limit:
                c.flagged = True
                span = max(ts - w[0], 1e-9)
                out.append(Detection(
                    detector=self.name, technique=self.technique, client_id=cid, model_id=mid,
                    first_seen=c.first_seen, last_seen=ts, queries_observed=c.n,
                    score=float(count), threshold=float(limit),
                    unit=f"queries per {window:g} s window",
                    evidence={"window_seconds": window, "count_in_window": count,
                              "rate_per_second": round(count / span, 3)}))
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict; any client with traffic has been tested."""
        return [ClientStatus(self.name, cid, mid, "flagged" if c.flagged else "clear", c.n,
                             f"peak {c.peak} queries per {self.params['window_seconds']:g} s")
                for (cid, mid), c in self._clients.items()]

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``max_per_window`` to ``margin`` times the ``1 - target_fpr`` quantile of benign
        clients' peak window counts."""
        probe = VolumeDetector(**{**self.params, "max_per_window": 10**9})
        for b in benign:
            probe.observe(b)
        peaks = np.array([c.peak for c in probe._clients.values()])
        if peaks.size == 0:
            raise CalibrationError("volume: no benign traffic to calibrate on")
        base = float(np.quantile(peaks, 1.0 - target_fpr))
        limit = max(1, int(np.ceil(base * float(self.params["margin"]))))
        self.load_calibration({"detector": self.name, "max_per_window": limit,
                               "window_seconds": float(self.params["window_seconds"]),
                               "benign_peak_quantile": base, "target_fpr": target_fpr,
                               "clients": int(peaks.size)})
        return self.calibration()

    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration) or {
            "detector": self.name, "max_per_window": self.params["max_per_window"],
            "window_seconds": self.params["window_seconds"]}

    def load_calibration(self, data: dict[str, Any]) -> None:
        try:
            limit = int(data["max_per_window"])
            window = float(data.get("window_seconds", self.params["window_seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"volume: malformed calibration ({exc})") from exc
        self.params["max_per_window"], self.params["window_seconds"] = limit, window
        self._calibration = dict(data)

    def checkpoint(self) -> dict[str, Any]:
        """Per-client windows and counters, longest-idle first, as JSON-ready data."""
        return {"detector": self.name, "evicted": self.evicted,
                "clients": [{"client_id": k[0], "model_id": k[1], "first_seen": c.first_seen,
                             "last_seen": c.last_seen, "n": c.n, "peak": c.peak,
                             "flagged": c.flagged, "window": list(c.window)}
                            for k, c in self._clients.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        limit = int(self.params["max_per_window"])
        self.evicted = int(state["evicted"])
        self._clients = OrderedDict()
        for d in state["clients"]:
            c = _Client(d["first_seen"], limit)
            c.last_seen, c.n, c.peak, c.flagged = d["last_seen"], d["n"], d["peak"], d["flagged"]
            c.window.extend(d["window"])
            self._clients[(d["client_id"], d["model_id"])] = c
