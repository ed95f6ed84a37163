"""The TorchScript target: a small MLP trained on digits here, scripted, saved, loaded back.

torch is part of the test extras (torch==2.13.0), so these tests run; without the optional
extra the module skips rather than failing collection."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from assess_helpers import UnpickleMarker

from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets import load_target

torch = pytest.importorskip("torch")

# torch 2.13 deprecates TorchScript in favour of torch.export, whose loader unpickles; TorchScript
# stays the format mlthreat loads, so building one here warns.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def scripted(digits_xy, tmp_path_factory):
    """A 64-32-10 MLP trained for a few epochs, saved as TorchScript."""
    x, y = digits_xy
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("torch") / "mlp.pt"
    module = torch.jit.script(model)
    torch.jit.save(module, str(path))
    return path, module


def test_predictions_match_the_module(digits_xy, scripted):
    x, y = digits_xy
    path, module = scripted
    target = load_target(f"torch:{path}", input_shape=(64,))
    assert target.n_classes == 10 and target.total_queries == 0  # the probe is not a query
    assert target.access == "white-box" and target.output_kind == "scores"
    assert target.input_shape == (64,) and target.clip_values == (0.0, 1.0)
    out = target.predict(x[1200:1300])
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x[1200:1300])), dim=1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert (out.argmax(axis=1) == y[1200:1300]).mean() > 0.85
    assert target.total_queries == 100
    same = load_target(f"torch:{path}", n_features=64, n_classes=10)
    np.testing.assert_allclose(same.predict(x[:5]), target.predict(x[:5]))


def test_art_estimator_gives_gradients(digits_xy, scripted):
    x, y = digits_xy
    path, module = scripted
    target = load_target(f"torch:{path}", input_shape="64")
    art = target.art_estimator()
    assert art is target.art_estimator()
    batch, onehot = x[:8], np.eye(10, dtype="float32")[y[:8]]
    grad = art.loss_gradient(batch, onehot)
    assert grad.shape == (8, 64) and np.abs(grad).sum() > 0
    assert art.class_gradient(batch, label=3).shape == (8, 1, 64)
    with torch.no_grad():
        logits = module(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(art.predict(batch), logits, atol=1e-5)
    assert target.estimator is not None


def test_needs_input_shape(scripted):
    path, _ = scripted
    with pytest.raises(TargetError, match="input_shape"):
        load_target(f"torch:{path}")
    with pytest.raises(TargetError, match="forward pass failed on input"):
        load_target(f"torch:{path}", input_shape=(10,))


def test_refuses_pickles_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": UnpickleMarker(marker)}, path)
    with pytest.raises(TargetError, match=r"torch\.save checkpoint, not a TorchScript module"):
        load_target(f"torch:{path}", input_shape=(4,))
    assert not marker.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a model")
    with pytest.raises(TargetError, match="not a TorchScript archive"):
        load_target(f"torch:{garbage}", input_shape=(4,))
    with pytest.raises(TargetError, match="no such model file"):
        load_target(f"torch:{tmp_path / 'none.pt'}", input_shape=(4,))


def test_torch_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(TargetError, match=r"pip install torch==2\.13\.0"):
        load_target(f"torch:{tmp_path / 'm.pt'}", input_shape=(4,))


def test_regressor(tmp_path):
    model = torch.jit.script(torch.nn.Linear(3, 1))
    path = tmp_path / "reg.pt"
    torch.jit.save(model, str(path))
    target = load_target(f"torch:{path}", input_shape=(3,), task="regression")
    out = target.predict(np.ones((4, 3), dtype="float32"))
    assert target.task == "regression" and out.shape == (4,)
    assert target.art_estimator().loss_gradient(np.ones((4, 3), dtype="float32"),
                                                np.zeros(4, dtype="float32")).shape == (4, 3)
    # without task=regression one output per input is a binary classifier's (said in a note)
    assert load_target(f"torch:{path}", input_shape=(3,)).n_classes == 2


@pytest.mark.parametrize("sigmoid", [False, True])
def test_one_output_module_is_a_binary_classifier(digits_xy, tmp_path, sigmoid):
    """A binary model saved the common way: one output per input, a logit or a sigmoid."""
    x, y = digits_xy
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 1)] + ([torch.nn.Sigmoid()] if sigmoid else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    xt, yt = torch.from_numpy(x[:600]), torch.from_numpy((y[:600] == 3).astype("float32"))
    for _ in range(100):
        opt.zero_grad()
        out = model(xt)[:, 0]
        loss = (torch.nn.functional.binary_cross_entropy(out, yt) if sigmoid else
                torch.nn.functional.binary_cross_entropy_with_logits(out, yt))
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path / "binary.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    target = load_target(f"torch:{path}", n_features=64)
    with torch.no_grad():
        raw = model(torch.from_numpy(x[600:650]))[:, 0].numpy().astype("float64")
    p = raw if sigmoid else 1 / (1 + np.exp(-raw))
    scores = target.predict(x[600:650])
    assert target.n_classes == 2 and scores.shape == (50, 2)
    np.testing.assert_allclose(scores[:, 1], p, atol=1e-5)
    assert target.notes == (("one output per input read as a binary classifier (a sigmoid "
                             "probability); pass task=regression for a regressor") if sigmoid
                            else ("one output per input read as a binary classifier (a logit); "
                                  "pass task=regression for a regressor"),)
    # white-box: ART's gradients go through the same two-logit view
    grads = target.art_estimator().loss_gradient(x[600:605], np.eye(2)[[0, 1, 0, 1, 0]])
    assert grads.shape == (5, 64) and np.abs(grads).sum() > 0
