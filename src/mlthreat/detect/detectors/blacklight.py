"""Blacklight: stateful detection of query-based black-box attacks by near-duplicate queries.

Query-based attacks (HopSkipJump, boundary and score-based searches, label-only membership
probing) send many queries that are near-duplicates of each other. Blacklight fingerprints
every query and flags a client whose queries keep nearly matching stored fingerprints.

Algorithm (per query, vectorised over a batch)
-----------------------------------------------
1. Quantise: ``q = floor(x / quantization)`` (integers).
2. Slide a window of ``window`` values with ``step`` over the flattened input and hash each
   window: ``mix(c + sum(q[k] * key[k]))`` with one odd 64-bit key per position and the
   splitmix64 finaliser as ``mix`` (wrapping uint64 arithmetic on the whole batch, no Python
   call per window).
3. Fingerprint = the ``top_n`` largest distinct window hashes.
4. The query *matches* when it shares at least ``match_threshold`` hashes with the stored
   fingerprint of one earlier, different input (of any client). Exact repeats of a stored
   input (same float32 values, recognised by a 64-bit digest) are neither matched nor stored
   again: a client's own retries and copies of popular inputs between clients are normal
   traffic (measured: counting them flags every benign client). Different inputs that
   quantise to the same fingerprint do match (overlap ``top_n``): HopSkipJump's binary
   search sends many of them.
5. A client is flagged once ``min_matches`` of its queries matched.

Scaling to the input dimension ``d`` (the paper's parameters are for images: 20-wide window,
step 1, top 50 hashes, threshold 25, quantisation step 50 on 0..255)
---------------------------------------------------------------------------------------
- ``window`` (default ``None``): ``20`` when ``d >= 160``, else ``max(2, d // 8)``; so one
  changed value breaks at most ``window / n_windows`` of the windows: 8 of 57 (14 %) for
  ``d = 64`` instead of 20 of 45 (44 %) with the image window.
- ``step`` (default 1, as the paper).
- ``top_n`` (default ``None``): ``min(50, n_windows // 2)``, i.e. half the windows for small
  inputs, the paper's 50 for images (28 for ``d = 64``).
- ``match_threshold`` (default ``None``): half of ``top_n``, the paper's 25 of 50 (14 of 28).
- ``quantization`` (default ``0.2``): the paper's step 50 of 256 grey levels (about 0.2 of the
  range), for inputs scaled to [0, 1] (5 levels); scale it with the input range.

Bounded state
-------------
At most ``max_fingerprints`` distinct fingerprints are stored (the oldest evicted first), at
most ``max_clients`` clients (longest-idle evicted first). A hash shared by many stored queries
(blank regions, common strokes) links only to its ``max_postings`` (8) most recent ones; it is
weak evidence and would otherwise make matching quadratic (HopSkipJump on digits is caught at
the same query with 4 or 32). Per stored query: ``8 * top_n`` bytes of fingerprint (a ring
allocated at the first batch), an exact-repeat digest and its index entries (a dictionary
from hash to a row of a numpy postings table): about 476 bytes
for ``d = 64``; about 370 bytes per tracked client (``benchmarks/bench_detect.py``), plus
the query path's last query and step (768 bytes for ``d = 64``, see below). The
result does not depend on how events are cut into batches. One fingerprint store serves
every model in the log.

Label-only membership probing (AML.T0024.000)
--------------------------------------------
The augmentation form of label-only membership inference (Choquette-Choo et al. 2021) sends,
for each candidate record, the record and a handful of slightly perturbed copies: many small
clusters of near-duplicates. Each matched query joins the cluster of its best match (the
earliest stored query with the largest overlap); a client with ``membership_clusters`` (20)
clusters of at least ``membership_cluster_size`` (5) queries, averaging at most
``membership_max_mean`` (15) matched queries per such cluster, gets a second detection,
AML.T0024.000. Measured on the digits demo: a 30-record prober (10 copies each, noise 0.02)
is reported at query 228; none of ten HopSkipJump evasion clients is (3 to 20 clusters, but
24 to 170 matched queries per cluster: a boundary search revisits its clusters). The
decision-boundary form (ART's ``LabelOnlyDecisionBoundary``, a HopSkipJump run per record)
looks like evasion and is reported as AML.T0043.001 only. Cluster bookkeeping keeps at most
``max_cluster_ids`` identities per client and is dropped once the client is reported.

The query path: earlier, and membership told from evasion
--------------------------------------------------------
The steps between a client's consecutive queries (``_paths``) give two earlier reports. A
binary search makes *bisection steps* (parallel to the previous step, half as long): the
``bisection_steps``-th (3) reports AML.T0043.001 (HopSkipJump on the digits demo at query 5-9,
before its 3rd fingerprint match at 7-12: its first queries are random starting points). A
prober's path is runs of equal steps around one record ended by a jump to the next: the
``probe_clusters``-th (4) such *probe cluster*, from a client that never bisected, reports
AML.T0024.000 (the prober above at query 45 rather than 214; several tight clusters around
distinct centres, where HopSkipJump is one chain drifting by halving steps). The cluster rule
above still reports probers whose copies are not sent one record at a time.

References
----------
Huiying Li, Shawn Shan, Emily Wenger, Jiayun Zhang, Haitao Zheng, Ben Y. Zhao. "Blacklight:
Scalable Defense for Neural Networks against Query-Based Black-Box Attacks". USENIX Security
2022.

Christopher A. Choquette-Choo, Florian Tramèr, Nicholas Carlini, Nicolas Papernot.
"Label-Only Membership Inference Attacks". ICML 2021.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.constraints import Interval, Null, Rule, Spec
from mlthreat.detect.detectors._fingerprints import FingerprintStore, digests, fingerprints
from mlthreat.detect.detectors._paths import (
    PATH_CONSTRAINTS,
    PATH_DEFAULTS,
    PATH_RULES,
    PathSteps,
    QueryPath,
)
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["BlacklightDetector", "fingerprints"]




class BlacklightDetector(Detector):
    """Blacklight (Li et al. 2022) over query logs; see the module docstring for the algorithm,
    the parameters' scaling rule and the state bounds.

    Parameters
    ----------
    quantization : float
        Quantisation step in input units (default 0.2: 5 levels on [0, 1]).
    window, step, top_n, match_threshold : int or None
        Sliding window width, its stride, fingerprint size, and the shared hashes that make a
        match; ``None`` scales them to the input dimension at the first batch.
    min_matches : int
        Matched queries that flag a client (default 3).
    membership_clusters, membership_cluster_size, membership_max_mean, max_cluster_ids
        The AML.T0024.000 rule (see the module docstring): clusters needed, queries that make
        a cluster, largest mean matched queries per cluster, identities kept per client.
    bisection_steps, bisection_cos, bisection_ratio, probe_clusters, probe_size, probe_spread,
    probe_jump
        The query-path rules (``_paths``): bisection steps that report AML.T0043.001 (3) and
        what makes one (``|cos|`` with the previous step >= 0.98, length ratio in (0.4, 0.6));
        probe clusters that report AML.T0024.000 (4) and what makes one (>= 5 queries whose
        steps are within a factor 3.0 of each other, ended by a step 4.0 times their
        geometric mean).
    max_fingerprints, max_clients, max_postings : int
        State bounds: stored fingerprints (oldest evicted), tracked clients (longest-idle
        evicted), stored queries one hash links to (most recent kept).

    Examples
    --------
    >>> import numpy as np
    >>> from mlthreat.detect.batch import EventBatch
    >>> rng = np.random.default_rng(0)
    >>> x0 = rng.random(64, dtype=np.float32)
    >>> x = np.clip(x0 + rng.normal(0, 0.01, (6, 64)), 0, 1).astype(np.float32)
    >>> n = len(x)
    >>> batch = EventBatch(ts=np.arange(n, dtype=float), client_id=np.array(["c"] * n, object),
    ...                    model_id=np.array(["m"] * n, object), x=x, label=np.zeros(n, int))
    >>> det = BlacklightDetector()
    >>> det.validate()
    >>> [d.client_id for d in det.observe(batch)]
    ['c']
    """

    name: ClassVar[str] = "blacklight"
    technique: ClassVar[str] = "AML.T0043.001"
    related: ClassVar[tuple[str, ...]] = ("AML.T0015", "AML.T0024.000")
    defaults: ClassVar[dict[str, Any]] = {
        "max_clients": 100_000, "quantization": 0.2, "window": None, "step": 1, "top_n": None,
        "match_threshold": None, "min_matches": 3, "max_fingerprints": 100_000,
        "max_postings": 8, "membership_clusters": 20, "membership_cluster_size": 5,
        "membership_max_mean": 15.0, "max_cluster_ids": 4096, **PATH_DEFAULTS}
    _constraints: ClassVar[dict[str, Spec]] = {
        **Detector._constraints,
        **dict.fromkeys(("quantization", "membership_max_mean"),
                        Interval(Real, 0, None, closed="neither")),
        **dict.fromkeys(("window", "top_n", "match_threshold"),
                        (Null("scaled"), Interval(Integral, 1, None))),
        **dict.fromkeys(("step", "min_matches", "max_fingerprints", "max_postings",
                         "membership_clusters", "max_cluster_ids"), Interval(Integral, 1, None)),
        "membership_cluster_size": Interval(Integral, 2, None),
        **PATH_CONSTRAINTS,
    }
    _rules: ClassVar[tuple[Rule, ...]] = PATH_RULES

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._reset()

    # -- configuration -------------------------------------------------------------------------

    def _reset(self) -> None:
        self._cfg: dict[str, Any] | None = None
        # (model_id, client_id) -> [queries, matches, first_seen, last_seen, flagged,
        #                           max_overlap, earliest_other_client, exact_repeats]
        self._clients: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._evicted_clients = 0
        self._store = FingerprintStore(self.params["max_fingerprints"],
                                       self.params["max_postings"])
        self._record: dict[tuple[str, str], list[int]] | None = None

    def _resolve(self, dim: int) -> dict[str, Any]:
        p = self.params
        window = p["window"] or (20 if dim >= 160 else max(2, dim // 8))
        window = min(window, dim)
        n_windows = (dim - window) // p["step"] + 1
        top_n = p["top_n"] or max(1, min(50, n_windows // 2))
        thr = p["match_threshold"] or max(1, top_n // 2)
        return {"dim": dim, "quantization": float(p["quantization"]), "window": int(window),
                "step": int(p["step"]), "top_n": int(top_n), "match_threshold": int(thr),
                "min_matches": int(p["min_matches"])}

    def _config(self, batch: EventBatch) -> dict[str, Any]:
        dim = batch.dim
        if self._cfg is None:
            if dim < 1:
                raise CalibrationError(f"{self.name}: inputs must be 2-D [n, d] with d >= 1")
            self._cfg = self._resolve(dim)
        self._check_dim(batch, self._cfg["dim"])
        return self._cfg

    # -- the Detector interface ----------------------------------------------------------------

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Fingerprint, match and store the batch's queries; flag clients that reach
        ``min_matches`` matched queries (one Detection per client).

        Raises
        ------
        CalibrationError
            When the inputs' dimension differs from the detector's (set by its calibration or
            its first batch).
        """
        if len(batch) == 0:
            return []
        cfg = self._config(batch)
        if self._store.fp is None:
            self._store.allocate(cfg["top_n"])
        fp = fingerprints(batch.x, cfg["quantization"], cfg["window"], cfg["step"],
                          cfg["top_n"])
        clients = [str(c) for c in batch.client_id.tolist()]
        over, other, best, ids = self._store.match(fp, digests(batch.x), clients,
                                                   cfg["match_threshold"])
        return self.account(batch, over, other, best, ids)

    def account(self, batch: EventBatch, over: list[int], other: list[str | None],
                best: list[int], ids: list[int]) -> list[Detection]:
        """The per-client half of :meth:`observe`: count each client's matched queries and
        near-duplicate clusters given, per query, its overlap with the store (``over``, -1 for
        an exact repeat), the earliest other client it matched (``other``), the identity of
        its best-matching stored query (``best``, -1 for none) and its own identity (``ids``).
        Identities only need to be unique and increasing in log order: the local store uses
        its sequence numbers, the Spark engine (which computes all four with a join on hash
        values) the events' log positions."""
        cfg = self._config(batch)
        clients = [str(c) for c in batch.client_id.tolist()]
        thr, need = cfg["match_threshold"], cfg["min_matches"]
        size, wanted = self.params["membership_cluster_size"], self.params["membership_clusters"]
        mean = self.params["membership_max_mean"]
        cap = self.params["max_cluster_ids"]
        max_clients = self.params["max_clients"]
        table, record, params = self._clients, self._record, self.params
        # every event's step along its client's path, at once; a client's path is made here
        # when it is new (one made later, after an eviction, steps one query at a time)
        keys = [(str(m), c) for m, c in zip(batch.model_id.tolist(), clients, strict=True)]
        paths = {k: (table[k][11] if k in table else QueryPath()) for k in keys}
        made = {k for k in paths if k in table}
        steps = PathSteps(batch.x, keys, paths)
        norm, dot, pnorm = steps.norm.tolist(), steps.dot.tolist(), steps.pnorm.tolist()
        out: list[Detection] = []
        rules = QueryPath.rules(params)
        for i, (key, ts) in enumerate(zip(keys, batch.ts.tolist(), strict=True)):
            # base.client_state inlined: a call per event costs this loop about 20 % of its
            # throughput (measured with benchmarks/bench_detect.py), and it has a target.
            st = table.get(key)
            if st is None:
                path = QueryPath() if key in made else paths[key]
                made.add(key)
                st = table[key] = [0, 0, ts, ts, False, 0, None, 0, None, False, 0, path]
                if len(table) > max_clients:
                    table.popitem(last=False)
                    self._evicted_clients += 1
            else:
                table.move_to_end(key)
            st[0] += 1
            st[3] = ts
            path = st[11]
            if path is paths[key]:
                shape = path.take(norm[i], dot[i], pnorm[i], rules)
            else:
                shape = path.advance(batch.x[i], params)
            if shape == "bisection" and not st[4]:
                st[4] = True
                out.append(self._detection(key, st, shape))
            elif shape == "probe" and not st[9]:
                st[9], st[8] = True, None
                out.append(self._detection(key, st, shape))
            o = over[i]
            if record is not None:
                record.setdefault(key, []).append(o)
            if o < 0:
                st[7] += 1
                continue
            if o > st[5]:
                st[5] = o
            if o >= thr:
                st[1] += 1
                if st[6] is None and other[i] is not None:
                    st[6] = other[i]
                if st[1] >= need and not st[4]:
                    st[4] = True
                    out.append(self._detection(key, st))
                if not st[9] and best[i] >= 0:
                    # membership probing: the query joins its best match's cluster
                    if st[8] is None:
                        st[8] = ({}, {})
                    root_of, sizes = st[8]
                    if len(root_of) < cap:
                        root = root_of.get(best[i], best[i])
                        root_of.setdefault(best[i], root)
                        root_of[ids[i]] = root
                        n = sizes[root] = sizes.get(root, 1) + 1
                        if n == size:
                            st[10] += 1
                            if st[10] >= wanted and st[1] <= mean * st[10]:
                                st[9] = True
                                st[8] = None
                                out.append(self._membership(key, st))
        steps.commit()
        return out

    def _membership(self, key: tuple[str, str], st: list[Any]) -> Detection:
        return Detection(
            detector=self.name, technique="AML.T0024.000", client_id=key[1], model_id=key[0],
            first_seen=float(st[2]), last_seen=float(st[3]), queries_observed=int(st[0]),
            score=float(st[10]), threshold=float(self.params["membership_clusters"]),
            unit="near-duplicate clusters",
            evidence={"cluster_size": self.params["membership_cluster_size"],
                      "matched_queries": int(st[1]),
                      "mean_matched_per_cluster": round(st[1] / st[10], 2),
                      "also_consistent_with": self.technique})

    def _detection(self, key: tuple[str, str], st: list[Any], shape: str = "") -> Detection:
        cfg = self._cfg
        assert cfg is not None
        if shape:  # a query-path rule (_paths)
            technique, score, threshold, unit, evidence = st[11].verdict(shape, self.params)
            return Detection(
                detector=self.name, technique=technique, client_id=key[1], model_id=key[0],
                first_seen=float(st[2]), last_seen=float(st[3]), queries_observed=int(st[0]),
                score=score, threshold=threshold, unit=unit,
                evidence={**evidence, "matched_queries": int(st[1])})
        return Detection(
            detector=self.name, technique=self.technique, client_id=key[1], model_id=key[0],
            first_seen=float(st[2]), last_seen=float(st[3]), queries_observed=int(st[0]),
            score=float(st[1]), threshold=float(cfg["min_matches"]), unit="matched queries",
            evidence={"match_threshold": cfg["match_threshold"], "top_n": cfg["top_n"],
                      "window": cfg["window"], "max_overlap": int(st[5]),
                      "exact_repeats": int(st[7]),
                      "earliest_other_client": st[6]})

    def statuses(self) -> list[ClientStatus]:
        need = self._cfg["min_matches"] if self._cfg else self.params["min_matches"]
        out = []
        for (model, client), st in self._clients.items():
            if st[4]:
                verdict, reason = "flagged", ""
            elif st[0] - st[7] >= need:
                verdict, reason = "clear", ""
            else:
                verdict = "untested"
                reason = (f"{st[0] - st[7]} distinct queries, fewer than min_matches={need} "
                          f"({st[7]} exact repeats ignored)")
            out.append(ClientStatus(self.name, client, model, verdict, int(st[0]), reason))
        return out

    @property
    def evicted_clients(self) -> int:
        """Clients dropped for ``max_clients`` so far."""
        return self._evicted_clients

    def stored_fingerprints(self) -> int:
        """Fingerprints held now (at most ``max_fingerprints``)."""
        return len(self._store.live())

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set ``match_threshold`` to the smallest overlap that would flag at most
        ``target_fpr`` of the benign clients.

        A client's score is its ``min_matches``-th largest per-query overlap (the overlap
        threshold at or below which it would be flagged); the threshold is the smallest
        integer above the scores of all but ``target_fpr`` of the clients. Window, step and
        ``top_n`` are kept (scaled or given); the detector's stored state is cleared.

        Raises
        ------
        CalibrationError
            With no benign traffic, or when no threshold up to ``top_n`` meets the target.
        """
        import math

        if not 0.0 <= target_fpr < 1.0:
            raise CalibrationError(f"{self.name}: target_fpr must be in [0, 1)")
        probe = type(self)(**self.params)
        probe.validate()
        probe._record = {}
        for batch in benign:
            probe.observe(batch)
        if probe._cfg is None or not probe._record:
            raise CalibrationError(f"{self.name}: no benign events to calibrate on")
        need = probe._cfg["min_matches"]
        scores = sorted(
            (sorted(v, reverse=True)[need - 1] if len(v) >= need else 0)
            for v in probe._record.values())
        allowed = math.floor(target_fpr * len(scores))
        # the (allowed+1)-th largest score must fall below the threshold
        k = len(scores) - allowed - 1
        thr = max(1, scores[k] + 1) if k >= 0 else 1
        if thr > probe._cfg["top_n"]:
            raise CalibrationError(f"{self.name}: benign clients overlap fully (top_n="
                                   f"{probe._cfg['top_n']}); no threshold meets {target_fpr}")
        cfg = dict(probe._cfg, match_threshold=int(thr))
        self._reset()
        self._cfg = cfg
        return self.calibration()

    def calibration(self) -> dict[str, Any]:
        if self._cfg is None:
            return {"detector": self.name, "dim": None}
        return {"detector": self.name, **self._cfg}

    def load_calibration(self, data: dict[str, Any]) -> None:
        keys = ("dim", "quantization", "window", "step", "top_n", "match_threshold",
                "min_matches")
        if data.get("detector") != self.name:
            raise CalibrationError(f"{self.name}: calibration is for {data.get('detector')!r}")
        if data.get("dim") is None:
            self._cfg = None
            return
        missing = [k for k in keys if k not in data]
        if missing:
            raise CalibrationError(f"{self.name}: calibration lacks {', '.join(missing)}")
        if self._store.fp is not None and self._cfg and data["top_n"] != self._cfg["top_n"]:
            raise CalibrationError(f"{self.name}: calibration changes top_n of a running "
                                   "detector")
        self._cfg = {k: data[k] for k in keys}

    def checkpoint(self) -> dict[str, Any]:
        """Calibration, stored fingerprints (hex) and per-client state, JSON-ready."""
        fps = self._store.rows()
        clients = [[model, client, *st[:8],
                    None if st[8] is None else [list(st[8][0].items()), list(st[8][1].items())],
                    *st[9:11], st[11].to_json()] for (model, client), st in self._clients.items()]
        return {"version": 1, "calibration": self.calibration(), "next": self._store.next,
                "fingerprints": fps, "clients": clients,
                "evicted_clients": self._evicted_clients}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise CalibrationError(f"{self.name}: unknown checkpoint version "
                                   f"{state.get('version')!r}")
        self._reset()
        self.load_calibration(state["calibration"])
        self._store.next = int(state["next"])
        self._evicted_clients = int(state["evicted_clients"])
        if self._cfg is not None:
            self._store.load_rows(state["fingerprints"], self._cfg["top_n"])
        for model, client, *st in state["clients"]:
            if len(st) == 8:  # written before membership clusters were tracked
                st += [None, False, 0]
            if len(st) == 11:  # written before the query path was tracked
                st.append(None)
            st[11] = QueryPath.from_json(st[11])
            if st[8] is not None:
                st[8] = ({int(k): int(v) for k, v in st[8][0]},
                         {int(k): int(v) for k, v in st[8][1]})
            self._clients[(model, client)] = list(st)
