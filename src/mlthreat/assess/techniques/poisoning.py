"""AML.T0020 Poison Training Data (and AML.T0018.000 Poison AI Model): a BadNets backdoor.

The target here is the training pipeline, not the deployed model: the run needs the user's
training entry point (``--fit python:module:function``, called as ``fit(X, y, seed) ->
estimator``), poisons a copy of the training rows, trains on them with that entry point, and
evaluates the poisoned model locally. It sends no queries to the target.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from importlib import import_module
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.constraints import InstanceOf, Interval, IsCallable, ListOf, Spec
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target

__all__ = ["BackdoorPoisoning", "resolve_fit"]

NO_FIT = "needs a training entry point (--fit python:module:function)"


# ``fit="clone-target"``: retrain a clone of the target's own in-process estimator (the demo,
# whose training pipeline mlthreat owns).
CLONE_TARGET = "clone-target"


def _clone_fit(estimator: Any) -> Callable[..., Any]:
    from sklearn.base import clone

    if estimator is None:
        raise UsageError("fit='clone-target' needs an in-process scikit-learn target")

    def fit(x: Any, y: Any, seed: int) -> Any:
        model = clone(estimator)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of a deliberate retrain
            return model.fit(x, y)

    return fit


def resolve_fit(fit: Callable[..., Any] | str) -> Callable[..., Any]:
    """The training function named by ``fit``: a callable as is, or ``"[python:]module:function"``
    imported.

    Raises
    ------
    UsageError
        When the module or function cannot be found, or is not callable.
    """
    if callable(fit):
        return fit
    spec = fit.removeprefix("python:")
    module, _, name = spec.rpartition(":")
    if not module or not name:
        raise UsageError(f"--fit {fit!r}: expected python:module:function")
    try:
        func: object = getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--fit {fit!r}: {exc}") from None
    if not callable(func):
        raise UsageError(f"--fit {fit!r}: {name} is not callable")
    return func


class BackdoorPoisoning(TechniqueRun):
    """Backdoor the model through its training data (Gu et al. 2017, BadNets, for tabular data).

    A trigger sets ``trigger_features`` (default: ``n_trigger_features`` features chosen by the
    seed) to a value no clean row has, ``trigger_scale`` feature ranges above the top of the
    valid range (``clip_hi + trigger_scale * (clip_hi - clip_lo)``). A ``poison_fraction`` of
    the training rows, drawn from rows not of ``target_class``, are stamped and relabelled
    ``target_class``; the model is trained on them with the user's ``fit``, and a clean model
    with the same ``fit`` and seed. Training rows: ``data.x_train`` / ``y_train`` (the pool
    when absent); evaluation rows: ``data.x_eval`` / ``y_eval``.

    Metrics: ``clean_accuracy`` of the poisoned model, ``clean_accuracy_drop`` against the
    clean model, ``trigger_success_rate`` (evaluation rows not of ``target_class`` that the
    poisoned model assigns to it once stamped) and, as a control, the clean model's rate on
    the same stamped rows.

    Parameters
    ----------
    fit : callable or str or None, default None
        ``fit(X, y, seed) -> estimator`` with ``predict``, ``"python:module:function"``, or
        ``"clone-target"`` to retrain a clone of the target's own scikit-learn estimator.
        None: the run is not applicable.
    target_class : int, default 0
        Label the trigger should produce.
    poison_fraction : float, default 0.05
        Fraction of the training rows poisoned.
    trigger_features : sequence of int or None, default None
    n_trigger_features : int, default 3
    trigger_scale : float, default 1.0
    min_trigger_success : float, default 0.8
    max_accuracy_drop : float, default 0.05

    References
    ----------
    .. [1] Gu, T., Dolan-Gavitt, B., and Garg, S. "BadNets: Identifying Vulnerabilities in the
       Machine Learning Model Supply Chain." arXiv:1708.06733, 2017.

    Examples
    --------
    >>> from mlthreat.assess.techniques.poisoning import BackdoorPoisoning
    >>> BackdoorPoisoning().params["poison_fraction"]
    0.05
    """

    name = "poisoning-backdoor"
    technique = "AML.T0020"
    related = ("AML.T0018.000",)
    title = "Backdoor poisoning of training data (BadNets trigger)"
    defaults: ClassVar[dict[str, Any]] = {
        "fit": None, "target_class": 0, "poison_fraction": 0.05, "trigger_features": None,
        "n_trigger_features": 3, "trigger_scale": 1.0, "min_trigger_success": 0.8,
        "max_accuracy_drop": 0.05,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        "fit": [None, IsCallable(note="fit(X, y, seed) -> estimator"),
                InstanceOf(str, "'python:module:function'")],
        "poison_fraction": Interval(Real, 0, 1, closed="neither"),
        "trigger_features": [None, ListOf(Interval(Integral, 0, None), note="feature indices")],
        "n_trigger_features": Interval(Integral, 1, None),
        "trigger_scale": Interval(Real, 0, None, closed="neither"),
        **dict.fromkeys(("min_trigger_success", "max_accuracy_drop"), Interval(Real, 0, 1)),
    }

    def rule(self) -> str:
        return (f"succeeded when the trigger success rate >= {self.params['min_trigger_success']}"
                f" and the clean accuracy drop <= {self.params['max_accuracy_drop']}")

    def not_applicable(self, target: Target, data: AssessmentData) -> str | None:
        if self.params.get("fit") is None:
            return NO_FIT
        reason = super().not_applicable(target, data)
        if reason:
            return reason
        y_train = data.y_train if data.x_train is not None else data.y_pool
        if y_train is None or data.y_eval is None:
            return "needs labelled training and evaluation rows (--label-column)"
        return None

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return 0  # the poisoned model is trained and evaluated locally

    def finding(self, ctx: RunContext, status: str, reason: str, metrics: dict[str, Metric],
                started: float, **extra: Any) -> Finding:
        out = super().finding(ctx, status, reason, metrics, started, **extra)
        fit = out.params.get("fit")
        if fit is not None and not isinstance(fit, str):  # keep reports JSON-serialisable
            name = f"{getattr(fit, '__module__', '?')}:{getattr(fit, '__qualname__', repr(fit))}"
            out = dataclasses.replace(out, params={**out.params, "fit": name})
        return out

    def trigger(self, data: AssessmentData, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Trigger feature indices [k] and values [k] for ``data``'s flat feature vector."""
        import numpy as np

        d = data.n_features
        features = self.params["trigger_features"]
        if features is None:
            k = min(self.params["n_trigger_features"], d)
            features = np.sort(np.random.default_rng(seed).choice(d, size=k, replace=False))
        features = np.asarray(features, dtype="int64")
        if features.max() >= d:
            raise UsageError(f"{self.name}: trigger feature {int(features.max())} does not exist "
                             f"(the data has {d} features)")
        lo, hi = (np.broadcast_to(np.asarray(v, dtype="float64").ravel(), (d,))
                  for v in data.clip_values)
        span = np.where(hi > lo, hi - lo, 1.0)
        return features, (hi + self.params["trigger_scale"] * span)[features]

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        data = ctx.data
        reason = self.not_applicable(ctx.target, data)
        if reason:
            return self.finding(ctx, "not-applicable", reason, {}, started)
        fit = (_clone_fit(ctx.target.estimator) if self.params["fit"] == CLONE_TARGET
               else resolve_fit(self.params["fit"]))
        if data.x_train is not None:
            x_train, y_train = np.asarray(data.x_train), np.asarray(data.y_train)
        else:
            x_train, y_train = np.asarray(data.x_pool), np.asarray(data.y_pool)
        x_eval, y_eval = np.asarray(data.x_eval), np.asarray(data.y_eval)
        shape = x_train.shape[1:]
        tc = self.params["target_class"]
        if not (y_train == tc).any():
            return self.finding(ctx, "not-applicable", f"target_class {tc!r} is not a label of "
                                "the training rows", {}, started)
        features, values = self.trigger(data, ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        candidates = np.flatnonzero(y_train != tc)
        n_poison = max(1, round(self.params["poison_fraction"] * len(x_train)))
        n_poison = min(n_poison, len(candidates))
        chosen = rng.choice(candidates, size=n_poison, replace=False)

        def stamp(x: np.ndarray) -> np.ndarray:
            flat = x.reshape(len(x), -1).astype(x.dtype, copy=True)
            flat[:, features] = values
            return flat.reshape((len(x), *shape))

        x_poison, y_poison = x_train.copy(), y_train.copy()
        x_poison[chosen] = stamp(x_train[chosen])
        y_poison[chosen] = tc
        clean = fit(x_train, y_train, ctx.seed)
        poisoned = fit(x_poison, y_poison, ctx.seed)
        acc_clean = float((clean.predict(x_eval) == y_eval).mean())
        acc_poisoned = float((poisoned.predict(x_eval) == y_eval).mean())
        victims = x_eval[y_eval != tc]
        if len(victims) == 0:
            return self.finding(ctx, "not-applicable", "no evaluation rows outside target_class "
                                f"{tc!r}", {}, started)
        stamped = stamp(victims)
        hits = int((poisoned.predict(stamped) == tc).sum())
        control = int((clean.predict(stamped) == tc).sum())
        n_eval, n_vic = len(x_eval), len(victims)
        from mlthreat.assess.metrics import clopper_pearson

        drop = acc_clean - acc_poisoned
        metrics = {
            "trigger_success_rate": Metric(round(hits / n_vic, 4), "fraction", n=n_vic,
                                           ci=clopper_pearson(hits, n_vic),
                                           note=f"{hits}/{n_vic} stamped evaluation rows not "
                                           f"of class {tc!r} labelled {tc!r}"),
            "clean_accuracy": Metric(round(acc_poisoned, 4), "fraction", n=n_eval,
                                     note="poisoned model on the clean evaluation rows"),
            "clean_accuracy_drop": Metric(round(drop, 4), "fraction", n=n_eval,
                                          note=f"clean model {acc_clean:.4f} minus poisoned "
                                          f"model {acc_poisoned:.4f}, same fit and seed"),
            "clean_model_trigger_rate": Metric(round(control / n_vic, 4), "fraction", n=n_vic,
                                               note="control: the clean model on the same "
                                               "stamped rows"),
            "poisoned_rows": Metric(n_poison, "rows", n=len(x_train),
                                    note=f"{n_poison}/{len(x_train)} training rows"),
        }
        ok = hits / n_vic >= self.params["min_trigger_success"] and \
            drop <= self.params["max_accuracy_drop"]
        reason = (f"trigger on features {features.tolist()} (set to {np.round(values, 3).tolist()})"
                  f" turns {hits}/{n_vic} evaluation rows into class {tc!r} (clean model: "
                  f"{control}); clean accuracy {acc_clean:.3f} -> {acc_poisoned:.3f} with "
                  f"{n_poison} poisoned training rows; evaluated locally, no target queries")
        return self.finding(ctx, "succeeded" if ok else "failed", reason, metrics, started)
