"""Steal, craft, refine: minimal evasion through a stolen proxy (AML.T0043.002 with AML.T0024.002).

The matrix's founders stress that model theft is a step towards evasion. This run measures that
chain at its real strength, against the same rule as every evasion run
(:class:`~mlthreat.assess.techniques._evasion.EvasionRun`): steal a proxy with pool-row queries
(Extract AI Model, AML.T0024.002, via Train Proxy via Replication, AML.T0005.001), craft the
smallest adversarial example the proxy is fooled by, send it, and walk the ones that transfer
along the target's decision boundary towards the original with a warm-started HopSkipJump
(Black-Box Optimization, AML.T0043.001) until the walk stops paying.
"""

from __future__ import annotations

import time
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._evasion import (
    Attacked,
    EvasionRun,
    FeatureBox,
)
from mlthreat.assess.techniques._surrogate import fidelity, query_rows, steal, target_on_eval
from mlthreat.assess.techniques._walk import Ask, walk
from mlthreat.assess.techniques.transfer import PROXY_CONSTRAINTS, craft
from mlthreat.constraints import Interval, Spec

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target
    from mlthreat.assess.techniques.base import RunContext

__all__ = ["ChainEvasion"]

_RATIO = 1.25  # between neighbouring ε of the proxy's grid
_GRID = range(-9, 7)  # ε * 1.25^k: from ε / 7.5 to 3.8 ε
_RETRY_STEPS = 3  # grid steps between tries: each try about twice the last perturbation


class ChainEvasion(EvasionRun):
    """Evade the target with the smallest perturbations a stolen proxy and a short boundary walk
    can find, counting every query the chain sends.

    1. Samples: up to ``n_samples`` pool rows the target classifies correctly (evaluation
       queries, as in every evasion run).
    2. Theft: :func:`~mlthreat.assess.techniques._surrogate.steal` sends up to
       ``theft_queries`` pool rows (client ``<run>-theft``) and trains a differentiable proxy
       on the answers (distilled on the scores when the target returns them).
    3. Crafting, no queries: ART's PGD on the proxy at each ε of a grid (ratio 1.25, from
       ε / 7.5 to 3.8 ε); for each sample, the smallest grid ε that fools the proxy.
    4. Transfer: each sample's example from one grid step above that ε is sent (client
       ``<run>-transfer``); one the target still classifies correctly is tried again about
       twice as far out, ``tries`` sends in all.
    5. Refinement: examples that transferred walk the target's boundary towards their sample
       (:func:`~mlthreat.assess.techniques._walk.walk`, client ``<run>-refine``): HopSkipJump's
       schedule from iteration ``warm_iter``, all samples in lockstep, each stopping when its
       distance gains less than ``tol`` over ``patience`` iterations or after
       ``queries_per_sample`` queries.

    ``queries_per_sample`` in the metrics counts the transfer and refinement queries of each
    sample; ``queries_per_sample_amortised`` adds the theft shared over the samples. Measured
    on the demo at seeds 0 to 2 (benchmarks/README.md): MLP median L2 0.50 to 0.55 at 95
    queries per sample with the theft, 30-tree forest 0.39 to 0.45 at 243 to 269, where ART's
    HopSkipJump defaults spend about 24,450 (median L2 0.68 and 0.33).

    Parameters
    ----------
    **params
        :class:`~mlthreat.assess.techniques._evasion.EvasionRun`'s (``norm`` minimised by the
        crafting and the walk; default L2) and:
    proxy : {"mlp", "logreg"}, default "mlp"
    distill : bool, default True
        Train the proxy on the target's scores when it returns them.
    theft_queries : int, default 500
        Most pool rows sent to steal the proxy.
    max_iter : int, default 20
        PGD steps per ε on the proxy.
    tries : int, default 3
        Sends per sample until one transfers.
    warm_iter : int, default 10
        HopSkipJump iteration the walk's schedules start at (0: ART's cold schedule, whose
        first steps undo a good start).
    walk_iter : int, default 40
        Most walk iterations per sample.
    init_eval, max_eval : int, default 5, 200
        Probes per boundary-normal estimate at iteration t: ``min(init_eval·√(t+1), max_eval)``.
    queries_per_sample : int, default 500
        Most walk queries per sample.
    tol : float, default 0.02
    patience : int, default 2
        A sample stops walking when its distance fell by less than ``tol`` over ``patience``
        iterations.

    References
    ----------
    N. Papernot, P. McDaniel, I. Goodfellow, S. Jha, Z. B. Celik, A. Swami. "Practical
    Black-Box Attacks against Machine Learning". AsiaCCS 2017.
    J. Chen, M. I. Jordan, M. J. Wainwright. "HopSkipJumpAttack: A Query-Efficient
    Decision-Based Attack". IEEE S&P 2020.
    T. Brunner, F. Diehl, M. Truong Le, A. Knoll. "Guessing Smart: Biased Sampling for
    Efficient Black-Box Adversarial Attacks". ICCV 2019 (a surrogate's examples as the
    starting points of a decision-based attack).

    Examples
    --------
    >>> run = ChainEvasion(n_samples=10, queries_per_sample=300)
    >>> run.validate()
    >>> run.technique, run.related[0]
    ('AML.T0043.002', 'AML.T0024.002')
    """

    name: ClassVar[str] = "evasion-chain"
    technique: ClassVar[str] = "AML.T0043.002"
    related: ClassVar[tuple[str, ...]] = ("AML.T0024.002", "AML.T0005.001", "AML.T0043.001",
                                          "AML.T0015")
    title: ClassVar[str] = "Steal, craft, refine: minimal evasion through a stolen proxy"
    default_budget: ClassVar[int] = 12_000
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "pool": (2, "the proxy is stolen with the answers to pool rows, and the samples "
                 "attacked are pool rows")}
    defaults: ClassVar[dict[str, Any]] = {
        **EvasionRun.defaults, "proxy": "mlp", "distill": True, "theft_queries": 500,
        "max_iter": 20, "starts": 3, "tries": 3, "warm_iter": 10, "walk_iter": 40, "init_eval": 5,
        "max_eval": 200, "queries_per_sample": 500, "tol": 0.02, "patience": 2,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **EvasionRun._constraints,
        **PROXY_CONSTRAINTS,
        **dict.fromkeys(("theft_queries", "max_iter", "starts", "tries", "init_eval", "max_eval",
                         "queries_per_sample", "patience"), Interval(Integral, 1, None)),
        **dict.fromkeys(("warm_iter", "walk_iter"), Interval(Integral, 0, None)),
        "tol": Interval(Real, 0, 1, closed="neither"),
    }

    def rule(self) -> str:
        return super().rule() + (", every query counted: the theft of the proxy, the examples "
                                 "sent and the boundary walk")

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        p = self.params
        per_sample = int(p["starts"]) * (int(p["tries"]) + 6) + int(p["queries_per_sample"])
        theft = min(int(p["theft_queries"]), len(data.x_pool))
        return min(budget, theft + int(p["n_samples"]) * per_sample)

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        p = self.params
        target = ctx.target
        x, y = self._select(ctx)
        n = len(x)
        n_theft = min(int(p["theft_queries"]), ctx.budget - n * int(p["starts"]))
        if n == 0 or n_theft < 1:
            note = "" if n == 0 else f"a budget of {ctx.budget} leaves no query for theft"
            return self._finding(ctx, started, x, y, [Attacked(None, 0)] * n, note)
        theft = steal(ctx, n_theft, surrogate=p["proxy"], distill=p["distill"], client="theft")
        metrics = {"theft_queries": Metric(len(theft.answers), "queries",
                                           note="pool rows sent to train the proxy")}
        if theft.surrogate is None or len(np.unique(theft.answers.argmax(axis=1))) < 2:
            note = ("the theft got too few answers to train a proxy "
                    f"({theft.stopped or 'one class only'})")
            return self._with(self._finding(ctx, started, x, y, [Attacked(None, 0)] * n, note),
                              metrics)
        proxy = theft.surrogate
        metrics["proxy_fidelity"] = Metric(
            round(fidelity("classification", target_on_eval(ctx),
                           proxy.predict_index(ctx.data.x_eval)), 4),
            "fraction", n=len(ctx.data.x_eval),
            note="proxy agrees with the target on evaluation rows")

        box = FeatureBox.of(target)
        u = box.to_u(x)
        # candidates: per sample, an untargeted direction and targeted ones at the classes the
        # proxy ranks next; entry e belongs to sample owner[e]
        k = int(p["starts"])
        ranked = np.argsort(-proxy.scores_z(proxy.scale(x)), axis=1)
        ranked = np.array([[c for c in row if c != yi][:k - 1] for row, yi in zip(ranked, y,
                                                                                  strict=True)])
        owner = np.repeat(np.arange(n), k)
        towards = np.column_stack([np.full(n, -1), ranked]).reshape(-1)
        grid = [self.eps * _RATIO ** g for g in _GRID]
        crafted = np.empty((len(grid), len(owner), u.shape[1]))
        fooled = np.zeros((len(grid), len(owner)), dtype=bool)
        for j in range(k):
            entries = np.flatnonzero(np.arange(len(owner)) % k == j)
            aim = None if j == 0 else towards[entries]
            for g, e in enumerate(grid):
                crafted[g, entries], fooled[g, entries] = craft(
                    proxy, box, u, y, norm=p["norm"], eps=e, steps=int(p["max_iter"]),
                    towards=aim)
        smallest = np.where(fooled.any(axis=0), fooled.argmax(axis=0), len(grid) - 1)

        def to_x(rows: np.ndarray) -> np.ndarray:
            return box.to_x(rows, x.shape[1:], target.input_dtype)

        start = np.zeros((len(owner), u.shape[1]))
        sent = np.zeros(n, dtype="int64")
        landed = np.zeros(len(owner), dtype=bool)
        first = np.zeros(n, dtype=bool)
        stopped = ""
        for attempt in range(int(p["tries"])):
            todo = np.flatnonzero(~landed)
            if not len(todo) or stopped:
                break
            level = np.minimum(smallest[todo] + 1 + _RETRY_STEPS * attempt, len(grid) - 1)
            rows = crafted[level, todo]
            answers, stopped = query_rows(ctx, to_x(rows), "transfer")
            got = todo[:len(answers)]
            np.add.at(sent, owner[got], 1)
            hit = answers.argmax(axis=1) != y[owner[got]]
            landed[got[hit]] = True
            start[got[hit]] = rows[:len(answers)][hit]
            if attempt == 0:
                first[owner[got[hit]]] = True
        transfer_l2 = np.linalg.norm(start[landed] - u[owner[landed]], axis=1)

        refine = np.zeros(n, dtype="int64")
        best = u.copy()
        chosen = np.unique(owner[landed])
        walked = None
        if len(chosen) and not stopped:
            with ctx.attack("refine"):
                # each landed candidate onto the boundary; the nearest per sample walks on
                cand = np.flatnonzero(landed)
                placed = walk(self._ask(target, to_x, y[owner[cand]]), u[owner[cand]],
                              start[cand], norm=p["norm"], max_iter=0, seed=ctx.seed)
                np.add.at(refine, owner[cand], placed.queries)
                gap = np.linalg.norm(placed.best - u[owner[cand]], axis=1) if p["norm"] == "l2" \
                    else np.abs(placed.best - u[owner[cand]]).max(axis=1)
                nearest = np.array([cand[owner[cand] == i][np.argmin(gap[owner[cand] == i])]
                                    for i in chosen])
                at = {c: placed.best[j] for j, c in enumerate(cand)}
                walked = walk(self._ask(target, to_x, y[chosen]), u[chosen],
                              np.stack([at[c] for c in nearest]), norm=p["norm"],
                              warm_iter=int(p["warm_iter"]), max_iter=int(p["walk_iter"]),
                              init_eval=int(p["init_eval"]), max_eval=int(p["max_eval"]),
                              max_queries=int(p["queries_per_sample"]), tol=float(p["tol"]),
                              patience=int(p["patience"]), seed=ctx.seed, on_boundary=True)
            best[chosen] = walked.best
            refine[chosen] += walked.queries
            stopped = placed.stopped or walked.stopped
        done = np.zeros(n, dtype=bool)
        done[chosen] = True
        first_count = int(first.sum())
        found = to_x(best)
        attacked = [Attacked(found[i] if done[i] else None, int(sent[i] + refine[i]))
                    for i in range(n)]
        total = len(theft.answers) + int(sent.sum()) + int(refine.sum())
        metrics.update({
            "transfer_rate": Metric(round(first_count / n, 4), "fraction", n=n,
                                    note="samples with an example misclassified by the target "
                                         "at the first send"),
            "transfer_queries": Metric(int(sent.sum()), "queries",
                                       note=f"examples sent: {p['starts']} per sample, each "
                                            f"at most {p['tries']} times"),
            "median_l2_transferred": Metric(
                round(float(np.median(transfer_l2)), 6) if len(transfer_l2) else None,
                "L2 (relative to feature range)", n=len(transfer_l2),
                note="examples that transferred, before the boundary walk"),
            "refine_queries": Metric(int(refine.sum()), "queries",
                                     note="boundary walk, all samples"),
            "total_queries": Metric(total, "queries",
                                    note="theft + transfer + walk: all the attack sent"),
            "queries_per_sample_amortised": Metric(
                round(total / n, 2), "queries", n=n,
                note="all the attack's queries over the samples attacked (theft shared)"),
        })
        if walked is not None:
            metrics["walk_iterations_median"] = Metric(
                float(np.median(walked.iterations)), "iterations", n=len(chosen))
        note = (f"proxy ({p['proxy']}, "
                f"{'distilled on scores' if theft.distilled else 'hard labels'}) stolen with "
                f"{len(theft.answers)} queries at fidelity {metrics['proxy_fidelity'].value}; "
                f"{len(chosen)} of {n} samples transferred ({first_count} at the first send); "
                f"{metrics['queries_per_sample_amortised'].value:g} queries per sample with the "
                "theft shared")
        if stopped:
            note += f"; stopped early: {stopped}"
        return self._with(self._finding(ctx, started, x, y, attacked, note), metrics)

    @staticmethod
    def _ask(target: Target, to_x: Callable[[np.ndarray], np.ndarray], y: np.ndarray) -> Ask:
        """The walk's oracle: rows of the relative feature space, sent as inputs; adversarial
        when the target's top class is not their owner's ``y``."""
        import numpy as np

        def ask(rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
            hit: np.ndarray = np.asarray(target.predict(to_x(rows))).argmax(axis=1) != y[owners]
            return hit

        return ask

    @staticmethod
    def _with(finding: Finding, extra: dict[str, Metric]) -> Finding:
        from dataclasses import replace

        return replace(finding, metrics={**finding.metrics, **extra})
