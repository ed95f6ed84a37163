"""Feature domains: inference from data as users have it, declared specs, projection."""

from __future__ import annotations

import numpy as np
import pytest

from mlthreat.assess.data import load_data
from mlthreat.assess.domain import infer_domain, read_feature_spec
from mlthreat.assess.errors import DataError


def _table(rng: np.random.Generator, n: int = 60) -> np.ndarray:
    """age (integer), income (continuous), smoker (binary), colour one-hot (3 columns),
    a constant column."""
    colour = np.eye(3)[rng.integers(0, 3, n)]
    return np.column_stack([rng.integers(18, 90, n), rng.normal(5e4, 1e4, n),
                            rng.integers(0, 2, n), colour, np.full(n, 7.0)])


def test_kinds_and_one_hot_groups_are_inferred():
    x = _table(np.random.default_rng(0))
    domain = infer_domain(x)
    assert domain.kinds == ("integer", "continuous", "binary", "binary", "binary", "binary",
                            "constant")
    assert domain.one_hot == ((3, 4, 5),)  # the smoker column is binary but not in the group
    assert domain.describe()["kinds"] == {"continuous": 1, "integer": 1, "binary": 4,
                                          "constant": 1}
    assert not domain.violations(x).any()


def test_projection_makes_rows_feasible():
    x = _table(np.random.default_rng(1))
    domain = infer_domain(x)
    bad = np.array([[30.4, 51_000.5, 0.7, 0.2, 0.5, 0.4, 7.3],
                     [200.0, -1e9, -0.2, 0.0, 0.0, 0.0, 7.0]])
    assert domain.violations(bad).tolist() == [True, True]
    p = domain.project(bad)
    assert p[0].tolist() == [30.0, 51_000.5, 1.0, 0.0, 1.0, 0.0, 7.0]
    assert p[1, 0] == x[:, 0].max() and p[1, 1] == x[:, 1].min()
    assert p[1, 3:6].sum() == 1.0  # a group with nothing set gets its largest (first) column
    assert not domain.violations(p).any()


def test_spec_overrides_by_name_and_index(tmp_path):
    x = _table(np.random.default_rng(2))
    names = ["age", "income", "smoker", "red", "green", "blue", "version"]
    spec = tmp_path / "spec.yaml"
    spec.write_text("features:\n  - {name: age, kind: integer, min: 0, max: 120}\n"
                    "  - {index: 1, kind: continuous, min: 0}\n"
                    "one_hot:\n  - [red, green, blue]\n")
    domain = read_feature_spec(spec, infer_domain(x), names)
    assert (domain.low[0], domain.high[0], domain.low[1]) == (0.0, 120.0, 0.0)
    assert domain.one_hot == ((3, 4, 5),)
    assert domain.source == f"{spec} over the data"


@pytest.mark.parametrize("text, message", [
    ("features:\n  - {name: weight}\n", r"features\[0\]: no column named 'weight'"),
    ("features:\n  - {index: 9}\n", r"features\[0\]: column 9 does not exist \(the data has 7\)"),
    ("features:\n  - {index: 0, kind: ordinal}\n", r"kind 'ordinal', expected one of"),
    ("features:\n  - {index: 0, min: 5, max: 1}\n", r"min 5 must be below max 1"),
    ("one_hot:\n  - [red]\n", r"one_hot\[0\]: a one-hot group lists two or more columns"),
    ("features:\n  - {index: 2, kind: binary, max: 5}\n",
     r"features\[0\]: a binary column takes 0 and 1, not min 0 and max 5 \(use kind integer\)"),
    ("features:\n  - {index: 0, kind: constant, min: 1, max: 2}\n",
     r"features\[0\]: a constant column has min equal to max, not 1 and 2"),
    ("colours: []\n", r"a feature spec is a mapping with 'features' and/or 'one_hot'"),
    ("features: [\n", r"spec.yaml:2: invalid YAML"),
    # hostile or careless specs found by fuzzing the CLI: each once broke a run or passed
    ("features:\n  - {name: age, min: .nan, max: 1}\n", r"features\[0\]: min and max must be "
                                                         r"finite, got nan"),
    ("features:\n  - {name: age, min: -.inf, max: .inf}\n", r"must be finite, got -inf"),
    ("features:\n  - {name: age, min: true, max: 3}\n", r"must be numbers, got True"),
    ("features:\n  - {name: age, min: '1', max: 3}\n", r"must be numbers, got '1'"),
    ("features: 5\n", r"features: expected a list, got int"),
    ("one_hot: {red: 1}\n", r"one_hot: expected a list, got dict"),
    ("features:\n  - {name: age, index: 1}\n", r"features\[0\]: give name or index, not both"),
    ("features:\n  - {name: age}\n  - {index: 0, kind: integer}\n",
     r"features\[1\]: column 0 is already declared in features\[0\]"),
    ("one_hot:\n  - [red, red]\n", r"one_hot\[0\]: a column is listed twice in the group"),
    ("one_hot:\n  - [red, green]\n  - [green, blue]\n",
     r"one_hot\[1\]: column 4 is already in one_hot\[0\]"),
    ("features: !!python/object/apply:os.system ['echo hi']\n",
     r"invalid YAML: could not determine a constructor for the tag"),
])
def test_bad_spec_is_one_line_naming_file_and_entry(tmp_path, text, message):
    x = _table(np.random.default_rng(3))
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_feature_spec(spec, infer_domain(x), ["age", "income", "smoker", "red", "green",
                                                  "blue", "version"])
    assert str(err.value).startswith(str(spec)) and "\n" not in str(err.value)


def test_constant_columns_give_bounds_the_attacks_accept(tmp_path):
    """The digits' corner pixels are 0 in every row: clip_values keep low == high there, and
    ART's clip values (art_clip_values) are never empty."""
    from sklearn.datasets import load_digits

    from mlthreat.assess.targets.sklearn import SklearnTarget
    from mlthreat.assess.techniques._art import art_clip_values

    x, y = load_digits(return_X_y=True)
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([x[:50], y[:50]]), delimiter=",", fmt="%g",
               header=",".join([f"p{i}" for i in range(64)] + ["label"]), comments="")
    data = load_data(path, label_column="label")
    lo, hi = data.clip_values
    assert lo[0] == hi[0] == 0.0 and data.domain.kinds[0] == "constant"
    from sklearn.tree import DecisionTreeClassifier

    target = SklearnTarget(DecisionTreeClassifier().fit(x, y), clip_values=data.clip_values)
    low, high = art_clip_values(target)
    assert np.all(high > low)
    assert high[0] == pytest.approx(1e-4)


def test_one_row_is_both_pool_and_evaluation(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,b,label\n0.5,0.25,1\n")
    data = load_data(path, label_column="label")
    assert (len(data.x_pool), len(data.x_eval)) == (1, 1)
    assert data.y_pool.tolist() == [1]


def test_spec_with_a_bom_and_an_oversized_spec(tmp_path, monkeypatch):
    import mlthreat.assess.domain as domain_module

    x = _table(np.random.default_rng(4))
    spec = tmp_path / "bom.yaml"
    spec.write_text("features:\n  - {name: age, kind: integer, min: 0, max: 120}\n",
                    encoding="utf-8-sig")
    domain = read_feature_spec(spec, infer_domain(x), ["age"] + [f"c{i}" for i in range(6)])
    assert (domain.low[0], domain.high[0], domain.kinds[0]) == (0.0, 120.0, "integer")
    monkeypatch.setattr(domain_module, "MAX_SPEC_BYTES", 10)
    with pytest.raises(DataError, match=r"bom\.yaml: file is \d+ bytes, over the 10-byte limit"):
        read_feature_spec(spec, infer_domain(x), ["age"])
