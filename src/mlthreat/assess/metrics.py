"""Shared statistics for technique runs: ROC curves, AUC, TPR at a fixed FPR with its counts and
confidence interval, membership advantage, bootstrap intervals, and SSIM for small images.

Membership scores follow one convention throughout: a higher score means "more likely a
member"; ``members`` are the scores of rows known to be in the training set (positives),
``nonmembers`` of rows known to be out (negatives). The functions are pure numpy/scipy and
deterministic for a given ``seed``.

References
----------
.. [1] Carlini, N., Chien, S., Nasr, M., Song, S., Terzis, A., and Tramèr, F. "Membership
   Inference Attacks From First Principles." IEEE S&P 2022 (why TPR at low FPR, not AUC alone).
.. [2] Clopper, C. J. and Pearson, E. S. "The use of confidence or fiducial limits illustrated
   in the case of the binomial." Biometrika 26(4), 1934.
.. [3] Wang, Z., Bovik, A. C., Sheikh, H. R., and Simoncelli, E. P. "Image quality assessment:
   from error visibility to structural similarity." IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlthreat.stats import clopper_pearson

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "RateAtFpr",
    "auc",
    "bootstrap_ci",
    "clopper_pearson",
    "downsample_curve",
    "membership_advantage",
    "roc_curve",
    "ssim",
    "tpr_at_fpr",
]


def _scores(members: Any, nonmembers: Any) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    pos = np.asarray(members, dtype="float64").ravel()
    neg = np.asarray(nonmembers, dtype="float64").ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("needs at least one member and one non-member score")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("membership scores must be finite")
    return pos, neg


def roc_curve(members: Any, nonmembers: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of the rule "member when score >= threshold", over every distinct threshold.

    Returns
    -------
    fpr, tpr, thresholds : ndarray
        Increasing FPR and TPR from (0, 0) to (1, 1); ``thresholds[0]`` is +inf. Tied scores
        move both rates in one step (a diagonal segment), so the trapezoidal area under the
        curve equals :func:`auc`.
    """
    import numpy as np

    pos, neg = _scores(members, nonmembers)
    scores = np.concatenate([pos, neg])
    truth = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_run = np.r_[np.diff(scores) != 0, True]  # end of each group of tied scores
    tp = np.cumsum(truth)[last_of_run]
    fp = np.cumsum(1 - truth)[last_of_run]
    tpr = np.r_[0.0, tp / len(pos)]
    fpr = np.r_[0.0, fp / len(neg)]
    thresholds = np.r_[np.inf, scores[last_of_run]]
    return fpr, tpr, thresholds


def auc(members: Any, nonmembers: Any) -> float:
    """Area under the ROC curve: the probability that a random member scores above a random
    non-member, ties counted one half (Mann-Whitney U / (n_members · n_nonmembers)).

    1.0 for perfect separation, 0.0 for perfectly reversed scores, 0.5 when every score ties.
    """
    from scipy.stats import rankdata

    pos, neg = _scores(members, nonmembers)
    import numpy as np

    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: ties count one half
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def membership_advantage(members: Any, nonmembers: Any) -> float:
    """Membership advantage (Yeom et al. 2018): the largest TPR - FPR over all thresholds,
    0 for a useless attack (the all-or-nothing thresholds), 1 for perfect separation."""
    fpr, tpr, _ = roc_curve(members, nonmembers)
    return float(max(0.0, (tpr - fpr).max()))


@dataclass(frozen=True)
class RateAtFpr:
    """TPR at a fixed FPR with the counts behind it.

    ``tpr = tp / n_members`` at the threshold that lets at most ``allowed_fp`` =
    floor(``target_fpr`` · ``n_nonmembers``) non-members through; ``fp`` is how many did;
    ``ci`` the 95 % Clopper-Pearson interval of the TPR and ``fpr_ci`` that of the FPR
    actually reached. ``below_one_sample`` is True when ``target_fpr`` · ``n_nonmembers`` < 1:
    the threshold then sits above every non-member and the figure is a TPR at FPR 0/n, whose
    true FPR is only known to be below ``fpr_ci[1]``.
    """

    target_fpr: float
    tpr: float
    tp: int
    n_members: int
    fp: int
    allowed_fp: int
    n_nonmembers: int
    threshold: float
    ci: tuple[float, float]
    fpr_ci: tuple[float, float]

    @property
    def below_one_sample(self) -> bool:
        return self.target_fpr * self.n_nonmembers < 1.0

    def note(self) -> str:
        """One sentence for a report: the counts, and the caveat when the FPR is below one
        non-member."""
        pct = f"{self.target_fpr * 100:g} %"
        text = (f"{self.tp}/{self.n_members} members flagged with {self.fp}/"
                f"{self.n_nonmembers} non-members flagged (at most {self.allowed_fp} allowed "
                f"at FPR {pct}); 95 % Clopper-Pearson interval of the TPR")
        if self.below_one_sample:
            text += (f". {pct} of {self.n_nonmembers} non-members is "
                     f"{self.target_fpr * self.n_nonmembers:.2g} of a sample, less than one: "
                     f"this is the TPR at 0 false positives, whose true FPR is only known to be "
                     f"below {self.fpr_ci[1] * 100:.2g} % (95 %); it does not measure FPR {pct}")
        return text


def tpr_at_fpr(members: Any, nonmembers: Any, fpr: float, level: float = 0.95) -> RateAtFpr:
    """TPR of the rule "member when score > t" with t the strictest threshold that keeps the
    false positives within ``floor(fpr · n_nonmembers)``.

    Parameters
    ----------
    members, nonmembers : array-like of float, shapes [n_members], [n_nonmembers]
        Scores; higher means more likely a member.
    fpr : float
        Target false-positive rate in [0, 1] (0.01 for 1 %).
    level : float
        Coverage of the confidence intervals.

    Returns
    -------
    RateAtFpr
    """
    import numpy as np

    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    pos, neg = _scores(members, nonmembers)
    allowed = int(np.floor(fpr * len(neg) + 1e-9))
    # the (allowed + 1)-th highest non-member score; nothing to exclude when all are allowed
    threshold = -np.inf if allowed >= len(neg) else float(np.sort(neg)[::-1][allowed])
    tp = int((pos > threshold).sum())
    fp = int((neg > threshold).sum())
    return RateAtFpr(
        target_fpr=fpr, tpr=tp / len(pos), tp=tp, n_members=len(pos), fp=fp,
        allowed_fp=allowed, n_nonmembers=len(neg), threshold=threshold,
        ci=clopper_pearson(tp, len(pos), level), fpr_ci=clopper_pearson(fp, len(neg), level),
    )


def bootstrap_ci(
    members: Any,
    nonmembers: Any,
    statistic: Callable[[np.ndarray, np.ndarray], float] = auc,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(members, nonmembers)``, resampling members
    and non-members separately (stratified) with replacement ``n_boot`` times."""
    import numpy as np

    pos, neg = _scores(members, nonmembers)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for i in range(n_boot):
        values[i] = statistic(pos[rng.integers(0, len(pos), len(pos))],
                              neg[rng.integers(0, len(neg), len(neg))])
    alpha = 1.0 - level
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def downsample_curve(x: Any, y: Any, max_points: int = 200) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points of a curve, evenly spaced along its index, first and last
    kept (for plots in reports)."""
    import numpy as np

    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return [round(float(v), 6) for v in x], [round(float(v), 6) for v in y]


def ssim(a: Any, b: Any, data_range: float, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) of two 2-D images of equal shape, with a
    uniform ``window`` x ``window`` window (shrunk to the image for small ones such as 8x8
    digits) and the paper's constants K1 = 0.01, K2 = 0.03. 1.0 for identical images."""
    import numpy as np
    from scipy.ndimage import uniform_filter

    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of one shape, got {a.shape}, {b.shape}")
    w = max(1, min(window, *a.shape))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def mean(z: np.ndarray) -> np.ndarray:
        out: np.ndarray = uniform_filter(z, size=w, mode="reflect")
        return out

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / \
        ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = w // 2  # ignore borders filled by reflection, as scikit-image does, when room is left
    if a.shape[0] > 2 * pad and a.shape[1] > 2 * pad:
        s = s[pad:a.shape[0] - pad, pad:a.shape[1] - pad]
    return float(s.mean())
