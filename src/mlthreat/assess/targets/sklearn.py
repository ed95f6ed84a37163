"""scikit-learn estimators and Pipelines, loaded safely with skops.

A ``.skops`` file is opened with ``skops.io``: types of scikit-learn, NumPy and SciPy are
trusted, others only when the user names them, callables outside those libraries never (the
policy is in :mod:`mlthreat.assess.targets._skops_trust`), so nothing runs that the user did
not vet. Pickle and joblib files execute
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
    trusted_types: tuple[str, ...] = ()

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

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trusted_types": list(self.trusted_types)}

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
         trust_types: list[str] | tuple[str, ...] = (), **_: Any) -> SklearnTarget:
    """Load ``path`` (skops; pickle/joblib only with ``trust_pickle``).

    Types of scikit-learn, NumPy and SciPy in a skops file are trusted, as are the non-callable
    types named in ``trust_types``; see :mod:`mlthreat.assess.targets._skops_trust`. The names
    trusted beyond skops' own set are kept in the target's ``trusted_types``.

    Raises
    ------
    TargetError
        Missing file; types the trust policy refuses (named, with why); a pickle without
        ``trust_pickle``; a file that is not a fitted estimator.
    """
    p = Path(path)
    if not p.is_file():
        raise TargetError(f"{p}: no such model file")
    head = p.read_bytes()[:4]
    if head.startswith(b"PK"):
        import skops.io as sio

        from mlthreat.assess.targets._skops_trust import (
            SchemaError,
            decide,
            name_uses,
            read_schema,
        )

        try:
            uses = name_uses(read_schema(p))
        except SchemaError as exc:
            raise TargetError(f"{p}: not a skops file ({exc})") from None
        try:
            untrusted = sio.get_untrusted_types(file=p)
        except Exception as exc:  # skops raises many kinds on a corrupt archive
            raise TargetError(f"{p}: not a skops file ({type(exc).__name__}: {exc})") from None
        decision = decide(untrusted, uses, trust_types)
        if decision.refused:
            name, why = next(iter(decision.refused.items()))
            raise TargetError(f"{p}: untrusted type {name} ({why})"
                              + (f" and {len(decision.refused) - 1} more: "
                                 + ", ".join(list(decision.refused)[1:6])
                                 if len(decision.refused) > 1 else ""))
        trusted = list(decision.trusted)
        try:
            estimator = sio.load(p, trusted=trusted)
        except Exception as exc:
            raise TargetError(f"{p}: cannot load skops file: {exc}") from None
    elif not trust_pickle:
        raise TargetError(f"{p}: not a skops file; pickle and joblib files run code when "
                          "loaded, pass --trust-pickle only if you trust where it came from")
    else:
        trusted = []
        warnings.warn(f"unpickling {p}: this runs any code the file contains", stacklevel=2)
        import joblib

        try:
            estimator = joblib.load(p)  # the user asked for this with --trust-pickle
        except Exception as exc:
            raise TargetError(f"{p}: cannot unpickle: {type(exc).__name__}: {exc}") from None
    target = SklearnTarget(estimator, model_id=p.stem, description=f"sklearn:{p}",
                           clip_values=clip_values)
    target.trusted_types = tuple(trusted)
    return target
