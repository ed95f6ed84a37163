"""The path a client's queries trace, one step (consecutive distinct queries) at a time.

Two shapes that a per-query test (a distance, a fingerprint match) sees late or not at all:

Bisection (AML.T0043.001)
    A decision-based evasion search (HopSkipJump, the boundary attack, the decision-boundary
    form of label-only membership inference) finds the decision boundary by binary search on
    the segment between an input and an adversarial starting point: each query is the
    midpoint of the remaining interval, so each step is parallel to the previous one
    (``|cos| >= bisection_cos``) and half as long (ratio within ``bisection_ratio``). A step
    that does both is a *bisection step*; natural, random and augmented queries essentially
    never make one (two consecutive steps between unrelated inputs are not parallel).
    HopSkipJump makes its first ones within its first 3-6 queries, before Blacklight's
    fingerprints match (its first queries are far apart: random starting points and the top
    of the binary search).

Probe clusters (AML.T0024.000)
    The augmentation form of label-only membership inference (Choquette-Choo et al. 2021)
    sends each candidate record and a handful of noisy copies, then jumps to the next record:
    the path is a run of steps of about one length (the copies' spread) ended by a step many
    times longer. A *visit* is the run of steps since the last jump; a step longer than
    ``probe_jump`` times the visit's geometric-mean step ends it. A visit that ends with at
    least ``probe_size`` queries whose steps are within a factor ``probe_spread`` of each
    other is a probe cluster. A binary search never makes one (its steps halve: 4 of them
    already span a factor 8), and a client seen bisecting is not counted at all: a search
    that lands on the boundary and then estimates a gradient (a cloud of equal steps) is
    HopSkipJump, not membership probing. Natural, random and Jacobian queries step between
    unrelated inputs, all of about one length, so their first visit never ends.

Exact repeats (a zero step) are skipped. State per client: the last query (float32, as the
inputs) and the last step (float64), 768 bytes for ``d = 64``, dropped once a shape is
reported, and a few counters.

Measured on ``benchmarks/detection.py``'s log (digits, ``d = 64``): HopSkipJump
clients make their 3rd bisection step at query 5-9, augmentation probers (30 records x 10
copies) close their 4th probe cluster at query 41, and none of 1,000 benign clients, nor a
Jacobian, random or natural-data extraction client, makes a single bisection step or probe
cluster; on ``benchmarks/art_log.py``'s log ART's HopSkipJump is at 6-8 and
``LabelOnlyDecisionBoundary`` (a HopSkipJump run per record) bisects at 8-10: AML.T0043.001.

References
----------
Jianbo Chen, Michael I. Jordan, Martin J. Wainwright. "HopSkipJumpAttack: A Query-Efficient
Decision-Based Attack". IEEE S&P 2020.

Christopher A. Choquette-Choo, Florian Tramèr, Nicholas Carlini, Nicolas Papernot.
"Label-Only Membership Inference Attacks". ICML 2021.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from mlthreat.constraints import Interval, ListOf, Rule, Spec

__all__ = ["PATH_CONSTRAINTS", "PATH_DEFAULTS", "PATH_RULES", "QueryPath"]

# the parameters the rules read (the owning detector's defaults hold them)
PATH_DEFAULTS: dict[str, Any] = {
    "bisection_steps": 3, "bisection_cos": 0.98, "bisection_ratio": (0.4, 0.6),
    "probe_clusters": 4, "probe_size": 5, "probe_spread": 3.0, "probe_jump": 4.0}


PATH_CONSTRAINTS: dict[str, Spec] = {
    "bisection_steps": Interval(Integral, 1, None),
    "bisection_cos": Interval(Real, 0, 1, closed="right"),
    "bisection_ratio": ListOf(Interval(Real, 0, None, closed="neither"), lengths=(2,),
                              note="low, high"),
    "probe_clusters": Interval(Integral, 1, None),
    "probe_size": Interval(Integral, 3, None),
    "probe_spread": Interval(Real, 1, None),
    "probe_jump": Interval(Real, 1, None, closed="neither"),
}
PATH_RULES: tuple[Rule, ...] = (
    Rule("bisection_ratio", lambda p: p["bisection_ratio"][0] < p["bisection_ratio"][1],
         "increasing (low < high)"),)


class QueryPath:
    """One client's path: counts bisection steps and probe clusters as queries arrive.

    :meth:`take` takes one query's step (from :class:`PathSteps`, which computes a whole
    batch's at once) and returns what it completed: ``"bisection"`` when the client reaches
    ``bisection_steps`` bisection steps, ``"probe"`` when it reaches ``probe_clusters`` probe
    clusters without having bisected; each at most once. :meth:`advance` does both for one
    query, with the same arithmetic, so results do not depend on how events are batched.
    """

    __slots__ = (
        "bisections",
        "cluster_queries",
        "clusters",
        "last",
        "prev_step",
        "reported",
        "visit_log",
        "visit_max",
        "visit_min",
        "visit_steps",
    )

    def __init__(self) -> None:
        self.last: np.ndarray | None = None  # float32, as the inputs
        self.prev_step: np.ndarray | None = None  # float64
        self.bisections = 0
        self.clusters = 0
        self.cluster_queries = 0  # queries in the counted clusters (for the evidence)
        self.visit_steps = 0
        self.visit_log = 0.0
        self.visit_min = math.inf
        self.visit_max = 0.0
        self.reported: list[str] = []

    def advance(self, x: np.ndarray, p: dict[str, Any]) -> str | None:
        """Take the client's next query (1-D); return the shape it completed, if any."""
        steps = PathSteps(np.asarray(x)[None], [None], {None: self})
        shape = self.take(float(steps.norm[0]), float(steps.dot[0]), float(steps.pnorm[0]),
                          self.rules(p))
        steps.commit()
        return shape

    @staticmethod
    def rules(p: dict[str, Any]) -> tuple[float, ...]:
        """The parameters :meth:`take` reads, in its order (looked up once per batch)."""
        lo, hi = p["bisection_ratio"]
        return (float(lo), float(hi), float(p["bisection_cos"]), p["bisection_steps"],
                float(p["probe_jump"]), p["probe_size"], float(p["probe_spread"]),
                p["probe_clusters"])

    def take(self, norm: float, dot: float, pnorm: float, rules: tuple[float, ...]
             ) -> str | None:
        """Count one step of length ``norm`` (NaN: the client's first query, 0: an exact
        repeat) whose dot product with the previous step, of length ``pnorm``, is ``dot``;
        ``rules`` from :meth:`rules`."""
        if self.reported or not norm > 0.0:  # decided (a bisection rules membership probing
            return None                      # out), a first query, or an exact repeat
        lo, hi, cos, bisections, jump, size, spread, clusters = rules
        out = None
        if pnorm > 0.0 and lo <= norm / pnorm <= hi and abs(dot) >= cos * norm * pnorm:
            self.bisections += 1
            if self.bisections >= bisections:
                out = "bisection"
        n = self.visit_steps
        if out is None and n and norm > jump * math.exp(self.visit_log / n):
            # a jump ends the visit: a probe cluster when its steps were of one length
            if n + 1 >= size and self.bisections == 0 and \
                    self.visit_max <= spread * self.visit_min:
                self.clusters += 1
                self.cluster_queries += n + 1
                if self.clusters >= clusters:
                    out = "probe"
            self.visit_steps, self.visit_log = 0, 0.0
            self.visit_min, self.visit_max = math.inf, 0.0
        else:
            self.visit_steps = n + 1
            self.visit_log += math.log(norm)
            if norm < self.visit_min:
                self.visit_min = norm
            if norm > self.visit_max:
                self.visit_max = norm
        if out is not None:
            self.reported.append(out)
            self.last = self.prev_step = None  # decided: no more geometry kept
        return out

    def verdict(self, shape: str, p: dict[str, Any]
                ) -> tuple[str, float, float, str, dict[str, Any]]:
        """Technique, score, threshold, unit and evidence of a shape :meth:`advance` returned."""
        if shape == "bisection":
            return ("AML.T0043.001", float(self.bisections), float(p["bisection_steps"]),
                    "bisection steps", {"rule": "bisection", "bisection_cos": p["bisection_cos"],
                                        "bisection_ratio": list(p["bisection_ratio"])})
        return ("AML.T0024.000", float(self.clusters), float(p["probe_clusters"]),
                "probe clusters",
                {"rule": "probe clusters",
                 "mean_cluster_queries": round(self.cluster_queries / max(1, self.clusters), 2),
                 "probe_spread": p["probe_spread"], "probe_jump": p["probe_jump"],
                 "also_consistent_with": "AML.T0043.001"})

    def to_json(self) -> dict[str, Any]:
        return {"last": None if self.last is None else self.last.tolist(),
                "prev_step": None if self.prev_step is None else self.prev_step.tolist(),
                "bisections": self.bisections, "clusters": self.clusters,
                "cluster_queries": self.cluster_queries, "visit_steps": self.visit_steps,
                "visit_log": self.visit_log,
                "visit_min": None if math.isinf(self.visit_min) else self.visit_min,
                "visit_max": self.visit_max, "reported": list(self.reported)}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> QueryPath:
        path = cls()
        if not d:
            return path
        path.last = None if d["last"] is None else np.asarray(d["last"], dtype=np.float32)
        path.prev_step = None if d["prev_step"] is None else np.asarray(d["prev_step"],
                                                                          dtype=np.float64)
        path.bisections, path.clusters = int(d["bisections"]), int(d["clusters"])
        path.cluster_queries, path.visit_steps = int(d["cluster_queries"]), int(d["visit_steps"])
        path.visit_log = float(d["visit_log"])
        path.visit_min = math.inf if d["visit_min"] is None else float(d["visit_min"])
        path.visit_max = float(d["visit_max"])
        path.reported = list(d["reported"])
        return path


class PathSteps:
    """Each event's step in one batch, computed at once from the clients' paths as they stood
    before it: ``norm`` (NaN for a client's first query), ``dot`` with the client's previous
    non-zero step and that step's length ``pnorm`` (NaN when there is none), in event order.
    :meth:`commit` stores each client's last query and last step back into its path.

    Differences are taken in float64 of the float32 inputs and every reduction runs over one
    contiguous row, so a value does not depend on the batch it was computed in.
    """

    def __init__(self, x: np.ndarray, keys: list[Any], paths: dict[Any, QueryPath]) -> None:
        n = len(keys)
        self.norm, self.dot, self.pnorm = np.empty(n), np.empty(n), np.empty(n)
        self._paths: list[QueryPath | None] = []
        if n == 0:
            return
        codes: dict[Any, int] = {}
        code = np.array([codes.setdefault(k, len(codes)) for k in keys], dtype=np.int64)
        order = np.argsort(code, kind="stable")
        cs = code[order]
        xs = np.asarray(x, dtype=np.float32)[order].astype(np.float64)
        d = xs.shape[1]
        start = np.ones(n, dtype=bool)
        start[1:] = cs[1:] != cs[:-1]
        self._paths = [paths.get(k) for k in codes]
        last = np.full((len(codes), d), np.nan)
        prev_step = np.full((len(codes), d), np.nan)
        for c, path in enumerate(self._paths):
            if path is not None and path.last is not None:
                last[c] = path.last
                if path.prev_step is not None:
                    prev_step[c] = path.prev_step
        prev = np.empty_like(xs)
        prev[1:] = xs[:-1]
        prev[start] = last[cs[start]]
        step = xs - prev
        norm = np.sqrt((step * step).sum(axis=1))
        # each event's previous non-zero step in the batch, else the one stored
        rows = np.arange(n)
        upto = np.maximum.accumulate(np.where(norm > 0.0, rows, -1))
        before = np.full(n, -1)
        before[1:] = upto[:-1]
        first = np.maximum.accumulate(np.where(start, rows, 0))
        inside = before >= first
        pstep = prev_step[cs]
        pstep[inside] = step[before[inside]]
        self.norm[order] = norm
        self.dot[order] = (step * pstep).sum(axis=1)
        self.pnorm[order] = np.sqrt((pstep * pstep).sum(axis=1))
        # per client: its last row, and its last non-zero step in the batch (-1: none)
        ends = np.flatnonzero(np.r_[start[1:], True])
        self._last = xs[ends].astype(np.float32)
        self._step = [step[upto[e]] if upto[e] >= first[e] else None for e in ends]

    def commit(self) -> None:
        """Store each client's last query and last step into the path it was computed from
        (a client evicted and re-created during the batch went on in a new path, which
        :meth:`QueryPath.advance` kept itself; the old one is gone)."""
        for c, path in enumerate(self._paths):
            if path is None or path.reported:
                continue
            path.last = self._last[c]
            if self._step[c] is not None:
                path.prev_step = self._step[c]
