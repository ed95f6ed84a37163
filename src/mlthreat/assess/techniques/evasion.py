"""Evasion: AML.T0043.001 Black-Box Optimization (related AML.T0015 Evade AI Model).

Decision-based attacks that need only the target's label: :class:`HopSkipJumpEvasion` and
:class:`BoundaryEvasion`, both ART attacks driven one sample at a time, each sample under its own
query account (its own ``client_id`` in the query log) and its own query budget.

:class:`EvasionRun` holds what every evasion run shares (also :mod:`.whitebox`'s): the choice of
samples, the ε rule and the metrics. An attack succeeds on a sample when the target misclassifies
a point within ε of it; an unbounded attack always ends up misclassified, so misclassification
alone is reported apart (``misclassified_rate``) and never decides the run. Perturbations are
measured relative to the feature range: each feature's change is divided by
``clip_hi - clip_lo`` before taking the L2 or L∞ norm.

Default ε for the digits demo (64 features in [0, 1]): ε_L2 = 0.75 and ε_L∞ = 0.25. A digit's
nearest digit of another class lies at L2 1.47 (5th percentile; median 1.87) and L∞ 0.56 (5th
percentile); a perturbation within half those distances leaves the point nearer its own digit
than any real digit of another class, so the true label does not change. 0.75 is also an RMS
change of 0.09 per pixel (1.5 of the original 16 grey levels); 0.25 is 4 grey levels.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.errors import QueryBudgetExceeded
from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._art import black_box_classifier
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import QueryAccount, Target

__all__ = ["BoundaryEvasion", "EvasionRun", "HopSkipJumpEvasion"]

# Relative slack on ε comparisons: an attack projected onto the ε ball lands on its surface,
# and float32 rounding may put it a hair outside.
_EPS_SLACK = 1e-5
_NORM_NAMES = {"l2": "L2", "linf": "L∞"}


def positive_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def positive_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _rate(v: Any) -> bool:
    return positive_number(v) and v <= 1


@dataclass
class _Attacked:
    """One attacked sample: the closest point the target misclassified (None: none found) and
    the queries the attack spent on it."""

    adversarial: np.ndarray | None
    queries: int


class EvasionRun(TechniqueRun):
    """What evasion runs share: the samples, the ε rule and the metrics.

    Parameters
    ----------
    n_samples : int
        Pool rows to attack, chosen at random among those the target classifies correctly
        (finding them costs evaluation queries, not attack queries).
    norm : {"l2", "linf"}
        The norm the attack minimises or is bounded in, and in which success is judged.
    eps_l2, eps_linf : float
        Perturbation budget ε in that norm, relative to the feature range (see the module
        docstring for why 0.75 and 0.25).
    min_success_rate : float
        The run ``succeeded`` when at least this fraction of the samples is misclassified
        within ε.
    """

    related: ClassVar[tuple[str, ...]] = ("AML.T0015",)
    defaults: ClassVar[dict[str, Any]] = {
        "n_samples": 20, "norm": "l2", "eps_l2": 0.75, "eps_linf": 0.25,
        "min_success_rate": 0.5,
    }
    _constraints: ClassVar[dict[str, Any]] = {
        "n_samples": (positive_int, "must be a positive integer"),
        "norm": (lambda v: v in _NORM_NAMES, "must be 'l2' or 'linf'"),
        "eps_l2": (positive_number, "must be a number > 0 (relative to the feature range)"),
        "eps_linf": (positive_number, "must be a number > 0 (relative to the feature range)"),
        "min_success_rate": (_rate, "must be a fraction in (0, 1]"),
    }

    @property
    def eps(self) -> float:
        """ε in the run's norm, relative to the feature range."""
        return float(self.params["eps_l2" if self.params["norm"] == "l2" else "eps_linf"])

    def _eps_text(self) -> str:
        norm = _NORM_NAMES[self.params["norm"]]
        return f"{norm} ≤ {self.eps:g} × feature range"

    def rule(self) -> str:
        norm = _NORM_NAMES[self.params["norm"]]
        return (f"succeeded when at least {self.params['min_success_rate']:.0%} of "
                f"{self.params['n_samples']} pool rows that the target classifies correctly are "
                f"misclassified by the target after a perturbation of {self._eps_text()} "
                f"(ε = {norm} norm of the change, each feature's change divided by its range "
                "clip_hi − clip_lo); rows left unattacked count as failures")

    def not_applicable(self, target: Target, data: AssessmentData) -> str | None:
        reason = super().not_applicable(target, data)
        if reason is None and data.y_pool is None:
            reason = "needs labels for the pool rows, to attack only correctly classified rows"
        return reason

    # -- the samples -----------------------------------------------------------------------------
    def _select(self, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n_samples`` random pool rows the target classifies correctly, and their
        score-column indices; checked in small batches under the evaluation account."""
        import numpy as np

        data, target = ctx.data, ctx.target
        assert data.y_pool is not None
        n = int(self.params["n_samples"])
        order = np.random.default_rng(ctx.seed).permutation(len(data.x_pool))
        y_index = target.class_index(data.y_pool)
        chosen: list[int] = []
        start = 0
        with ctx.evaluation():
            while len(chosen) < n and start < len(order):
                batch = order[start:start + max(2 * (n - len(chosen)), 8)]
                start += len(batch)
                labels = target.labels(data.x_pool[batch])
                chosen.extend(int(i) for i in batch[labels == y_index[batch]])
        chosen = chosen[:n]
        return data.x_pool[chosen].astype(target.input_dtype), y_index[chosen]

    # -- the result ------------------------------------------------------------------------------
    def _finding(self, ctx: RunContext, started: float, x: np.ndarray,
                 attacked: list[_Attacked], note: str = "") -> Finding:
        """Score the attacked samples (``x``: every selected row, attacked or not) by the rule."""
        import numpy as np

        n = len(x)
        if n == 0:
            return self.finding(ctx, "failed", "no pool row is classified correctly by the "
                                "target: nothing to evade", {}, started)
        scale = _scale(ctx.target)
        found = [(i, a.adversarial) for i, a in enumerate(attacked) if a.adversarial is not None]
        l2 = np.array([_distance(adv - x[i], scale, "l2") for i, adv in found])
        linf = np.array([_distance(adv - x[i], scale, "linf") for i, adv in found])
        dist = l2 if self.params["norm"] == "l2" else linf
        eps = self.eps
        grid = [eps * (k / 10) for k in range(21)]  # k = 10 is exactly ε
        curve = [int(np.sum(dist <= g * (1 + _EPS_SLACK))) / n for g in grid]
        rate = curve[10]
        unit_l2, unit_linf = "L2 (relative to feature range)", "L∞ (relative to feature range)"

        def stat(f: Any, values: np.ndarray, unit: str) -> Metric:
            return Metric(round(float(f(values)), 6) if len(values) else None, unit,
                          n=len(values))

        queries = [a.queries for a in attacked]
        metrics = {
            "success_rate_at_eps": Metric(rate, "fraction", n=n,
                                          note=f"misclassified within {self._eps_text()}"),
            "misclassified_rate": Metric(len(found) / n, "fraction", n=n,
                                         note="misclassified at any distance (unbounded)"),
            "median_l2": stat(np.median, l2, unit_l2), "mean_l2": stat(np.mean, l2, unit_l2),
            "median_linf": stat(np.median, linf, unit_linf),
            "mean_linf": stat(np.mean, linf, unit_linf),
            "queries_per_sample": Metric(round(float(np.mean(queries)), 2) if queries else None,
                                         "queries", n=len(queries)),
        }
        norm = _NORM_NAMES[self.params["norm"]]
        curves = {
            "success_vs_eps": {"x": grid, "y": curve,
                               "x_label": f"ε ({norm}, relative to feature range)",
                               "y_label": "fraction of samples misclassified within ε"},
            "perturbation_l2": {"values": [round(float(v), 6) for v in l2],
                                "x_label": unit_l2, "y_label": "samples"},
        }
        threshold = float(self.params["min_success_rate"])
        status = "succeeded" if rate >= threshold else "failed"
        median = metrics[f"median_{self.params['norm']}"].value
        reason = (f"{round(rate * n)} of {n} samples ({rate:.0%}) misclassified within "
                  f"{self._eps_text()} (rule: ≥ {threshold:.0%}); {len(found)} of {n} "
                  f"misclassified at any distance"
                  + (f", median {norm} {median:.3g}" if median is not None else "")
                  + (f"; {np.mean(queries):.0f} queries per sample" if queries else ""))
        return self.finding(ctx, status, reason + (f"; {note}" if note else ""), metrics,
                            started, curves=curves)


def _scale(target: Target) -> np.ndarray:
    """Per-feature range (clip_hi − clip_lo) [d]; constant features get 1."""
    import numpy as np

    lo, hi = target.clip_values
    d = int(np.prod(target.input_shape))
    span = np.broadcast_to(np.asarray(hi, dtype="float64") - np.asarray(lo, dtype="float64"),
                           tuple(target.input_shape)).reshape(d)
    return np.where(span > 0, span, 1.0)


def _distance(delta: np.ndarray, scale: np.ndarray, norm: str) -> float:
    """Relative L2 or L∞ norm of one perturbation ``delta`` [*input_shape]."""
    import numpy as np

    rel = np.asarray(delta, dtype="float64").reshape(-1) / scale
    return float(np.linalg.norm(rel) if norm == "l2" else np.abs(rel).max())


class _SampleBudgetSpent(Exception):
    """A sample's own query budget is used up (raised before sending anything more)."""


class _Oracle:
    """The attacker's view of the target for one sample: calls ``target.predict`` (counted and
    logged under the sample's account), refuses to go past the sample's query budget, and keeps
    the closest point (in the run's norm) the target has labelled other than the original
    class — what the attacker knows to be adversarial, whenever the attack stops."""

    def __init__(self, target: Target, x0: np.ndarray, y0: int, norm: str, cap: int,
                 account: QueryAccount) -> None:
        self.target, self.x0, self.y0, self.norm = target, x0, y0, norm
        self.cap, self.account = cap, account
        self.scale = _scale(target)
        self.best: np.ndarray | None = None
        self.best_distance = math.inf

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        x = np.asarray(x).astype(self.target.input_dtype, copy=False)
        x = x.reshape(-1, *self.target.input_shape)
        if self.account.used + len(x) > self.cap:
            raise _SampleBudgetSpent
        scores = self.target.predict(x)
        adversarial = np.flatnonzero(scores.argmax(axis=1) != self.y0)
        if len(adversarial):
            rel = (x[adversarial] - self.x0).reshape(len(adversarial), -1) / self.scale
            d = np.linalg.norm(rel, axis=1) if self.norm == "l2" else np.abs(rel).max(axis=1)
            j = int(np.argmin(d))
            if d[j] < self.best_distance:
                self.best_distance, self.best = float(d[j]), x[adversarial[j]].copy()
        return scores

    def is_adversarial(self, x: np.ndarray) -> bool:
        return bool(self(x[None]).argmax(axis=1)[0] != self.y0)


class _DecisionEvasion(EvasionRun):
    """Decision-based evasion, one sample at a time; subclasses say how to build the ART attack.

    Each sample starts from the same kind of point, drawn here with the run's seed (ART draws its
    own starting points from an unseeded ``RandomState()``, so seeding numpy does not make them
    repeatable): uniform random inputs in the feature range until the target labels one
    differently, then a 10-step binary search on the line back to the sample (what HopSkipJump
    does itself; Boundary, which does not, starts much closer). numpy's global generator, which
    ART uses for its random directions, is seeded per sample and restored afterwards.
    """

    technique: ClassVar[str] = "AML.T0043.001"
    needs_access: ClassVar[str] = "black-box"
    needs_scores: ClassVar[bool] = False
    default_budget: ClassVar[int] = 12_000
    defaults: ClassVar[dict[str, Any]] = {
        **EvasionRun.defaults, "queries_per_sample": None, "init_size": 100,
    }
    _constraints: ClassVar[dict[str, Any]] = {
        **EvasionRun._constraints,
        "queries_per_sample": (lambda v: v is None or positive_int(v),
                               "must be a positive integer (or None: budget ÷ n_samples)"),
        "init_size": (positive_int, "must be a positive integer"),
    }

    def _art_attack(self, classifier: Any) -> Any:
        """The ART evasion attack (untargeted, quiet) over ``classifier``."""
        raise NotImplementedError

    def _per_sample(self, budget: int) -> int:
        return int(self.params["queries_per_sample"] or max(1, budget // self.params["n_samples"]))

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return min(budget, self._per_sample(budget) * int(self.params["n_samples"]))

    def rule(self) -> str:
        return (super().rule() + "; each sample may use queries_per_sample queries (default: "
                "the run's budget ÷ n_samples)")

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        x, y = self._select(ctx)
        cap = self._per_sample(ctx.budget)
        seeds = np.random.SeedSequence(ctx.seed).spawn(len(x))
        attacked: list[_Attacked] = []
        note = ""
        state = np.random.get_state()
        try:
            for i in range(len(x)):
                if ctx.attack_queries >= ctx.budget:
                    note = "query budget spent"
                    break
                with ctx.attack(f"sample-{i}") as acc:
                    oracle = _Oracle(ctx.target, x[i], int(y[i]), self.params["norm"], cap, acc)
                    try:
                        self._attack_one(oracle, x[i], seeds[i])
                    except _SampleBudgetSpent:
                        pass
                    except QueryBudgetExceeded:
                        note = "query budget spent"
                attacked.append(_Attacked(oracle.best, acc.used))
                if note:
                    break
        finally:
            np.random.set_state(state)
        if note:
            missing = len(x) - len(attacked)
            note = (f"stopped: the run's query budget of {ctx.budget} ran out during sample "
                    f"{len(attacked)} of {len(x)}; the {missing} sample(s) not attacked count "
                    "as failures")
        return self._finding(ctx, started, x, attacked, note)

    def _attack_one(self, oracle: _Oracle, x0: np.ndarray, seed: Any) -> None:
        """Find a starting point, then let ART walk the boundary towards ``x0``."""
        import numpy as np

        rng = np.random.default_rng(seed)
        np.random.seed(rng.integers(2**32))
        lo, hi = (np.broadcast_to(np.asarray(v, dtype="float64"), x0.shape)
                  for v in oracle.target.clip_values)
        for _ in range(int(self.params["init_size"])):
            start = rng.uniform(lo, hi).astype(x0.dtype)
            if oracle.is_adversarial(start):
                break
        else:
            return  # no random input is labelled differently: nothing to walk from
        low, high = 0.0, 1.0
        for _ in range(10):
            mid = (low + high) / 2
            if oracle.is_adversarial((x0 + mid * (start - x0)).astype(x0.dtype)):
                high = mid
            else:
                low = mid
        start = (x0 + high * (start - x0)).astype(x0.dtype)
        attack = self._art_attack(black_box_classifier(oracle.target, oracle))
        attack.generate(x0[None], x_adv_init=start[None])


class HopSkipJumpEvasion(_DecisionEvasion):
    """HopSkipJump: label-only evasion that estimates the boundary's gradient from queries.

    Parameters
    ----------
    **params
        :class:`EvasionRun`'s, ``queries_per_sample`` (default: the run's budget ÷
        ``n_samples``), ``init_size`` (random draws allowed for a starting point), and:

    max_iter : int, default 20
        Iterations (ART default 50).
    max_eval : int, default 200
        Most queries per gradient estimate (ART default 10,000).
    init_eval : int, default 5
        Queries for the first gradient estimate, growing with √iteration (ART default 100).

    These spend about 550 queries per sample where ART's defaults spend about 24,000 (see
    MEASURED.md), at a median L2 about 1.5× larger.

    References
    ----------
    Chen, J., Jordan, M. I. & Wainwright, M. J. (2020). HopSkipJumpAttack: a query-efficient
    decision-based attack. IEEE Symposium on Security and Privacy.

    Examples
    --------
    >>> from mlthreat.assess.techniques.evasion import HopSkipJumpEvasion
    >>> run = HopSkipJumpEvasion(n_samples=5, eps_l2=0.5)
    >>> run.validate()
    >>> run.technique, run.params["max_eval"]
    ('AML.T0043.001', 200)
    """

    name: ClassVar[str] = "evasion-hopskipjump"
    title: ClassVar[str] = "Black-box evasion (HopSkipJump)"
    defaults: ClassVar[dict[str, Any]] = {
        **_DecisionEvasion.defaults, "max_iter": 20, "max_eval": 200, "init_eval": 5,
    }
    _constraints: ClassVar[dict[str, Any]] = {
        **_DecisionEvasion._constraints,
        "max_iter": (positive_int, "must be a positive integer"),
        "max_eval": (positive_int, "must be a positive integer"),
        "init_eval": (positive_int, "must be a positive integer"),
    }

    def validate(self) -> None:
        super().validate()
        if self.params["init_eval"] > self.params["max_eval"]:
            raise UsageError(f"{self.name}: parameter init_eval={self.params['init_eval']!r}: "
                             f"must not exceed max_eval={self.params['max_eval']!r}")

    def _art_attack(self, classifier: Any) -> Any:
        import numpy as np
        from art.attacks.evasion import HopSkipJump

        p = self.params
        return HopSkipJump(classifier, targeted=False,
                           norm=2 if p["norm"] == "l2" else np.inf, max_iter=int(p["max_iter"]),
                           max_eval=int(p["max_eval"]), init_eval=int(p["init_eval"]),
                           init_size=int(p["init_size"]), batch_size=256, verbose=False)


class BoundaryEvasion(_DecisionEvasion):
    """Boundary attack: label-only evasion by a random walk along the decision boundary.

    Parameters
    ----------
    **params
        :class:`EvasionRun`'s, ``queries_per_sample``, ``init_size``, and:

    max_iter : int, default 100
        Iterations (ART default 5,000: hundreds of thousands of queries per sample).
    num_trial : int, default 10
        Trials per step to adapt the step sizes (ART default 25).
    sample_size : int, default 10
        Random directions tried per trial (ART default 20).

    The attack minimises L2; ``norm="linf"`` judges its result in L∞.

    References
    ----------
    Brendel, W., Rauber, J. & Bethge, M. (2018). Decision-based adversarial attacks: reliable
    attacks against black-box machine learning models. ICLR.

    Examples
    --------
    >>> from mlthreat.assess.techniques.evasion import BoundaryEvasion
    >>> BoundaryEvasion().name
    'evasion-boundary'
    """

    name: ClassVar[str] = "evasion-boundary"
    title: ClassVar[str] = "Black-box evasion (Boundary)"
    defaults: ClassVar[dict[str, Any]] = {
        **_DecisionEvasion.defaults, "max_iter": 100, "num_trial": 10, "sample_size": 10,
    }
    _constraints: ClassVar[dict[str, Any]] = {
        **_DecisionEvasion._constraints,
        "max_iter": (positive_int, "must be a positive integer"),
        "num_trial": (positive_int, "must be a positive integer"),
        "sample_size": (positive_int, "must be a positive integer"),
    }

    def _art_attack(self, classifier: Any) -> Any:
        from art.attacks.evasion import BoundaryAttack

        p = self.params
        return BoundaryAttack(classifier, targeted=False, max_iter=int(p["max_iter"]),
                              num_trial=int(p["num_trial"]), sample_size=int(p["sample_size"]),
                              init_size=int(p["init_size"]), batch_size=256, verbose=False)
