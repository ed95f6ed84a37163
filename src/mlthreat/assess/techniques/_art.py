"""Small adapters between mlthreat targets and ART (adversarial-robustness-toolbox) estimators.

* :func:`black_box_classifier` wraps a :class:`~mlthreat.assess.target.Target` as ART's
  ``BlackBoxClassifier``. Its ``predict_fn`` goes through ``target.predict`` (or a wrapper of
  it), so every query ART sends is counted against the current account and logged; ART's own
  counters are never used.
* :func:`white_box_classifier` gives the ART estimator with loss gradients for a white-box
  target: ``target.art_estimator()`` when the target offers one (a torch target builds its own),
  else ART's ``ScikitlearnLogisticRegression`` or ``ScikitlearnSVC`` on ``target.estimator``.
  Gradients computed locally are not queries.

ART is imported inside the functions (``import art.attacks.evasion`` costs about 1.4 s).
``import art`` needs the ``packaging`` distribution, which ART does not declare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlthreat.assess.errors import TargetError

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.assess.target import Target

__all__ = ["art_clip_values", "black_box_classifier", "gradient_support",
           "white_box_classifier"]

# scikit-learn final estimators ART differentiates, and the ART class for each.
_SKLEARN_GRADIENTS = {
    "LogisticRegression": "ScikitlearnLogisticRegression",
    "SVC": "ScikitlearnSVC",
    "LinearSVC": "ScikitlearnSVC",
}


def art_clip_values(target: Target) -> tuple[Any, Any]:
    """The target's valid feature range in the form ART takes: two floats, or two float32
    arrays of ``target.input_shape`` for per-feature bounds.

    ART refuses a feature whose low equals its high ("clip_values: min >= max"), which every
    constant column of the data gives; such a feature gets a high one float32 step-scale above
    its low (relative 1e-4), so the attacks can run and the column barely moves (the feature
    domain projection then resets it exactly).
    """
    import numpy as np

    lo, hi = target.clip_values
    if np.ndim(lo) == 0 and np.ndim(hi) == 0:
        return float(lo), float(hi)
    shape = tuple(target.input_shape)
    low = np.broadcast_to(np.asarray(lo, dtype="float32"), shape).copy()
    high = np.broadcast_to(np.asarray(hi, dtype="float32"), shape).copy()
    flat = high <= low
    high[flat] = low[flat] + np.float32(1e-4) * np.maximum(np.abs(low[flat]), np.float32(1.0))
    return low, high


def black_box_classifier(target: Target,
                         predict: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """ART ``BlackBoxClassifier`` over ``target``.

    Parameters
    ----------
    target : Target
        A classifier target (scores or one-hot labels).
    predict : callable, optional
        ``x [n, *input_shape] -> scores [n, n_classes]``; defaults to ``target.predict``. Pass a
        wrapper of ``target.predict`` to watch the queries (it must still call it, so that the
        target counts and logs them).

    Returns
    -------
    art.estimators.classification.BlackBoxClassifier
    """
    from art.estimators.classification import BlackBoxClassifier

    return BlackBoxClassifier(predict_fn=predict or target.predict,
                              input_shape=tuple(target.input_shape),
                              nb_classes=target.n_classes,
                              clip_values=art_clip_values(target))


def gradient_support(target: Target) -> str | None:
    """Why ART cannot compute loss gradients for ``target`` (None when it can)."""
    if target.art_estimator() is not None:
        return None
    estimator = target.estimator
    if estimator is None:
        return "the target exposes no in-process model to differentiate"
    name = type(estimator).__name__
    if name not in _SKLEARN_GRADIENTS:
        return (f"ART has no gradients for {name}; white-box evasion supports "
                f"{', '.join(sorted(_SKLEARN_GRADIENTS))} and targets with art_estimator()")
    return None


def white_box_classifier(target: Target) -> Any:
    """An ART classifier with loss gradients for ``target``.

    Returns ``target.art_estimator()`` when the target defines it; otherwise wraps the
    scikit-learn ``target.estimator`` (logistic regression, SVC, LinearSVC) with its clip values.

    Raises
    ------
    TargetError
        When neither is available (see :func:`gradient_support`).
    """
    own = target.art_estimator()
    if own is not None:
        return own
    reason = gradient_support(target)
    if reason is not None:
        raise TargetError(f"{target.description or target.model_id}: {reason}")
    from art.estimators.classification import scikitlearn

    cls = getattr(scikitlearn, _SKLEARN_GRADIENTS[type(target.estimator).__name__])
    return cls(model=target.estimator, clip_values=art_clip_values(target))
