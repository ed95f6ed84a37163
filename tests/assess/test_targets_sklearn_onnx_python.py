"""The in-process adapters: scikit-learn (skops, pickle behind trust), ONNX and Python callables."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from assess_helpers import UnpickleMarker

from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets import load_target
from mlthreat.assess.targets.python import load_callable


def _double(x):  # a custom function: skops does not trust it
    return x * 2


@pytest.fixture(scope="module")
def logreg(digits_xy):
    from sklearn.linear_model import LogisticRegression

    x, y = digits_xy
    return LogisticRegression(max_iter=300).fit(x[:500], y[:500])


# -- sklearn ------------------------------------------------------------------------------------
def test_skops_refuses_a_custom_function_even_when_named(tmp_path, digits_xy):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = digits_xy
    pipe = make_pipeline(FunctionTransformer(_double), LogisticRegression(max_iter=200))
    pipe.fit(x[:300], y[:300])
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    name = f"{__name__}._double"
    for trust in ((), (name,)):
        with pytest.raises(TargetError, match=r"untrusted type .*_double \(a callable outside "
                                              r"scikit-learn, NumPy and SciPy is never trusted"
                           ) as err:
            load_target(f"sklearn:{path}", trust_types=trust)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("make", ["forest", "hist-gradient-boosting", "knn", "pipeline"])
def test_skops_ordinary_models_load_with_their_library_types(tmp_path, digits_xy, make):
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    x, y = digits_xy
    model = {
        "forest": lambda: RandomForestClassifier(20, random_state=0),
        "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=5),
        "knn": lambda: KNeighborsClassifier(),
        "pipeline": lambda: make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                                          DecisionTreeClassifier(random_state=0)),
    }[make]().fit(x[:400], y[:400])
    path = tmp_path / f"{make}.skops"
    sio.dump(model, path)
    refused_by_skops = sio.get_untrusted_types(file=path)
    target = load_target(f"sklearn:{path}")
    np.testing.assert_allclose(target.predict(x[400:420]), model.predict_proba(x[400:420]))
    assert list(target.trusted_types) == sorted(refused_by_skops)
    assert target.describe()["trusted_types"] == sorted(refused_by_skops)
    if make in ("forest", "pipeline"):
        assert target.trusted_types == ("sklearn.tree._tree.Tree",)


def test_skops_never_trusts_operator_or_file_readers(tmp_path, digits_xy):
    import operator

    import skops.io as sio
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = digits_xy
    evil = make_pipeline(FunctionTransformer(operator.attrgetter("real")),
                         KNeighborsClassifier()).fit(x[:100], y[:100])
    sio.dump(evil, tmp_path / "evil.skops")
    for trust in ((), ("operator.attrgetter",)):
        with pytest.raises(TargetError, match=r"untrusted type operator\.attrgetter \(operator "
                                              r"is never trusted\)"):
            load_target(f"sklearn:{tmp_path / 'evil.skops'}", trust_types=trust)
    reader = make_pipeline(FunctionTransformer(np.fromfile), KNeighborsClassifier())
    reader.steps[1][1].fit(x[:100], y[:100])
    reader.steps[0][1].fit(x[:100])
    sio.dump(reader, tmp_path / "reader.skops")
    with pytest.raises(TargetError, match=r"numpy\.fromfile \(reads or writes files"):
        load_target(f"sklearn:{tmp_path / 'reader.skops'}")


def test_skops_round_trip(tmp_path, digits_xy, logreg):
    import skops.io as sio

    x, _ = digits_xy
    path = tmp_path / "lr.skops"
    sio.dump(logreg, path)
    target = load_target(f"sklearn:{path}")
    np.testing.assert_allclose(target.predict(x[:5]), logreg.predict_proba(x[:5]))
    assert target.access == "white-box"


def test_pickle_needs_trust(tmp_path, digits_xy, logreg):
    x, _ = digits_xy
    marker = tmp_path / "unpickled"
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps(UnpickleMarker(marker)))
    with pytest.raises(TargetError, match="--trust-pickle"):
        load_target(f"sklearn:{hostile}")
    assert not marker.exists()

    path = tmp_path / "lr.pkl"
    path.write_bytes(pickle.dumps(logreg))
    with pytest.raises(TargetError, match="not a skops file"):
        load_target(f"sklearn:{path}")
    with pytest.warns(UserWarning, match="unpickling"):
        target = load_target(f"sklearn:{path}", trust_pickle=True)
    np.testing.assert_allclose(target.predict(x[:3]), logreg.predict_proba(x[:3]))


def test_sklearn_missing_file(tmp_path):
    with pytest.raises(TargetError, match="no such model file"):
        load_target(f"sklearn:{tmp_path / 'nope.skops'}")


# -- onnx ---------------------------------------------------------------------------------------
def _to_onnx(model, x, path, **options):
    from skl2onnx import to_onnx

    onx = to_onnx(model, x[:1], options=options or None)
    path.write_bytes(onx.SerializeToString())
    return onx


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_classifier_matches_sklearn(tmp_path, digits_xy, logreg, zipmap):
    x, _ = digits_xy
    path = tmp_path / "lr.onnx"
    _to_onnx(logreg, x, path, **({} if zipmap else {"zipmap": False}))
    target = load_target(f"onnx:{path}")
    assert target.input_shape == (64,) and target.n_classes == 10
    assert target.output_kind == "scores" and target.task == "classification"
    assert target.classes == list(range(10)) and target.input_dtype == "float32"
    np.testing.assert_allclose(target.predict(x[500:540]), logreg.predict_proba(x[500:540]),
                               atol=1e-5)
    with pytest.raises(TargetError, match=r"inputs of shape \(63,\)"):
        target.predict(x[:2, :63])


def test_onnx_string_classes(tmp_path, digits_xy):
    from sklearn.linear_model import LogisticRegression

    x, y = digits_xy
    names = np.array(["low", "mid", "high"])[y[:400] % 3]
    model = LogisticRegression(max_iter=300).fit(x[:400], names)
    path = tmp_path / "str.onnx"
    _to_onnx(model, x, path)
    target = load_target(f"onnx:{path}")
    assert target.classes == list(model.classes_)
    np.testing.assert_allclose(target.predict(x[:10]), model.predict_proba(x[:10]), atol=1e-5)
    np.testing.assert_array_equal(target.class_index(["mid", "high"]),
                                  [list(model.classes_).index(c) for c in ("mid", "high")])


def test_onnx_labels_only(tmp_path, digits_xy, logreg):
    x, _ = digits_xy
    path = tmp_path / "labels.onnx"
    onx = _to_onnx(logreg, x, path)
    keep = [o for o in onx.graph.output if "label" in o.name]
    del onx.graph.output[:]
    onx.graph.output.extend(keep)
    path.write_bytes(onx.SerializeToString())
    target = load_target(f"onnx:{path}")
    assert target.output_kind == "labels" and target.n_classes == 10
    np.testing.assert_array_equal(target.predict(x[:20]), np.eye(10)[logreg.predict(x[:20])])


def test_onnx_regressor(tmp_path, digits_xy):
    from sklearn.linear_model import Ridge

    x, y = digits_xy
    model = Ridge().fit(x[:500], y[:500].astype(float))
    path = tmp_path / "ridge.onnx"
    _to_onnx(model, x, path)
    target = load_target(f"onnx:{path}")
    assert target.task == "regression" and target.n_classes == 1
    out = target.predict(x[:7])
    assert out.shape == (7,)
    np.testing.assert_allclose(out, model.predict(x[:7]), atol=1e-4)


@pytest.mark.parametrize("content", [b"not an onnx model at all", b"PK\x03\x04garbage", b""])
def test_onnx_garbage(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(TargetError, match="not an ONNX model") as err:
        load_target(f"onnx:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_onnx_missing_file_and_class_count_conflict(tmp_path, digits_xy, logreg):
    with pytest.raises(TargetError, match="no such model file"):
        load_target(f"onnx:{tmp_path / 'nope.onnx'}")
    x, _ = digits_xy
    path = tmp_path / "lr.onnx"
    _to_onnx(logreg, x, path, zipmap=False)
    with pytest.raises(TargetError, match="disagrees"):
        load_target(f"onnx:{path}", n_classes=3)


# -- python -------------------------------------------------------------------------------------
MODULE = '''
import numpy as np

rng = np.random.default_rng(0)
W = rng.normal(size=(64, 10))


def scores(x):
    z = x @ W
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def labels(x):
    return (x @ W).argmax(axis=1).tolist()


def broken(x):
    raise RuntimeError("model server down")


def short(x):
    return scores(x)[:-1]


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "user_model_mod.py"
    path.write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    yield path
    sys.modules.pop("user_model_mod", None)


def test_python_scores_from_module_and_file(user_module, digits_xy):
    x, _ = digits_xy
    by_module = load_target("python:user_model_mod:scores", n_features=64)
    by_file = load_target(f"python:{user_module}:scores", n_features=64)
    a, b = by_module.predict(x[:6]), by_file.predict(x[:6])
    assert a.shape == (6, 10) and by_module.n_classes == 10
    assert by_module.output_kind == "scores"
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)


def test_python_labels_need_n_classes(user_module, digits_xy):
    x, _ = digits_xy
    with pytest.raises(TargetError, match="n_classes"):
        load_target("python:user_model_mod:labels", n_features=64).predict(x[:2])
    target = load_target("python:user_model_mod:labels", n_features=64, n_classes=10,
                         output_kind="labels")
    out = target.predict(x[:6])
    np.testing.assert_array_equal(out, np.eye(10)[load_target(
        "python:user_model_mod:scores", n_features=64).predict(x[:6]).argmax(axis=1)])


@pytest.mark.parametrize("spec, message", [
    ("user_model_mod:missing", "has no attribute 'missing'"),
    ("user_model_mod:NOT_CALLABLE", "not callable"),
    ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    ("/no/such/file.py:f", "no such file"),
    ("just_a_module", "expected python:module:function"),
])
def test_python_bad_specs(user_module, spec, message):
    with pytest.raises(TargetError, match=message):
        load_target(f"python:{spec}", n_features=64)


def test_python_answers_checked(user_module, digits_xy):
    x, _ = digits_xy
    with pytest.raises(TargetError, match="raised RuntimeError: model server down"):
        load_target("python:user_model_mod:broken", n_features=64).predict(x[:2])
    with pytest.raises(TargetError, match="answered 2 predictions for 3 inputs"):
        load_target("python:user_model_mod:short", n_features=64).predict(x[:3])
    with pytest.raises(TargetError, match="n_features"):
        load_target("python:user_model_mod:scores")


def test_load_callable():
    assert load_callable("math:hypot")(3, 4) == 5.0
    assert load_callable("python:os.path:join")("a", "b") == "a/b"
    assert load_callable("collections:OrderedDict.fromkeys")("ab") == {"a": None, "b": None}
    with pytest.raises(ValueError, match="no attribute"):
        load_callable("math:nope", error=ValueError)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_onnx_one_output_binary_model(tmp_path, digits_xy, sigmoid):
    """A binary model exported the way Keras and hand-written graphs do: MatMul + Add, then a
    Sigmoid (or the bare logit, which needs task=classification)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    x, y = digits_xy
    lr = LogisticRegression(max_iter=500).fit(x[:600], y[:600] == 3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["z" if sigmoid else "p"])]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["p"]))
    graph = helper.make_graph(
        nodes, "binary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(lr.coef_.T.astype("float32"), "w"),
                     numpy_helper.from_array(lr.intercept_.astype("float32"), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "binary.onnx"
    onnx.save(model, str(path))
    options = {} if sigmoid else {"task": "classification"}
    target = load_target(f"onnx:{path}", **options)
    scores = target.predict(x[600:640])
    assert (target.task, target.n_classes, target.output_kind) == ("classification", 2, "scores")
    np.testing.assert_allclose(scores, lr.predict_proba(x[600:640]), atol=1e-5)
    assert target.notes == ((("one output per input read as a binary classifier (its graph "
                              "ends in a Sigmoid)"),) if sigmoid else
                            ("one output per input read as a binary classifier (a logit)",))
    if not sigmoid:  # without the task, a bare number per input is a regressor's
        assert load_target(f"onnx:{path}").task == "regression"
