"""Black-Box Transfer (AML.T0043.002) on the digits demo: steal a proxy, craft offline, send.

Measured at seed 0 with the defaults (MLP proxy distilled on 447 score queries, 100 samples,
PGD L∞ ε = 0.25 of the feature range): on demo-mlp the proxy agrees with the target on 0.987 of
the evaluation rows and every one of the 100 crafted examples transfers (Clopper-Pearson
interval 0.964 to 1), for 547 queries in all; at ε_L∞ = 0.1 the rate is 0.55, at ε_L2 = 0.75
it is 0.86.
"""

from __future__ import annotations

import numpy as np
import pytest
from assess_helpers import by_id, execute, execute_logged, value

from mlthreat.assess.finding import Finding
from mlthreat.assess.targets.sklearn import SklearnTarget
from mlthreat.assess.techniques import run_class
from mlthreat.assess.techniques.base import RunContext
from mlthreat.assess.techniques.extraction import SurrogateExtraction
from mlthreat.assess.techniques.transfer import TransferEvasion, art_proxy
from mlthreat.errors import UsageError


@pytest.fixture(scope="module")
def transfer_logged(demo_targets, demo_data, tmp_path_factory) -> tuple[Finding, list[dict]]:
    """The default transfer run on demo-mlp (budget 1000) with a query log attached, its theft
    and its transfer queries under two clients."""
    return execute_logged(TransferEvasion(), by_id(demo_targets, "demo-mlp"), demo_data, 1000,
                          tmp_path_factory.mktemp("transfer") / "q.jsonl", clients_per_run=2)


def test_transfer_evades_demo_mlp(transfer_logged):
    finding, _ = transfer_logged
    rate = finding.metrics["transfer_success_rate"]
    assert 0.0 <= rate.value <= 1.0 and rate.n == 100
    assert rate.value >= 0.9  # measured 1.0 at ε_L∞ = 0.25
    assert rate.ci is not None and rate.ci[0] <= rate.value <= rate.ci[1]
    assert rate == finding.metrics["success_rate_at_eps"]
    assert finding.status == "succeeded"
    assert value(finding, "proxy_fidelity") >= 0.95  # measured 0.987
    assert value(finding, "median_linf") <= 0.25 + 1e-5  # all within ε
    assert finding.technique == "AML.T0043.002"
    assert finding.related_techniques == ("AML.T0024.002", "AML.T0005.001", "AML.T0015")


def test_transfer_queries_add_up(transfer_logged):
    finding, events = transfer_logged
    theft, transfer = value(finding, "theft_queries"), value(finding, "transfer_queries")
    assert (theft, transfer) == (447, 100)
    assert theft + transfer == value(finding, "total_queries") == finding.queries
    clients: dict[str, int] = {}
    for e in events:
        if e.get("truth", "").startswith("attack:"):
            assert e["truth"] == "attack:AML.T0043.002"
            clients[e["client_id"]] = clients.get(e["client_id"], 0) + 1
    assert clients == {"evasion-transfer-1": theft, "evasion-transfer-2": transfer}
    evaluation = sum(1 for e in events if e.get("truth") == "evaluation")
    assert evaluation == finding.evaluation_queries


def test_transfer_within_a_small_budget(demo_targets, demo_data):
    finding = execute(TransferEvasion(proxy="logreg", n_samples=20, eps_linf=0.1),
                      by_id(demo_targets, "demo-mlp"), demo_data, 60)
    assert value(finding, "transfer_queries") == 20
    assert value(finding, "theft_queries") == 40
    assert finding.queries == 60
    assert 0.0 <= value(finding, "transfer_success_rate") <= 1.0


def test_proxy_gradient_matches_finite_differences(demo_targets, demo_data):
    ctx = RunContext(by_id(demo_targets, "demo-logreg"), demo_data, 100, run_name="grad")
    from mlthreat.assess.techniques._surrogate import steal

    proxy = steal(ctx, 100).surrogate
    est = art_proxy(proxy, np.zeros(64), np.ones(64))
    u = demo_data.x_eval[:3].astype("float64")
    y = np.eye(10)[[0, 1, 2]]

    def loss(v: np.ndarray) -> float:
        p = est.predict(v[None, :].astype("float32")).astype("float64")[0]
        return float(-np.log(p @ y[row]))

    grad = est.loss_gradient(u, y)
    for row in range(3):
        for j in (10, 20, 36):
            step = np.zeros(64)
            step[j] = 1e-3
            numeric = (loss(u[row] + step) - loss(u[row] - step)) / 2e-3
            assert grad[row, j] == pytest.approx(numeric, abs=2e-3)


def test_not_applicable_to_a_regressor():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from mlthreat.assess.data import AssessmentData

    x, y = load_diabetes(return_X_y=True)
    target = SklearnTarget(Ridge().fit(x, y))
    data = AssessmentData(x_pool=x, y_pool=y, x_eval=x, y_eval=y, clip_values=(-1, 1))
    assert "classification" in TransferEvasion().not_applicable(target, data)


def test_declarations(demo_targets, demo_data):
    cls = run_class("mlthreat.assess.techniques.transfer:TransferEvasion")
    assert cls is TransferEvasion and cls.name == "evasion-transfer"
    target = by_id(demo_targets, "demo-mlp")
    assert TransferEvasion().planned_queries(target, demo_data, 1000) == 547
    assert TransferEvasion().planned_queries(target, demo_data, 100) == 100
    rule = TransferEvasion().rule()
    assert "30%" in rule and "L∞ ≤ 0.25" in rule and "stolen" in rule
    assert SurrogateExtraction.technique in TransferEvasion.related


@pytest.mark.parametrize(("params", "name"), [
    ({"proxy": "rf"}, "proxy"),
    ({"eps_linf": -0.1}, "eps_linf"),
    ({"norm": "l1"}, "norm"),
    ({"n_samples": 0}, "n_samples"),
    ({"max_iter": 2.5}, "max_iter"),
    ({"distill": 1}, "distill"),
    ({"epsilon": 0.1}, "epsilon"),
])
def test_bad_parameters(params, name, demo_targets, demo_data):
    with pytest.raises(UsageError, match=name):
        TransferEvasion(**params).validate()
    with pytest.raises(UsageError, match=name):
        execute(TransferEvasion(**params), by_id(demo_targets, "demo-mlp"), demo_data, 100)
