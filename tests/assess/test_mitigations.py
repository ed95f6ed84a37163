"""Mitigation wrappers change answers the way a serving layer would, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from mlthreat.assess.errors import QueryBudgetExceeded
from mlthreat.assess.mitigations import MitigatedTarget, parse_mitigation
from mlthreat.assess.targets.sklearn import SklearnTarget
from mlthreat.errors import UsageError


@pytest.fixture(scope="module")
def target():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = LogisticRegression(max_iter=500).fit(x[:500], y[:500])
    return SklearnTarget(model, model_id="lr"), x[500:600]


def test_parse_mitigation():
    m = parse_mitigation("round:1")
    assert (m.kind, m.value, m.atlas_id, m.label) == ("round", 1.0, "AML.M0002", "round:1")
    assert parse_mitigation("query-limit:50").atlas_id == "AML.M0004"
    assert parse_mitigation("noise").value == 0.05
    for bad in ("shuffle", "round:x", "round:1.5", "top1:3", "query-limit:0", "noise:-1"):
        with pytest.raises(UsageError):
            parse_mitigation(bad)


def test_rounding_top1_noise_keep_the_label(target):
    inner, x = target
    clean = inner.predict(x)
    for spec in ("top1", "noise:0.05", "reverse-sigmoid:0.5"):
        wrapped = MitigatedTarget(inner, parse_mitigation(spec), seed=0)
        out = wrapped.predict(x)
        assert out.shape == clean.shape
        assert (out.argmax(axis=1) == clean.argmax(axis=1)).all(), spec
        assert np.allclose(out.sum(axis=1), 1.0), spec
    rounded = MitigatedTarget(inner, parse_mitigation("round:1")).predict(x)
    assert set(np.unique(np.round(rounded * 10, 6))) <= set(range(11))
    # rounding can tie the top two scores; the served label then changes on a few rows
    assert (rounded.argmax(axis=1) == clean.argmax(axis=1)).mean() >= 0.9
    top1 = MitigatedTarget(inner, parse_mitigation("top1"))
    assert top1.output_kind == "labels"
    assert set(np.unique(top1.predict(x))) == {0.0, 1.0}
    rs = MitigatedTarget(inner, parse_mitigation("reverse-sigmoid:0.5")).predict(x)
    assert np.abs(rs - clean).max() > 0.05  # the scores a thief sees are changed
    assert wrapped.estimator is inner.estimator  # gradients stay available (white-box)


def test_query_limit_refuses_after_n(target):
    inner, x = target
    wrapped = MitigatedTarget(inner, parse_mitigation("query-limit:30"))
    wrapped.predict(x[:20])
    with pytest.raises(QueryBudgetExceeded, match="query limit 30"):
        wrapped.predict(x[:20])
    wrapped.reset_limit()
    assert wrapped.predict(x[:20]).shape == (20, 10)
