"""LiRA's pieces (Carlini et al. 2022), for :class:`~.membership.LiraMembership`: the shadow
models, the logit-scaled confidence φ they and the target are scored by, and the likelihood-ratio
scores computed from the shadows' φ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SHADOW_KINDS", "configure", "fresh_model", "lira_scores", "logit_confidence"]

SHADOW_KINDS = ("mlp", "logreg", "rf")
_EPS = 1e-6


def fresh_model(kind: str) -> Any:
    """An unfitted shadow model of ``kind`` (one of ``SHADOW_KINDS``)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "logreg":
        return LogisticRegression(max_iter=1000)
    if kind == "rf":
        return RandomForestClassifier(n_estimators=100)
    return MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-6, max_iter=300)


def configure(prototype: Any, max_iter: int | None, seed: int) -> Any:
    """A fresh clone of ``prototype`` with its own seed (and ``max_iter`` when given), for the
    estimator itself or any step of a Pipeline."""
    from sklearn.base import clone

    model = clone(prototype)
    updates: dict[str, Any] = {}
    for key in model.get_params(deep=True):
        leaf = key.rsplit("__", 1)[-1]
        if leaf == "random_state":
            updates[key] = seed
        elif leaf == "max_iter" and max_iter is not None:
            updates[key] = max_iter
    return model.set_params(**updates) if updates else model


def logit_confidence(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence on the true label, log(p_y + ε) - log(Σ_{j≠y} p_j + ε), for
    score columns named by ``classes`` (a label absent from them has p_y = 0)."""
    import numpy as np

    scores = np.asarray(scores, dtype="float64")
    column = {int(c): i for i, c in enumerate(classes)}
    idx = np.array([column.get(int(y), -1) for y in labels])
    rows = np.arange(len(scores))
    known = idx >= 0
    p_y = np.where(known, scores[rows, np.maximum(idx, 0)], 0.0)
    # sum the other columns directly: 1 - p_y would round p_y = 1 - 1e-20 to 1
    mask = np.ones_like(scores, dtype=bool)
    mask[rows[known], idx[known]] = False
    others = np.where(mask, scores, 0.0).sum(axis=1)
    return np.asarray(np.log(p_y + _EPS) - np.log(others + _EPS))


def lira_scores(phi: np.ndarray, in_mask: np.ndarray, phi_target: np.ndarray,
                variance: str = "per-example", test: str = "online") -> np.ndarray:
    """LiRA membership scores from shadow statistics.

    Parameters
    ----------
    phi : ndarray [n_shadow, n]
        Each shadow model's logit-scaled confidence on each candidate.
    in_mask : ndarray of bool [n_shadow, n]
        Whether the shadow trained on the candidate (each column needs both kinds).
    phi_target : ndarray [n]
        The target's logit-scaled confidence on each candidate.
    variance : {"per-example", "global"}
    test : {"online", "offline"}

    Returns
    -------
    ndarray [n]
        Higher means more likely a member.
    """
    import numpy as np
    from scipy.stats import norm

    phi_in, phi_out = np.where(in_mask, phi, np.nan), np.where(~in_mask, phi, np.nan)
    mu_in, mu_out = np.nanmean(phi_in, axis=0), np.nanmean(phi_out, axis=0)
    g_in, g_out = np.nanstd(phi_in - mu_in), np.nanstd(phi_out - mu_out)
    if variance == "global":
        sd_in, sd_out = np.full_like(mu_in, g_in), np.full_like(mu_out, g_out)
    else:
        sd_in = np.maximum(np.nanstd(phi_in, axis=0), 0.25 * g_in)
        sd_out = np.maximum(np.nanstd(phi_out, axis=0), 0.25 * g_out)
    sd_in, sd_out = np.maximum(sd_in, 1e-3), np.maximum(sd_out, 1e-3)
    if test == "offline":
        return np.asarray((phi_target - mu_out) / sd_out)
    return np.asarray(norm.logpdf(phi_target, mu_in, sd_in) -
                      norm.logpdf(phi_target, mu_out, sd_out))

