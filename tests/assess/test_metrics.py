"""Shared statistics (mlthreat.assess.metrics) on hand-made scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mlthreat.assess import metrics as st


def test_auc_known_values() -> None:
    assert st.auc([3, 4, 5], [0, 1, 2]) == 1.0  # perfect separation
    assert st.auc([0, 1, 2], [3, 4, 5]) == 0.0  # reversed
    assert st.auc([1, 1, 1], [1, 1]) == 0.5  # every score ties
    # one member (2) against non-members (1, 2, 3): beats one, ties one, loses one -> 1.5 / 3
    assert st.auc([2], [1, 2, 3]) == pytest.approx(0.5)
    assert st.auc([2, 4], [1, 3]) == pytest.approx(0.75)


def test_auc_agrees_with_roc_area_and_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos = rng.normal(0.5, 1, 300).round(1)  # rounded: plenty of ties
    neg = rng.normal(0.0, 1, 200).round(1)
    fpr, tpr, thr = st.roc_curve(pos, neg)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0 and thr[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[pos, neg])
    assert st.auc(pos, neg) == pytest.approx(area) == pytest.approx(expected)


def test_membership_advantage() -> None:
    assert st.membership_advantage([3, 4], [1, 2]) == 1.0
    assert st.membership_advantage([1, 1], [1, 1]) == 0.0
    # threshold 2.5: TPR 2/3, FPR 0/2 -> 0.667; threshold 0.5: TPR 1, FPR 1/2 -> 0.5
    assert st.membership_advantage([1, 3, 4], [0, 2]) == pytest.approx(2 / 3)


def test_tpr_at_fpr_counts_and_interval() -> None:
    neg = np.arange(100, dtype=float)  # non-members 0..99
    pos = np.array([99.5, 98.5, 97.5, 50.0, 10.0])
    r = st.tpr_at_fpr(pos, neg, 0.01)  # one false positive allowed: threshold 98
    assert (r.allowed_fp, r.threshold, r.fp, r.tp, r.n_members, r.n_nonmembers) == \
        (1, 98.0, 1, 2, 5, 100)
    assert r.tpr == pytest.approx(0.4)
    assert r.ci[0] <= r.tpr <= r.ci[1]
    assert r.ci == pytest.approx(st.clopper_pearson(2, 5))
    assert not r.below_one_sample
    assert "2/5 members flagged with 1/100 non-members" in r.note()

    low = st.tpr_at_fpr(pos, neg, 0.001)  # 0.1 of a sample: threshold above every non-member
    assert low.below_one_sample and low.allowed_fp == 0 and low.fp == 0 and low.tp == 1
    assert "less than one" in low.note() and "does not measure FPR 0.1 %" in low.note()
    assert low.fpr_ci[1] == pytest.approx(1 - 0.025 ** (1 / 100))

    everything = st.tpr_at_fpr(pos, neg, 1.0)
    assert everything.tpr == 1.0 and everything.fp == 100


def test_clopper_pearson_known_values() -> None:
    # 0 of 450: the upper bound solves (1 - p)^450 = 0.025
    assert st.clopper_pearson(0, 450) == (0.0, pytest.approx(1 - 0.025 ** (1 / 450)))
    assert st.clopper_pearson(450, 450)[1] == 1.0
    low, high = st.clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)
    with pytest.raises(ValueError):
        st.clopper_pearson(3, 2)


def test_bootstrap_ci_contains_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 150)
    ci = st.bootstrap_ci(pos, neg, st.auc, n_boot=200, seed=3)
    assert ci[0] < st.auc(pos, neg) < ci[1]
    assert 0.05 < ci[1] - ci[0] < 0.2
    assert ci == st.bootstrap_ci(pos, neg, st.auc, n_boot=200, seed=3)


def test_downsample_curve_keeps_ends() -> None:
    x = np.linspace(0, 1, 1351)
    xs, ys = st.downsample_curve(x, x**2, 200)
    assert len(xs) <= 200 and xs[0] == 0.0 and xs[-1] == 1.0 and ys[-1] == 1.0
    assert st.downsample_curve([0, 1], [0, 1]) == ([0.0, 1.0], [0.0, 1.0])


def test_ssim() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(8, 8))
    assert st.ssim(img, img, 1.0) == pytest.approx(1.0)
    assert st.ssim(img, 1 - img, 1.0) < 0
    assert st.ssim(img, img + rng.normal(0, 0.05, (8, 8)), 1.0) > \
        st.ssim(img, img + rng.normal(0, 0.3, (8, 8)), 1.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        st.auc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        st.auc([np.nan], [1.0])
    with pytest.raises(ValueError, match="fpr"):
        st.tpr_at_fpr([1], [0], 1.5)
