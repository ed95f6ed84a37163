"""TorchScript modules: white-box targets with gradients.

The file is loaded with ``torch.jit.load``, which reads TorchScript's own archive format and
runs no Python code from it; a ``torch.save`` pickle (a whole ``nn.Module`` or a state dict)
is refused, since unpickling runs whatever the file contains. Export a model for mlthreat with
``torch.jit.save(torch.jit.script(model), "model.pt")`` (or ``torch.jit.trace``).

The module maps a float batch ``[n, *input_shape]`` to logits ``[n, n_classes]``; ``predict``
returns their softmax. For white-box techniques, :meth:`TorchTarget.art_estimator` wraps the
module in ART's ``PyTorchClassifier`` (cross-entropy loss) for loss and class gradients.

torch is an optional extra: ``pip install torch==2.13.0``. ART's own ``pytorch`` extra also pulls
torchvision, which breaks beside it; mlthreat needs torch alone.

Examples
--------
>>> from mlthreat.assess.targets import load_target
>>> target = load_target("torch:model.pt", input_shape=(64,))   # doctest: +SKIP
>>> grads = target.art_estimator().loss_gradient(x, y_one_hot)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.target import Target
from mlthreat.assess.targets._answers import check_choice, clip_pair, parse_shape

__all__ = ["SCHEME", "TorchTarget", "load"]

SCHEME = "torch"
INSTALL_HINT = "pip install torch==2.13.0"


def _torch(where: str) -> Any:
    try:
        import torch
    except ImportError:
        raise TargetError(f"{where}: torch is not installed; {INSTALL_HINT} (torch alone: ART's "
                          "pytorch extra pulls torchvision, which breaks beside it)") from None
    return torch


class TorchTarget(Target):
    """A TorchScript module run in-process on the CPU (white-box).

    Parameters
    ----------
    module : torch.jit.ScriptModule
        Maps ``[n, *input_shape]`` float tensors to logits ``[n, n_classes]`` (a regressor:
        ``[n]`` or ``[n, 1]`` values).
    input_shape : tuple of int
        Shape of one input, without the batch dimension.
    n_classes : int, optional
        Inferred, when not given, from one forward pass on a zero input. That pass is local
        arithmetic on the analyst's own copy of the model, not a query to a deployed model, so
        it is not counted against any budget nor logged.
    classes : list, optional
        Class labels in logit order (default ``0..n_classes-1``).
    clip_values : (low, high), optional
        Valid feature range; defaults to (0, 1).
    task : {"classification", "regression"}
    input_dtype : str
        dtype the module takes (default ``float32``).
    """

    kind = "torch"
    access = "white-box"

    def __init__(self, module: Any, *, input_shape: tuple[int, ...], n_classes: int | None = None,
                 classes: list[Any] | None = None, clip_values: tuple[Any, Any] | None = None,
                 task: str | None = None, input_dtype: str = "float32", model_id: str = "torch",
                 description: str = "") -> None:
        self._module = module
        self.model_id = model_id
        self.description = description or f"torch:{model_id}"
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_dtype = input_dtype
        self.clip_values = clip_pair(self.description, clip_values)
        self.task = check_choice(self.description, "task", task,
                                 ("classification", "regression")) or "classification"
        self.output_kind = "scores"
        self._art: Any = None
        if self.task == "regression":
            self.n_classes, self.classes = 1, []
            return
        if n_classes is None:
            n_classes = len(classes) if classes is not None else self._probe_classes()
        self.n_classes = int(n_classes)
        if self.n_classes == 1:
            self._module, how = _two_logits(self._module, self.description)
            self.n_classes = 2
            self.note(f"one output per input read as a binary classifier ({how}); pass "
                      "task=regression for a regressor")
        if self.n_classes < 2:
            raise TargetError(f"{self.description}: the module gives {self.n_classes} outputs "
                              "per input; a classifier needs one per class (or pass "
                              "task=regression)")
        if classes is not None and len(classes) != self.n_classes:
            raise TargetError(f"{self.description}: {len(classes)} classes given, the module "
                              f"has {self.n_classes}")
        self.classes = list(classes) if classes is not None else None

    def _forward(self, x: Any) -> Any:
        torch = _torch(self.description)
        try:
            with torch.no_grad():
                out = self._module(torch.from_numpy(x))
        except Exception as exc:
            lines = str(exc).strip().splitlines() or [""]
            raise TargetError(f"{self.description}: forward pass failed on input "
                              f"{tuple(x.shape)} ({type(exc).__name__}: "
                              f"{lines[-1][:200]})") from None
        if not isinstance(out, torch.Tensor):
            raise TargetError(f"{self.description}: the module returned "
                              f"{type(out).__name__}, expected a tensor of logits")
        return out.detach().to(torch.float64).cpu().numpy()

    def _probe_classes(self) -> int:
        """Number of logits of one zero input (a local forward pass, not a counted query)."""
        import numpy as np

        out = self._forward(np.zeros((1, *self.input_shape), dtype=self.input_dtype))
        if out.ndim != 2 or out.shape[0] != 1:
            raise TargetError(f"{self.description}: the module answered shape {out.shape} for "
                              "one input, expected [1, n_classes]")
        return int(out.shape[1])

    @property
    def estimator(self) -> Any:
        """The TorchScript module itself."""
        return self._module

    def art_estimator(self) -> Any:
        """ART's ``PyTorchClassifier`` around the module (``PyTorchRegressor`` for a regressor),
        for white-box techniques: loss and class gradients by autograd.

        Its ``predict`` returns the module's logits, not probabilities; and it runs the module
        directly, so its calls are not counted or logged as queries (white-box access is the
        analyst's own copy of the model). Built once and cached.

        Raises
        ------
        TargetError
            When torch is not installed.
        """
        if self._art is None:
            from mlthreat.assess.techniques._art import art_clip_values

            torch = _torch(self.description)
            clip = art_clip_values(self)
            if self.task == "regression":
                from art.estimators.regression import PyTorchRegressor

                self._art = PyTorchRegressor(
                    model=self._module, loss=torch.nn.MSELoss(), input_shape=self.input_shape,
                    clip_values=clip, device_type="cpu")
            else:
                from art.estimators.classification import PyTorchClassifier

                self._art = PyTorchClassifier(
                    model=self._module, loss=torch.nn.CrossEntropyLoss(),
                    input_shape=self.input_shape, nb_classes=self.n_classes,
                    clip_values=clip, device_type="cpu")
        return self._art

    def _predict(self, x: Any) -> Any:
        import numpy as np

        out = self._forward(np.ascontiguousarray(x))
        if self.task == "regression":
            return out.reshape(len(x)) if out.size == len(x) else out
        if out.ndim != 2:
            return out
        z = out - out.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def _two_logits(module: Any, where: str) -> tuple[Any, str]:
    """``module`` (one output per input) wrapped to give two logits ``[0, z]``, whose softmax
    is ``[1 - sigmoid(z), sigmoid(z)]``: the binary model as a two-class one, for ``predict``
    and for ART's gradients alike. When the module's graph ends in a sigmoid its output is a
    probability ``p`` and ``z = log(p / (1 - p))``; otherwise its output is the logit ``z``."""
    torch = _torch(where)
    try:
        graph = str(module.inlined_graph)
    except (AttributeError, RuntimeError):
        graph = ""
    probabilities = "aten::sigmoid" in graph

    # torch is imported at run time (an optional extra), so its Module is untyped (Any) here
    class TwoLogits(torch.nn.Module):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: Any) -> Any:
            z = self.inner(x).reshape(-1, 1)
            if probabilities:
                p = z.clamp(1e-12, 1 - 1e-12)
                z = torch.log(p) - torch.log1p(-p)
            return torch.cat([torch.zeros_like(z), z], dim=1)

    how = "a sigmoid probability" if probabilities else "a logit"
    return TwoLogits().eval(), how


def load(path: str, *, input_shape: Any = None, n_features: Any = None,
         n_classes: int | None = None, classes: list[Any] | None = None,
         clip_values: tuple[Any, Any] | None = None, task: str | None = None,
         input_dtype: str = "float32", **_: Any) -> TorchTarget:
    """Load the TorchScript module at ``path`` (see :class:`TorchTarget` for the options).

    Raises
    ------
    TargetError
        torch not installed; missing file; a file that is not a TorchScript archive (a
        ``torch.save`` pickle is refused, never unpickled); no ``input_shape``; a module that
        fails on that shape.
    """
    p = Path(path)
    where = f"torch:{p}"
    torch = _torch(where)
    if not p.is_file():
        raise TargetError(f"{p}: no such model file")
    shape = parse_shape(where, input_shape, n_features,
                        "a TorchScript module does not record the shape it takes")
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript for torch.export, whose loader unpickles
            # (torch.load with a weights_only=False fallback): TorchScript stays the safe path.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated",
                                    DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        text = str(exc)
        if "constants.pkl" in text:
            cause = ("a torch.save checkpoint, not a TorchScript module (it is not unpickled); "
                     "export it with torch.jit.save(torch.jit.script(model), path)")
        elif "zip archive" in text or "ZIP" in text:
            cause = "not a TorchScript archive"
        else:
            first = (text.splitlines() or [""])[0][:200]
            cause = f"cannot load TorchScript ({type(exc).__name__}: {first})"
        raise TargetError(f"{p}: {cause}") from None
    module.eval()
    return TorchTarget(module, input_shape=shape, n_classes=n_classes, classes=classes,
                       clip_values=clip_values, task=task, input_dtype=input_dtype,
                       model_id=p.stem, description=where)
