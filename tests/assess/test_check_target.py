"""``mlthreat.testing.targets.check_target`` over every built-in adapter, and over fakes that break
one property each (so the check is known to catch what it claims to)."""

from __future__ import annotations

import numpy as np
import pytest
from model_server import ModelServer, serve_estimator

from mlthreat.assess.errors import QueryBudgetExceeded, TargetError
from mlthreat.assess.target import Target
from mlthreat.assess.targets import ADAPTERS, load_target
from mlthreat.testing.targets import check_target

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

PYTHON_MODEL = '''
import numpy as np

W = np.random.default_rng(1).normal(size=(64, 10))


def predict_proba(x):
    z = x @ W
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
'''


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return x, y, LogisticRegression(max_iter=300).fit(x[:500], y[:500])


# -- one builder per adapter module; the registry test makes sure none is left out -------------
def _sklearn(tmp, digits, request):
    import skops.io as sio

    path = tmp / "lr.skops"
    sio.dump(digits[2], path)
    return load_target(f"sklearn:{path}")


def _onnx(tmp, digits, request):
    from skl2onnx import to_onnx

    x, _, model = digits
    path = tmp / "lr.onnx"
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())
    return load_target(f"onnx:{path}")


def _torch(tmp, digits, request):
    torch = pytest.importorskip("torch")  # an optional extra: skip without it

    torch.manual_seed(0)
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(),
                                                  torch.nn.Linear(16, 10)))
    path = tmp / "mlp.pt"
    torch.jit.save(module, str(path))
    return load_target(f"torch:{path}", input_shape=(64,))


def _http(tmp, digits, request):
    server = ModelServer(serve_estimator(digits[2])).__enter__()
    request.addfinalizer(server.__exit__)
    return load_target(server.url, n_features=64)  # n_classes learned from the first answer


def _python(tmp, digits, request):
    (tmp / "conformance_model.py").write_text(PYTHON_MODEL)
    return load_target(f"python:{tmp / 'conformance_model.py'}:predict_proba", n_features=64)


BUILDERS = {
    "mlthreat.assess.targets.sklearn": _sklearn,
    "mlthreat.assess.targets.onnx": _onnx,
    "mlthreat.assess.targets.torch": _torch,
    "mlthreat.assess.targets.http": _http,
    "mlthreat.assess.targets.python": _python,
}


def test_every_registered_adapter_has_a_conformance_run():
    assert set(ADAPTERS.values()) == set(BUILDERS)


@pytest.mark.parametrize("module", list(BUILDERS))
def test_builtin_adapter_conforms(module, digits, tmp_path, request):
    target = BUILDERS[module](tmp_path, digits, request)
    check_target(target, digits[0][500:520])


def test_regressor_and_labels_targets_conform(digits, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import Ridge

    x, y, model = digits
    path = tmp_path / "ridge.skops"
    sio.dump(Ridge().fit(x[:300], y[:300].astype(float)), path)
    check_target(load_target(f"sklearn:{path}"), x[500:510])
    with ModelServer(serve_estimator(model, labels=True)) as server:
        check_target(load_target(server.url, n_features=64, n_classes=10,
                                 output_kind="labels"), x[500:510])


# -- the check catches each broken property -----------------------------------------------------
class Fake(Target):
    """A well-behaved three-class target over four features, unless told otherwise."""

    def __init__(self, **attrs):
        self.input_shape = (4,)
        self.n_classes = 3
        self.clip_values = (0.0, 1.0)
        self.model_id = "fake"
        self.description = "fake target"
        for key, value in attrs.items():
            setattr(self, key, value)

    def _predict(self, x):
        z = x[:, :3] * 3.0 + x[:, 1:] ** 2
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


X = np.random.default_rng(0).random((8, 4))


def test_a_good_fake_passes():
    check_target(Fake(), X)


class _Unsummed(Fake):
    def _predict(self, x):
        return x[:, :3] * 2.0


class _NotOneHot(Fake):
    output_kind = "labels"


class _Uncounted(Fake):
    def predict(self, x):
        x = np.asarray(x).reshape(-1, 4)
        return self._predict(x)


class _SendsFirst(Fake):
    def predict(self, x):
        x = np.asarray(x).reshape(-1, 4)
        y = self._predict(x)
        acc = self._account
        if acc is not None and acc.limit is not None and acc.used + len(x) > acc.limit:
            raise QueryBudgetExceeded(acc.client_id, acc.limit, acc.used, len(x))
        self.total_queries += len(x)
        if acc is not None:
            acc.used += len(x)
        return y


class _Noisy(Fake):
    def _predict(self, x):
        y = super()._predict(x) + np.random.default_rng().random((len(x), 3)) * 0.01
        return y / y.sum(axis=1, keepdims=True)


class _AnyWidth(Fake):
    def predict(self, x):
        return super().predict(np.asarray(x)[..., :4])


class _BadIndex(Fake):
    def __init__(self):
        super().__init__(classes=["a", "b", "c"])

    def class_index(self, y):
        return np.zeros(len(y), dtype="int64")


class _Mutating(Fake):
    def predict(self, x):
        if isinstance(x, np.ndarray) and x.ndim == 2:
            x[:, 0] = 0.0
        return super().predict(x)


@pytest.mark.parametrize("target, prop", [
    (Fake(n_classes="3"), "n_classes"),
    (Fake(input_shape=[4]), "input_shape"),
    (Fake(output_kind="probabilities"), "output_kind"),
    (Fake(access="grey-box"), "access"),
    (Fake(task="ranking"), "task"),
    (Fake(clip_values=(1.0, 0.0)), "clip_values"),
    (Fake(clip_values=(0.0, 1.0, 2.0)), "clip_values"),
    (Fake(clip_values=(np.zeros(3), np.ones(3))), "clip_values"),
    (Fake(description="", model_id=""), "model_id"),
    (Fake(access="white-box"), "access"),
    (Fake(classes=[0, 1]), "classes"),
    (_Unsummed(), "predict"),
    (_NotOneHot(), "predict"),
    (_Uncounted(), "total_queries"),
    (_SendsFirst(), "query budget"),
    (_Noisy(), "deterministic"),
    (_AnyWidth(), "wrong input shape"),
    (_BadIndex(), "class_index"),
    (_Mutating(), "predict"),
])
def test_the_check_catches(target, prop):
    with pytest.raises(AssertionError) as err:
        check_target(target, X)
    message = str(err.value)
    name = target.description or target.model_id or type(target).__name__
    assert message.startswith(f"target {name}: {prop}:"), message


def test_wrong_shape_raises_target_error_not_counted():
    target = Fake()
    with pytest.raises(TargetError):
        target.predict(np.zeros((2, 5)))
    assert target.total_queries == 0


def test_needs_five_rows():
    with pytest.raises(ValueError, match="at least 5"):
        check_target(Fake(), X[:3])
