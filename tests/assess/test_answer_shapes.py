"""Endpoints and models that answer in other shapes: scores that are not probabilities, one
sigmoid column, labels as objects or class names under nested paths; and data labels coded
differently from the model's classes. Each endpoint is a real server on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest
from model_server import ModelServer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlthreat.assess.data import AssessmentData
from mlthreat.assess.errors import TargetError
from mlthreat.assess.runner import Assessment
from mlthreat.assess.targets import load_target
from mlthreat.assess.targets.sklearn import SklearnTarget

NAMES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    x = ((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x, y, LogisticRegression(max_iter=1000).fit(x, y)


def _serve(model, shape):
    def respond(payload, headers):
        x = np.asarray(payload["instances"], dtype="float64")
        p = model.predict_proba(x)
        label = p.argmax(axis=1)
        return {
            "votes": lambda: {"predictions": np.round(p * 16).tolist()},
            "percent": lambda: {"predictions": (p * 100).tolist()},
            "logits": lambda: {"predictions": model.decision_function(x).tolist()},
            "float32": lambda: {"predictions": p.astype("float32").tolist()},
            "objects": lambda: {"predictions": [{"label": int(k), "score": float(p[i, k])}
                                                for i, k in enumerate(label)]},
            "names": lambda: {"result": {"classes": NAMES[label].tolist()}},
            "column": lambda: {"predictions": [[int(k)] for k in label]},
        }[shape]()
    return respond


@pytest.mark.parametrize("shape, note", [
    ("votes", "not probabilities (rows sum to 16, not 1): renormalised"),
    ("percent", "not probabilities (rows sum to 100, not 1): renormalised"),
    ("logits", "negative values: read as logits and softmaxed"),
    ("float32", None),
])
def test_scores_that_are_not_probabilities_are_read_and_said(iris, shape, note):
    x, _, model = iris
    with ModelServer(_serve(model, shape)) as server:
        target = load_target(server.url, n_features=4)
        scores = target.predict(x[:40])
    assert target.output_kind == "scores" and target.n_classes == 3
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert (scores.argmax(axis=1) == model.predict(x[:40])).mean() >= 0.95
    assert [n for n in target.notes if note and note in n] == ([] if note is None else
                                                              [target.notes[0]])
    assert target.describe()["notes"] == list(target.notes)
    if shape == "percent":
        np.testing.assert_allclose(scores, model.predict_proba(x[:40]), atol=1e-6)


@pytest.mark.parametrize("shape, path", [("objects", "predictions"),
                                         ("names", "result.classes"),
                                         ("column", "predictions")])
def test_label_answers_in_common_shapes(iris, shape, path):
    x, y, model = iris
    with ModelServer(_serve(model, shape)) as server:
        target = load_target(server.url, n_features=4, response_path=path)
        target.use_data_labels(NAMES[y] if shape == "names" else y)
        with pytest.warns(UserWarning, match="answers labels only"):
            out = target.predict(x[:30])
    assert target.output_kind == "labels" and target.n_classes == 3
    assert out.argmax(axis=1).tolist() == model.predict(x[:30]).tolist()
    assert set(out.ravel()) == {0.0, 1.0}


def test_label_only_endpoint_runs_what_labels_allow(iris):
    """A label-only endpoint is assessable: runs that need scores are not-applicable with the
    reason, equation-solving does not run on labels, the others run."""
    x, y, model = iris
    data = AssessmentData(x_pool=x[:75], y_pool=NAMES[y[:75]], x_eval=x[75:],
                          y_eval=NAMES[y[75:]], clip_values=(0.0, 1.0))
    with ModelServer(_serve(model, "names")) as server:
        target = load_target(server.url, n_features=4, response_path="result.classes")
        with pytest.warns(UserWarning, match="answers labels only"):
            result = Assessment([target], data, techniques=["extraction-equations",
                                                            "extraction-surrogate",
                                                            "membership-lira"],
                                params={}).run()
    by_run = {f.run: f for f in result.results[0].findings}
    assert by_run["extraction-equations"].status == "not-applicable"
    assert "labels" in by_run["extraction-equations"].reason
    assert by_run["extraction-surrogate"].status in ("succeeded", "failed")
    assert by_run["extraction-surrogate"].metrics["fidelity"].value >= 0.8
    assert target.classes == list(NAMES)


def test_one_sigmoid_column_is_a_binary_model(iris):
    x, y, _ = iris
    binary = LogisticRegression(max_iter=1000).fit(x, y == 2)

    def respond(payload, headers):
        xs = np.asarray(payload["instances"], dtype="float64")
        return {"predictions": binary.predict_proba(xs)[:, 1:].tolist()}

    with ModelServer(respond) as server:
        target = load_target(server.url, n_features=4)
        scores = target.predict(x[:20])
    assert target.n_classes == 2 and scores.shape == (20, 2)
    np.testing.assert_allclose(scores, binary.predict_proba(x[:20]), atol=1e-6)
    assert target.notes == ("one score per input read as P(class 1) of a binary model",)


def test_a_three_class_model_on_rows_of_two_classes(iris):
    x, y, model = iris
    keep = y < 2
    target = SklearnTarget(model)
    assert target.class_index(y[keep][:5]).tolist() == y[keep][:5].tolist()
    data = AssessmentData(x_pool=x[keep][:50], y_pool=y[keep][:50], x_eval=x[keep][50:],
                          y_eval=y[keep][50:], clip_values=(0.0, 1.0))
    result = Assessment([target], data, techniques=["extraction-surrogate"]).run()
    finding, = result.results[0].findings
    assert finding.status in ("succeeded", "failed") and finding.metrics["fidelity"].value > 0.8


def test_label_codes_against_class_names(iris):
    x, y, _ = iris
    named = SklearnTarget(LogisticRegression(max_iter=1000).fit(x, NAMES[y]))
    assert named.class_index(np.array([2, 0, 1])).tolist() == [2, 0, 1]
    assert "integer labels in the data read as positions" in named.notes[0]
    coded = SklearnTarget(LogisticRegression(max_iter=1000).fit(x, y))
    assert coded.class_index(np.array(["virginica", "setosa", *NAMES])).tolist() == \
        [2, 0, 0, 1, 2]
    assert "mapped in sorted order" in coded.notes[0]
    assert coded.class_index(np.array(["2", "0"])).tolist() == [2, 0]
    with pytest.raises(TargetError, match=r"the data's labels \{'cat', 'dog'\} do not match "
                                          r"the model's classes \{0, 1, 2\}"):
        coded.class_index(np.array(["cat", "dog"]))


# -- hostile or inconsistent endpoints (each answer once broke a run or misled the user) --------
def test_an_endpoint_switching_from_scores_to_labels_is_an_error_not_a_silent_switch():
    calls = []

    def respond(payload, headers):
        calls.append(1)
        n = len(payload["instances"])
        return {"predictions": [[0.3, 0.7]] * n if len(calls) == 1 else [1] * n}

    x = np.zeros((3, 2), dtype="float32")
    with ModelServer(respond) as server:
        target = load_target(server.url, n_features=2)
        assert target.predict(x).tolist() == [[0.3, 0.7]] * 3
        with pytest.raises(TargetError, match=r"answered labels after answering scores earlier "
                                              r"in the assessment; an endpoint must answer one "
                                              r"way$"):
            target.predict(x)
    assert target.output_kind == "scores"


def test_all_zero_score_rows_keep_their_width_as_the_number_of_classes():
    x = np.zeros((2, 2), dtype="float32")
    with ModelServer(lambda p, h: {"predictions": [[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]]}) as server:
        target = load_target(server.url, n_features=2)
        with pytest.warns(UserWarning, match="answers labels only"):
            out = target.predict(x)
    assert target.n_classes == 3 and out.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert "all zero and cannot be normalised" in target.notes[0]


def test_label_objects_with_one_missing_name_the_prediction():
    answer = {"predictions": [{"label": "a"}, {"score": 0.3}]}
    with ModelServer(lambda p, h: answer) as server:
        target = load_target(server.url, n_features=2, classes=["a", "b"])
        with pytest.raises(TargetError, match=r"answered objects with a 'label' but prediction "
                                              r"1 has none \(keys: score\)$"):
            target.predict(np.zeros((2, 2), dtype="float32"))


def test_json_nested_past_the_parser_is_a_target_error():
    body = b'{"predictions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with ModelServer(lambda p, h: body) as server:
        target = load_target(server.url, n_features=2)
        with pytest.raises(TargetError, match=r"answered JSON nested too deeply to read"):
            target.predict(np.zeros((1, 2), dtype="float32"))


def test_logits_at_the_float_limits_softmax_without_overflow_warnings():
    answer = {"predictions": [[1e308, -1e308]]}
    with ModelServer(lambda p, h: answer) as server:
        target = load_target(server.url, n_features=2)
        with np.errstate(all="raise"):
            out = target.predict(np.zeros((1, 2), dtype="float32"))
    assert out.tolist() == [[1.0, 0.0]]


def test_null_predictions_are_named():
    with ModelServer(lambda p, h: {"predictions": [None] * len(p["instances"])}) as server:
        target = load_target(server.url, n_features=4)
        with pytest.raises(TargetError, match=r"answered null for 3 of 3 predictions"):
            target.predict(np.zeros((3, 4)))
