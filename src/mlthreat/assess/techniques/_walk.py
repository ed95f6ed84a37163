"""A HopSkipJump boundary walk for many samples at once, started from known adversarial points.

Chen, Jordan and Wainwright's HopSkipJump (IEEE S&P 2020, Algorithm 1) repeats three steps
from a point the target labels differently: a binary search back towards the original sample
onto the decision boundary, a Monte-Carlo estimate of the boundary's normal from the labels of
random probes around that point, and a geometric step along it. ART runs it one sample at a
time and restarts its step-size schedule at iteration 0 even when given a good starting point,
which undoes the start (MEASURED.md). This walk differs in three ways, all about refining
points an attacker already has:

- every sample moves in lockstep, so each step is one call to the target with one row (or one
  batch of probes) per sample, not one call per row;
- the step-size schedule starts at ``warm_iter``, as if that many iterations had already been
  made: steps of ``dist / sqrt(t + 1)`` stay small enough to keep a good start;
- a sample stops when its distance has improved by less than ``tol`` over its last
  ``patience`` iterations, or when its next iteration would pass ``max_queries``: a smooth
  boundary (an MLP) stops after two or three iterations, a piecewise constant one (a forest)
  keeps walking while it gains.

It works in the relative feature space ``u = (x - clip_lo) / (clip_hi - clip_lo)`` in
[0, 1]^d, where ε is measured, and never seeds numpy's global generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from mlthreat.assess.errors import QueryBudgetExceeded

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Walk", "walk"]

_PRECISION = 1 / 64  # of the distance, where a binary search ends: finer costs, gains nothing
_STEP_TRIES = 10  # halvings of the step before a sample stays where it is for this iteration

Ask = Callable[["np.ndarray", "np.ndarray"], "np.ndarray"]
"""``ask(rows [m, d] in u-space, owners [m] sample indices) -> bool [m]``: which rows the
target labels other than their owner's original class. May raise
:class:`~mlthreat.assess.errors.QueryBudgetExceeded` (nothing of that call was answered)."""


@dataclass
class Walk:
    """The walk's result: ``best`` [n, d], the closest point per sample known adversarial (in
    u-space); ``queries`` [n] spent on each sample; ``iterations`` [n] made by each sample;
    ``stopped``: why the whole walk ended early ("" when every sample stopped by its own rule)."""

    best: np.ndarray
    queries: np.ndarray
    iterations: np.ndarray
    stopped: str = ""


def walk(ask: Ask, u0: np.ndarray, u_adv: np.ndarray, *, norm: str = "l2", warm_iter: int = 10,
         max_iter: int = 40, init_eval: int = 5, max_eval: int = 200, max_queries: int = 500,
         tol: float = 0.02, patience: int = 2, seed: int = 0,
         on_boundary: bool = False) -> Walk:
    """Walk each adversarial point ``u_adv[i]`` along the boundary towards ``u0[i]``.

    Parameters
    ----------
    ask : callable
        The oracle (see :data:`Ask`); its calls are the only queries.
    u0, u_adv : ndarray [n, d]
        Original samples and points the target labels differently, in [0, 1]^d.
    norm : {"l2", "linf"}
        Distance minimised: L2 steps along the estimated normal, L∞ along its sign, with the
        binary search onto the L∞ ball (as in the paper).
    warm_iter : int
        Iteration at which the step-size and probe-count schedules start.
    max_iter, init_eval, max_eval : int
        Most iterations; probes at iteration t are ``min(init_eval * sqrt(t + 1), max_eval)``.
    max_queries : int
        Most queries per sample.
    tol, patience : float, int
        A sample stops when its distance fell by less than ``tol`` (a fraction) over its last
        ``patience`` iterations.
    seed : int
        Seeds the probe directions.
    on_boundary : bool
        The points are already on the boundary (from an earlier walk): no first binary search.

    Returns
    -------
    Walk
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    u0 = np.asarray(u0, dtype="float64")
    cur = np.asarray(u_adv, dtype="float64").copy()
    n, d = u0.shape
    spent = np.zeros(n, dtype="int64")
    iterations = np.zeros(n, dtype="int64")
    active = np.ones(n, dtype=bool)
    history: list[list[float]] = [[] for _ in range(n)]
    best = cur.copy()  # a step may end farther out than the last point on the boundary
    best_dist = np.full(n, np.inf)

    def dist(idx: np.ndarray) -> np.ndarray:
        delta = cur[idx] - u0[idx]
        out: np.ndarray = (np.linalg.norm(delta, axis=1) if norm == "l2"
                           else np.abs(delta).max(axis=1))
        return out

    def blend(idx: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        delta = cur[idx] - u0[idx]
        if norm == "l2":
            return cast("np.ndarray", u0[idx] + alpha[:, None] * delta)
        radius = alpha[:, None] * np.abs(delta).max(axis=1, keepdims=True)
        return cast("np.ndarray", u0[idx] + np.clip(delta, -radius, radius))

    def adversarial(rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
        answer = np.asarray(ask(rows, owners), dtype=bool)
        np.add.at(spent, owners, 1)
        return answer

    def bisect(idx: np.ndarray, search: bool = True) -> None:
        """Move ``cur[idx]`` onto the boundary between it (adversarial) and ``u0``, to within
        ``_PRECISION`` of its distance."""
        low, high = np.zeros(len(idx)), np.ones(len(idx))
        while search:
            open_ = np.flatnonzero(high - low > _PRECISION * high)
            if not len(open_):
                break
            mid = (low[open_] + high[open_]) / 2
            hit = adversarial(blend(idx[open_], mid), idx[open_])
            high[open_] = np.where(hit, mid, high[open_])
            low[open_] = np.where(hit, low[open_], mid)
        cur[idx] = blend(idx, high)
        r = dist(idx)
        closer = r < best_dist[idx]
        best[idx[closer]], best_dist[idx[closer]] = cur[idx[closer]], r[closer]
        for i, v in zip(idx, r, strict=True):
            history[i].append(float(v))

    def step(idx: np.ndarray, t: int) -> None:
        """Estimate the boundary's normal at ``cur[idx]`` and step along it."""
        r = dist(idx)
        probes = int(min(init_eval * np.sqrt(t + 1), max_eval))
        radius = np.maximum(r / np.sqrt(d), 1e-6)[:, None, None]
        directions = rng.standard_normal((len(idx), probes, d))
        directions /= np.linalg.norm(directions, axis=2, keepdims=True)
        points = np.clip(cur[idx][:, None, :] + radius * directions, 0.0, 1.0)
        directions = (points - cur[idx][:, None, :]) / radius  # what was really probed
        hit = adversarial(points.reshape(-1, d), np.repeat(idx, probes))
        sign = hit.reshape(len(idx), probes).astype("float64") * 2 - 1
        mean = sign.mean(axis=1, keepdims=True)
        # baseline subtraction (the paper's variance reduction) unless all probes agree
        sign = np.where(np.abs(mean) == 1, sign, sign - mean)
        grad = (sign[:, :, None] * directions).mean(axis=1)
        if norm == "l2":
            grad /= np.linalg.norm(grad, axis=1, keepdims=True) + 1e-12
        else:
            grad = np.sign(grad)
        size = r / np.sqrt(t + 1)
        pending = np.ones(len(idx), dtype=bool)
        for _ in range(_STEP_TRIES):
            if not pending.any():
                break
            moved = np.clip(cur[idx] + size[:, None] * grad, 0.0, 1.0)
            hit = adversarial(moved[pending], idx[pending])
            accepted = np.flatnonzero(pending)[hit]
            cur[idx[accepted]] = moved[accepted]
            pending[np.flatnonzero(pending)[hit]] = False
            size = np.where(pending, size / 2, size)

    def needed(t: int) -> int:  # an iteration's queries at most, its binary search typical
        return int(min(init_eval * np.sqrt(t + 1), max_eval)) + _STEP_TRIES + 7

    stopped = ""
    try:
        bisect(np.arange(n), not on_boundary)
        for k in range(max_iter):
            t = warm_iter + k
            active &= spent + needed(t) <= max_queries
            idx = np.flatnonzero(active)
            if not len(idx):
                break
            step(idx, t)
            bisect(idx)
            iterations[idx] += 1
            for i in idx:
                past = np.minimum.accumulate(history[i])
                # a walk that has not gained yet started at the boundary's nearest point (a
                # smooth model): it gets two iterations to show a gain, not ``patience``
                window = patience if past[-1] < (1 - tol) * past[0] else min(patience, 2)
                if len(past) > window and past[-1 - window] - past[-1] < tol * past[-1 - window]:
                    active[i] = False
    except QueryBudgetExceeded as exc:
        stopped = str(exc)
    return Walk(best, spent, iterations, stopped)
