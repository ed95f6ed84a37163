"""What ``mlthreat assess`` does, called from Python the same way: a model file and a CSV as a
user has them, the demo's parameters, the counts of a result, and the command line writing
exactly ``report_data(result, kb)``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from mlthreat import assess, kb
from mlthreat.assess import Assessment, DataError
from mlthreat.cli import app


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A logistic regression on 30 breast-cancer features in [0, 1], saved with skops, and the
    rows as CSV with a label column."""
    folder = tmp_path_factory.mktemp("user")
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    sio.dump(LogisticRegression(max_iter=5000).fit(x[:300], y[:300]), folder / "model.skops")
    header = ",".join(f"f{i}" for i in range(30)) + ",label"
    rows = [",".join(f"{v:.6f}" for v in row) + f",{label}" for row, label in zip(x, y,
                                                                                 strict=True)]
    (folder / "rows.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def test_load_target_for_takes_what_the_model_cannot_say_from_the_data(user_files):
    data = assess.load_data(user_files / "rows.csv", label_column="label")
    target = assess.load_target_for(f"sklearn:{user_files / 'model.skops'}", data)
    assert target.input_shape == (30,) and target.n_classes == 2
    assert np.array_equal(np.asarray(target.clip_values[0]), np.asarray(data.clip_values[0]))


def test_label_read_as_a_feature_is_asked_about_by_parameter_name(user_files):
    data = assess.load_data(user_files / "rows.csv")  # the label column forgotten
    with pytest.raises(DataError) as caught:
        assess.load_target_for(f"sklearn:{user_files / 'model.skops'}", data)
    assert str(caught.value) == (
        f"{user_files / 'rows.csv'} has 31 features; the model takes inputs of shape (30,); "
        "is one column the label? name it with label_column")
    assert "--" not in str(caught.value)


def test_check_fits_without_the_hint_when_a_label_was_named(user_files, tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("a,b,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,0\n0.7,0.8,1\n")
    data = assess.load_data(short, label_column="label")
    target = assess.load_target(f"sklearn:{user_files / 'model.skops'}")
    with pytest.raises(DataError, match=r"has 2 features; the model takes inputs of shape "
                       r"\(30,\)$"):
        assess.check_fits(data, target, label_column="label")


def test_demo_parameters_under_the_users(monkeypatch):
    """The demo's own parameters for the runs selected, the user's over them, and the forest's
    fewer label-only samples unless the user set them (no model is trained here)."""
    import mlthreat.assess.demo as demo

    monkeypatch.setattr(demo, "demo_targets", lambda data, seed=0: [])
    a = Assessment.demo(1, techniques=["inversion-miface", "evasion-hopskipjump"],
                        params={"inversion-miface": {"steps": 5}}, budget=10)
    assert a.params == {"inversion-miface": {"image_shape": (8, 8), "steps": 5}}
    assert a.target_params == {"demo-forest": {"evasion-hopskipjump": {"n_samples": 3}}}
    assert a.seed == 1 and a.budget == 10
    given = Assessment.demo(techniques=["evasion-hopskipjump"],
                            params={"evasion-hopskipjump": {"n_samples": 2}})
    assert given.target_params == {}
    with_fit = Assessment.demo(techniques=["poisoning-backdoor"], fit=lambda x, y, s: None)
    assert "poisoning-backdoor" not in with_fit.params


def test_counts_and_report_json_byte_for_byte(user_files, tmp_path):
    data = assess.load_data(user_files / "rows.csv", label_column="label")
    target = assess.load_target_for(f"sklearn:{user_files / 'model.skops'}", data)
    base = kb.load()
    result = Assessment([target], data, techniques=["extraction-equations"], kb=base).run()
    counts = result.counts()
    assert sum(counts.values()) == 1 and list(counts) == ["succeeded", "failed",
                                                          "not-applicable", "error"]
    assert result.counts(mitigated=True) == dict.fromkeys(counts, 0)
    assert result.errors() == []
    paths = assess.write_report(result, tmp_path / "r", base)
    doc = assess.report_data(result, base)
    assert paths["json"].read_text("utf-8") == json.dumps(doc, indent=2,
                                                          ensure_ascii=False) + "\n"
    assert doc["summary"] == counts


def test_cli_json_is_the_report_it_wrote(user_files, tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["assess", "--target", f"sklearn:{user_files / 'model.skops'}",
                                   "--data", str(user_files / "rows.csv"), "--label-column",
                                   "label", "--techniques", "extraction-equations", "-o",
                                   str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert res.stdout == (out / "report.json").read_text("utf-8")


def test_cli_dry_run_json_is_plan_data(user_files):
    model = f"sklearn:{user_files / 'model.skops'}"
    res = CliRunner().invoke(app, ["assess", "--target", model, "--data",
                                   str(user_files / "rows.csv"), "--label-column", "label",
                                   "--techniques", "extraction-equations", "--dry-run",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = assess.load_data(user_files / "rows.csv", label_column="label")
    a = Assessment([assess.load_target_for(model, data)], data,
                   techniques=["extraction-equations"])
    doc = assess.report.plan_data(a.plan(), a.targets, kb.load())
    assert res.stdout == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
