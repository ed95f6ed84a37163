"""Shared fixtures for assessment tests: the digits demo data and its demo targets, and the
plain digits arrays the target adapters are tested on (three demo targets).

Training the targets takes several seconds, so both are session-scoped. The targets are shared:
a test that attaches a query log must detach it (``target.attach_log(None)``) when done.
"""

from __future__ import annotations

import pytest

from mlthreat.assess.data import AssessmentData, digits_demo
from mlthreat.assess.demo import demo_targets as _demo_targets
from mlthreat.assess.targets.sklearn import SklearnTarget


@pytest.fixture(scope="session")
def demo_data() -> AssessmentData:
    """scikit-learn digits in [0, 1], split by role (``digits_demo(0)``)."""
    return digits_demo(0)


@pytest.fixture(scope="session")
def demo_targets(demo_data: AssessmentData) -> list[SklearnTarget]:
    """``[demo-logreg (white-box), demo-mlp (black-box), demo-forest (black-box)]`` trained on
    ``demo_data``."""
    return _demo_targets(demo_data, 0)


@pytest.fixture(scope="session")
def demo_pair(demo_targets: list[SklearnTarget]) -> list[SklearnTarget]:
    """``[demo-logreg, demo-mlp]``: the runner's tests count findings and queries over these."""
    return demo_targets[:2]


@pytest.fixture(scope="module")
def digits_xy():
    """scikit-learn digits: ``x`` scaled to [0, 1] as float32, and the labels ``y``."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y
