"""Membership inference runs (AML.T0024.000): ART's black-box attack and LiRA, on the digits demo.

Figures measured at seed 0 (900 members, 450 non-members; 447 pool rows):

* ART black-box (rf attack model, trained on half, evaluated on 450 members + 225 non-members):
  demo-mlp AUC 0.509, TPR 0.004 at 1 % FPR; a RandomForestClassifier(100) AUC 0.766.
* LiRA online, 16 shadows, full run (faithful clones, all 1,350 candidates): demo-mlp AUC 0.602
  (bootstrap 95 % CI about 0.57-0.63), TPR 0.038 at 1 % FPR, 60-130 s on a busy 2-core machine;
  RandomForestClassifier(100) AUC 0.958, TPR 0.451 at 1 % FPR, about 10 s.
* The quick profile tested here (200 + 200 candidates, shadows cut to 100 iterations): the
  online test falls to AUC 0.48 (shadows trained less than the target), the offline test keeps
  AUC 0.576 (CI 0.529-0.632), about 7 s. RandomForestClassifier(30) online: AUC 0.857, 2 s.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import numpy as np
import pytest
from assess_helpers import by_id
from assess_helpers import execute as _execute

from mlthreat.assess.finding import Finding
from mlthreat.assess.targets.sklearn import SklearnTarget
from mlthreat.assess.techniques import run_class
from mlthreat.assess.techniques.membership import (
    BlackBoxMembership,
    LiraMembership,
    lira_scores,
)
from mlthreat.errors import UsageError

MEMBERSHIP_METRICS = {"auc", "membership_advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"}


execute = partial(_execute, attack_only=True)  # every query is the attack's


def check_membership_finding(f: Finding, n_members: int, n_nonmembers: int) -> None:
    assert f.technique == "AML.T0024.000" and f.status in ("succeeded", "failed")
    assert set(f.metrics) == MEMBERSHIP_METRICS
    for name, m in f.metrics.items():
        assert 0.0 <= m.value <= 1.0, name
        assert m.n == n_members + n_nonmembers
        assert f"{n_members} members, {n_nonmembers} non-members evaluated" in m.note
        assert m.ci is not None and m.ci[0] <= m.value <= m.ci[1], name
    assert "less than one" in f.metrics["tpr_at_0.1pct_fpr"].note
    roc = f.curves["roc"]
    assert 2 <= len(roc["x"]) <= 200 and roc["x"][0] == 0.0 and roc["y"][-1] == 1.0
    assert "AUC >= 0.6" in f.rule and "1 % FPR >= 0.1" in f.rule


@pytest.fixture(scope="module")
def forest(demo_data: Any) -> SklearnTarget:
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=30, random_state=0)
    rf.fit(demo_data.x_train, demo_data.y_train)
    return SklearnTarget(rf, model_id="forest", clip_values=demo_data.clip_values)


def test_registered_and_declared() -> None:
    assert run_class("mlthreat.assess.techniques.membership:BlackBoxMembership").name == \
        "membership-blackbox"
    for cls in (BlackBoxMembership, LiraMembership):
        assert cls.technique == "AML.T0024.000"
        assert cls.needs_membership and cls.needs_scores
        assert "References" in (cls.__doc__ or "")
    assert LiraMembership.name == "membership-lira"
    assert LiraMembership().params["n_shadow"] == 16  # the issue: at least 16 shadow models


def test_blackbox_art_rf_on_demo_mlp(demo_data: Any, demo_targets: list[Any]) -> None:
    mlp = by_id(demo_targets, "demo-mlp")
    run = BlackBoxMembership()
    f = execute(run, mlp, demo_data)
    # trained on 450 + 225, evaluated on the other 450 + 225; one query per row
    assert f.queries == 1350 == run.planned_queries(mlp, demo_data, 10_000)
    check_membership_finding(f, 450, 225)
    assert "evaluated on the other halves" in f.reason
    assert 0.4 < f.metrics["auc"].value < 0.65  # measured 0.509: the MLP leaks little to it


def test_lira_on_demo_mlp_clearly_above_chance(demo_data: Any,
                                                demo_targets: list[Any]) -> None:
    mlp = by_id(demo_targets, "demo-mlp")
    run = LiraMembership(max_per_group=200, shadow_max_iter=100, test="offline")
    assert run.params["n_shadow"] == 16
    f = execute(run, mlp, demo_data)
    assert f.queries == 400 == run.planned_queries(mlp, demo_data, 10_000)
    check_membership_finding(f, 200, 200)
    auc = f.metrics["auc"]
    assert auc.value == pytest.approx(0.576, abs=0.03)  # measured 0.576
    assert auc.ci is not None and auc.ci[0] > 0.5  # bootstrap interval clear of chance
    assert "16 shadow models (clones of the target's MLPClassifier)" in f.reason


def test_lira_online_on_a_forest(demo_data: Any, forest: SklearnTarget) -> None:
    f = execute(LiraMembership(max_per_group=200), forest, demo_data)
    check_membership_finding(f, 200, 200)
    assert f.status == "succeeded"
    assert f.metrics["auc"].value > 0.8  # measured 0.857 (0.958 with 100 trees, all rows)
    assert "online test" in f.reason


def test_lira_fits_the_budget(demo_data: Any, forest: SklearnTarget) -> None:
    f = execute(LiraMembership(n_shadow=4, n_boot=0), forest, demo_data, budget=150)
    assert f.queries <= 150
    assert f.metrics["auc"].n == 100 + 50  # 900:450 scaled to the budget
    assert f.metrics["auc"].ci is None  # n_boot=0: no bootstrap


def test_not_applicable_without_membership_data(demo_data: Any,
                                                demo_targets: list[Any]) -> None:
    mlp = by_id(demo_targets, "demo-mlp")
    data = dataclasses.replace(demo_data, x_members=None, y_members=None)
    for run in (BlackBoxMembership(), LiraMembership()):
        reason = run.not_applicable(mlp, data)
        assert reason is not None and "--members/--non-members" in reason
        f = execute(run, mlp, data)
        assert f.status == "not-applicable" and f.reason == reason and f.queries == 0


def test_too_small_a_budget(demo_data: Any, forest: SklearnTarget) -> None:
    f = execute(BlackBoxMembership(), forest, demo_data, budget=3)
    assert f.status == "not-applicable" and "budget of 3" in f.reason and f.queries == 0


def test_parameters_are_checked() -> None:
    with pytest.raises(UsageError, match="n_shadow"):
        LiraMembership(n_shadow=3).validate()
    with pytest.raises(UsageError, match="unknown parameter"):
        BlackBoxMembership(n_shadow=16).validate()
    with pytest.raises(UsageError, match="max_per_group"):
        BlackBoxMembership(max_per_group=1).validate()


def test_lira_scores_rank_members_first() -> None:
    rng = np.random.default_rng(0)
    k, n = 16, 50
    in_mask = rng.uniform(size=(k, n)).argsort(axis=0) < k // 2
    phi = rng.normal(0, 0.5, (k, n)) + np.where(in_mask, 2.0, 0.0)  # training lifts phi by 2
    target = np.r_[np.full(25, 2.0), np.zeros(25)]  # first 25 in the target's training
    for variance in ("per-example", "global"):
        for test in ("online", "offline"):
            s = lira_scores(phi, in_mask, target, variance, test)
            assert s[:25].min() > s[25:].max(), (variance, test)


def test_regressor_membership_on_loss():
    """A regressor is attacked on its squared error (Yeom et al. 2018): a deep tree that
    memorised its training rows gives members near-zero loss."""
    from sklearn.datasets import load_diabetes
    from sklearn.tree import DecisionTreeRegressor

    from mlthreat.assess.data import AssessmentData
    from mlthreat.assess.runner import Assessment
    from mlthreat.assess.targets.sklearn import SklearnTarget

    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype("float32")
    model = DecisionTreeRegressor(random_state=0).fit(x[:200], y[:200])
    data = AssessmentData(x_pool=x[300:], y_pool=y[300:], x_eval=x[200:300],
                          y_eval=y[200:300], clip_values=(0.0, 1.0), x_members=x[:200],
                          y_members=y[:200], x_nonmembers=x[200:300], y_nonmembers=y[200:300])
    target = SklearnTarget(model, model_id="tree")
    result = Assessment([target], data, techniques=["membership-blackbox",
                                                    "membership-lira"]).run()
    (_, blackbox), (_, lira) = result.findings()
    assert blackbox.status == "succeeded"
    assert blackbox.metrics["auc"].value > 0.95  # members are fitted exactly
    assert blackbox.queries == 300
    assert lira.status == "not-applicable" and "regression" in lira.reason
