"""Small statistics every layer reports with (a leaf: imports nothing else from mlthreat)."""

from __future__ import annotations

__all__ = ["clopper_pearson"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial proportion ``k / n``.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, ``n >= 1``.
    level : float
        Coverage, 0.95 for a 95 % interval.

    Returns
    -------
    (low, high) : tuple of float
        Always contains ``k / n``; ``low`` is 0 when ``k == 0``, ``high`` is 1 when ``k == n``.
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
