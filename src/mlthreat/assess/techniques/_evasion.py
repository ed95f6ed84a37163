"""What every evasion run shares: the samples attacked, the ε rule, and the metrics.

:class:`EvasionRun` is the base of the black-box runs in :mod:`.evasion` and the white-box run in
:mod:`.whitebox` (and of any other evasion run: a transfer attack judged by the same rule). An
attack succeeds on a sample when the target misclassifies a point within ε of it; an unbounded
attack always ends up misclassified, so misclassification alone is reported apart
(``misclassified_rate``) and never decides the run. Perturbations are measured relative to the
feature range: each feature's change is divided by ``clip_hi - clip_lo`` before taking the L2
or L∞ norm.

Default ε for the digits demo (64 features in [0, 1]): ε_L2 = 0.75 and ε_L∞ = 0.25. A digit's
nearest digit of another class lies at L2 1.47 (5th percentile; median 1.87) and L∞ 0.56 (5th
percentile); a perturbation within half those distances leaves the point nearer its own digit
than any real digit of another class, so the true label does not change. 0.75 is also an RMS
change of 0.09 per pixel (1.5 of the original 16 grey levels); 0.25 is 4 grey levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.constraints import Interval, Options, Spec

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target

__all__ = ["Attacked", "EvasionRun", "FeatureBox", "distance", "feature_scale"]

# Relative slack on ε comparisons: an attack projected onto the ε ball lands on its surface,
# and float32 rounding may put it a hair outside.
_EPS_SLACK = 1e-5
_NORM_NAMES = {"l2": "L2", "linf": "L∞"}


@dataclass
class Attacked:
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
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "pool": (1, "the samples attacked are pool rows the target classifies correctly")}
    defaults: ClassVar[dict[str, Any]] = {
        "n_samples": 20, "norm": "l2", "eps_l2": 0.75, "eps_linf": 0.25,
        "min_success_rate": 0.5,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        "n_samples": Interval(Integral, 1, None),
        "norm": Options(*_NORM_NAMES),
        **dict.fromkeys(("eps_l2", "eps_linf"), Interval(
            Real, 0, None, closed="neither", note="relative to the feature range")),
        "min_success_rate": Interval(Real, 0, 1, closed="right"),
    }

    @property
    def eps(self) -> float:
        """ε in the run's norm, relative to the feature range."""
        return float(self.params["eps_l2" if self.params["norm"] == "l2" else "eps_linf"])

    def _eps_text(self) -> str:
        norm = _NORM_NAMES[self.params["norm"]]
        return f"{norm} ≤ {self.eps:g} of the feature range"

    def rule(self) -> str:
        norm = _NORM_NAMES[self.params["norm"]]
        return (f"succeeded when at least {self.params['min_success_rate']:.0%} of "
                f"{self.params['n_samples']} pool rows that the target classifies correctly are "
                f"misclassified by the target after a perturbation of {self._eps_text()} "
                f"(ε = {norm} norm of the change, each feature's change divided by its range "
                "clip_hi - clip_lo); rows left unattacked count as failures")

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
    def _finding(self, ctx: RunContext, started: float, x: np.ndarray, y: np.ndarray,
                 attacked: list[Attacked], note: str = "") -> Finding:
        """Score the attacked samples (``x``: every selected row, attacked or not; ``y`` their
        score-column indices) by the rule; with a feature domain, also their feasible
        success (:meth:`_feasible`)."""
        import numpy as np

        from mlthreat.assess.metrics import clopper_pearson

        n = len(x)
        if n == 0:
            return self.finding(ctx, "failed", "no pool row is classified correctly by the "
                                "target: nothing to evade", {}, started)
        scale = feature_scale(ctx.target)
        found = [(i, a.adversarial) for i, a in enumerate(attacked) if a.adversarial is not None]
        l2 = np.array([distance(adv - x[i], scale, "l2") for i, adv in found])
        linf = np.array([distance(adv - x[i], scale, "linf") for i, adv in found])
        dist = l2 if self.params["norm"] == "l2" else linf
        eps = self.eps
        grid = [eps * (k / 10) for k in range(21)]  # k = 10 is exactly ε
        counts = [int(np.sum(dist <= g * (1 + _EPS_SLACK))) for g in grid]
        curve = [c / n for c in counts]
        rate = curve[10]
        unit_l2, unit_linf = "L2 (relative to feature range)", "L∞ (relative to feature range)"

        def stat(f: Any, values: np.ndarray, unit: str) -> Metric:
            return Metric(round(float(f(values)), 6) if len(values) else None, unit,
                          n=len(values))

        def fraction(k: int, note: str) -> Metric:
            low, high = clopper_pearson(k, n)
            return Metric(k / n, "fraction", n=n, ci=(round(low, 4), round(high, 4)), note=note)

        queries = [a.queries for a in attacked]
        metrics = {
            "success_rate_at_eps": fraction(counts[10],
                                            f"misclassified within {self._eps_text()}"),
            "misclassified_rate": fraction(len(found), "misclassified at any distance "
                                           "(unbounded)"),
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
        if ctx.data.domain is not None and found:
            metrics.update(self._feasible(ctx, x, y, found, scale, eps, n))
        threshold = float(self.params["min_success_rate"])
        status = "succeeded" if rate >= threshold else "failed"
        median = metrics[f"median_{self.params['norm']}"].value
        reason = (f"{counts[10]} of {n} samples ({rate:.0%}) misclassified within "
                  f"{self._eps_text()} (rule: ≥ {threshold:.0%}); {len(found)} of {n} "
                  f"misclassified at any distance"
                  + (f", median {norm} {median:.3g}" if median is not None else "")
                  + (f"; {np.mean(queries):.0f} queries per sample" if queries else ""))
        return self.finding(ctx, status, reason + (f"; {note}" if note else ""), metrics,
                            started, curves=curves)

    def _feasible(self, ctx: RunContext, x: np.ndarray, y: np.ndarray,
                  found: list[tuple[int, np.ndarray]], scale: np.ndarray, eps: float,
                  n: int) -> dict[str, Metric]:
        """Feasible success: each adversarial row projected onto the data's feature domain
        (constants reset, integers rounded, one-hot groups made one-hot, bounds clipped) and,
        where that changed it, sent to the target again under the evaluation account; a
        sample counts when the projected row is still misclassified within ε. Also the share
        of adversarial rows that left the domain."""
        import numpy as np

        from mlthreat.assess.metrics import clopper_pearson

        domain = ctx.data.domain
        assert domain is not None
        target = ctx.target
        rows = np.stack([adv.reshape(-1) for _, adv in found])
        outside = domain.violations(rows)
        projected = domain.project(rows)
        fooled = np.ones(len(found), dtype=bool)
        if outside.any():
            shape = (int(outside.sum()), *target.input_shape)
            with ctx.evaluation():
                labels = target.labels(projected[outside].reshape(shape))
            fooled[outside] = labels != y[[i for i, _ in found]][outside]
        norm = self.params["norm"]
        dist = np.array([distance(p - x[i].reshape(-1), scale, norm)
                         for (i, _), p in zip(found, projected, strict=True)])
        k = int(np.sum(fooled & (dist <= eps * (1 + _EPS_SLACK))))
        low, high = clopper_pearson(k, n)
        v = int(outside.sum())
        v_low, v_high = clopper_pearson(v, len(found))
        return {
            "feasible_success_rate_at_eps": Metric(
                k / n, "fraction", n=n, ci=(round(low, 4), round(high, 4)),
                note=f"misclassified within {self._eps_text()} after projection onto the "
                     f"feature domain ({domain.source}), re-checked on the target"),
            "domain_violation_rate": Metric(
                round(v / len(found), 4), "fraction", n=len(found),
                ci=(round(v_low, 4), round(v_high, 4)),
                note="adversarial rows outside the feature domain (a constant moved, a "
                     "non-integer in an integer column, a broken one-hot group, out of bounds)"),
        }


@dataclass(frozen=True)
class FeatureBox:
    """The target's feature range, flattened to [d] float64 arrays: ``lo``, ``hi`` and
    ``scale`` (``hi - lo``, 1 for a constant feature). Maps inputs to the relative feature
    space ``u = (x - lo) / scale``, where ε is measured, and back."""

    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, target: Target) -> FeatureBox:
        import numpy as np

        shape = tuple(target.input_shape)
        lo, hi = (np.broadcast_to(np.asarray(v, dtype="float64"), shape).reshape(-1)
                  for v in target.clip_values)
        return cls(lo, hi, feature_scale(target))

    def to_u(self, x: Any) -> np.ndarray:
        """Inputs [n, ...] → relative rows [n, d]."""
        import numpy as np

        x = np.asarray(x, dtype="float64")
        u: np.ndarray = (x.reshape(len(x), -1) - self.lo) / self.scale
        return u

    def to_x(self, u: np.ndarray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Relative rows [n, d] → inputs [n, *shape] of ``dtype``, clipped to the range (a
        constant feature, scale 1 here, stays where the data has it)."""
        import numpy as np

        x: np.ndarray = np.clip(self.lo + np.asarray(u, dtype="float64") * self.scale, self.lo,
                                self.hi)
        return x.reshape(len(x), *shape).astype(dtype)


def feature_scale(target: Target) -> np.ndarray:
    """Per-feature range (clip_hi - clip_lo) [d]; constant features get 1."""
    import numpy as np

    lo, hi = target.clip_values
    d = int(np.prod(target.input_shape))
    span = np.broadcast_to(np.asarray(hi, dtype="float64") - np.asarray(lo, dtype="float64"),
                           tuple(target.input_shape)).reshape(d)
    return np.where(span > 0, span, 1.0)


def distance(delta: np.ndarray, scale: np.ndarray, norm: str) -> float:
    """Relative L2 or L∞ norm of one perturbation ``delta`` [*input_shape]."""
    import numpy as np

    rel = np.asarray(delta, dtype="float64").reshape(-1) / scale
    return float(np.linalg.norm(rel) if norm == "l2" else np.abs(rel).max())
