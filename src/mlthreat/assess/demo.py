"""The demo targets ``mlthreat assess`` uses when given none: two models on the digits data."""

from __future__ import annotations

from typing import Any

from mlthreat.assess.data import AssessmentData
from mlthreat.assess.targets.sklearn import SklearnTarget

__all__ = ["DEMO_PARAMS", "demo_targets"]

# The digits are 8x8 images: the inversion run also reports SSIM on them.
# The poisoning run retrains a clone of each demo model, so each target is poisoned as itself.
DEMO_PARAMS: dict[str, dict[str, Any]] = {"inversion-miface": {"image_shape": (8, 8)},
                                          "poisoning-backdoor": {"fit": "clone-target"}}


def demo_targets(data: AssessmentData, seed: int = 0) -> list[SklearnTarget]:
    """Train, on ``data``'s member rows: a logistic regression (linear, white-box) and an
    overfit multi-layer perceptron (one hidden layer of 64, no regularisation to speak of, so
    membership inference has something to find). Deterministic for a given ``seed``."""
    import warnings

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
    clip = data.clip_values
    return [
        SklearnTarget(lr, model_id="demo-logreg", clip_values=clip,
                      description="demo: LogisticRegression on digits members (white-box)"),
        SklearnTarget(mlp, model_id="demo-mlp", clip_values=clip,
                      description="demo: MLPClassifier(64) overfit on digits members"),
    ]

