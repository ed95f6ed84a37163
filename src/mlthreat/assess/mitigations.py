"""Mitigations applied around a target, to prove by re-running the suite that they work.

Each wraps the target's answers the way a serving layer would:

* ``round:DIGITS`` — round scores (AML.M0002 Passive AI Output Obfuscation);
* ``top1`` — return the top label only (AML.M0002);
* ``noise:SCALE`` — add Gaussian noise of standard deviation SCALE to scores, renormalised
  (AML.M0002);
* ``reverse-sigmoid:BETA`` — the reverse-sigmoid perturbation of Lee et al. 2019, which keeps
  the top label but poisons the scores a thief trains on (AML.M0002);
* ``query-limit:N`` — refuse a client after N queries in one technique run (AML.M0004 Restrict
  Number of AI Model Queries).

Gradients of a white-box target are left alone: output obfuscation does not protect a model
whose weights the attacker has, and the before/after comparison shows exactly that.

References
----------
Lee, T., Edwards, B., Molloy, I., Su, D. "Defending Against NN Model Stealing Attacks Using
Deceptive Perturbations." IEEE S&P Workshops, 2019.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

from mlthreat.assess.errors import QueryBudgetExceeded
from mlthreat.assess.target import Target
from mlthreat.constraints import Interval, Spec, validate
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MITIGATIONS", "MitigatedTarget", "Mitigation", "parse_mitigation"]


@dataclass(frozen=True)
class Mitigation:
    """A parsed ``--mitigation`` spec: ``kind``, its ``value``, the ATLAS mitigation ID."""

    kind: str
    value: float
    atlas_id: str

    @property
    def label(self) -> str:
        return self.kind if self.kind == "top1" else f"{self.kind}:{self.value:g}"


# kind -> (ATLAS mitigation, needs a value, default value)
MITIGATIONS: dict[str, tuple[str, bool, float]] = {
    "round": ("AML.M0002", True, 2),
    "top1": ("AML.M0002", False, 0),
    "noise": ("AML.M0002", True, 0.05),
    "reverse-sigmoid": ("AML.M0002", True, 0.5),
    "query-limit": ("AML.M0004", True, 1000),
}
# what each kind's value may be (a kind without an entry takes no value)
_VALUE: dict[str, Spec] = {
    "round": Interval(Integral, 0, None, note="decimals kept"),
    "noise": Interval(Real, 0, None, note="standard deviation"),
    "reverse-sigmoid": Interval(Real, 0, None, note="perturbation strength"),
    "query-limit": Interval(Integral, 1, None, note="queries per run"),
}


def _number(raw: str) -> int | float | str:
    """``raw`` as an int when it is a whole number, else a float; unchanged when neither."""
    try:
        value = float(raw)
    except ValueError:
        return raw
    return int(value) if value.is_integer() else value


def parse_mitigation(spec: str) -> Mitigation:
    """Parse ``kind[:value]``. Raises UsageError for an unknown kind or a bad value."""
    kind, _, raw = spec.partition(":")
    if kind not in MITIGATIONS:
        raise UsageError(f"unknown mitigation {kind!r}; choose one of {', '.join(MITIGATIONS)}")
    atlas_id, needs_value, default = MITIGATIONS[kind]
    if not needs_value:
        if raw:
            raise UsageError(f"mitigation {kind} takes no value")
        return Mitigation(kind, 0, atlas_id)
    value = _number(raw) if raw else default
    validate(f"mitigation {kind}", {"value": value}, {"value": _VALUE[kind]})
    return Mitigation(kind, float(value), atlas_id)


class MitigatedTarget(Target):
    """``inner`` with ``mitigation`` applied to every answer (see the module docstring)."""

    kind = "mitigated"

    def __init__(self, inner: Target, mitigation: Mitigation, seed: int = 0) -> None:
        import numpy as np

        self.inner = inner
        self.mitigation = mitigation
        for attr in ("input_shape", "n_classes", "clip_values", "access", "task", "classes",
                     "input_dtype"):
            setattr(self, attr, getattr(inner, attr))
        self.output_kind = "labels" if mitigation.kind == "top1" else inner.output_kind
        self.model_id = inner.model_id
        self.description = f"{inner.description} + {mitigation.label} ({mitigation.atlas_id})"
        self._rng = np.random.default_rng(seed)
        self.run_queries = 0

    @property
    def estimator(self) -> Any:
        return self.inner.estimator

    def art_estimator(self) -> Any:
        """The inner target's own ART estimator (gradients are local, not answers)."""
        return self.inner.art_estimator()

    def reset_limit(self) -> None:
        """Start a new technique run: the query limit counts from zero again."""
        self.run_queries = 0

    def _predict(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        m = self.mitigation
        measuring = self._account is not None and self._account.truth == "evaluation"
        if m.kind == "query-limit" and not measuring:  # the limit is the attacker's, not ours
            if self.run_queries + len(x) > m.value:
                raise QueryBudgetExceeded(f"query limit {int(m.value)} ({m.atlas_id})",
                                          int(m.value), self.run_queries, len(x))
            self.run_queries += len(x)
        y = np.asarray(self.inner._predict(x), dtype="float64")
        if self.task == "regression":
            if m.kind == "round":
                return np.round(y, int(m.value))
            if m.kind == "noise":
                return y + self._rng.normal(0, m.value, size=y.shape)
            return y
        if m.kind == "round":
            return np.round(y, int(m.value))
        if m.kind == "top1":
            out = np.zeros_like(y)
            out[np.arange(len(y)), y.argmax(axis=1)] = 1.0
            return out
        if m.kind == "noise":
            noisy = np.clip(y + self._rng.normal(0, m.value, size=y.shape), 1e-9, None)
            # keep the served label: a serving layer adds noise, it does not change answers
            top = y.argmax(axis=1)
            noisy[np.arange(len(y)), top] = noisy.max(axis=1) + 1e-6
            return np.asarray(noisy / noisy.sum(axis=1, keepdims=True))
        if m.kind == "reverse-sigmoid":
            return _reverse_sigmoid(y, m.value)
        return y


def _reverse_sigmoid(p: np.ndarray, beta: float, gamma: float = 0.2) -> np.ndarray:
    """Lee et al. 2019: y' = a * (p - beta * (sigmoid(gamma * logit(p)) - 1/2)), renormalised
    (a), top label kept. With gamma = 1 the change is linear in p and easy to undo; a gamma
    below 1 bends it."""
    import numpy as np

    p = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(p / (1 - p))
    perturbed = p - beta * (1 / (1 + np.exp(-gamma * logit)) - 0.5)
    perturbed = np.clip(perturbed, 1e-9, None)
    top = p.argmax(axis=1)
    perturbed[np.arange(len(p)), top] = perturbed.max(axis=1) + 1e-6
    return np.asarray(perturbed / perturbed.sum(axis=1, keepdims=True))
