"""Repeat: a client replaying one exact input in a loop, per client.

What it catches
---------------
A client that sends the same input over and over (150 identical queries, say) raises nothing
in the other detectors, by design: Blacklight ignores exact repeats (benign clients share
popular inputs, and counting those copies across clients flagged every benign client, see
MEASURED.md), PRADA records no distance for an exact retry and reports such a client
``untested`` (degenerate distances), and ``volume`` only sees it when it is fast. This
detector counts exact repeats *per client*: copies of a popular input sent by many different
clients never add up, only one client's own repeats of one input do.

Technique: AML.T0029 Denial of AI Service
-----------------------------------------
Against a deterministic model a replayed query returns the same answer every time: the loop
learns nothing (no exfiltration, no search for an adversarial example, which needs *different*
queries and is what ``prada`` and ``blacklight`` see). What it does is spend the service's
capacity, which puts it under ATLAS's Impact tactic (AML.TA0011). Of the Impact techniques,
AML.T0029 Denial of AI Service ("overwhelms an AI-enabled service with requests … degrading
or disabling it") names what a SOC analyst would treat this as: an application-layer replay
flood, answered by rate-limiting or blocking the client and checking the service's health.
AML.T0034.000 Cost Harvesting: Excessive Queries (financial damage by volume) is the related
reading, named in the alert's evidence (``also_consistent_with``); ``volume`` already reports
request *rate* as AML.T0034, so a fast replay gets both alerts and a slow one this one only.
One caveat for the analyst, in the docstring and the README: on a model with randomised
outputs (output noise as a mitigation) repeats average the noise away, so when ``prada`` or
``blacklight`` flag the same client, read the repeats as part of that probing.

Rule
----
Each input is recognised by a 64-bit digest of its exact float32 values (the digest Blacklight
uses for exact repeats). For every client the detector keeps its last ``window`` queries'
digests and how often each occurs among them; a client is flagged, once, when one input
occurs more than ``max_repeats + 1`` times in that window (more than ``max_repeats`` exact
repeats). A sliding window of queries, not a lifetime count, so that a long-lived benign client
who sends a popular input now and then never accumulates its way to an alert.

Defaults: ``window = 100`` queries, ``max_repeats = 15`` (one input as 16 of a client's last
100 queries). Measured on the documented benign generator
(:func:`mlthreat.detect.evaluate.benign_events`, 1,000 clients of 150 queries on the digits
demo, 20 % of queries drawn from 50 popular inputs, 5 % retries): the most repeated input of a
benign client reaches at most 6 repeats (7 sends) in a window; a 150-query replay loop is
flagged at its 17th query. ``calibrate`` sets ``max_repeats`` to ``margin`` (default 2) times
the ``1 - target_fpr`` quantile of benign clients' peak repeats, never below 2 (a retry or two
is ordinary).

State per client: at most ``window`` digests and one counter per distinct digest among them
(about 10 KB for ``window = 100``); at most ``max_clients`` clients (longest-idle evicted).

References
----------
.. [1] MITRE ATLAS, AML.T0029 Denial of AI Service and AML.T0034.000 Cost Harvesting:
   Excessive Queries, https://atlas.mitre.org/techniques/AML.T0029
.. [2] H. Li, S. Shan, E. Wenger, J. Zhang, H. Zheng, B. Y. Zhao, "Blacklight: Scalable
   Defense for Neural Networks against Query-Based Black-Box Attacks", USENIX Security 2022
   (exact repeats across clients are not evidence).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.constraints import Interval, Spec
from mlthreat.detect.detectors._fingerprints import digests
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector, client_state
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["RepeatDetector"]

_MIN_CALIBRATED = 2  # calibrated thresholds never go below two exact repeats


class _Client:
    """One client's recent digests and their counts."""

    __slots__ = ("counts", "first_seen", "flagged", "last_seen", "n", "peak", "peak_digest",
                 "recent")

    def __init__(self, first_seen: float, window: int) -> None:
        self.first_seen = first_seen
        self.last_seen = first_seen
        self.n = 0
        self.peak = 0  # the most exact repeats of one input seen in one window
        self.peak_digest = 0
        self.flagged = False
        self.recent: deque[int] = deque(maxlen=window)
        self.counts: dict[int, int] = {}

    def add(self, digest: int) -> int:
        """Slide the window over one query; return its input's repeats in the window."""
        recent, counts = self.recent, self.counts
        if len(recent) == recent.maxlen:
            old = recent[0]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        recent.append(digest)
        repeats = counts.get(digest, 0)
        counts[digest] = repeats + 1
        if repeats > self.peak:
            self.peak, self.peak_digest = repeats, digest
        return repeats


class RepeatDetector(Detector):
    """Per-client exact repeats of one input in a sliding window of queries (AML.T0029).

    Parameters
    ----------
    window : int, default 100
        The client's most recent queries among which repeats are counted.
    max_repeats : int, default 15
        Exact repeats of one input a client may send within ``window`` queries; one more flags
        it.
    margin : float, default 2.0
        Multiplier on the benign quantile when calibrating.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    References
    ----------
    .. [1] MITRE ATLAS AML.T0029 Denial of AI Service,
       https://atlas.mitre.org/techniques/AML.T0029

    Examples
    --------
    >>> import numpy as np
    >>> from mlthreat.detect.batch import EventBatch
    >>> n = 20
    >>> batch = EventBatch(ts=np.arange(n, dtype=float), client_id=np.array(["c"] * n, object),
    ...                    model_id=np.array(["m"] * n, object),
    ...                    x=np.ones((n, 4), np.float32), label=np.zeros(n, np.int64))
    >>> [(d.client_id, d.queries_observed) for d in RepeatDetector().observe(batch)]
    [('c', 17)]
    """

    name: ClassVar[str] = "repeat"
    technique: ClassVar[str] = "AML.T0029"
    related: ClassVar[tuple[str, ...]] = ("AML.T0034.000",)
    defaults: ClassVar[dict[str, Any]] = {"window": 100, "max_repeats": 15, "margin": 2.0,
                                          "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        "window": Interval(Integral, 2, None),
        "max_repeats": Interval(Integral, 1, None),
        "margin": Interval(Real, 1, None),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()
        self.evicted = 0
        self._calibration: dict[str, Any] = {}

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Count each event's exact repeats in its client's window; return the detections
        (one per client, when it first passes ``max_repeats``)."""
        self.validate()
        if len(batch) == 0:
            return []
        window, limit = int(self.params["window"]), int(self.params["max_repeats"])
        out: list[Detection] = []
        for ts, cid, mid, digest in zip(batch.ts.tolist(), batch.client_id.tolist(),
                                        batch.model_id.tolist(), digests(batch.x),
                                        strict=True):
            c, dropped = client_state(self._clients, (cid, mid), self.params["max_clients"],
                                      _Client, ts, window)
            self.evicted += dropped
            c.n += 1
            c.last_seen = ts
            repeats = c.add(digest)
            if repeats > limit and not c.flagged:
                c.flagged = True
                out.append(Detection(
                    detector=self.name, technique=self.technique, client_id=cid, model_id=mid,
                    first_seen=c.first_seen, last_seen=ts, queries_observed=c.n,
                    score=float(repeats), threshold=float(limit),
                    unit=f"exact repeats of one input in {window} queries",
                    evidence={"window_queries": window, "repeats_in_window": repeats,
                              "distinct_inputs_in_window": len(c.counts),
                              "input_digest": f"{digest:016x}",
                              "also_consistent_with": "AML.T0034.000"}))
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict; any client with traffic has been tested."""
        window = self.params["window"]
        return [ClientStatus(self.name, cid, mid, "flagged" if c.flagged else "clear", c.n,
                             f"at most {c.peak} exact repeats of one input in {window} "
                             "queries")
                for (cid, mid), c in self._clients.items()]

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``max_repeats`` to ``margin`` times the ``1 - target_fpr`` quantile of benign
        clients' peak repeats (at least 2).

        Raises
        ------
        CalibrationError
            With no benign traffic.
        """
        probe = RepeatDetector(**{**self.params, "max_repeats": 10**9})
        for b in benign:
            probe.observe(b)
        peaks = np.array([c.peak for c in probe._clients.values()])
        if peaks.size == 0:
            raise CalibrationError(f"{self.name}: no benign traffic to calibrate on")
        base = float(np.quantile(peaks, 1.0 - target_fpr))
        limit = max(_MIN_CALIBRATED, math.ceil(base * float(self.params["margin"])))
        self.load_calibration({"detector": self.name, "max_repeats": int(limit),
                               "window": int(self.params["window"]),
                               "benign_peak_quantile": base, "target_fpr": target_fpr,
                               "clients": int(peaks.size)})
        return self.calibration()

    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration) or {"detector": self.name,
                                           "max_repeats": self.params["max_repeats"],
                                           "window": self.params["window"]}

    def load_calibration(self, data: dict[str, Any]) -> None:
        if data.get("detector", self.name) != self.name:
            raise CalibrationError(f"{self.name}: calibration is for {data.get('detector')!r}")
        try:
            limit = int(data["max_repeats"])
            window = int(data.get("window", self.params["window"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{self.name}: malformed calibration ({exc})") from None
        if self._clients and window != self.params["window"]:
            raise CalibrationError(f"{self.name}: calibration changes the window of a running "
                                   "detector")
        self.params["max_repeats"], self.params["window"] = limit, window
        self._calibration = dict(data)

    def checkpoint(self) -> dict[str, Any]:
        """Per-client windows (digests as hex) and counters, longest-idle first."""
        return {"detector": self.name, "evicted": self.evicted,
                "clients": [{"client_id": k[0], "model_id": k[1], "first_seen": c.first_seen,
                             "last_seen": c.last_seen, "n": c.n, "peak": c.peak,
                             "peak_digest": f"{c.peak_digest:016x}", "flagged": c.flagged,
                             "recent": [f"{d:016x}" for d in c.recent]}
                            for k, c in self._clients.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        window = int(self.params["window"])
        self.evicted = int(state["evicted"])
        self._clients = OrderedDict()
        for d in state["clients"]:
            c = _Client(float(d["first_seen"]), window)
            for digest in d["recent"][-window:]:
                c.add(int(digest, 16))
            c.last_seen, c.n, c.flagged = float(d["last_seen"]), int(d["n"]), bool(d["flagged"])
            c.peak, c.peak_digest = int(d["peak"]), int(d["peak_digest"], 16)
            self._clients[(d["client_id"], d["model_id"])] = c
