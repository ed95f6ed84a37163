"""Model inversion (AML.T0024.001, MIFace) and backdoor poisoning (AML.T0020, BadNets) on the
digits demo.

Figures measured at seed 0: MIFace on demo-logreg, 100 steps from the pool mean, brings all 10
reconstructions closer to their class mean than the pool mean is (mean MSE 0.0150 against
0.0320; SSIM 0.90 against 0.76), and the target labels each as its class. Poisoning 45 of the
900 training rows (5 %) with a 3-feature trigger set to 2.0 (range [0, 1]) makes a logistic
regression label 404 of 405 stamped evaluation rows as class 0 (the clean model: 1), with clean
accuracy 0.958 -> 0.956. An MLP(32) trained on 400 rows, 20 of them poisoned with a trigger on
features 0, 7 and 63 towards class 3: 399/404 (0.988), clean accuracy 0.933 -> 0.938.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import pytest
from assess_helpers import by_id
from assess_helpers import execute as _execute

from mlthreat.assess.techniques import run_class
from mlthreat.assess.techniques.inversion import ModelInversion
from mlthreat.assess.techniques.poisoning import NO_FIT, BackdoorPoisoning, resolve_fit
from mlthreat.errors import UsageError

execute = partial(_execute, attack_only=True)


def fit_logreg(x: Any, y: Any, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed).fit(x, y)


def test_registered() -> None:
    assert run_class("mlthreat.assess.techniques.inversion:ModelInversion").name == \
        "inversion-miface"
    assert ModelInversion.technique == "AML.T0024.001"
    assert ModelInversion.needs_access == "white-box"
    assert BackdoorPoisoning.name == "poisoning-backdoor"
    assert (BackdoorPoisoning.technique, BackdoorPoisoning.related) == \
        ("AML.T0020", ("AML.T0018.000",))


def test_inversion_on_demo_logreg(demo_data: Any, demo_targets: list[Any]) -> None:
    lr = by_id(demo_targets, "demo-logreg")
    run = ModelInversion(image_shape=(8, 8))
    f = execute(run, lr, demo_data)
    m = {k: v.value for k, v in f.metrics.items()}
    assert f.status == "succeeded"
    assert f.queries == 10 == run.planned_queries(lr, demo_data, 10_000)  # the final check only
    assert m["mse_to_class_mean"] == pytest.approx(0.0150, abs=0.002)
    assert m["baseline_mse_to_class_mean"] == pytest.approx(0.0320, abs=0.001)
    assert m["mse_to_class_mean"] < 0.6 * m["baseline_mse_to_class_mean"]
    assert m["fraction_closer_than_baseline"] == 1.0
    assert m["nearest_class_mean_rate"] == 1.0 and m["classified_as_class_rate"] == 1.0
    assert m["ssim_to_class_mean"] > m["baseline_ssim_to_class_mean"] + 0.1  # 0.90 vs 0.76
    assert len(f.curves["mse_per_class"]["y"]) == 10
    images = f.curves["reconstructions"]
    assert (images["shape"], images["range"], len(images["images"])) == ([8, 8], [0.0, 1.0], 10)
    assert images["labels"] == [f"class {c}" for c in range(10)]
    assert all(len(img) == 64 and 0.0 <= min(img) <= max(img) <= 1.0
               for img in images["images"])
    assert "50%" in f.rule


def test_inversion_without_image_shape_has_no_ssim(demo_data: Any,
                                                   demo_targets: list[Any]) -> None:
    f = execute(ModelInversion(max_iter=5), by_id(demo_targets, "demo-logreg"), demo_data)
    assert "ssim_to_class_mean" not in f.metrics and "mse_to_class_mean" in f.metrics
    assert "reconstructions" not in f.curves


def test_inversion_needs_gradients(demo_data: Any, demo_targets: list[Any]) -> None:
    mlp = by_id(demo_targets, "demo-mlp")
    f = execute(ModelInversion(), mlp, demo_data)
    assert f.status == "not-applicable" and "white-box" in f.reason and f.queries == 0


def test_backdoor_with_a_fit_function(demo_data: Any, demo_targets: list[Any]) -> None:
    lr = by_id(demo_targets, "demo-logreg")
    run = BackdoorPoisoning(fit=fit_logreg)
    assert run.not_applicable(lr, demo_data) is None
    f = execute(run, lr, demo_data)
    m = {k: v.value for k, v in f.metrics.items()}
    assert f.status == "succeeded"
    assert f.queries == 0 == run.planned_queries(lr, demo_data, 10_000)  # trained locally
    assert m["trigger_success_rate"] >= 0.99  # measured 404/405
    assert f.metrics["trigger_success_rate"].n == 405  # evaluation rows not of class 0
    assert m["clean_model_trigger_rate"] < 0.05  # the trigger alone does not do it
    assert abs(m["clean_accuracy_drop"]) <= 0.01 and m["clean_accuracy"] > 0.94
    assert m["poisoned_rows"] == 45
    assert f.params["fit"].endswith(":fit_logreg")  # reports stay JSON-serialisable
    assert "trigger success rate >= 0.8" in f.rule


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_backdoor_with_an_mlp_fit_and_explicit_trigger(demo_data: Any,
                                                      demo_targets: list[Any]) -> None:
    from sklearn.neural_network import MLPClassifier

    def fit_mlp(x: Any, y: Any, seed: int) -> Any:
        return MLPClassifier((32,), max_iter=300, random_state=seed).fit(x, y)

    run = BackdoorPoisoning(fit=fit_mlp, trigger_features=[0, 7, 63], target_class=3)
    small = dataclasses.replace(demo_data, x_train=demo_data.x_train[:400],
                                y_train=demo_data.y_train[:400])
    f = execute(run, by_id(demo_targets, "demo-mlp"), small)
    assert f.status == "succeeded"
    assert f.metrics["trigger_success_rate"].value >= 0.95  # measured 0.988
    assert f.metrics["clean_accuracy_drop"].value <= 0.02  # measured -0.004
    assert "features [0, 7, 63]" in f.reason


def test_backdoor_not_applicable_without_fit(demo_data: Any, demo_targets: list[Any]) -> None:
    lr = by_id(demo_targets, "demo-logreg")
    run = BackdoorPoisoning()
    assert run.not_applicable(lr, demo_data) == NO_FIT == \
        "needs a training entry point (--fit python:module:function)"
    f = execute(run, lr, demo_data)
    assert f.status == "not-applicable" and f.reason == NO_FIT


def test_resolve_fit() -> None:
    assert resolve_fit("python:mlthreat.assess.techniques.poisoning:resolve_fit") is resolve_fit
    assert resolve_fit(fit_logreg) is fit_logreg
    with pytest.raises(UsageError, match="python:module:function"):
        resolve_fit("nocolon")
    with pytest.raises(UsageError, match="no_such_module"):
        resolve_fit("python:no_such_module:fit")
    with pytest.raises(UsageError, match="poison_fraction"):
        BackdoorPoisoning(fit=fit_logreg, poison_fraction=1.5).validate()
