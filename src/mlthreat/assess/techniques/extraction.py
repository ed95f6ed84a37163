"""Extract AI Model (AML.T0024.002) by training a surrogate, or by solving equations.

Two runs, both demonstrating Train Proxy via Replication (AML.T0005.001):

* :class:`SurrogateExtraction` queries the target with the attacker's pool rows and trains a
  surrogate on the answers, with :func:`~mlthreat.assess.techniques._surrogate.steal` (which
  the transfer run calls too, to get its proxy).
* :class:`EquationSolvingExtraction` recovers a logistic (or linear) model exactly from d+1
  score queries (Tramèr et al. 2016).

Fidelity is always measured on the held-out evaluation rows, with queries accounted as
``evaluation``; the attack's own queries stay within the run's budget.
"""

from __future__ import annotations

import time
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._surrogate import (
    STRATEGIES,
    SURROGATES,
    Surrogate,
    bounds,
    fidelity,
    fit_surrogate,
    query_rows,
    steal,
    target_on_eval,
)
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.constraints import Interval, ListOf, Options, Spec

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target

__all__ = ["EquationSolvingExtraction", "SurrogateExtraction", "hadamard_design"]


def hadamard_design(d: int) -> np.ndarray:
    """The leading (d+1) by d block of a Sylvester-Hadamard matrix without its all-ones first
    column: ±1 rows that, with an intercept column, form a well-conditioned square system
    (condition number 1 when d+1 is a power of two, at most 32 for d ≤ 1000)."""
    import numpy as np

    i = np.arange(d + 1)[:, None]
    j = np.arange(1, d + 1)[None, :]
    design: np.ndarray = 1.0 - 2.0 * (np.bitwise_count(i & j) % 2)
    return design


class SurrogateExtraction(TechniqueRun):
    """Steal a model by training a surrogate on its answers to the attacker's pool rows.

    Pool rows (up to the budget) are sent and a surrogate is trained on the answers:
    regressing the target's log-scores when it returns scores (``distill``) and a check on the
    thief's own held-out answers says that pays, on its top labels otherwise (see
    :mod:`._surrogate`). Which rows: with the budget below the pool and ``strategy`` set to
    ``uncertainty`` (a classifier), ``rounds`` equal rounds, the first at random and each
    later one the rows the surrogate so far is least sure about (smallest margin between its
    two top classes); otherwise rows in an order fixed by the seed. Fidelity is the agreement
    with the target on the evaluation rows (R² for a regression target); the
    fidelity-against-queries curve (``curves["fidelity_vs_queries"]``) gives it for the
    surrogate after each round (active), or for surrogates trained on the first
    ``curve_fractions`` of the answers (random order); neither costs extra queries.
    On the digits demo MLP: 0.987 with 447 queries distilled (0.940 from labels); 0.964 with
    50 queries chosen by uncertainty in 5 rounds, against 0.944 with 50 random rows.

    Parameters
    ----------
    surrogate : {"mlp", "logreg", "rf"}, default "mlp"
        MLP with ``hidden`` units, logistic regression (a least-squares linear model for a
        regression target), or random forest of 100 trees.
    distill : bool, default True
        Train on the scores when the target returns them.
    hidden : int, default 64
    min_fidelity : float, default 0.9
        The rule: succeeded when fidelity (or R²) on the evaluation rows reaches this.
    strategy : {"uncertainty", "random"}, default "uncertainty"
        How rows are chosen when the budget is below the pool (a regression target: random).
    rounds : int, default 5
        Query rounds of the uncertainty strategy (each a surrogate training, no queries);
        random order when the budget is under two rows per round.
    curve_fractions : tuple of float, default (0.25, 0.5, 1.0)
        Fractions of the answers the fidelity-against-queries curve is measured at, when the
        rows are sent in random order.

    References
    ----------
    F. Tramèr, F. Zhang, A. Juels, M. K. Reiter, T. Ristenpart. "Stealing Machine Learning
    Models via Prediction APIs". USENIX Security 2016.
    N. Papernot, P. McDaniel, I. Goodfellow, S. Jha, Z. B. Celik, A. Swami. "Practical
    Black-Box Attacks against Machine Learning". AsiaCCS 2017.

    Examples
    --------
    >>> from mlthreat.assess.data import digits_demo
    >>> from mlthreat.assess.demo import demo_targets
    >>> data = digits_demo(); target = demo_targets(data)[1]
    >>> ctx = RunContext(target, data, budget=447, run_name="extraction-surrogate",
    ...                  technique=SurrogateExtraction.technique)
    >>> SurrogateExtraction().run(ctx).metrics["fidelity"].value > 0.9
    True
    """

    name = "extraction-surrogate"
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "pool": (2, "the surrogate learns from the answers to pool rows"),
        "eval": (1, "fidelity is agreement with the target on evaluation rows")}
    technique = "AML.T0024.002"
    related = ("AML.T0005.001",)
    title = "Extract AI Model: surrogate trained on query answers"
    tasks = ("classification", "regression")
    default_budget = 1_000
    defaults: ClassVar[dict[str, Any]] = {
        "surrogate": "mlp", "distill": True, "hidden": 64, "min_fidelity": 0.9,
        "curve_fractions": (0.25, 0.5, 1.0), "strategy": "uncertainty", "rounds": 5,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        "surrogate": Options(*SURROGATES),
        "distill": "boolean",
        **dict.fromkeys(("hidden", "rounds"), Interval(Integral, 1, None)),
        "min_fidelity": Interval(Real, 0, 1),
        "strategy": Options(*STRATEGIES),
        "curve_fractions": ListOf(Interval(Real, 0, 1, closed="right")),
    }

    def rule(self) -> str:
        return (f"succeeded when the surrogate agrees with the target on at least "
                f"{self.params['min_fidelity']:.0%} of the evaluation rows (R² ≥ "
                f"{self.params['min_fidelity']} for a regression target)")

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return min(budget, len(data.x_pool))

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        self.validate()
        started = time.perf_counter()
        p, target, data = self.params, ctx.target, ctx.data
        theft = steal(ctx, min(ctx.budget, len(data.x_pool)), surrogate=p["surrogate"],
                      distill=p["distill"], hidden=p["hidden"], strategy=p["strategy"],
                      rounds=p["rounds"])
        n = len(theft.answers)
        if theft.surrogate is None:
            return self.finding(ctx, "failed", f"no query answered ({theft.stopped or 'budget 0'})",
                                {"queries": Metric(0, "queries")}, started)
        regression = target.task == "regression"
        t_eval = target_on_eval(ctx)

        def predict(s: Surrogate) -> np.ndarray:
            return s.predict_values(data.x_eval) if regression else s.predict_index(data.x_eval)

        lo, span = bounds(data)
        if theft.rounds is not None:  # active: the surrogate the thief had after each round
            sizes = [m for m, _ in theft.rounds] + [n]
            curve = [fidelity(target.task, t_eval, predict(s)) for _, s in theft.rounds]
            curve.append(fidelity(target.task, t_eval, predict(theft.surrogate)))
        else:
            sizes = sorted({max(1, round(f * n)) for f in p["curve_fractions"]} | {n})
            curve = []
        for m in sizes if theft.rounds is None else ():
            s = theft.surrogate if m == n else fit_surrogate(
                p["surrogate"], theft.x[:m], theft.answers[:m], task=target.task,
                distill=theft.distilled, n_classes=target.n_classes, lo=lo, span=span,
                seed=ctx.seed, hidden=p["hidden"])
            curve.append(fidelity(target.task, t_eval, predict(s)))
        fid = curve[-1]
        n_eval = len(data.x_eval)
        unit = "R2" if regression else "fraction"
        metrics = {
            "fidelity": Metric(round(fid, 4), unit, n=n_eval,
                               note="R² of surrogate vs target outputs" if regression else
                               "agreement with the target's top class on evaluation rows"),
            "queries": Metric(n, "queries"),
        }
        if not regression:
            note = "trained on " + ("scores" if theft.distilled else "top labels")
            if theft.check:
                note += (f"; held-out agreement learning from scores {theft.check[0]:.3f}, "
                         f"from labels {theft.check[1]:.3f}")
            metrics["distilled"] = Metric(int(theft.distilled), "bool", note=note)
        if data.y_eval is not None:
            mine = predict(theft.surrogate)
            if regression:
                from sklearn.metrics import r2_score

                metrics["surrogate_r2"] = Metric(
                    round(float(r2_score(np.asarray(data.y_eval, dtype="float64"), mine)), 4),
                    "R2", n=n_eval, note="surrogate vs ground truth")
            else:
                acc = float(np.mean(mine == target.class_index(data.y_eval)))
                metrics["surrogate_accuracy"] = Metric(round(acc, 4), "fraction", n=n_eval)
                metrics["target_accuracy"] = Metric(round(float(np.mean(
                    t_eval.argmax(axis=1) == target.class_index(data.y_eval))), 4),
                    "fraction", n=n_eval)
        curves = {"fidelity_vs_queries": {
            "x": sizes, "y": [round(v, 4) for v in curve], "x_label": "queries",
            "y_label": "R²" if regression else "fidelity"}}
        ok = fid >= p["min_fidelity"]
        how = "on outputs" if regression else \
            "distilled on scores" if theft.distilled else "hard labels"
        if theft.rounds is not None:
            how += f"; rows chosen by uncertainty in {len(theft.rounds) + 1} rounds"
        reason = (f"surrogate ({p['surrogate']}, {how}) reached "
                  f"{'R²' if regression else 'fidelity'} {fid:.3f} with {n} queries "
                  f"({'≥' if ok else '<'} {p['min_fidelity']})")
        if theft.stopped:
            reason += f"; {theft.stopped}"
        return self.finding(ctx, "succeeded" if ok else "failed", reason, metrics, started,
                            curves=curves)


class EquationSolvingExtraction(TechniqueRun):
    """Recover a logistic regression exactly from d+1 score queries.

    For a (multinomial) logistic regression, ``log(p_i / p_0) = (w_i - w_0)·x + (b_i - b_0)``
    is linear in ``x``: d+1 queries at linearly independent points give d+1 equations per
    class, which determine the weights up to the softmax's shift (all that predictions need).
    A binary model is the case of two classes; a regression target's outputs are solved for
    ``w·x + b`` directly. The points are the rows of a Sylvester-Hadamard design
    (:func:`hadamard_design`) placed at the centre of the feature range ± ``scale`` of its
    half-width, so the answers are neither saturated nor ill-conditioned: 2.9e-7 relative
    weight error on the demo's logistic regression (whose float32 arithmetic is the floor),
    against 7e-6 from uniformly random points and worse from real rows.

    The attacker does not know the model is linear: the run applies to any target with scores,
    and the fidelity decides. Succeeded when the recovered model agrees with the target on at
    least ``min_fidelity`` of the evaluation rows: then the target is linear-logistic and fully
    extracted.

    Parameters
    ----------
    scale : float, default 0.5
        Query points lie at centre ± scale times half the feature range.
    min_fidelity : float, default 0.999

    References
    ----------
    F. Tramèr, F. Zhang, A. Juels, M. K. Reiter, T. Ristenpart. "Stealing Machine Learning
    Models via Prediction APIs". USENIX Security 2016, section 4.1 (equation-solving attacks).

    Examples
    --------
    >>> from mlthreat.assess.data import digits_demo
    >>> from mlthreat.assess.demo import demo_targets
    >>> data = digits_demo(); target = demo_targets(data)[0]
    >>> ctx = RunContext(target, data, budget=1000, run_name="extraction-equations",
    ...                  technique=EquationSolvingExtraction.technique)
    >>> f = EquationSolvingExtraction().run(ctx)
    >>> f.queries, f.metrics["fidelity"].value
    (65, 1.0)
    """

    name = "extraction-equations"
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "eval": (1, "fidelity is agreement with the target on evaluation rows")}
    technique = "AML.T0024.002"
    related = ("AML.T0005.001",)
    title = "Extract AI Model: equation-solving (Tramèr et al. 2016)"
    needs_scores = True
    tasks = ("classification", "regression")
    default_budget = 10_000
    defaults: ClassVar[dict[str, Any]] = {"scale": 0.5, "min_fidelity": 0.999}
    _constraints: ClassVar[dict[str, Spec]] = {
        "scale": Interval(Real, 0, 1, closed="right"),
        "min_fidelity": Interval(Real, 0, 1),
    }

    def rule(self) -> str:
        return (f"succeeded when the model solved from d+1 queries agrees with the target on at "
                f"least {self.params['min_fidelity']:.1%} of the evaluation rows (R² for a "
                "regression target): the target is linear-logistic and extracted")

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        import numpy as np

        return min(budget, _ROUNDS * (int(np.prod(target.input_shape)) + 1))

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        self.validate()
        started = time.perf_counter()
        target, data = ctx.target, ctx.data
        why = self.not_applicable(target, data)
        if why:
            return self.finding(ctx, "not-applicable", why, {}, started)
        d = int(np.prod(target.input_shape))
        if ctx.budget < d + 1:
            return self.finding(ctx, "failed", f"needs d+1 = {d + 1} queries; the budget allows "
                                f"{ctx.budget}", {"queries": Metric(0, "queries")}, started)
        lo, span = bounds(data)
        centre, half = lo + 0.5 * span, 0.5 * span
        regression = target.task == "regression"
        xs: list[np.ndarray] = []
        got: list[np.ndarray] = []
        scale = float(self.params["scale"])
        solved = None
        for _ in range(_ROUNDS if not regression else 1):
            x = (centre + hadamard_design(d) * half * scale).astype(target.input_dtype)
            answers, stopped = query_rows(ctx, x.reshape((d + 1, *target.input_shape)))
            if stopped and not xs:
                return self.finding(ctx, "failed", stopped, {"queries": Metric(
                    len(answers), "queries")}, started)
            if stopped:
                break
            xs.append(x.astype("float64").reshape(d + 1, d))
            got.append(np.asarray(answers, dtype="float64").reshape(d + 1, -1))
            solved = _solve(np.vstack(xs), np.vstack(got), centre, half, regression)
            if solved is not None:
                break
            floored = [int((g <= _FLOOR).any(axis=1).sum()) for g in got]
            if len(floored) > 1 and floored[-1] >= floored[-2]:
                break  # a logistic model's scores leave the floor nearer the centre; not these
            scale /= 4  # saturated answers: ask again nearer the centre
        saturated: np.ndarray = np.asarray((np.vstack(got) <= _FLOOR).any(axis=1)) \
            if not regression else np.zeros(len(got[0]), dtype=bool)
        floor_note = ""
        if solved is None:  # best effort: every answer, its zeros clipped to the floor
            solved = _solve(np.vstack(xs), np.vstack(got), centre, half, regression,
                            strict=False)
            floor_note = (f"; {int(saturated.sum())} of {len(saturated)} answers hold scores "
                          "of 0 (at the floating-point floor) that stay nearer the centre of "
                          "the feature range, which a logistic regression's do not")
        assert solved is not None  # without strict every equation counts: never None
        w, b = solved

        t_eval = target_on_eval(ctx)
        xe = np.asarray(data.x_eval).astype(target.input_dtype).astype("float64")
        xe = xe.reshape(len(xe), -1)
        recovered = xe @ w + b
        if regression:
            fid = fidelity("regression", t_eval, recovered[:, 0])
        else:
            fid = fidelity("classification", t_eval, np.hstack(
                [np.zeros((len(xe), 1)), recovered]).argmax(axis=1))
        ok = fid >= self.params["min_fidelity"]
        metrics = {
            "fidelity": Metric(round(fid, 6), "R2" if regression else "fraction",
                               n=len(xe)),
            "queries": Metric(ctx.attack_queries, "queries",
                              note=f"{len(xs)} round(s) of d+1 with d = {d}"),
            "saturated_answers": Metric(int(saturated.sum()), "queries",
                                        note="answers with a score at the floating-point floor"),
        }
        if ok and regression:
            metrics["max_abs_error"] = Metric(
                float(np.abs(recovered[:, 0] - t_eval).max()), "output", n=len(xe),
                note="recovered vs target outputs on evaluation rows")
        elif ok:
            # Log-ratios of tiny scores carry the target's rounding (binary models compute the
            # small score as 1 - p): compare logits where every score is at least 1e-4, and
            # scores everywhere.
            truth, _ = _linear_outputs(t_eval, regression)
            keep = np.asarray(t_eval).min(axis=1) >= 1e-4
            logits = np.hstack([np.zeros((len(xe), 1)), recovered])
            scores = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
            metrics["max_abs_error"] = Metric(
                float(np.abs(recovered[keep] - truth[keep]).max()) if keep.any() else None,
                "logit", n=int(keep.sum()), note="recovered vs target log-score ratios on "
                "evaluation rows whose scores are all at least 1e-4")
            metrics["max_score_error"] = Metric(
                float(np.abs(scores - t_eval).max()), "score", n=len(xe),
                note="recovered vs target scores on evaluation rows")
        true_w = _true_weights(target)
        if true_w is not None and true_w[0].shape == w.shape:
            tw, tb = true_w
            err = np.linalg.norm(np.vstack([w - tw, b - tb])) / np.linalg.norm(np.vstack([tw, tb]))
            metrics["weight_error"] = Metric(float(err), "relative L2",
                                             note="vs the white-box coefficients, shift fixed")
        evidence = {}
        if ctx.evidence_dir is not None and ok:
            from pathlib import Path

            path = Path(ctx.evidence_dir) / f"{ctx.run_name or self.name}-weights.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, weights=w, intercepts=b)
            evidence["recovered_weights"] = str(path)
        kind = "linear model" if regression else "logistic regression"
        reason = (f"recovered a {kind} from {ctx.attack_queries} queries; fidelity {fid:.4f} "
                  + ("≥" if ok else "<") + f" {self.params['min_fidelity']}"
                  + ("" if ok else f": the target is not a {kind} over its inputs")
                  + floor_note)
        return self.finding(ctx, "succeeded" if ok else "failed", reason, metrics, started,
                            evidence=evidence)


_ROUNDS = 3  # designs at scale, scale/4, scale/16 while answers are saturated
_FLOOR = 1e-30  # scores at or below this (float32 underflow: 0 or denormal) give no equation


def _solve(x: np.ndarray, p: np.ndarray, centre: np.ndarray, half: np.ndarray,
           regression: bool, strict: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights [d, k-1] and intercepts [k-1] of ``log(p_i / p_0)`` (or ``w·x + b`` for a
    regressor, [d, 1] and [1]) from query points ``x`` [n, d] and answers ``p`` [n, k]; None
    when some class has fewer than d+1 independent usable equations (with ``strict=False``
    every equation is used, scores at the floor clipped to it: a best effort).

    An equation needs both scores it compares above :data:`_FLOOR`. The log-ratios are taken
    against the class with the most usable answers (not always class 0, which a saturated
    design can push to the floor) and re-based on class 0 after. Each equation is weighted by
    the smaller of its two scores when there are more equations than unknowns: float rounding
    of a score is relative to the largest one, so a small score's log carries an error about
    proportional to its inverse.
    """
    import numpy as np

    n, d = x.shape
    a = np.hstack([(x - centre) / half, np.ones((n, 1))])
    if regression:
        theta = np.linalg.lstsq(a, p.reshape(n, 1), rcond=None)[0]
    else:
        usable = p > _FLOOR if strict else np.ones(p.shape, dtype=bool)
        ref = int((p > _FLOOR).sum(axis=0).argmax())
        logs = np.log(np.clip(p, _FLOOR, None))
        k = p.shape[1]
        rel = np.zeros((d + 1, k))
        for i in range(k):
            if i == ref:
                continue
            rows = usable[:, i] & usable[:, ref]
            if rows.sum() < d + 1 or np.linalg.matrix_rank(a[rows]) < d + 1:
                return None
            # a square system is solved exactly: weights would only worsen its conditioning
            weight = np.minimum(p[rows, i], p[rows, ref])[:, None] if rows.sum() > d + 1 \
                else np.ones((int(rows.sum()), 1))
            rel[:, i] = np.linalg.lstsq(a[rows] * weight,
                                        (logs[rows, i] - logs[rows, ref])[:, None] * weight,
                                        rcond=None)[0][:, 0]
        theta = rel[:, 1:] - rel[:, :1]  # log(p_i / p_0) = log(p_i / p_ref) - log(p_0 / p_ref)
    w = theta[:-1] / half[:, None]
    return w, theta[-1] - centre @ w


def _linear_outputs(answers: np.ndarray, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """The quantities linear in x: outputs [n, 1], or log(p_i / p_0) [n, k-1] (scores floored
    at the smallest float); and a mask [n] of rows with a score at that floor (saturated)."""
    import numpy as np

    answers = np.asarray(answers, dtype="float64")
    if regression:
        return answers.reshape(-1, 1), np.zeros(len(answers), dtype=bool)
    tiny = np.finfo("float64").tiny
    logs = np.log(np.clip(answers, tiny, None))
    saturated: np.ndarray = np.asarray((answers <= tiny).any(axis=1))
    return logs[:, 1:] - logs[:, :1], saturated


def _true_weights(target: Target) -> tuple[np.ndarray, np.ndarray] | None:
    """The coefficients a white-box linear target really has, in the recovered form."""
    import numpy as np

    est = target.estimator
    if est is None or hasattr(est, "steps") or not hasattr(est, "coef_"):
        return None
    from sklearn.linear_model import LogisticRegression

    coef = np.atleast_2d(np.asarray(est.coef_, dtype="float64"))
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype="float64"))
    if target.task == "regression" and type(est).__module__.startswith("sklearn.linear_model"):
        return coef.T.reshape(-1, 1), intercept.reshape(1)
    if not isinstance(est, LogisticRegression):
        return None
    if coef.shape[0] == 1:
        return coef.T, intercept
    return (coef[1:] - coef[0]).T, intercept[1:] - intercept[0]
