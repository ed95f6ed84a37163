"""Evasion: AML.T0043.001 Black-Box Optimization (related AML.T0015 Evade AI Model).

Decision-based attacks that need only the target's label: :class:`HopSkipJumpEvasion` and
:class:`BoundaryEvasion`, both ART attacks driven one sample at a time, each sample under its own
query account (its own ``client_id`` in the query log) and its own query budget. The samples,
the ε rule (defaults ε_L2 = 0.75, ε_L∞ = 0.25 relative to the feature range, and why) and the
metrics are :class:`~mlthreat.assess.techniques._evasion.EvasionRun`'s.
"""

from __future__ import annotations

import math
import time
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.errors import QueryBudgetExceeded
from mlthreat.assess.finding import Finding
from mlthreat.assess.techniques._art import black_box_classifier
from mlthreat.assess.techniques._evasion import (
    Attacked,
    EvasionRun,
    feature_scale,
)
from mlthreat.constraints import Interval, Null, Rule, Spec

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import QueryAccount, Target
    from mlthreat.assess.techniques.base import RunContext

__all__ = ["BoundaryEvasion", "HopSkipJumpEvasion"]


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
        self.scale = feature_scale(target)
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
    does itself; for Boundary, 20 samples on each demo target showed no difference from ART's
    own start beyond seed-to-seed noise). numpy's global generator, which ART uses for its random
    directions, is seeded per sample and restored afterwards.

    The result for a sample is the closest point the target labelled differently among all the
    sample's queries (ART's HopSkipJump often ends a little farther out than a point it passed).
    When the sample's query budget runs out the attack stops there, with that point.
    """

    technique: ClassVar[str] = "AML.T0043.001"
    needs_access: ClassVar[str] = "black-box"
    needs_scores: ClassVar[bool] = False
    default_budget: ClassVar[int] = 12_000
    defaults: ClassVar[dict[str, Any]] = {
        **EvasionRun.defaults, "queries_per_sample": None, "init_size": 100,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **EvasionRun._constraints,
        "queries_per_sample": [Null("budget ÷ n_samples"), Interval(Integral, 1, None)],
        "init_size": Interval(Integral, 1, None),
    }

    def _art_attack(self, classifier: Any) -> Any:
        """The ART evasion attack (untargeted, quiet) over ``classifier``."""
        raise NotImplementedError

    def _per_sample(self, budget: int) -> int:
        return int(self.params["queries_per_sample"] or max(1, budget // self.params["n_samples"]))

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return min(budget, self._per_sample(budget) * int(self.params["n_samples"]))

    def rule(self) -> str:
        per_sample = self.params["queries_per_sample"]
        return super().rule() + (f"; each sample may use {per_sample} queries" if per_sample
                                 else "; each sample may use the run's budget ÷ n_samples "
                                 "queries")

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        x, y = self._select(ctx)
        cap = self._per_sample(ctx.budget)
        seeds = np.random.SeedSequence(ctx.seed).spawn(len(x))
        attacked: list[Attacked] = []
        cut, stopped = 0, False
        state = np.random.get_state()
        try:
            for i in range(len(x)):
                if ctx.attack_queries >= ctx.budget:
                    stopped = True
                    break
                with ctx.attack(f"sample-{i}") as acc:
                    oracle = _Oracle(ctx.target, x[i], int(y[i]), self.params["norm"], cap, acc)
                    try:
                        self._attack_one(oracle, x[i], seeds[i])
                    except _SampleBudgetSpent:
                        cut += 1
                    except QueryBudgetExceeded:
                        stopped = True
                attacked.append(Attacked(oracle.best, acc.used))
                if stopped:
                    break
        finally:
            np.random.set_state(state)
        notes = []
        if cut:
            notes.append(f"{cut} of {len(attacked)} attacked samples stopped at their query "
                         f"budget of {cap}")
        if stopped:
            notes.append(f"stopped: the run's query budget of {ctx.budget} ran out during "
                         f"sample {len(attacked)} of {len(x)}; the {len(x) - len(attacked)} "
                         "sample(s) not attacked count as failures")
        return self._finding(ctx, started, x, y, attacked, "; ".join(notes))

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
    MEASURED.md), at a median L2 about 1.5 times larger.

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
    _constraints: ClassVar[dict[str, Spec]] = {
        **_DecisionEvasion._constraints,
        **dict.fromkeys(("max_iter", "max_eval", "init_eval"), Interval(Integral, 1, None)),
    }
    _rules: ClassVar[tuple[Rule, ...]] = (
        Rule("init_eval", lambda p: p["init_eval"] <= p["max_eval"],
             "at most max_eval ({max_eval!r})"),)

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

    max_iter : int, default 200
        Most iterations (ART default 5,000: hundreds of thousands of queries per sample). An
        iteration costs about 6 to 10 queries, so the per-sample query budget usually ends the
        walk first.
    num_trial : int, default 10
        Trials per step to adapt the step sizes (ART default 25).
    sample_size : int, default 5
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
        **_DecisionEvasion.defaults, "max_iter": 200, "num_trial": 10, "sample_size": 5,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **_DecisionEvasion._constraints,
        **dict.fromkeys(("max_iter", "num_trial", "sample_size"), Interval(Integral, 1, None)),
    }

    def _art_attack(self, classifier: Any) -> Any:
        from art.attacks.evasion import BoundaryAttack

        p = self.params
        return BoundaryAttack(classifier, targeted=False, max_iter=int(p["max_iter"]),
                              num_trial=int(p["num_trial"]), sample_size=int(p["sample_size"]),
                              init_size=int(p["init_size"]), batch_size=256, verbose=False)
