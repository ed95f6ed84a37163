"""AML.T0024.000 Infer Training Data Membership: ART's black-box attack and online LiRA.

Both runs score rows known to be members and non-members of the target's training set
(``data.x_members`` / ``data.x_nonmembers``) and report, from those scores, the AUC, the
membership advantage and the TPR at 1 % and 0.1 % FPR, each with the number of members and
non-members evaluated and a 95 % interval (see :mod:`mlthreat.assess.metrics`).

Queries. The target is asked once per candidate row, inside the attack's account: the ART run
asks about the rows that train its attack model and the rows it evaluates on; LiRA asks about
each candidate once (its shadow models are trained and queried locally, which costs the target
nothing). Nothing is spent on evaluation: the ground truth (member or not) is known.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.techniques._lira import (
    SHADOW_KINDS,
    batchable_mlp,
    configure,
    fresh_model,
    lira_scores,
    logit_confidence,
    paired_keep,
    train_mlp_shadows,
)
from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.constraints import Interval, Null, Options, Rule, Spec

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.target import Target

__all__ = ["BlackBoxMembership", "LiraMembership", "lira_scores"]


_THREADS = 2  # shadow groups trained at once (the machines have two cores)
_COMMON_CONSTRAINTS: dict[str, Spec] = {
    "min_auc": Interval(Real, 0, 1),
    "min_tpr_at_1pct": Interval(Real, 0, 1),
    "max_per_group": [Null("all rows"), Interval(Integral, 2, None)],
    "n_boot": Interval(Integral, 0, None, note="0: no CI"),
}


class _MembershipRun(TechniqueRun):
    """What both membership runs share: the checks that start a run, candidates, metrics, rule
    and Finding."""

    technique = "AML.T0024.000"
    needs_scores = True
    needs_membership = True
    min_rows: ClassVar[dict[str, tuple[int, str]]] = {
        "members": (2, "AUC and TPR at a fixed FPR rank members against non-members")}

    def rule(self) -> str:
        return (f"succeeded when the AUC >= {self.params['min_auc']} or the TPR at 1 % FPR >= "
                f"{self.params['min_tpr_at_1pct']} (members and non-members evaluated as given "
                "in each metric)")

    def run(self, ctx: RunContext) -> Finding:
        started = time.perf_counter()
        self.validate()
        reason = self.not_applicable(ctx.target, ctx.data)
        if reason:
            return self.finding(ctx, "not-applicable", reason, {}, started)
        return self._attack(ctx, started)

    def _attack(self, ctx: RunContext, started: float) -> Finding:
        """The attack, once the parameters are valid and the run applies to the target."""
        raise NotImplementedError

    def _n_candidates(self, data: AssessmentData) -> tuple[int, int]:
        assert data.x_members is not None and data.x_nonmembers is not None
        cap = self.params["max_per_group"]
        n_m, n_n = len(data.x_members), len(data.x_nonmembers)
        return (n_m, n_n) if cap is None else (min(n_m, cap), min(n_n, cap))

    def _sizes(self, ctx: RunContext, budget: int) -> tuple[int, int] | str:
        """How many members and non-members to test: at most ``max_per_group`` each and,
        keeping their ratio, ``budget`` queries in all; or the reason why too few are left."""
        n_m, n_n = self._n_candidates(ctx.data)
        if n_m + n_n > budget:
            scale = budget / (n_m + n_n)
            n_m, n_n = int(n_m * scale), int(n_n * scale)
        if min(n_m, n_n) < 2:
            return (f"a query budget of {ctx.budget} leaves fewer than 2 members or non-members "
                    "to test")
        return n_m, n_n

    def _candidates(self, ctx: RunContext, budget: int) -> tuple[Any, ...] | str:
        """Members and non-members to test (x_m, y_m, x_n, y_n), as many as :meth:`_sizes`
        allows, or the reason why too few are left."""
        import numpy as np

        sizes = self._sizes(ctx, budget)
        if isinstance(sizes, str):
            return sizes
        n_m, n_n = sizes
        data = ctx.data
        rng = np.random.default_rng(ctx.seed)
        assert data.x_members is not None and data.x_nonmembers is not None
        im = np.sort(rng.permutation(len(data.x_members))[:n_m])
        inn = np.sort(rng.permutation(len(data.x_nonmembers))[:n_n])

        def labels(y: Any, idx: np.ndarray) -> np.ndarray | None:
            return None if y is None else ctx.target.class_index(np.asarray(y)[idx])

        return (np.asarray(data.x_members)[im], labels(data.y_members, im),
                np.asarray(data.x_nonmembers)[inn], labels(data.y_nonmembers, inn))

    def _result(self, ctx: RunContext, pos: np.ndarray, neg: np.ndarray, started: float,
                extra_reason: str = "") -> Finding:
        from mlthreat.assess import metrics as st

        n_m, n_n = len(pos), len(neg)
        sizes = f"{n_m} members, {n_n} non-members evaluated"
        n = n_m + n_n
        value = st.auc(pos, neg)
        adv = st.membership_advantage(pos, neg)
        boot = self.params["n_boot"]
        auc_ci = st.bootstrap_ci(pos, neg, st.auc, n_boot=boot, seed=ctx.seed) if boot else None
        adv_ci = st.bootstrap_ci(pos, neg, st.membership_advantage, n_boot=boot,
                                 seed=ctx.seed) if boot else None
        boot_note = f"; 95 % percentile bootstrap ({boot} stratified resamples)" if boot else ""
        metrics = {
            "auc": Metric(round(value, 4), "fraction", n=n, ci=_round(auc_ci),
                          note=sizes + boot_note),
            "membership_advantage": Metric(round(adv, 4), "fraction", n=n, ci=_round(adv_ci),
                                           note="max over thresholds of TPR - FPR; " + sizes
                                           + boot_note),
        }
        rates = {}
        for key, fpr in (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)):
            r = st.tpr_at_fpr(pos, neg, fpr)
            rates[key] = r
            metrics[key] = Metric(round(r.tpr, 4), "fraction", n=n, ci=_round(r.ci),
                                  note=f"{sizes}; {r.note()}")
        fpr_c, tpr_c, _ = st.roc_curve(pos, neg)
        xs, ys = st.downsample_curve(fpr_c, tpr_c, 200)
        curves = {"roc": {"x": xs, "y": ys, "x_label": "false-positive rate",
                          "y_label": "true-positive rate"}}
        low_fpr = rates["tpr_at_1pct_fpr"]
        ok = value >= self.params["min_auc"] or low_fpr.tpr >= self.params["min_tpr_at_1pct"]
        reason = (f"AUC {value:.3f} and TPR {low_fpr.tpr:.3f} ({low_fpr.tp}/{n_m}) at 1 % FPR "
                  f"({low_fpr.fp}/{n_n} non-members flagged) on {sizes}")
        reason += extra_reason
        return self.finding(ctx, "succeeded" if ok else "failed", reason, metrics, started,
                            curves=curves)


def _round(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (round(ci[0], 4), round(ci[1], 4))


class BlackBoxMembership(_MembershipRun):
    """Membership inference with ART's ``MembershipInferenceBlackBox`` (Shokri et al. 2017's
    attack-model idea, trained on known members and non-members directly).

    A regressor is attacked on its loss instead (Yeom et al. 2018: a small squared error on a
    row suggests the model trained on it), without ART.

    The target is wrapped as an ART ``BlackBoxClassifier`` whose ``predict`` is
    ``target.predict``, so every row ART looks at is a counted query. Split: the members and
    the non-members are each shuffled (by the seed) and cut in half; ART's random-forest attack
    model (``attack_model_type="rf"``: the default ``nn`` needs torch) is trained on the
    target's scores and the true labels of the first halves, and evaluated on the second
    halves, whose membership probabilities are the scores behind the metrics.

    Parameters
    ----------
    min_auc : float, default 0.6
        AUC at or above which the attack succeeded.
    min_tpr_at_1pct : float, default 0.1
        TPR at 1 % FPR at or above which the attack succeeded.
    max_per_group : int or None, default None
        At most this many members and this many non-members (random, by the seed); None: all.
    n_boot : int, default 200
        Bootstrap resamples for the AUC and advantage intervals (0: none).

    References
    ----------
    .. [1] Shokri, R., Stronati, M., Song, C., and Shmatikov, V. "Membership Inference Attacks
       Against Machine Learning Models." IEEE S&P 2017.
    .. [2] Nicolae, M.-I. et al. "Adversarial Robustness Toolbox v1.0.0." arXiv:1807.01069.

    Examples
    --------
    >>> from mlthreat.assess.techniques.membership import BlackBoxMembership
    >>> BlackBoxMembership(max_per_group=100).params["max_per_group"]
    100
    """

    name = "membership-blackbox"
    tasks = ("classification", "regression")
    title = "Membership inference (ART black-box, random-forest attack model)"
    defaults: ClassVar[dict[str, Any]] = {"min_auc": 0.6, "min_tpr_at_1pct": 0.1,
                                          "max_per_group": None, "n_boot": 200}
    _constraints: ClassVar[dict[str, Spec]] = _COMMON_CONSTRAINTS

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        n_m, n_n = self._n_candidates(data)
        return min(budget, n_m + n_n)

    def _attack(self, ctx: RunContext, started: float) -> Finding:
        import numpy as np
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import BlackBoxClassifier

        if ctx.target.task == "regression":
            return self._regression(ctx, started)
        cand = self._candidates(ctx, ctx.budget)
        if isinstance(cand, str):
            return self.finding(ctx, "not-applicable", cand, {}, started)
        x_m, y_m, x_n, y_n = cand
        rng = np.random.default_rng(ctx.seed + 1)
        pm, pn = rng.permutation(len(x_m)), rng.permutation(len(x_n))
        tm, em = pm[: len(pm) // 2], pm[len(pm) // 2:]
        tn, en = pn[: len(pn) // 2], pn[len(pn) // 2:]
        target = ctx.target
        classifier = BlackBoxClassifier(predict_fn=target.predict,
                                        input_shape=tuple(target.input_shape),
                                        nb_classes=target.n_classes)
        attack = MembershipInferenceBlackBox(classifier, input_type="prediction",
                                             attack_model_type="rf")
        attack.attack_model.set_params(random_state=ctx.seed)  # ART leaves its forest unseeded

        def sub(y: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
            return None if y is None else y[idx]

        with ctx.attack():
            attack.fit(x=x_m[tm], y=sub(y_m, tm), test_x=x_n[tn], test_y=sub(y_n, tn))
            pos = attack.infer(x_m[em], sub(y_m, em), probabilities=True).ravel()
            neg = attack.infer(x_n[en], sub(y_n, en), probabilities=True).ravel()
        split = (f"; attack model trained on {len(tm)} members and {len(tn)} non-members, "
                 "evaluated on the other halves")
        return self._result(ctx, pos, neg, started, split)

    def _regression(self, ctx: RunContext, started: float) -> Finding:
        """The loss-threshold attack of Yeom et al. 2018 on a regressor: a row whose squared
        error is small is guessed a member. One query per row tested; nothing to train."""
        import numpy as np

        data = ctx.data
        if data.y_members is None or data.y_nonmembers is None:
            return self.finding(ctx, "not-applicable", "needs the true values of the members "
                                "and non-members (--label-column)", {}, started)
        sizes = self._sizes(ctx, ctx.budget)
        if isinstance(sizes, str):
            return self.finding(ctx, "not-applicable", sizes, {}, started)
        n_m, n_n = sizes
        assert data.x_members is not None and data.x_nonmembers is not None
        rng = np.random.default_rng(ctx.seed)
        im = rng.permutation(len(data.x_members))[:n_m]
        inn = rng.permutation(len(data.x_nonmembers))[:n_n]
        with ctx.attack():
            pm = ctx.target.predict(np.asarray(data.x_members)[im])
            pn = ctx.target.predict(np.asarray(data.x_nonmembers)[inn])
        pos = -(pm - np.asarray(data.y_members, dtype="float64")[im]) ** 2
        neg = -(pn - np.asarray(data.y_nonmembers, dtype="float64")[inn]) ** 2
        return self._result(ctx, pos, neg, started,
                            "; regressor: loss-threshold attack on the squared error "
                            "(Yeom et al. 2018)")


class LiraMembership(_MembershipRun):
    """The likelihood-ratio attack (LiRA) of Carlini et al. 2022, online.

    The attacker's data is the pool together with the candidates under test (the paper's
    online setting). ``n_shadow`` shadow models of the target's kind (``sklearn.base.clone`` of
    the target's estimator; otherwise a fresh ``shadow_model``) are trained on halves of it, in
    complementary pairs, so that every row is in exactly half of the shadows. For each
    candidate, the logit-scaled confidence on its true label, φ = log(p_y + ε) -
    log(Σ_{j≠y} p_j + ε) (that is log(p/(1-p)), without cancellation; ε = 1e-6, about
    float32's resolution near 1, keeps a forest's exact 1.0 finite), is fitted by a Gaussian
    over the shadows that trained on it ("in") and one over those that did not ("out"). The
    online test scores the target's φ by its log-likelihood ratio under the two; the offline
    test by how many "out" standard deviations it lies above the "out" mean (the paper's
    one-sided variant). ``variance="global"`` (the default) gives every candidate the
    standard deviations pooled over all candidates, as the paper advises below 64 shadows;
    ``"per-example"`` estimates them per candidate, floored at a quarter of the global ones.

    Cost: ``n_shadow`` trainings of the target's kind on about half the attacker's rows. A
    scikit-learn ``MLPClassifier`` target (adam, no early stopping) has its shadows trained
    together, with the same recipe, as batched matrix products
    (:func:`~._lira.train_mlp_shadows`), split over two threads; other kinds are fitted one by
    one. On the digits demo MLP (600 epochs; 900 members, 450 non-members) with 16 shadows:
    AUC 0.606 and TPR 0.053 at 1 % FPR (48 of 900 members, 4 of 450 non-members flagged),
    against AUC 0.602 and TPR 0.038 with per-example variances and shadows fitted one by one,
    in a third of the time (see benchmarks/README.md). ``shadow_max_iter`` cuts the shadows'
    training; shadows trained less than the target give lower φ than it does, which biases
    the online test (AUC 0.50 where faithful shadows give 0.60): use ``test="offline"`` with
    them.

    Labels: the pool's ground truth when given (the attacker's own labelled data); otherwise
    the target labels the pool, at one query per row. Candidates without labels use the
    target's predicted label.

    Parameters
    ----------
    n_shadow : int, default 16
        Shadow models (even, >= 2; the issue and the paper ask for at least 16).
    shadow_model : {"mlp", "logreg", "rf"}, default "mlp"
        Kind of shadow model when the target has no scikit-learn estimator to clone.
    shadow_max_iter : int or None, default None
        Overrides ``max_iter`` of the shadow models (None: the target's own).
    variance : {"global", "per-example"}, default "global"
    test : {"online", "offline"}, default "online"
    min_auc, min_tpr_at_1pct, max_per_group, n_boot
        As for :class:`BlackBoxMembership`.

    References
    ----------
    .. [1] Carlini, N., Chien, S., Nasr, M., Song, S., Terzis, A., and Tramèr, F. "Membership
       Inference Attacks From First Principles." IEEE S&P 2022.
    .. [2] Shokri, R., Stronati, M., Song, C., and Shmatikov, V. "Membership Inference Attacks
       Against Machine Learning Models." IEEE S&P 2017 (shadow models).

    Examples
    --------
    >>> from mlthreat.assess.techniques.membership import LiraMembership
    >>> LiraMembership().params["n_shadow"]
    16
    """

    name = "membership-lira"
    title = "Membership inference (LiRA, shadow models)"
    defaults: ClassVar[dict[str, Any]] = {
        "n_shadow": 16, "shadow_model": "mlp", "shadow_max_iter": None,
        "variance": "global", "test": "online", "min_auc": 0.6, "min_tpr_at_1pct": 0.1,
        "max_per_group": None, "n_boot": 200,
    }
    _constraints: ClassVar[dict[str, Spec]] = {
        **_COMMON_CONSTRAINTS,
        "n_shadow": Interval(Integral, 2, None, note="16 or more recommended"),
        "shadow_model": Options(*SHADOW_KINDS),
        "shadow_max_iter": [None, Interval(Integral, 1, None)],
        "variance": Options("per-example", "global"),
        "test": Options("online", "offline"),
    }
    _rules: ClassVar[tuple[Rule, ...]] = (
        Rule("n_shadow", lambda p: p["n_shadow"] % 2 == 0,
             "even (half the shadow models train on each candidate)"),)

    def planned_queries(self, target: Target, data: AssessmentData, budget: int) -> int:
        n_m, n_n = self._n_candidates(data)
        pool = len(data.x_pool) if data.y_pool is None else 0
        return min(budget, n_m + n_n + pool)

    def _attack(self, ctx: RunContext, started: float) -> Finding:
        import numpy as np

        data, target = ctx.data, ctx.target
        x_pool = np.asarray(data.x_pool)
        pool_cost = len(x_pool) if data.y_pool is None else 0
        cand = self._candidates(ctx, ctx.budget - pool_cost)
        if isinstance(cand, str):
            return self.finding(ctx, "not-applicable", cand, {}, started)
        x_m, y_m, x_n, y_n = cand
        x_c = np.concatenate([x_m, x_n])
        with ctx.attack():
            scores_c = target.predict(x_c)  # one query per candidate
            y_p = target.labels(x_pool) if data.y_pool is None else \
                target.class_index(data.y_pool)
        y_c = np.concatenate([y_m if y_m is not None else scores_c[: len(x_m)].argmax(1),
                              y_n if y_n is not None else scores_c[len(x_m):].argmax(1)])
        phi_target = logit_confidence(scores_c, y_c, np.arange(target.n_classes))

        x_att = np.concatenate([x_pool, x_c])
        y_att = np.concatenate([y_p, y_c])
        k = self.params["n_shadow"]
        # every row in exactly k/2 shadows (the paper's keep matrix, in complementary pairs)
        keep = paired_keep(k, len(x_att), np.random.default_rng(ctx.seed))
        short = min(len(np.unique(y_att[keep[s]])) for s in range(k))
        if short < 2:
            return self.finding(ctx, "not-applicable", f"{len(x_att)} attacker rows ("
                                f"{len(x_pool)} pool + {len(x_c)} candidates) leave a shadow "
                                "model with rows of fewer than two classes: give more rows",
                                {}, started)
        prototype, kind = self._prototype(target)
        phi = self._shadow_phi(prototype, x_att, y_att, keep, x_c, y_c, target.n_classes,
                               ctx.seed)
        score = lira_scores(phi, keep[:, len(x_pool):], phi_target, self.params["variance"],
                            self.params["test"])
        extra = (f"; {self.params['test']} test, {k} shadow models ({kind}) on halves of "
                 f"{len(x_att)} attacker rows ({len(x_pool)} pool + {len(x_c)} candidates), "
                 f"{self.params['variance']} variance")
        if batchable_mlp(prototype, target.n_classes):
            extra += "; shadows trained together (batched, same recipe)"
        own_iter = prototype.get_params().get("max_iter")
        short = self.params["shadow_max_iter"]
        if self.params["test"] == "online" and short is not None and \
                isinstance(own_iter, int) and short < own_iter:
            extra += (f"; shadows trained {short} iterations, the target's kind {own_iter}: "
                      "the online test is biased against this mismatch, prefer test='offline'")
        return self._result(ctx, score[: len(x_m)], score[len(x_m):], started, extra)

    def _shadow_phi(self, prototype: Any, x_att: np.ndarray, y_att: np.ndarray,
                    keep: np.ndarray, x_c: np.ndarray, y_c: np.ndarray, n_classes: int,
                    seed: int) -> np.ndarray:
        """Each shadow's φ on the candidates, [n_shadow, n_candidates]: the shadows trained
        together when the recipe allows (:func:`batchable_mlp`), else one by one. Local
        training and scoring: no target queries."""
        import numpy as np

        k = len(keep)
        max_iter = self.params["shadow_max_iter"]
        if batchable_mlp(prototype, n_classes) and y_att.max() < n_classes:
            from concurrent.futures import ThreadPoolExecutor

            groups = [np.arange(g, k, _THREADS) for g in range(min(_THREADS, k))]

            def train(g: int) -> np.ndarray:
                return train_mlp_shadows(prototype, x_att, y_att, keep[groups[g]], x_c,
                                         n_classes=n_classes, max_iter=max_iter,
                                         seed=seed * 1000 + g)

            from threadpoolctl import threadpool_limits

            # numpy's products release the GIL; one BLAS thread each, or they oversubscribe
            # the cores (5 to 10 times slower measured)
            with threadpool_limits(1, user_api="blas"), \
                    ThreadPoolExecutor(len(groups)) as pool:
                scores = list(pool.map(train, range(len(groups))))
            phi = np.empty((k, len(x_c)))
            classes = np.arange(n_classes)
            for g, block in zip(groups, scores, strict=True):
                for i, row in enumerate(g):
                    phi[row] = logit_confidence(block[i], y_c, classes)
            return phi
        phi = np.empty((k, len(x_c)))
        for s in range(k):
            model = configure(prototype, max_iter, seed * 1000 + s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at a small max_iter
                model.fit(x_att[keep[s]], y_att[keep[s]])
            phi[s] = logit_confidence(model.predict_proba(x_c), y_c, np.asarray(model.classes_))
        return phi

    def _prototype(self, target: Target) -> tuple[Any, str]:
        """An unfitted model of the target's kind, and its name for the report."""
        from sklearn.base import clone

        estimator = target.estimator
        if estimator is not None:
            try:
                model = clone(estimator)
            except Exception:  # not a scikit-learn estimator (e.g. a torch module)
                pass
            else:
                return model, f"clones of the target's {type(estimator).__name__}"
        return fresh_model(self.params["shadow_model"]), self.params["shadow_model"]
