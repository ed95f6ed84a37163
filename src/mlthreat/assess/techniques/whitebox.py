"""Evasion: AML.T0043.000 White-Box Optimization (related AML.T0015 Evade AI Model).

:class:`GradientEvasion` crafts adversarial examples with the target's own loss gradients (FGSM
or PGD, from ART), then sends only the finished examples to the target. Gradients computed
locally are not queries; the final check, one query per sample, is the attack's traffic. The
samples, the ε rule and the metrics are those of
:class:`~mlthreat.assess.techniques._evasion.EvasionRun`.
"""

from __future__ import annotations

import time
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding
from mlthreat.assess.techniques._art import gradient_support, white_box_classifier
from mlthreat.assess.techniques._evasion import (
    Attacked,
    EvasionRun,
    feature_scale,
)
from mlthreat.constraints import Interval, Options, Spec

if TYPE_CHECKING:
    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target
    from mlthreat.assess.techniques.base import RunContext

__all__ = ["GradientEvasion"]


class GradientEvasion(EvasionRun):
    """Gradient-based evasion of a white-box target: FGSM (one step) or PGD (iterated,
    projected onto the ε ball).

    The gradients come from ``target.art_estimator()`` when the target defines it (a torch
    target), else from ART's scikit-learn wrappers on ``target.estimator`` (logistic
    regression, SVC, LinearSVC). Black-box targets, and white-box ones ART cannot
    differentiate, are not applicable.

    Parameters
    ----------
    **params
        :class:`~mlthreat.assess.techniques._evasion.EvasionRun`'s (here ``norm`` defaults to
        ``"linf"``, the threat model both papers use) and:
    method : {"pgd", "fgsm"}, default "pgd"
    max_iter : int, default 40
        PGD iterations, with step 2.5 ε / max_iter (Madry et al.'s choice).

    ε is relative to the feature range; with per-feature ranges, L∞ ε scales with each
    feature's range, and L2 ε uses the narrowest range, so the attack never leaves the
    relative ball the rule judges.

    References
    ----------
    Goodfellow, I. J., Shlens, J. & Szegedy, C. (2015). Explaining and harnessing adversarial
    examples. ICLR.
    Madry, A., Makelov, A., Schmidt, L., Tsipras, D. & Vladu, A. (2018). Towards deep learning
    models resistant to adversarial attacks. ICLR.

    Examples
    --------
    >>> from mlthreat.assess.techniques.whitebox import GradientEvasion
    >>> run = GradientEvasion(method="fgsm", eps_linf=0.1)
    >>> run.validate()
    >>> "perturbation of L∞ ≤ 0.1 of the feature range" in run.rule()
    True
    """

    name: ClassVar[str] = "evasion-whitebox"
    technique: ClassVar[str] = "AML.T0043.000"
    title: ClassVar[str] = "White-box evasion (FGSM / PGD)"
    needs_access: ClassVar[str] = "white-box"
    needs_scores: ClassVar[bool] = False
    default_budget: ClassVar[int] = 1_000
    defaults: ClassVar[dict[str, Any]] = {
        **EvasionRun.defaults, "norm": "linf", "method": "pgd", "max_iter": 40,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **EvasionRun._constraints,
        "method": Options("pgd", "fgsm"),
        "max_iter": Interval(Integral, 1, None),
    }

    def not_applicable(self, target: Target, data: AssessmentData) -> str | None:
        return super().not_applicable(target, data) or gradient_support(target)

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return min(budget, int(self.params["n_samples"]))

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        x, y = self._select(ctx)
        if len(x) == 0:
            return self._finding(ctx, started, x, y, [])
        target = ctx.target
        x_adv = self._smallest_eps(white_box_classifier(target), x, y, target)
        allowed = min(len(x), max(ctx.budget, 0))
        labels = np.empty(0, dtype="int64")
        if allowed:
            with ctx.attack():  # the attack's only queries: the finished examples
                labels = target.predict(x_adv[:allowed]).argmax(axis=1)
        attacked = [Attacked(x_adv[i] if labels[i] != y[i] else None, 1)
                    for i in range(len(labels))]
        note = ""
        if len(attacked) < len(x):
            note = (f"the query budget of {ctx.budget} let only {len(attacked)} of {len(x)} "
                    "adversarial examples be sent to the target; the rest count as failures")
        return self._finding(ctx, started, x, y, attacked, note)

    def _smallest_eps(self, estimator: Any, x: Any, y: Any, target: Target) -> Any:
        """Per sample, the example crafted at the smallest ε of the curve's grid (0.1 ε, 0.2 ε,
        … 2 ε) that fools the local model (the example at ε when none does). Local predictions,
        like gradients, are not queries; this is what gives the success-against-ε curve its
        shape for an attack that otherwise uses all of ε."""
        import numpy as np

        chosen: list[Any] = [None] * len(x)
        for k in range(1, 21):
            pending = [i for i in range(len(x)) if not _fooled(chosen[i])]
            if not pending:
                break
            adv = self._craft(estimator, x[pending], y[pending], target, k / 10)
            adv = adv.astype(target.input_dtype).reshape(len(pending), *x.shape[1:])
            fooled = np.asarray(estimator.predict(adv)).argmax(axis=1) != y[pending]
            for j, i in enumerate(pending):
                if fooled[j] or k == 10:
                    chosen[i] = (adv[j], bool(fooled[j]))
        return np.stack([c[0] for c in chosen])

    def _craft(self, estimator: Any, x: Any, y: Any, target: Target, multiplier: float) -> Any:
        """Adversarial examples for ``x`` (true score columns ``y``) within ``multiplier`` times ε,
        computed locally."""
        import numpy as np
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

        scale = feature_scale(target)
        if self.params["norm"] == "linf":
            eps: Any = self.eps * multiplier * scale.reshape(target.input_shape)
            if np.all(scale == scale.flat[0]):
                eps = float(eps.flat[0])
            art_norm: Any = np.inf
        else:
            eps, art_norm = self.eps * multiplier * float(scale.min()), 2
        eps_step = eps * (2.5 / int(self.params["max_iter"]))
        if isinstance(eps, np.ndarray):
            eps, eps_step = eps.astype("float32"), eps_step.astype("float32")
        if self.params["method"] == "fgsm":
            attack = FastGradientMethod(estimator, norm=art_norm, eps=eps, eps_step=eps,
                                        targeted=False, batch_size=256)
        else:
            attack = ProjectedGradientDescent(estimator, norm=art_norm, eps=eps,
                                              eps_step=eps_step,
                                              max_iter=int(self.params["max_iter"]),
                                              targeted=False, num_random_init=0,
                                              batch_size=256, verbose=False)
        onehot = np.eye(target.n_classes, dtype="float32")[np.asarray(y, dtype="int64")]
        return attack.generate(x.reshape(len(x), *target.input_shape), y=onehot)


def _fooled(choice: Any) -> bool:
    return choice is not None and bool(choice[1])
