"""The demo targets ``mlthreat assess`` uses when given none: two models on the digits data."""

from __future__ import annotations

from typing import Any

from mlthreat.assess.data import AssessmentData
from mlthreat.assess.targets.sklearn import SklearnTarget

__all__ = ["DEMO_PARAMS", "DEMO_TARGET_PARAMS", "N_TREES", "demo_target_params", "demo_targets"]

# A forest answers each call in milliseconds however few rows it holds, and the label-only runs
# send one row per call: 30 trees (0.96 accuracy on the evaluation rows, as with 100) and 3
# samples for those runs keep the demo's forest under 15 s.
N_TREES = 30

# The digits are 8x8 images: the inversion run also reports SSIM on them.
# The poisoning run retrains a clone of each demo model, so each target is poisoned as itself.
DEMO_PARAMS: dict[str, dict[str, Any]] = {"inversion-miface": {"image_shape": (8, 8)},
                                          "poisoning-backdoor": {"fit": "clone-target"}}
DEMO_TARGET_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "demo-forest": {"evasion-hopskipjump": {"n_samples": 3}, "evasion-boundary": {"n_samples": 3}}}


def demo_target_params(selected: set[str], given: dict[str, dict[str, Any]],
                       ) -> dict[str, dict[str, dict[str, Any]]]:
    """:data:`DEMO_TARGET_PARAMS` for the ``selected`` run names, less what the user ``given``
    for every target (``{run: {param: value}}``), which wins."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target, per_run in DEMO_TARGET_PARAMS.items():
        for run, params in per_run.items():
            left = {k: v for k, v in params.items() if k not in given.get(run, {})}
            if run in selected and left:
                out.setdefault(target, {})[run] = left
    return out


def demo_targets(data: AssessmentData, seed: int = 0) -> list[SklearnTarget]:
    """Train, on ``data``'s member rows: a logistic regression (linear, white-box), an overfit
    multi-layer perceptron (one hidden layer of 64, no regularisation to speak of, so
    membership inference has something to find) and a random forest (the common model with no
    gradients: attacks on it go through queries or a proxy). Deterministic for a given
    ``seed``."""
    import warnings

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    assert data.x_train is not None and data.y_train is not None
    lr = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    lr.fit(data.x_train, data.y_train)
    mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-6, max_iter=600, random_state=seed,
                        tol=1e-6, n_iter_no_change=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # overfitting is the point here
        mlp.fit(data.x_train, data.y_train)
    forest = RandomForestClassifier(n_estimators=N_TREES, random_state=seed)
    forest.fit(data.x_train, data.y_train)
    clip = data.clip_values
    return [
        SklearnTarget(lr, model_id="demo-logreg", clip_values=clip,
                      description="demo: LogisticRegression on digits members (white-box)"),
        SklearnTarget(mlp, model_id="demo-mlp", clip_values=clip,
                      description="demo: MLPClassifier(64) overfit on digits members"),
        SklearnTarget(forest, model_id="demo-forest", clip_values=clip,
                      description=f"demo: RandomForestClassifier({N_TREES}) on digits members "
                                  "(no gradients)"),
    ]

