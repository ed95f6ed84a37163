"""LiRA's pieces (Carlini et al. 2022), for :class:`~.membership.LiraMembership`: the shadow
models, the logit-scaled confidence φ they and the target are scored by, and the likelihood-ratio
scores computed from the shadows' φ.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SHADOW_KINDS", "batchable_mlp", "configure", "fresh_model", "lira_scores",
           "logit_confidence", "paired_keep", "train_mlp_shadows"]

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



def paired_keep(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Which rows each shadow trains on, bool [k, n] (k even): shadows in complementary pairs,
    one on a random half of the rows and the other on the rest, so that every row is in
    exactly k/2 shadows and every shadow has n//2 or n - n//2 rows."""
    import numpy as np

    keep = np.zeros((k, n), dtype=bool)
    for pair in range(k // 2):
        half = rng.permutation(n) < n // 2
        keep[2 * pair], keep[2 * pair + 1] = half, ~half
    return keep


def batchable_mlp(prototype: Any, n_classes: int) -> bool:
    """Whether :func:`train_mlp_shadows` reproduces ``prototype``'s training: a bare
    ``MLPClassifier`` with the adam solver, shuffling, no early stopping, three or more
    classes."""
    from sklearn.neural_network import MLPClassifier

    if type(prototype) is not MLPClassifier or n_classes < 3:
        return False
    p = prototype.get_params()
    return (p["solver"] == "adam" and p["shuffle"] and not p["early_stopping"]
            and p["activation"] in _ACTIVATIONS)


_ACTIVATIONS = ("relu", "tanh", "logistic", "identity")


def train_mlp_shadows(prototype: Any, x: np.ndarray, y: np.ndarray, keep: np.ndarray,
                      x_score: np.ndarray, *, n_classes: int | None = None,
                      max_iter: int | None = None, seed: int = 0) -> np.ndarray:
    """Train ``len(keep)`` copies of an ``MLPClassifier`` recipe at once, shadow ``s`` on the
    rows ``keep[s]``, and return their class scores on ``x_score``.

    The recipe is scikit-learn's (``prototype``'s hidden layers, activation, ``alpha``,
    ``batch_size``, adam's rate, betas and epsilon, ``max_iter``, and its stop when the
    epoch's training loss has not improved by ``tol`` for ``n_iter_no_change`` epochs, per
    shadow): Glorot-uniform initial weights, a fresh shuffle each epoch, softmax
    cross-entropy with an L2 penalty of ``alpha / 2`` per batch. The shadows' batches are
    stacked into one array, so each adam step is a few batched matrix products for all of
    them and the per-step overhead is paid once: LiRA's 16 shadows of the demo MLP (600
    epochs on about 900 rows, two threads) take a third of the time of 16 scikit-learn fits
    (benchmarks/README.md). Not bit-identical to scikit-learn (its random draws differ); a
    shadow only needs the same recipe.

    Parameters
    ----------
    prototype : sklearn.neural_network.MLPClassifier
        Unfitted recipe (see :func:`batchable_mlp`).
    x : ndarray [n, d]
    y : ndarray of int [n]
        Class indices in ``0 .. n_classes - 1``.
    keep : ndarray of bool [k, n]
    x_score : ndarray [m, d]
    n_classes : int, optional
        Score columns (default ``y.max() + 1``).
    max_iter : int, optional
        Epochs (default: the prototype's).

    Returns
    -------
    ndarray [k, m, n_classes]
        Each shadow's softmax scores on ``x_score``.
    """
    import numpy as np

    p = prototype.get_params()
    rng = np.random.default_rng(seed)
    dtype = np.float32 if np.asarray(x).dtype == np.float32 else np.float64
    x = np.asarray(x, dtype=dtype).reshape(len(x), -1)
    k = len(keep)
    n_classes = int(np.max(y)) + 1 if n_classes is None else n_classes
    onehot = np.eye(n_classes, dtype=dtype)[np.asarray(y, dtype=np.int64)]
    sizes = keep.sum(axis=1)
    rows = [np.flatnonzero(keep[s]) for s in range(k)]
    width = int(sizes.max())
    batch = width if p["batch_size"] == "auto" and width < 200 else \
        min(200 if p["batch_size"] == "auto" else int(p["batch_size"]), width)
    units = [x.shape[1], *np.atleast_1d(p["hidden_layer_sizes"]).tolist(), n_classes]
    factor = 2.0 if p["activation"] == "logistic" else 6.0
    weights, biases = [], []
    for fan_in, fan_out in itertools.pairwise(units):
        bound = np.sqrt(factor / (fan_in + fan_out))
        weights.append(rng.uniform(-bound, bound, (k, fan_in, fan_out)).astype(dtype))
        biases.append(rng.uniform(-bound, bound, (k, 1, fan_out)).astype(dtype))
    params = weights + biases
    m1 = [np.zeros_like(q) for q in params]
    m2 = [np.zeros_like(q) for q in params]
    alpha, lr = p["alpha"], p["learning_rate_init"]
    b1, b2, eps = p["beta_1"], p["beta_2"], p["epsilon"]
    act = p["activation"]
    live = np.ones(k, dtype=bool)
    best = np.full(k, np.inf)
    stale = np.zeros(k, dtype=int)
    step = 0
    for _ in range(p["max_iter"] if max_iter is None else max_iter):
        order = np.zeros((k, width), dtype=np.int64)
        for s in range(k):
            order[s, :sizes[s]] = rng.permutation(rows[s])
        epoch_loss = np.zeros(k)
        for start in range(0, width, batch):
            idx = order[:, start:start + batch]
            count = np.clip(sizes - start, 0, idx.shape[1])  # real rows in this batch [k]
            if not (count[live] > 0).any():
                continue
            mask = (np.arange(idx.shape[1])[None, :] < count[:, None]).astype(dtype)[..., None]
            denom = np.maximum(count, 1).astype(dtype)[:, None, None]
            outs = _forward(x[idx], weights, biases, act)
            scores = outs[-1]
            delta = (scores - onehot[idx]) * mask
            picked = np.log(np.clip((scores * onehot[idx]).sum(-1), 1e-12, None))
            penalty = np.sum([(w.astype(np.float64) ** 2).sum(axis=(1, 2)) for w in weights],
                             axis=0)
            epoch_loss += -(picked * mask[..., 0]).sum(axis=1) + 0.5 * alpha * penalty
            grads_w: list[np.ndarray] = [np.empty(0)] * len(weights)
            grads_b: list[np.ndarray] = [np.empty(0)] * len(weights)
            for layer in range(len(weights) - 1, -1, -1):
                grads_w[layer] = (np.matmul(outs[layer].transpose(0, 2, 1), delta)
                                  + alpha * weights[layer]) / denom
                grads_b[layer] = delta.sum(axis=1, keepdims=True) / denom
                if layer:
                    delta = np.matmul(delta, weights[layer].transpose(0, 2, 1)) * \
                        _derivative(outs[layer], act)
            step += 1
            rate = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            on = (live & (count > 0)).astype(dtype)[:, None, None]
            for q, g, a, v in zip(params, grads_w + grads_b, m1, m2, strict=True):
                a *= b1
                a += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                np.subtract(q, on * (rate * a / (np.sqrt(v) + eps)), out=q,
                            casting="unsafe")
        epoch_loss /= np.maximum(sizes, 1)
        worse = epoch_loss > best - p["tol"]
        stale = np.where(worse & live, stale + 1, np.where(live, 0, stale))
        best = np.minimum(best, epoch_loss)
        live &= stale <= p["n_iter_no_change"]
        if not live.any():
            break
    xs = np.asarray(x_score, dtype=dtype).reshape(len(x_score), -1)
    return np.asarray(_forward(np.broadcast_to(xs, (k, *xs.shape)), weights, biases,
                               act)[-1], dtype="float64")


def _forward(x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray],
             act: str) -> list[np.ndarray]:
    """Layer outputs [k, b, units] from the input to the softmax scores."""
    import numpy as np

    outs = [x]
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = np.matmul(outs[-1], w) + b
        if layer == len(weights) - 1:
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            outs.append(z / z.sum(axis=-1, keepdims=True))
        elif act == "relu":
            outs.append(np.maximum(z, 0))
        elif act == "tanh":
            outs.append(np.tanh(z))
        elif act == "logistic":
            outs.append(1 / (1 + np.exp(-z)))
        else:
            outs.append(z)
    return outs


def _derivative(a: np.ndarray, act: str) -> np.ndarray:
    """The activation's derivative, from its output ``a``."""
    if act == "relu":
        return (a > 0).astype(a.dtype)
    if act == "tanh":
        return cast("np.ndarray", 1 - a * a)
    if act == "logistic":
        return cast("np.ndarray", a * (1 - a))
    return 1.0 + 0 * a
