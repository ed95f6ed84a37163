"""Coverage: extraction with natural data, a client sweeping a data set.

What it catches
---------------
Model extraction with natural data (Knockoff Nets, Copycat CNN, ``mlthreat assess``'s
``extraction-surrogate``) sends real, in-distribution inputs, each once, and wants the answers
for as many of them as it can. PRADA sees nothing odd in their distances (they *are* natural
data), Blacklight and kNN see no near-duplicates, and ``ood`` sees no unusual input. What
stands out is *coverage*: one client asking about far more distinct inputs than any benign
client does, with answers spread over the classes (a sweep of the data set, not a search
around one input).

Rule (per client, per query)
----------------------------
- Each input is reduced to a cell: ``floor(x / quantization)`` and a 64-bit digest of it, so
  exact repeats and tiny perturbations of one input (a boundary search's probes) count once.
  A client's *coverage* is the number of distinct cells it has sent (at most
  ``max_tracked`` are remembered; past that the client is far beyond any threshold anyway).
- The *evenness* of its answers is the entropy of its predicted labels divided by
  ``log(k)``, ``k`` the number of classes seen in the whole log so far (1.0: every class
  equally often). Events without a label (``-1``) are not counted; a client none of whose
  events carries one is judged on coverage alone.
- A sweep moves from one input to an unrelated one: the share of a client's queries within
  ``near_duplicate`` (``0.1 * sqrt(d)``, 0.8 for 64 values on [0, 1]; natural digits are
  1.2 or more apart for 90 % of pairs) of its previous query stays at most
  ``max_chain_share`` (0.1). Label-only membership probing (a record and its noisy copies)
  and boundary searches step in near-duplicates and are left to Blacklight and PRADA (their
  quantisation cells differ in 64 dimensions, so coverage alone would count them).
- The client is flagged, once, when its coverage reaches ``threshold``, evenness is at
  least ``min_evenness`` (0.8) and its near-duplicate share at most ``max_chain_share``.
  ``threshold`` is ``max(min_distinct, ratio * Q)`` with ``Q``
  the ``1 - trim`` quantile (95th percentile) of every tracked client's coverage, recomputed
  from the log itself every ``refresh`` events: "far beyond any benign client" measured on the
  population being read, on the assumption that most clients are benign (an attack campaign
  of more than ``trim`` of the clients, all sweeping, raises ``Q`` and hides itself). Early in
  a log, or in a log of short sessions, ``min_distinct`` (200) rules; with fewer than 20
  tracked clients (a Spark worker sees one client at a time) it rules alone.

Defaults, measured on the digits demo (``benchmarks/detection.py``): benign clients of
``benign_events`` reach a coverage of at most about 140 in 150 queries, with evenness about
0.95, so 200 distinct cells is beyond any of them; the natural-data extraction client is
flagged at its 200th query. HopSkipJump clients send hundreds of distinct inputs but around
one or two classes (evenness below 0.5). Jacobian-based augmentation is also extraction
(AML.T0024.002) and may be flagged here too once it has sent 200 queries.

Quantisation is in input units: 0.2 for inputs scaled to [0, 1] (as Blacklight's default);
scale it with the input range.

References
----------
.. [1] T. Orekondy, B. Schiele, M. Fritz, "Knockoff Nets: Stealing Functionality of
   Black-Box Models", CVPR 2019 (extraction by querying natural images).
.. [2] J. R. Correia-Silva et al., "Copycat CNN: Stealing Knowledge by Persuading
   Confession with Random Non-Labeled Data", IJCNN 2018.
.. [3] M. Juuti, S. Szyller, S. Marchal, N. Asokan, "PRADA: Protecting against DNN Model
   Stealing Attacks", IEEE EuroS&P 2019 (natural-data extraction as the case PRADA misses).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlthreat.constraints import Interval, Null, Spec
from mlthreat.detect.detectors._fingerprints import digests
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector, client_state

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["CoverageDetector"]

_MIN_POPULATION = 20  # tracked clients the population rule needs; below, min_distinct alone


class _Client:
    __slots__ = ("cells", "first_seen", "flagged", "labels", "last", "last_seen", "n", "near")

    def __init__(self, first_seen: float) -> None:
        self.first_seen = first_seen
        self.last_seen = first_seen
        self.n = 0
        self.cells: set[int] = set()
        self.labels: dict[int, int] = {}
        self.flagged = False
        self.near = 0  # queries within near_duplicate of the client's previous one
        self.last: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"first_seen": self.first_seen, "last_seen": self.last_seen, "n": self.n,
                "cells": sorted(self.cells), "labels": [[k, v] for k, v in self.labels.items()],
                "flagged": self.flagged, "near": self.near, "last": self.last}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Client:
        c = cls(float(d["first_seen"]))
        c.last_seen, c.n, c.flagged = float(d["last_seen"]), int(d["n"]), bool(d["flagged"])
        c.cells = {int(v) for v in d["cells"]}
        c.labels = {int(k): int(v) for k, v in d["labels"]}
        c.near, c.last = int(d["near"]), d["last"]
        return c


def _evenness(labels: dict[int, int], k: int) -> float | None:
    """Normalised entropy of label counts over ``k`` classes (None without labels)."""
    total = sum(labels.values())
    if total == 0:
        return None
    if k <= 1:
        return 1.0
    p = np.array([v for v in labels.values() if v], dtype=np.float64) / total
    return float(-(p * np.log(p)).sum() / math.log(k))


class CoverageDetector(Detector):
    """Natural-data extraction: a client whose distinct inputs far exceed the population's,
    with answers spread evenly over the classes (see the module docstring).

    Parameters
    ----------
    quantization : float, default 0.2
        Cell width in input units (inputs in one cell count as one).
    min_distinct : int, default 200
        Distinct cells that flag a client at the least.
    ratio : float, default 2.0
        Or this many times the population's ``1 - trim`` quantile of coverage, if larger.
    trim : float, default 0.05
        Share of the widest-covering clients left out of that quantile.
    min_evenness : float, default 0.8
        Normalised entropy of the client's answers (0 to 1) a sweep needs.
    near_duplicate : float or None, default None
        L2 distance (input units) within which a query is a near-duplicate of the client's
        previous one; ``None``: ``0.1 * sqrt(d)`` (0.8 for 64 values on [0, 1]).
    max_chain_share : float, default 0.1
        A sweep has at most this share of near-duplicate steps; more is a search or a probe
        around a few inputs (Blacklight's and PRADA's concern), not a sweep.
    refresh : int, default 1000
        Events between recomputations of the population quantile.
    max_tracked : int, default 5000
        Distinct cells remembered per client.
    max_clients : int, default 100_000
        Tracked clients; the longest-idle one is evicted first and counted in ``evicted``.

    Examples
    --------
    >>> det = CoverageDetector(min_distinct=200)
    >>> det.validate()
    """

    name: ClassVar[str] = "coverage"
    technique: ClassVar[str] = "AML.T0024.002"
    related: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {
        "quantization": 0.2, "min_distinct": 200, "ratio": 2.0, "trim": 0.05,
        "min_evenness": 0.8, "near_duplicate": None, "max_chain_share": 0.1, "refresh": 1000,
        "max_tracked": 5000, "max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        "quantization": Interval(Real, 0, None, closed="neither"),
        **dict.fromkeys(("min_distinct", "max_tracked"), Interval(Integral, 2, None)),
        "ratio": Interval(Real, 1, None),
        "trim": Interval(Real, 0, 0.5, closed="left"),
        **dict.fromkeys(("min_evenness", "max_chain_share"), Interval(Real, 0, 1)),
        "near_duplicate": [Null("scaled"), Interval(Real, 0, None, closed="neither")],
        "refresh": Interval(Integral, 1, None),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()
        self.evicted = 0
        self._events = 0
        self._classes: set[int] = set()
        self._population_q = 0.0
        self._calibration: dict[str, Any] = {}

    def _threshold(self) -> float:
        return max(float(self.params["min_distinct"]),
                   float(self.params["ratio"]) * self._population_q)

    def _refresh(self) -> None:
        if len(self._clients) < _MIN_POPULATION:  # no population to speak of
            self._population_q = 0.0
            return
        counts = np.fromiter((len(c.cells) for c in self._clients.values()), dtype=np.float64,
                             count=len(self._clients))
        self._population_q = float(np.quantile(counts, 1.0 - float(self.params["trim"])))

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Feed events (time order); return the detections they complete."""
        self.validate()
        if len(batch) == 0:
            return []
        x = np.asarray(batch.x, dtype=np.float64).reshape(len(batch), -1)
        cells = digests(np.floor(x / float(self.params["quantization"])).astype(np.float32))
        labels = batch.label.tolist()
        refresh, cap = int(self.params["refresh"]), int(self.params["max_tracked"])
        min_even = float(self.params["min_evenness"])
        near = self.params["near_duplicate"]
        near = 0.1 * math.sqrt(x.shape[1]) if near is None else float(near)
        max_chain = float(self.params["max_chain_share"])
        out: list[Detection] = []
        for i, (cid, mid) in enumerate(zip(batch.client_id.tolist(), batch.model_id.tolist(),
                                           strict=True)):
            ts = float(batch.ts[i])
            st, dropped = client_state(self._clients, (cid, mid), self.params["max_clients"],
                                       _Client, ts)
            self.evicted += dropped
            self._events += 1
            st.n += 1
            st.last_seen = ts
            lab = int(labels[i])
            if lab >= 0:
                self._classes.add(lab)
                st.labels[lab] = st.labels.get(lab, 0) + 1
            if not st.flagged and len(st.cells) < cap:
                st.cells.add(cells[i])
            if self._events % refresh == 0:
                self._refresh()
            if st.flagged:
                continue
            if st.last is not None and \
                    float(np.sqrt(((x[i] - np.asarray(st.last)) ** 2).sum())) < near:
                st.near += 1
            st.last = x[i].tolist()
            threshold = self._threshold()
            if len(st.cells) < threshold:
                continue
            even = _evenness(st.labels, len(self._classes))
            if even is not None and even < min_even:
                continue
            chain = st.near / max(1, st.n - 1)
            if chain > max_chain:
                continue
            st.flagged = True
            out.append(Detection(
                detector=self.name, technique=self.technique, client_id=cid, model_id=mid,
                first_seen=st.first_seen, last_seen=ts, queries_observed=st.n,
                score=float(len(st.cells)), threshold=threshold,
                unit="distinct input cells sent",
                evidence={"distinct_cells": len(st.cells), "queries": st.n,
                          "label_evenness": None if even is None else round(even, 4),
                          "classes_answered": len(st.labels),
                          "classes_in_log": len(self._classes),
                          "near_duplicate_share": round(chain, 4),
                          "population_quantile": round(self._population_q, 3)}))
            st.cells, st.last = set(), None  # flagged once; no longer needed
        return out

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict so far (clear: its coverage and evenness)."""
        out = []
        for (cid, mid), c in self._clients.items():
            if c.flagged:
                verdict, reason = "flagged", "swept beyond the population's coverage"
            else:
                even = _evenness(c.labels, len(self._classes))
                verdict = "clear"
                reason = (f"{len(c.cells)} distinct cells (threshold {self._threshold():.0f})"
                          + ("" if even is None else f", evenness {even:.2f}")
                          + f", near-duplicate steps {c.near / max(1, c.n - 1):.2f}")
            out.append(ClientStatus(self.name, cid, mid, verdict, c.n, reason))
        return out

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``min_distinct`` to ``ratio`` times the ``1 - target_fpr`` quantile of benign
        clients' coverage (never below 2)."""
        probe = CoverageDetector(**{**self.params, "min_distinct": 10**9, "refresh": 10**9})
        for b in benign:
            probe.observe(b)
        counts = np.array([len(c.cells) for c in probe._clients.values()], dtype=np.float64)
        if counts.size == 0:
            from mlthreat.detect.errors import CalibrationError

            raise CalibrationError("coverage: no benign client to calibrate on")
        q = float(np.quantile(counts, 1.0 - target_fpr))
        self.params["min_distinct"] = max(2, math.ceil(float(self.params["ratio"]) * q))
        self._calibration = {"detector": self.name, "min_distinct": self.params["min_distinct"],
                             "target_fpr": target_fpr, "clients": int(counts.size),
                             "benign_coverage_quantile": q}
        return dict(self._calibration)

    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration) or {"detector": self.name,
                                           "min_distinct": self.params["min_distinct"]}

    def load_calibration(self, data: dict[str, Any]) -> None:
        if data.get("detector", self.name) != self.name or "min_distinct" not in data:
            from mlthreat.detect.errors import CalibrationError

            raise CalibrationError("coverage: calibration has no 'min_distinct'")
        self.params["min_distinct"] = int(data["min_distinct"])
        self._calibration = dict(data)

    def checkpoint(self) -> dict[str, Any]:
        """Per-client cells and label counts (longest-idle first), the log's classes and the
        population quantile, as JSON-ready data."""
        return {"detector": self.name, "evicted": self.evicted, "events": self._events,
                "classes": sorted(self._classes), "population_q": self._population_q,
                "clients": [{"client_id": k[0], "model_id": k[1], **c.to_json()}
                            for k, c in self._clients.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.evicted = int(state["evicted"])
        self._events = int(state["events"])
        self._classes = {int(c) for c in state["classes"]}
        self._population_q = float(state["population_q"])
        self._clients = OrderedDict(((d["client_id"], d["model_id"]), _Client.from_json(d))
                                    for d in state["clients"])
