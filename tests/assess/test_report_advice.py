"""What report.json tells a reader to do: verdicts checked against their intervals, the next step
of a run in error, the commands that re-run or verify, mitigations ranked, and the runner's
"run k of N" for progress."""

from __future__ import annotations

from typing import Any

import pytest

from mlthreat.assess.report import assess_command, next_step, ranked_mitigations, verdict
from mlthreat.kb import KnowledgeBase

DEMO_SOURCE = "scikit-learn digits (8x8, scaled to [0, 1])"


def _metric(value: float, ci: list[float] | None = None) -> dict[str, Any]:
    return {"value": value, "unit": "fraction", **({"ci95": ci} if ci else {})}


def _f(status: str, metrics: dict[str, Any], params: dict[str, Any], **more: Any
       ) -> dict[str, Any]:
    return {"status": status, "metrics": metrics, "params": params, "target": "demo-mlp",
            "mitigation": None, "run": "evasion-hopskipjump", "technique": "AML.T0043.001",
            "queries": 900, "reason": "", **more}


def _report(findings: list[dict[str, Any]], *, demo: bool = True, **more: Any
            ) -> dict[str, Any]:
    described = "demo: LogisticRegression" if demo else "sklearn:/m/churn model.skops"
    targets = [{"model_id": "demo-logreg" if demo else "churn", "output_kind": "scores",
                "description": described}]
    return {"findings": findings, "targets": targets, "seed": 0, "budget": None,
            "data": {"source": DEMO_SOURCE if demo else "/data/rows.csv"}, **more}


# -- verdicts -----------------------------------------------------------------------------------
def test_interval_across_the_threshold_is_inconclusive():
    # HopSkipJump on the demo: 12 of 20 within ε, Clopper-Pearson [0.3605, 0.8088], rule ≥ 0.5.
    v = verdict(_f("succeeded", {"success_rate_at_eps": _metric(0.6, [0.3605, 0.8088])},
                   {"min_success_rate": 0.5}))
    assert v == {"inconclusive": True, "intervals": True, "checks": [{
        "metric": "success_rate_at_eps", "value": 0.6, "ci95": [0.3605, 0.8088], "op": ">=",
        "threshold": 0.5, "crosses": True}], "note": (
        "inconclusive: the 95 % interval of success_rate_at_eps [0.36, 0.809] crosses the "
        "threshold 0.5, so the true value may lie on either side; measure on more samples "
        "before relying on this verdict")}


def test_interval_clear_of_the_threshold_holds():
    v = verdict(_f("succeeded", {"success_rate_at_eps": _metric(1.0, [0.8316, 1.0])},
                   {"min_success_rate": 0.5}))
    assert v is not None and v["inconclusive"] is False and v["checks"][0]["crosses"] is False
    assert v["note"] == "holds across the 95 % intervals of success_rate_at_eps"
    failed = verdict(_f("failed", {"success_rate_at_eps": _metric(0.1, [0.0123, 0.317])},
                        {"min_success_rate": 0.5}))
    assert failed is not None and failed["inconclusive"] is False


def test_either_criterion_rule_is_inconclusive_when_one_end_flips_it():
    # LiRA against the demo logistic regression: AUC 0.5784 [0.5478, 0.6101] against 0.6, TPR
    # at 1 % FPR 0.0489 [0.0357, 0.0651] against 0.1: failed, but the AUC could reach 0.6.
    metrics = {"auc": _metric(0.5784, [0.5478, 0.6101]),
               "tpr_at_1pct_fpr": _metric(0.0489, [0.0357, 0.0651])}
    v = verdict(_f("failed", metrics, {"min_auc": 0.6, "min_tpr_at_1pct": 0.1}))
    assert v is not None and v["inconclusive"] is True
    assert [c["crosses"] for c in v["checks"]] == [True, False]
    # The TPR alone clears its threshold at both ends: the verdict holds whatever the AUC.
    metrics["tpr_at_1pct_fpr"] = _metric(0.3, [0.25, 0.35])
    v = verdict(_f("succeeded", metrics, {"min_auc": 0.6, "min_tpr_at_1pct": 0.1}))
    assert v is not None and v["inconclusive"] is False


def test_both_criteria_rule_uses_at_most_for_the_accuracy_drop():
    params = {"min_trigger_success": 0.8, "max_accuracy_drop": 0.05}
    metrics = {"trigger_success_rate": _metric(0.9901, [0.9749, 0.9973]),
               "clean_accuracy_drop": _metric(0.0022)}
    v = verdict(_f("succeeded", metrics, params))
    assert v is not None and v["inconclusive"] is False and v["intervals"] is True
    assert [c["op"] for c in v["checks"]] == [">=", "<="]
    metrics["clean_accuracy_drop"] = _metric(0.04, [0.02, 0.07])
    v = verdict(_f("succeeded", metrics, params))
    assert v is not None and v["inconclusive"] is True
    assert [c["crosses"] for c in v["checks"]] == [False, True]


def test_no_interval_no_rule_or_a_mismatch_is_not_vouched_for():
    v = verdict(_f("succeeded", {"fidelity": _metric(1.0)}, {"min_fidelity": 0.999}))
    assert v is not None and (v["inconclusive"], v["intervals"]) == (False, False)
    assert v["note"] == "no interval to check: fidelity measured without one"
    assert verdict(_f("error", {}, {"min_fidelity": 0.9})) is None
    assert verdict(_f("succeeded", {"fidelity": _metric(1.0)}, {})) is None
    # the stored metric does not give the stored status: nothing to vouch for
    assert verdict(_f("succeeded", {"fidelity": _metric(0.4)}, {"min_fidelity": 0.9})) is None
    assert verdict(_f("failed", {"fidelity": {"value": None, "unit": "fraction"}},
                      {"min_fidelity": 0.9})) is None


# -- commands and next steps --------------------------------------------------------------------
def test_commands_are_exact_for_the_demo_and_quote_user_paths():
    assert assess_command(_report([]), ["evasion-hopskipjump", "evasion-hopskipjump"],
                          mitigation="round:2", out="r2") == (
        "mlthreat assess --techniques evasion-hopskipjump --mitigation round:2 -o r2")
    user = _report([], demo=False, seed=3, budget=500)
    assert assess_command(user, ["extraction-surrogate"]) == (
        "mlthreat assess --target 'sklearn:/m/churn model.skops' --data /data/rows.csv "
        "--seed 3 --budget 500 --techniques extraction-surrogate -o mlthreat-report-rerun")
    user["targets"][0]["description"] = "sklearn LogisticRegression"  # built in Python
    assert assess_command(user, ["x"]).startswith("mlthreat assess --target TARGET --data ")


def test_commands_repeat_the_data_options_and_confirm_endpoints(tmp_path):
    """A user's report records how its rows were read; the command reads them the same way,
    and an endpoint the user confirmed once is confirmed again with --yes."""
    from mlthreat.assess.data import load_data

    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,label\n0,1,0\n1,0,1\n0.5,0.5,1\n0.2,0.1,0\n")
    data = load_data(rows, label_column="label", members=rows, non_members=rows)
    user = _report([], demo=False)
    user["data"] = data.describe()
    user["targets"][0]["description"] = "https://models.example/v1/m:predict"
    assert assess_command(user, ["membership-lira"], out="again") == (
        f"mlthreat assess --target https://models.example/v1/m:predict --data {rows} "
        f"--label-column label --members {rows} --non-members {rows} --yes "
        "--techniques membership-lira -o again")


def test_next_step_of_errors_only():
    crash = _f("error", {}, {}, reason="ValueError: broke", run="evasion-whitebox")
    report = _report([crash])
    assert next_step(crash, report) == (
        "The run stopped on an error of its own; run it alone again to see whether it repeats: "
        "mlthreat assess --techniques evasion-whitebox -o mlthreat-report-evasion-whitebox. If "
        "it does, change its parameters (--param evasion-whitebox.NAME=VALUE; `mlthreat "
        "assess --list` shows whether it applies) or report the reason above with "
        "report.json.")
    for reason in ("target failed: HTTP 503 from http://127.0.0.1:9/predict",
                   "not run: the target failed earlier (HTTP 503)"):
        step = next_step({**crash, "reason": reason}, report)
        assert step is not None and step.startswith(
            "The target itself failed, so the run could not ask it: check that the model "
            "loads and answers one row of the data")
        assert step.endswith("mlthreat assess --techniques evasion-whitebox -o "
                             "mlthreat-report-evasion-whitebox")
    assert next_step(_f("failed", {}, {}), report) is None


# -- mitigations, ranked ------------------------------------------------------------------------
def test_ranked_mitigations_verifiable_first(embedded: KnowledgeBase):
    findings = [
        _f("succeeded", {}, {}, run="evasion-hopskipjump", technique="AML.T0043.001",
           queries=10_766),
        _f("succeeded", {}, {}, run="evasion-whitebox", technique="AML.T0043.000", queries=20),
        _f("succeeded", {}, {}, run="poisoning-backdoor", technique="AML.T0020", queries=0),
        _f("failed", {}, {}, run="membership-lira", technique="AML.T0024.000"),
        _f("succeeded", {}, {}, run="membership-lira", technique="AML.T0024.000",
           mitigation="round:2"),
    ]
    ranked = ranked_mitigations(_report(findings), embedded)
    ids = [m["id"] for m in ranked]
    assert ids[:2] == ["AML.M0002", "AML.M0004"]
    assert all(m["verify"] for m in ranked[:2]) and not any(m["verify"] for m in ranked[2:])
    # the others: most techniques addressed first, then by ID
    assert ids[2:6] == ["AML.M0008", "AML.M0003", "AML.M0005", "AML.M0006"]
    assert "AML.M0019" in ids and "AML.M0007" in ids  # black-box only, poisoning only
    m0002, m0004 = ranked[0], ranked[1]
    assert m0002["techniques"] == ["AML.T0043.001", "AML.T0043.000"]
    assert m0002["left_out"] == ["evasion-whitebox"]  # white-box: wrapping answers is moot
    assert [(v["mitigation"], v["command"]) for v in m0002["verify"]] == [
        (spec, f"mlthreat assess --techniques evasion-hopskipjump --mitigation {spec} -o "
               f"mlthreat-report-{spec.replace(':', '-')}")
        for spec in ("round:2", "top1", "noise:0.05", "reverse-sigmoid:0.5")]
    assert [(v["mitigation"], v["does"], v["note"]) for v in m0004["verify"]] == [
        ("query-limit:1000", "each attack refused after 1000 queries",
         "below the 10,766 queries the cheapest of these runs sent")]


@pytest.mark.parametrize(("queries", "limit"), [(65, 32), (1, 1), (5_000, 1000)])
def test_query_limit_bites(embedded: KnowledgeBase, queries: int, limit: int):
    f = _f("succeeded", {}, {}, run="extraction-equations", technique="AML.T0024.002",
           queries=queries)
    m0004 = next(m for m in ranked_mitigations(_report([f]), embedded) if m["id"] == "AML.M0004")
    assert [v["mitigation"] for v in m0004["verify"]] == [f"query-limit:{limit}"]


def test_labels_only_targets_get_no_output_obfuscation(embedded: KnowledgeBase):
    f = _f("succeeded", {}, {}, run="extraction-surrogate", technique="AML.T0024.002",
           queries=447)
    report = _report([f])
    report["targets"][0]["output_kind"] = "labels"
    ranked = {m["id"]: m for m in ranked_mitigations(report, embedded)}
    assert ranked["AML.M0002"]["verify"] == []
    assert [v["mitigation"] for v in ranked["AML.M0004"]["verify"]] == ["query-limit:223"]


# -- progress -----------------------------------------------------------------------------------
def test_runner_tells_the_reporter_run_k_of_n(demo_data, demo_targets):
    from mlthreat.assess.runner import Assessment

    class Reporter:
        def __init__(self) -> None:
            self.started: list[tuple[str, str, int, int]] = []

        def run_started(self, target: str, run: str, technique: str, budget: int, *,
                        index: int = 0, total: int = 0) -> None:
            self.started.append((target, run, index, total))

        def progress(self, queries_used: int) -> None:
            pass

        def run_finished(self, finding: Any) -> None:
            pass

    reporter = Reporter()
    # neither run sends a query: no --fit for the backdoor, no gradients of the MLP
    Assessment(demo_targets[1:2], demo_data, techniques=["poisoning-backdoor", "inversion-miface"],
               budget=10).run(reporter)
    assert reporter.started == [("demo-mlp", "inversion-miface", 1, 2),
                                ("demo-mlp", "poisoning-backdoor", 2, 2)]
