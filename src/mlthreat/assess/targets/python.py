"""Any Python callable as a target: ``python:module:function`` or ``python:/path/file.py:function``.

The callable takes an array ``[n, *input_shape]`` and returns class scores ``[n, k]`` or labels
``[n]`` (a regressor: values ``[n]``), as a NumPy array, a list, or anything ``numpy.asarray``
takes. Importing the module runs its code, as ``import`` always does: name only code you trust.
The current directory is searched first, as ``python -m`` does.

mlthreat calls the function with no probe: ``n_features`` (or ``input_shape``) is required,
``n_classes`` is required when the function answers labels, and otherwise is read from the first
answer's rows, as is ``output_kind`` (see
:class:`~mlthreat.assess.targets._answers.AnswerTarget`).

:func:`load_callable` is the loader this adapter shares with ``--fit python:module:function``.

Examples
--------
A file ``model.py`` beside the data::

    import numpy as np
    W = np.load("weights.npy")
    def predict(x):
        z = x @ W
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

>>> from mlthreat.assess.targets import load_target
>>> target = load_target("python:model:predict", n_features=64)   # doctest: +SKIP
>>> target = load_target("python:./model.py:predict", n_features=64, n_classes=10)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets._answers import AnswerTarget, clip_pair, parse_shape

__all__ = ["SCHEME", "PythonTarget", "load", "load_callable"]

SCHEME = "python"


def _is_file(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _import_file(path: Path, error: type[Exception]) -> Any:
    if not path.is_file():
        raise error(f"python:{path}: no such file")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"mlthreat_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise error(f"python:{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise error(f"python:{path}: importing it raised {type(exc).__name__}: {exc}") from None
    return module


def load_callable(spec: str, *, error: type[Exception] = TargetError) -> Callable[..., Any]:
    """The callable named by ``spec``: ``module:function`` (a dotted module path, searched from
    the current directory first) or ``path/to/file.py:function``; the ``python:`` prefix is
    optional, and the function may be a dotted attribute (``module:Model.predict``).

    Parameters
    ----------
    spec : str
    error : exception class
        What to raise on failure (the ``--fit`` loader raises its own kind).

    Returns
    -------
    callable

    Raises
    ------
    TargetError (or ``error``)
        A malformed spec, a module that cannot be imported (with the cause), a missing
        attribute, or one that is not callable.

    Examples
    --------
    >>> load_callable("math:hypot")(3, 4)
    5.0
    """
    text = spec[len("python:"):] if spec.startswith("python:") else spec
    module_name, sep, attr = text.rpartition(":")
    if not sep or not module_name or not attr:
        raise error(f"python:{text}: expected python:module:function or "
                    "python:path/to/file.py:function")
    if _is_file(module_name):
        module = _import_file(Path(module_name), error)
    else:
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise error(f"python:{text}: cannot import {module_name!r} ({exc})") from None
        except Exception as exc:
            raise error(f"python:{text}: importing {module_name!r} raised "
                        f"{type(exc).__name__}: {exc}") from None
        finally:
            if added and cwd in sys.path:
                sys.path.remove(cwd)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise error(f"python:{text}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise error(f"python:{text}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj


class PythonTarget(AnswerTarget):
    """A callable ``f(x [n, *input_shape]) -> scores [n, k] | labels [n]`` as a black-box target.

    Parameters
    ----------
    function : callable
    input_shape : tuple of int
    n_classes : int, optional
        Required when the function answers labels; read from the first answer's score rows
        otherwise.
    classes : list, optional
        Class labels in score order; labels the function answers are looked up here.
    output_kind : {"scores", "labels"}, optional
        Stated up front; otherwise taken from the first answer.
    task : {"classification", "regression"}
    softmax : bool
        Apply a softmax to answered rows that are logits.
    clip_values : (low, high), optional
        Valid feature range; defaults to (0, 1).
    """

    kind = "python"
    access = "black-box"

    def __init__(self, function: Callable[..., Any], *, input_shape: tuple[int, ...],
                 n_classes: int | None = None, classes: list[Any] | None = None,
                 output_kind: str | None = None, task: str | None = None,
                 softmax: bool = False, clip_values: tuple[Any, Any] | None = None,
                 input_dtype: str = "float32", model_id: str = "python",
                 description: str = "") -> None:
        self._function = function
        self.model_id = model_id
        self.description = description or f"python:{model_id}"
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_dtype = input_dtype
        self.clip_values = clip_pair(self.description, clip_values)
        self._init_answers(n_classes=n_classes, classes=classes, output_kind=output_kind,
                           task=task, softmax=softmax)

    def _predict(self, x: Any) -> Any:
        try:
            raw = self._function(x.copy())
        except Exception as exc:
            raise TargetError(f"{self.description} raised {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
        if hasattr(raw, "detach"):  # a torch tensor
            raw = raw.detach().cpu().numpy()
        return self._to_output(raw, len(x))


def load(spec: str, *, n_features: Any = None, input_shape: Any = None,
         n_classes: int | None = None, classes: list[Any] | None = None,
         output_kind: str | None = None, task: str | None = None, softmax: bool = False,
         clip_values: tuple[Any, Any] | None = None, input_dtype: str = "float32",
         **_: Any) -> PythonTarget:
    """Load the callable ``spec`` (``module:function`` or ``file.py:function``) as a target.

    Raises
    ------
    TargetError
        A spec that does not name a callable, or no ``n_features``/``input_shape``.
    """
    where = f"python:{spec}"
    shape = parse_shape(where, input_shape, n_features,
                        "mlthreat does not call the model to find out")
    function = load_callable(spec)
    name = spec.rpartition(":")[2]
    return PythonTarget(function, input_shape=shape, n_classes=n_classes, classes=classes,
                        output_kind=output_kind, task=task, softmax=softmax,
                        clip_values=clip_values, input_dtype=input_dtype, model_id=name,
                        description=where)
