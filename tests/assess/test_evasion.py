"""Evasion runs (AML.T0043.001 HopSkipJump and Boundary, AML.T0043.000 FGSM/PGD) on the digits
demo targets, in a quick profile: a few samples and budgets of a few thousand queries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from assess_helpers import by_id, execute, execute_logged

from mlthreat.assess.finding import Finding
from mlthreat.assess.techniques import run_class
from mlthreat.assess.techniques.evasion import BoundaryEvasion, HopSkipJumpEvasion
from mlthreat.assess.techniques.whitebox import GradientEvasion
from mlthreat.errors import UsageError

HSJ = {"n_samples": 5}
HSJ_BUDGET = 3000  # 600 queries per sample; the run's 20 iterations end at about 540


def metric_values(finding: Finding) -> dict[str, Any]:
    return {name: m.value for name, m in finding.metrics.items()}


@pytest.fixture(scope="module")
def hsj_logged(demo_targets, demo_data, tmp_path_factory) -> tuple[Finding, list[dict], int]:
    """HopSkipJump on demo-mlp with a query log attached: the finding, the logged events, and
    the queries the target counted."""
    target = by_id(demo_targets, "demo-mlp")
    before = target.total_queries
    finding, events = execute_logged(HopSkipJumpEvasion(**HSJ), target, demo_data, HSJ_BUDGET,
                                     tmp_path_factory.mktemp("hsj") / "q.jsonl",
                                     clients_per_run=2)
    return finding, events, target.total_queries - before


def test_hsj_success_rate_is_the_curve_at_eps(hsj_logged):
    finding, _, _ = hsj_logged
    rate = finding.metrics["success_rate_at_eps"]
    assert 0.0 <= rate.value <= 1.0
    assert rate.n == 5 and rate.unit == "fraction"
    assert rate.ci is not None and rate.ci[0] <= rate.value <= rate.ci[1]  # Clopper-Pearson
    curve = finding.curves["success_vs_eps"]
    assert curve["x"][curve["x"].index(0.75)] == 0.75  # the default ε_L2 is on the grid
    assert rate.value == curve["y"][curve["x"].index(0.75)]
    assert curve["y"] == sorted(curve["y"])
    assert finding.metrics["misclassified_rate"].value >= rate.value
    l2 = finding.curves["perturbation_l2"]["values"]
    assert len(l2) == round(finding.metrics["misclassified_rate"].value * 5)
    assert rate.value == sum(v <= 0.75 for v in l2) / 5
    assert finding.status == ("succeeded" if rate.value >= 0.5 else "failed")
    assert finding.technique == "AML.T0043.001" and finding.related_techniques == ("AML.T0015",)
    # measured: 5 of 5 misclassified, median L2 ≈ 0.55, about 540 queries per sample
    assert finding.metrics["misclassified_rate"].value == 1.0
    assert 0.2 < finding.metrics["median_l2"].value < 1.2
    assert finding.metrics["median_linf"].value <= 1.0


def test_a_run_is_one_client_by_default(demo_targets, demo_data, tmp_path):
    from mlthreat.assess.techniques import RunContext
    from mlthreat.events import QueryLog

    target = by_id(demo_targets, "demo-mlp")
    seen = {}
    for per_run in (1, 3):
        log = QueryLog(tmp_path / f"{per_run}.jsonl", target.model_id)
        target.attach_log(log)
        ctx = RunContext(target, demo_data, 100, run_name="run", technique="AML.T0043.001",
                         clients_per_run=per_run)
        try:
            for i in range(4):
                with ctx.attack(f"sample-{i}"):
                    target.predict(demo_data.x_pool[i])
        finally:
            target.attach_log(None)
            log.close()
        lines = (tmp_path / f"{per_run}.jsonl").read_text().splitlines()
        seen[per_run] = [json.loads(line)["client_id"] for line in lines]
    assert seen == {1: ["run"] * 4, 3: ["run-1", "run-2", "run-3", "run-1"]}


def test_hsj_queries_are_counted_by_the_target_and_logged_per_sample(hsj_logged):
    finding, events, counted = hsj_logged
    assert counted == finding.queries + finding.evaluation_queries
    assert 0 < finding.queries <= HSJ_BUDGET
    per_sample = finding.metrics["queries_per_sample"]
    assert per_sample.value * per_sample.n == finding.queries
    assert 400 < per_sample.value <= HSJ_BUDGET / 5  # far below ART's 24,000 default

    attack = [e for e in events if e["truth"] == "attack:AML.T0043.001"]
    evaluation = [e for e in events if e["truth"] == "evaluation"]
    assert len(attack) == finding.queries and len(evaluation) == finding.evaluation_queries
    assert len(attack) + len(evaluation) == len(events)
    assert {e["client_id"] for e in evaluation} == {"evasion-hopskipjump-evaluation"}
    clients = [e["client_id"] for e in attack]
    # five samples spread round-robin over clients_per_run=2 clients, one block per sample
    blocks = [c for i, c in enumerate(clients) if i == 0 or clients[i - 1] != c]
    assert blocks == [f"evasion-hopskipjump-{k}" for k in (1, 2, 1, 2, 1)]
    assert all(e["model_id"] == "demo-mlp" and len(e["input"]) == 64 for e in attack)


def test_hsj_same_seed_same_metrics_and_tighter_eps_no_higher(hsj_logged, demo_targets,
                                                               demo_data):
    finding, _, _ = hsj_logged
    target = by_id(demo_targets, "demo-mlp")
    again = execute(HopSkipJumpEvasion(**HSJ), target, demo_data, HSJ_BUDGET)
    assert metric_values(again) == metric_values(finding)
    assert again.curves == finding.curves
    tight = execute(HopSkipJumpEvasion(**HSJ, eps_l2=0.4), target, demo_data, HSJ_BUDGET)
    assert tight.metrics["success_rate_at_eps"].value <= \
        finding.metrics["success_rate_at_eps"].value
    assert tight.curves["perturbation_l2"] == finding.curves["perturbation_l2"]  # same attack
    assert "L2 ≤ 0.4 of the feature range" in tight.rule


def test_boundary_runs_within_its_per_sample_budget(demo_targets, demo_data):
    target = by_id(demo_targets, "demo-mlp")
    finding = execute(BoundaryEvasion(n_samples=3, queries_per_sample=300), target, demo_data,
                      2000)
    assert finding.technique == "AML.T0043.001" and finding.run == "evasion-boundary"
    assert finding.queries <= 900
    assert finding.metrics["queries_per_sample"].value <= 300
    rate = finding.metrics["success_rate_at_eps"].value
    curve = finding.curves["success_vs_eps"]
    assert rate == curve["y"][curve["x"].index(0.75)]
    assert finding.metrics["misclassified_rate"].value == 1.0  # a start is always found


def test_tiny_budget_ends_failed_with_the_reason(demo_targets, demo_data):
    target = by_id(demo_targets, "demo-mlp")
    # 50 queries for 5 samples: each sample's own budget of 10 cuts its attack short
    finding = execute(HopSkipJumpEvasion(n_samples=5), target, demo_data, 50)
    assert finding.status == "failed"
    assert "5 of 5 attacked samples stopped at their query budget of 10" in finding.reason
    assert finding.queries <= 50 and finding.metrics["success_rate_at_eps"].n == 5
    # 40 per sample: the run's budget runs out during the second sample, the rest are skipped
    finding = execute(HopSkipJumpEvasion(n_samples=5, queries_per_sample=40), target,
                      demo_data, 50)
    assert finding.status == "failed"
    assert "query budget of 50 ran out during sample 2 of 5; the 3 sample(s) not attacked " \
        "count as failures" in finding.reason
    assert 40 < finding.queries <= 50
    assert finding.metrics["success_rate_at_eps"].n == 5
    assert finding.metrics["queries_per_sample"].n == 2


def test_pgd_and_fgsm_evade_the_white_box_logistic_regression(demo_targets, demo_data):
    target = by_id(demo_targets, "demo-logreg")
    pgd = execute(GradientEvasion(n_samples=10, eps_linf=0.25), target, demo_data, 100)
    # measured: 10 of 10 misclassified within L∞ 0.25 (20 of 20 with n_samples=20)
    assert pgd.status == "succeeded"
    assert pgd.metrics["success_rate_at_eps"].value >= 0.8
    assert pgd.technique == "AML.T0043.000" and pgd.queries == 10  # one query per example
    assert pgd.metrics["median_linf"].value <= 0.25 * (1 + 1e-5)
    curve = pgd.curves["success_vs_eps"]
    assert pgd.metrics["success_rate_at_eps"].value == curve["y"][10] and curve["x"][10] == 0.25
    assert curve["y"][1] < curve["y"][10]  # the curve rises with ε: smaller ε fools fewer
    fgsm = execute(GradientEvasion(n_samples=10, method="fgsm"), target, demo_data, 100)
    assert fgsm.metrics["success_rate_at_eps"].value >= 0.8  # measured 1.0
    assert fgsm.params["method"] == "fgsm"


def test_white_box_run_is_not_applicable_to_the_black_box_mlp(demo_targets, demo_data):
    run = GradientEvasion()
    assert run.not_applicable(by_id(demo_targets, "demo-mlp"), demo_data) == \
        "needs gradients (white-box access); the target is black-box"
    assert run.not_applicable(by_id(demo_targets, "demo-logreg"), demo_data) is None
    assert HopSkipJumpEvasion().not_applicable(by_id(demo_targets, "demo-mlp"), demo_data) is None


@pytest.mark.parametrize(("cls", "params", "name"), [
    (HopSkipJumpEvasion, {"n_samples": 0}, "n_samples"),
    (HopSkipJumpEvasion, {"eps_l2": -0.1}, "eps_l2"),
    (HopSkipJumpEvasion, {"eps_linf": 0}, "eps_linf"),
    (HopSkipJumpEvasion, {"min_success_rate": 1.5}, "min_success_rate"),
    (HopSkipJumpEvasion, {"norm": "l1"}, "norm"),
    (HopSkipJumpEvasion, {"queries_per_sample": 0}, "queries_per_sample"),
    (HopSkipJumpEvasion, {"init_eval": 300}, "init_eval"),
    (BoundaryEvasion, {"sample_size": 2.5}, "sample_size"),
    (GradientEvasion, {"method": "cw"}, "method"),
    (GradientEvasion, {"max_iter": True}, "max_iter"),
    (GradientEvasion, {"epsilon": 0.1}, "epsilon"),
])
def test_bad_parameters_raise_usage_error_naming_them(cls, params, name):
    with pytest.raises(UsageError, match=name):
        cls(**params).validate()


def test_registry_names_the_runs_and_rules_state_thresholds():
    for path, cls in (("mlthreat.assess.techniques.evasion:HopSkipJumpEvasion",
                       HopSkipJumpEvasion),
                      ("mlthreat.assess.techniques.evasion:BoundaryEvasion", BoundaryEvasion),
                      ("mlthreat.assess.techniques.whitebox:GradientEvasion", GradientEvasion)):
        assert run_class(path) is cls
    assert "50%" in HopSkipJumpEvasion().rule() and "L2 ≤ 0.75" in HopSkipJumpEvasion().rule()
    assert "L∞ ≤ 0.25" in GradientEvasion().rule()
    assert HopSkipJumpEvasion().planned_queries(None, None, 12_000) == 12_000  # type: ignore
    assert BoundaryEvasion(n_samples=4, queries_per_sample=100).planned_queries(
        None, None, 12_000) == 400  # type: ignore
