"""Black-Box Transfer (AML.T0043.002): steal a proxy, craft on it offline, send only the result.

The chain the matrix's authors stress: Extract AI Model (AML.T0024.002) by Train Proxy via
Replication (AML.T0005.001), then a white-box attack on the proxy whose adversarial examples are
sent to the target to Evade AI Model (AML.T0015). The theft is
:func:`mlthreat.assess.techniques._surrogate.steal`; the crafting is ART's projected gradient
descent on the proxy, through a small ART estimator that differentiates the proxy's dense
layers in numpy (scikit-learn's MLPs and logistic regressions expose no gradients); samples,
the ε rule and the metrics are those of every evasion run
(:class:`~mlthreat.assess.techniques._evasion.EvasionRun`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._evasion import (
    Attacked,
    EvasionRun,
    FeatureBox,
)
from mlthreat.assess.techniques._surrogate import (
    Surrogate,
    fidelity,
    query_rows,
    steal,
    target_on_eval,
)
from mlthreat.constraints import Interval, Options, Spec

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target
    from mlthreat.assess.techniques.base import RunContext

__all__ = ["PROXY_CONSTRAINTS", "TransferEvasion", "art_proxy", "craft", "dense_layers"]

PROXIES = ("mlp", "logreg")
# the proxy's parameters, shared with the evasion chain, which steals its proxy the same way
PROXY_CONSTRAINTS: dict[str, Spec] = {
    "proxy": Options(*PROXIES, note="a differentiable proxy"), "distill": "boolean"}


def dense_layers(s: Surrogate) -> tuple[list[tuple[Any, Any]], Any, bool]:
    """The proxy as dense layers with ReLU between them, on its scaled inputs ``s.scale(x)``:
    ``(layers, columns, binary)``. ``columns`` are the target score columns of the output
    logits; ``binary`` means one output ``o`` standing for the logits ``[0, o]``.

    Raises
    ------
    ValueError
        For a proxy that is neither an MLP nor a logistic regression.
    """
    import numpy as np

    model = s.model
    if hasattr(model, "coefs_"):
        layers = [(np.asarray(w, "float64"), np.asarray(b, "float64"))
                  for w, b in zip(model.coefs_, model.intercepts_, strict=True)]
    elif hasattr(model, "coef_"):
        layers = [(np.asarray(model.coef_, "float64").T, np.asarray(model.intercept_, "float64"))]
    else:
        raise ValueError(f"a {type(model).__name__} proxy has no gradients")
    columns = np.arange(s.n_classes) if s.mode == "logits" else np.asarray(model.classes_)
    binary = layers[-1][0].shape[1] == 1 and len(columns) == 2
    return layers, columns, binary


def art_proxy(s: Surrogate, lo: np.ndarray, scale: np.ndarray) -> Any:
    """An ART classifier with loss gradients over ``u = (x - lo) / scale`` in [0, 1]^d (the
    target's relative feature space, where ε is measured): the affine map from ``u`` to the
    proxy's own scaled inputs is folded into its first layer."""
    import numpy as np
    from art.estimators.classification.classifier import ClassifierLossGradients

    layers, columns, binary = dense_layers(s)
    w0, b0 = layers[0]
    a = scale / s.span  # z = u * a + c
    c = (lo - s.lo) / s.span
    layers[0] = (a[:, None] * w0, b0 + c @ w0)
    n_classes, d = s.n_classes, len(lo)

    # ART ships no type information: its base class is Any to mypy
    class DenseProxy(ClassifierLossGradients):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(model=None, clip_values=(0.0, 1.0))
            self.nb_classes = n_classes

        @property
        def input_shape(self) -> tuple[int, ...]:
            return (d,)

        def fit(self, x: Any, y: Any, **kwargs: Any) -> None:
            raise NotImplementedError("the proxy is trained by _surrogate.steal")

        def _forward(self, x: Any) -> tuple[Any, list[Any]]:
            h = np.asarray(x, dtype="float64").reshape(len(x), d)
            inputs = []
            for i, (w, b) in enumerate(layers):
                inputs.append(h)
                h = h @ w + b
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            logits = np.hstack([np.zeros((len(h), 1)), h]) if binary else h
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            return p / p.sum(axis=1, keepdims=True), inputs

        def predict(self, x: Any, batch_size: int = 128, **kwargs: Any) -> Any:
            p, _ = self._forward(x)
            out = np.zeros((len(p), n_classes), dtype="float32")
            out[:, columns] = p
            return out

        def loss_gradient(self, x: Any, y: Any, **kwargs: Any) -> Any:
            """Gradient of the cross-entropy to one-hot ``y`` [n, n_classes] w.r.t. ``x``."""
            p, inputs = self._forward(x)
            g = p - np.asarray(y, dtype="float64")[:, columns]
            if binary:
                g = g[:, 1:]
            for i in range(len(layers) - 1, -1, -1):
                g = g @ layers[i][0].T
                if i > 0:
                    g = g * (inputs[i] > 0)
            return g.reshape(np.shape(x)).astype("float32")

    return DenseProxy()


class TransferEvasion(EvasionRun):
    """Evade the target with adversarial examples crafted offline on a stolen proxy.

    1. Samples: up to ``n_samples`` pool rows the target classifies correctly (checked with
       evaluation queries, as in every evasion run); the attacker's own rows, so usually
       among those the theft sends too.
    2. Theft: :func:`~mlthreat.assess.techniques._surrogate.steal` sends pool rows (all the
       budget the transfer does not need; client ``<run>-theft``) and trains a differentiable
       proxy on the answers: an MLP regressing the target's log-scores (on its labels when it
       returns labels only), or a logistic regression.
    3. Crafting, with no queries: ART's PGD on the proxy in ``norm`` within ε (relative to the
       target's feature range), ``max_iter`` steps of 2.5 ε / ``max_iter``, using all of ε
       (a larger perturbation transfers better than the smallest one that fools the proxy).
    4. Transfer: each crafted example is sent once (client ``<run>-transfer``); a sample
       succeeds when the target misclassifies it (always within ε by construction).

    The transfer success rate is ``success_rate_at_eps``; ``total_queries`` is everything the
    attack sent to the target. The proxy's fidelity on the evaluation rows, and its own (white-
    box) success rate, say whether a failure is the theft's or the transfer's.

    Parameters
    ----------
    **params
        :class:`~mlthreat.assess.techniques._evasion.EvasionRun`'s (here ``norm`` defaults to
        ``"linf"``, ε_L∞ = 0.25 of the feature range; ``n_samples`` to 100, one query each;
        ``min_success_rate`` to 0.3, since the attacker spends no query per sample) and:
    proxy : {"mlp", "logreg"}, default "mlp"
    distill : bool, default True
        Train the proxy on the target's scores when it returns them.
    max_iter : int, default 40

    References
    ----------
    N. Papernot, P. McDaniel, I. Goodfellow, S. Jha, Z. B. Celik, A. Swami. "Practical
    Black-Box Attacks against Machine Learning". AsiaCCS 2017.
    F. Tramèr, F. Zhang, A. Juels, M. K. Reiter, T. Ristenpart. "Stealing Machine Learning
    Models via Prediction APIs". USENIX Security 2016.
    A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. "Towards Deep Learning Models
    Resistant to Adversarial Attacks". ICLR 2018.

    Examples
    --------
    >>> run = TransferEvasion(eps_linf=0.1)
    >>> run.validate()
    >>> "L∞ ≤ 0.1 of the feature range" in run.rule()
    True
    """

    name: ClassVar[str] = "evasion-transfer"
    technique: ClassVar[str] = "AML.T0043.002"
    related: ClassVar[tuple[str, ...]] = ("AML.T0024.002", "AML.T0005.001", "AML.T0015")
    title: ClassVar[str] = "Black-Box Transfer: adversarial examples crafted on a stolen proxy"
    default_budget: ClassVar[int] = 1_000
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "pool": (2, "the proxy is stolen with the answers to pool rows, and the samples "
                 "attacked are pool rows")}
    defaults: ClassVar[dict[str, Any]] = {
        **EvasionRun.defaults, "norm": "linf", "n_samples": 100, "min_success_rate": 0.3,
        "proxy": "mlp", "distill": True, "max_iter": 40,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **EvasionRun._constraints, **PROXY_CONSTRAINTS, "max_iter": Interval(Integral, 1, None),
    }

    def rule(self) -> str:
        return super().rule() + ", sending only examples crafted on a proxy stolen with queries"

    def _split(self, budget: int, pool: int, samples: int) -> tuple[int, int]:
        """(theft, transfer) queries: the transfer takes at most half of the budget."""
        n_transfer = min(samples, budget // 2)
        return min(pool, budget - n_transfer), n_transfer

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        return sum(self._split(budget, len(data.x_pool), int(self.params["n_samples"])))

    def run(self, ctx: RunContext) -> Finding:
        import numpy as np

        started = time.perf_counter()
        self.validate()
        target, data = ctx.target, ctx.data
        x, y = self._select(ctx)
        n_theft, n_transfer = self._split(ctx.budget, len(data.x_pool), len(x))
        if len(x) == 0 or n_theft < 1:
            note = "" if len(x) == 0 else f"a budget of {ctx.budget} leaves no query for theft"
            return self._finding(ctx, started, x, y, [Attacked(None, 0)] * len(x), note)

        theft = steal(ctx, n_theft, surrogate=self.params["proxy"],
                      distill=self.params["distill"], client="theft")
        extra = {"theft_queries": Metric(len(theft.answers), "queries",
                                         note="pool rows sent to train the proxy")}
        if theft.surrogate is None or len(np.unique(theft.answers.argmax(axis=1))) < 2:
            note = ("the theft got too few answers to train a proxy "
                    f"({theft.stopped or 'one class only'})")
            return self._with(self._finding(ctx, started, x, y, [Attacked(None, 0)] * len(x), note),
                              extra)
        proxy = theft.surrogate
        extra["proxy_fidelity"] = Metric(
            round(fidelity("classification", target_on_eval(ctx),
                           proxy.predict_index(data.x_eval)), 4),
            "fraction", n=len(data.x_eval), note="proxy agrees with the target on evaluation rows")

        x_adv, on_proxy = self._craft(proxy, x, y, target)
        answers, stopped = query_rows(ctx, x_adv[:n_transfer], "transfer")
        labels = answers.argmax(axis=1)
        attacked = [Attacked(x_adv[i] if labels[i] != y[i] else None, 1)
                    for i in range(len(labels))]
        attacked += [Attacked(None, 0)] * (len(x) - len(attacked))
        extra.update({
            "transfer_queries": Metric(len(answers), "queries",
                                       note="crafted examples sent, one per sample"),
            "total_queries": Metric(len(theft.answers) + len(answers), "queries",
                                    note="theft + transfer: all the attack sent to the target"),
            "queries_per_sample_amortised": Metric(
                round((len(theft.answers) + len(answers)) / len(x), 2), "queries", n=len(x),
                note="theft and transfer queries over the samples attacked"),
            "proxy_success_rate": Metric(round(float(np.mean(on_proxy)), 4), "fraction",
                                         n=len(x), note="white-box, on the proxy itself"),
        })
        note = (f"proxy ({self.params['proxy']}, "
                f"{'distilled on scores' if theft.distilled else 'hard labels'}) stolen with "
                f"{len(theft.answers)} queries at fidelity {extra['proxy_fidelity'].value}; "
                f"{len(answers)} transfer queries; "
                f"{extra['queries_per_sample_amortised'].value:g} queries per sample with the "
                "theft amortised")
        if len(answers) < len(x):
            note += (f"; {stopped or 'the budget'} let only {len(answers)} of {len(x)} examples "
                     "be sent, the rest count as failures")
        return self._with(self._finding(ctx, started, x, y, attacked, note), extra)

    def _with(self, finding: Finding, extra: dict[str, Metric]) -> Finding:
        metrics = dict(finding.metrics)
        if "success_rate_at_eps" in metrics:
            metrics["transfer_success_rate"] = metrics["success_rate_at_eps"]
        return replace(finding, metrics={**metrics, **extra})

    def _craft(self, proxy: Surrogate, x: np.ndarray, y: np.ndarray,
               target: Target) -> tuple[np.ndarray, np.ndarray]:
        """PGD on the proxy in the target's relative feature space: the examples (cast to the
        target's input dtype) and whether each fools the proxy."""
        box = FeatureBox.of(target)
        u_adv, fooled = craft(proxy, box, box.to_u(x), y, norm=self.params["norm"], eps=self.eps,
                              steps=int(self.params["max_iter"]))
        return box.to_x(u_adv, x.shape[1:], target.input_dtype), fooled


def craft(proxy: Surrogate, box: FeatureBox, u: np.ndarray, y: np.ndarray, *, norm: str,
          eps: float, steps: int, towards: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray]:
    """ART's projected gradient descent on the proxy from rows ``u`` [n, d] of the relative
    feature space within ε (``norm`` "l2" or "linf") using all of ε (steps of 2.5 ε /
    ``steps``): the crafted rows [n, d] and whether each fools the proxy [n] (``y``: the rows'
    score-column indices). Untargeted, or targeted at the score columns ``towards`` [n]."""
    import numpy as np
    from art.attacks.evasion import ProjectedGradientDescentNumpy

    estimator = art_proxy(proxy, box.lo, box.scale)
    attack = ProjectedGradientDescentNumpy(
        estimator, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=2.5 * eps / steps,
        max_iter=steps, targeted=towards is not None, num_random_init=0, batch_size=256,
        verbose=False)
    labels = y if towards is None else towards
    onehot = np.eye(proxy.n_classes, dtype="float32")[np.asarray(labels, dtype="int64")]
    u_adv = np.asarray(attack.generate(u.astype("float32"), y=onehot), dtype="float64")
    return u_adv, estimator.predict(u_adv).argmax(axis=1) != y
