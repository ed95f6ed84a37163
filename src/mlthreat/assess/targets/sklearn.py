"""scikit-learn estimators and Pipelines, loaded safely with skops.

A ``.skops`` file is opened with ``skops.io``: types outside skops' trusted set are refused and
listed in the error, so nothing runs that the user did not vet. Pickle and joblib files execute
code when loaded; they are opened only with ``trust_pickle=True`` (``--trust-pickle``), with a
warning. Linear models (logistic regression, linear SVMs) are white-box targets: ART computes
their loss gradients.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.target import Target

__all__ = ["SCHEME", "SklearnTarget", "load"]

SCHEME = "sklearn"
# Final estimators ART can differentiate (art.estimators.classification.scikitlearn).
_WHITE_BOX = ("LogisticRegression", "SVC", "LinearSVC")


class SklearnTarget(Target):
    """An in-process scikit-learn classifier or regressor.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
    model_id : str
    clip_values : (low, high), optional
        Valid feature range; defaults to (0, 1).
    """

    kind = "sklearn"

    def __init__(self, estimator: Any, *, model_id: str = "sklearn-model", description: str = "",
                 clip_values: tuple[Any, Any] | None = None) -> None:
        from sklearn.base import is_classifier, is_regressor

        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is None:
            raise TargetError(f"{description or model_id}: the estimator is not fitted "
                              "(no n_features_in_)")
        self._estimator = estimator
        self.model_id = model_id
        self.input_shape = (int(n_features),)
        self.clip_values = clip_values if clip_values is not None else (0.0, 1.0)
        if is_classifier(estimator):
            self.task = "classification"
            self.classes = list(estimator.classes_)
            self.n_classes = len(self.classes)
            self.output_kind = "scores" if hasattr(estimator, "predict_proba") else "labels"
        elif is_regressor(estimator):
            self.task = "regression"
            self.classes = []
            self.n_classes = 1
            self.output_kind = "scores"
        else:
            raise TargetError(f"{description or model_id}: neither a classifier nor a regressor")
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        self.access = "white-box" if type(final).__name__ in _WHITE_BOX and \
            not hasattr(estimator, "steps") else "black-box"
        self.description = description or f"sklearn {type(final).__name__}"

    @property
    def estimator(self) -> Any:
        return self._estimator

    def _predict(self, x: Any) -> Any:
        import numpy as np

        if self.task == "regression":
            return np.asarray(self._estimator.predict(x), dtype="float64").reshape(len(x))
        if self.output_kind == "scores":
            return np.asarray(self._estimator.predict_proba(x), dtype="float64")
        index = {c: i for i, c in enumerate(self.classes or [])}
        pred = self._estimator.predict(x)
        out = np.zeros((len(x), self.n_classes))
        out[np.arange(len(x)), [index[p] for p in pred]] = 1.0
        return out


def load(path: str, *, trust_pickle: bool = False, clip_values: tuple[Any, Any] | None = None,
         **_: Any) -> SklearnTarget:
    """Load ``path`` (skops; pickle/joblib only with ``trust_pickle``).

    Raises
    ------
    TargetError
        Missing file; untrusted types in a skops file (listed); a pickle without
        ``trust_pickle``; a file that is not a fitted estimator.
    """
    p = Path(path)
    if not p.is_file():
        raise TargetError(f"{p}: no such model file")
    head = p.read_bytes()[:4]
    if head.startswith(b"PK"):
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=p)
        except Exception as exc:  # skops raises many kinds on a corrupt archive
            raise TargetError(f"{p}: not a skops file ({type(exc).__name__}: {exc})") from None
        if untrusted:
            raise TargetError(f"{p}: skops refuses untrusted types {', '.join(untrusted)}; "
                              "inspect them, then re-save the model with only trusted types")
        try:
            estimator = sio.load(p, trusted=[])
        except Exception as exc:
            raise TargetError(f"{p}: cannot load skops file: {exc}") from None
    elif not trust_pickle:
        raise TargetError(f"{p}: not a skops file; pickle and joblib files run code when "
                          "loaded, pass --trust-pickle only if you trust where it came from")
    else:
        warnings.warn(f"unpickling {p}: this runs any code the file contains", stacklevel=2)
        import joblib

        try:
            estimator = joblib.load(p)  # the user asked for this with --trust-pickle
        except Exception as exc:
            raise TargetError(f"{p}: cannot unpickle: {type(exc).__name__}: {exc}") from None
    return SklearnTarget(estimator, model_id=p.stem, description=f"sklearn:{p}",
                         clip_values=clip_values)
