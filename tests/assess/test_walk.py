"""The lockstep HopSkipJump walk on boundaries whose nearest point is known exactly.

A half-space ``w·u > b`` in [0, 1]^16 labels a point adversarial; the distance from ``u0`` to
it is ``(b - w·u0) / |w|`` in L2 and ``(b - w·u0) / |w|_1`` in L∞, so the walk's result can be
checked against the optimum, and every query is counted by the oracle itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlthreat.assess.errors import QueryBudgetExceeded
from mlthreat.assess.techniques._walk import walk

D = 16


class HalfSpace:
    """The oracle: counts rows per call and per owner; raises past ``limit`` rows."""

    def __init__(self, w: np.ndarray, b: float, limit: int | None = None) -> None:
        self.w, self.b, self.limit = w, b, limit
        self.rows = 0
        self.calls = 0
        self.max_batch = 0

    def __call__(self, rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
        if self.limit is not None and self.rows + len(rows) > self.limit:
            raise QueryBudgetExceeded("walk", self.limit, self.rows, len(rows))
        self.rows += len(rows)
        self.calls += 1
        self.max_batch = max(self.max_batch, len(rows))
        return rows @ self.w > self.b


@pytest.fixture
def problem() -> tuple[HalfSpace, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    w = rng.normal(size=D)
    w /= np.linalg.norm(w)
    u0 = rng.uniform(0.4, 0.6, (6, D))
    b = float((u0 @ w).max() + 0.2)  # every sample at least 0.2 from the boundary
    start = np.clip(u0 + 1.0 * w, 0, 1)  # far out along the normal, clipped
    optimum = b - u0 @ w
    nearest = u0 + optimum[:, None] * w
    assert (start @ w > b).all() and (nearest >= 0).all() and (nearest <= 1).all()
    return HalfSpace(w, b), u0, start, optimum


def test_walk_reaches_the_nearest_point_in_l2(problem) -> None:
    oracle, u0, start, optimum = problem
    out = walk(oracle, u0, start, max_iter=30, max_queries=2_000, tol=1e-3, patience=3)
    got = np.linalg.norm(out.best - u0, axis=1)
    assert (out.best @ oracle.w > oracle.b).all()  # every result is adversarial
    assert np.all(got <= optimum * 1.05)  # within 5 % of the nearest point
    assert np.all(got >= optimum * (1 - 1e-9))
    assert out.queries.sum() == oracle.rows and out.stopped == ""
    # lockstep: one call carries a row (or a batch of probes) for every sample
    assert oracle.calls < oracle.rows / 5


def test_walk_minimises_linf(problem) -> None:
    oracle, u0, start, optimum = problem
    out = walk(oracle, u0, start, norm="linf", max_iter=30, max_queries=2_000, tol=1e-3,
               patience=3)
    got = np.abs(out.best - u0).max(axis=1)
    best_linf = optimum * np.linalg.norm(oracle.w) / np.abs(oracle.w).sum()
    assert (out.best @ oracle.w > oracle.b).all()
    assert np.all(got <= best_linf * 1.3)
    assert np.all(got >= best_linf * (1 - 1e-9))


def test_walk_keeps_each_sample_within_its_queries(problem) -> None:
    oracle, u0, start, _ = problem
    out = walk(oracle, u0, start, max_iter=50, max_queries=120, tol=1e-6, patience=50)
    assert out.queries.max() <= 120
    assert (out.iterations >= 1).all()


def test_walk_stops_when_the_distance_stalls(problem) -> None:
    """Started on the nearest point, no iteration can gain: each sample stops after two."""
    oracle, u0, _, optimum = problem
    on = u0 + (optimum + 1e-4)[:, None] * oracle.w
    out = walk(oracle, u0, on, max_iter=40, max_queries=10_000, tol=0.02, patience=5)
    assert (out.iterations == 2).all()


def test_walk_keeps_the_best_when_the_budget_ends(problem) -> None:
    """From starts well off the normal the walk gains for many iterations; a budget of 400
    rows ends it mid-way, keeping the nearest adversarial point each sample had."""
    oracle, u0, _, optimum = problem
    side = np.random.default_rng(5).normal(size=(6, D))
    side -= (side @ oracle.w)[:, None] * oracle.w  # along the boundary
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    start = u0 + (optimum + 0.05)[:, None] * oracle.w + 0.3 * side
    assert (start @ oracle.w > oracle.b).all() and (start >= 0).all() and (start <= 1).all()
    oracle.limit = 400
    out = walk(oracle, u0, start, max_iter=40, max_queries=10_000, tol=1e-9, patience=40)
    assert "query budget of 400" in out.stopped
    assert oracle.rows <= 400 and out.queries.sum() == oracle.rows
    assert (out.best @ oracle.w > oracle.b).all()
    gained = np.linalg.norm(out.best - u0, axis=1)
    assert np.all(gained < 0.95 * np.linalg.norm(start - u0, axis=1))


def test_walk_on_boundary_sends_nothing_without_iterations(problem) -> None:
    oracle, u0, start, _ = problem
    out = walk(oracle, u0, start, max_iter=0, on_boundary=True)
    assert oracle.rows == 0 and np.array_equal(out.best, start)
    out = walk(oracle, u0, start, max_iter=0)
    # one binary search per sample, to 1/64 of the distance it ends at (7 to 9 steps here)
    assert 6 * 6 <= oracle.rows <= 6 * 10
    assert np.all(np.linalg.norm(out.best - u0, axis=1) < np.linalg.norm(start - u0, axis=1))


def test_walk_is_repeatable(problem) -> None:
    oracle, u0, start, _ = problem
    a = walk(oracle, u0, start, max_iter=5, seed=7)
    b = walk(oracle, u0, start, max_iter=5, seed=7)
    assert np.array_equal(a.best, b.best) and np.array_equal(a.queries, b.queries)
