"""Data files: CSV, NPY and Parquet read the same rows; roles split as documented; bad files
give one-line DataErrors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from mlthreat.assess.data import digits_demo, load_data, read_table
from mlthreat.assess.errors import DataError


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iris")
    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x, columns=["sl", "sw", "pl", "pw"]).assign(label=y)
    frame.to_csv(folder / "rows.csv", index=False)
    frame.to_parquet(folder / "rows.parquet")
    np.save(folder / "rows.npy", frame.to_numpy())
    return folder, x.astype("float32"), y


def test_three_formats_read_the_same_rows(iris):
    folder, x, y = iris
    for name, label in (("rows.csv", "label"), ("rows.parquet", "label"), ("rows.npy", "4")):
        got_x, got_y, _ = read_table(folder / name, label)
        assert got_x.shape == (150, 4) and got_x.dtype == np.float32, name
        np.testing.assert_allclose(got_x, x, rtol=1e-6)
        assert (np.asarray(got_y).astype(int) == y).all(), name


def test_load_data_splits_roles(iris):
    folder, x, _ = iris
    data = load_data(folder / "rows.csv", label_column="label", members=folder / "rows.csv",
                     non_members=folder / "rows.parquet", seed=1)
    assert (len(data.x_pool), len(data.x_eval)) == (75, 75)
    assert sorted(np.bincount(data.y_pool.astype(int))) == [25, 25, 25]  # stratified
    assert data.has_membership and len(data.x_members) == 150
    np.testing.assert_allclose(data.clip_values[0], x.min(axis=0))
    assert len(data.sha256) == 64
    again = load_data(folder / "rows.csv", label_column="label", seed=1)
    assert (again.x_pool == data.x_pool).all()  # the same seed splits the same way


def test_digits_demo_roles():
    data = digits_demo(0)
    assert (len(data.x_members), len(data.x_nonmembers), len(data.x_pool)) == (900, 450, 447)
    assert data.x_pool.min() >= 0.0 and data.x_pool.max() <= 1.0 and data.n_features == 64
    assert data.x_eval is data.x_nonmembers


@pytest.mark.parametrize("content,name,label,message", [
    ("a,b\n1,x\n2,y\n", "t.csv", None, "non-numeric feature columns b"),
    ("a,b,label\n1,2,0\n", "t.csv", "target", "no column 'target'"),
    ("a,label\n1,0\n,1\n3,0\n4,1\n", "t.csv", "label", "missing values (first at data row 2)"),
    ("whatever", "t.xlsx", None, "unknown data format"),
])
def test_bad_files(tmp_path, content, name, label, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_table(path, label)


def test_pickled_npy_is_refused_and_members_need_both(tmp_path, iris):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read: Object arrays cannot be loaded"):
        read_table(path, None)  # never unpickled
    folder = iris[0]
    with pytest.raises(DataError, match="both --members and --non-members"):
        load_data(folder / "rows.csv", label_column="label", members=folder / "rows.csv")


@pytest.mark.parametrize("name, build, label, message", [
    ("inf.csv", lambda p: p.write_text("a,b,label\n0.1,0.2,0\n0.3,inf,1\n"), "label",
     r"inf\.csv: infinite \(or beyond float32\) value at data row 2, column 'b'$"),
    ("big.csv", lambda p: p.write_text("a,b,label\n1e300,0.2,0\n"), "label",
     r"big\.csv: infinite \(or beyond float32\) value at data row 1, column 'a'$"),
    ("nanlabel.csv", lambda p: p.write_text("a,b,label\n0.1,0.2,0\n0.3,0.4,\n"), "label",
     r"nanlabel\.csv: missing label \(first at data row 2\)$"),
    ("nan.npy", lambda p: np.save(p, np.array([[0.1, 0.0], [np.nan, 1.0]])), "1",
     r"nan\.npy: missing value at data row 2, column 0$"),
    ("inf.npy", lambda p: np.save(p, np.array([[0.1, -np.inf, 0.0]])), None,
     r"inf\.npy: infinite \(or beyond float32\) value at data row 1, column 1$"),
    ("nanlabel.npy", lambda p: np.save(p, np.array([[0.1, 0.0], [0.2, np.nan]])), "1",
     r"nanlabel\.npy: missing label \(first at data row 2\)$"),
    ("col.npy", lambda p: np.save(p, np.zeros((2, 3))), "3",
     r"col\.npy: --label-column 3 does not exist \(the array has 3 columns\)$"),
    ("nanlabel.parquet", lambda p: pd.DataFrame({"a": [0.1, 0.2], "label": ["x", None]}
                                                ).to_parquet(p), "label",
     r"nanlabel\.parquet: missing label \(first at data row 2\)$"),
])
def test_non_finite_values_and_missing_labels_are_input_errors(tmp_path, name, build, label,
                                                                message):
    # each once reached the attacks and ended every run in an error (OverflowError from ART,
    # "Input X contains infinity", or labels {0, 1, nan} that match no class)
    path = tmp_path / name
    build(path)
    with pytest.raises(DataError, match=message):
        read_table(path, label)


def test_a_bom_csv_keeps_its_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("label,a,b\n1,0.5,0.25\n0,0.75,1\n", encoding="utf-8-sig")
    x, y, names = read_table(path, "label")
    assert names == ["a", "b"] and y.tolist() == [1, 0]
    assert x.tolist() == [[0.5, 0.25], [0.75, 1.0]]
