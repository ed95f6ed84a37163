"""The conformance check for target adapters (``mlthreat.assess.targets`` modules and users' own
:class:`~mlthreat.assess.target.Target` subclasses)."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from mlthreat.assess.errors import QueryBudgetExceeded, TargetError
from mlthreat.assess.target import Target

__all__ = ["check_target"]

_OUTPUT_KINDS = ("scores", "labels")
_ACCESS = ("black-box", "white-box")
_TASKS = ("classification", "regression")


def _name(target: Any) -> str:
    return str(getattr(target, "description", "") or getattr(target, "model_id", "") or
               type(target).__name__)


def _fail(target: Any, prop: str, detail: str) -> NoReturn:
    raise AssertionError(f"target {_name(target)}: {prop}: {detail}")


def _predict(target: Target, x: Any, prop: str) -> Any:
    import numpy as np

    try:
        return np.asarray(target.predict(x))
    except Exception as exc:
        _fail(target, prop, f"predict raised {type(exc).__name__}: {exc}")


def _check_attributes(target: Target, answered: bool) -> None:
    """The attributes; before the first answer (``answered`` False) ``n_classes`` may still
    be unknown and raise TargetError."""
    import numpy as np

    shape = getattr(target, "input_shape", None)
    if not isinstance(shape, tuple) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        _fail(target, "input_shape", f"a non-empty tuple of positive ints expected, got {shape!r}")
    try:
        n_classes = target.n_classes
    except TargetError as exc:
        if answered:
            _fail(target, "n_classes", f"unreadable after a prediction ({exc})")
        return
    except Exception as exc:
        _fail(target, "n_classes", f"unreadable ({type(exc).__name__}: {exc})")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        _fail(target, "n_classes", f"an int >= 1 expected, got {n_classes!r}")
    for attr, allowed in (("output_kind", _OUTPUT_KINDS), ("access", _ACCESS),
                          ("task", _TASKS)):
        value = getattr(target, attr, None)
        if value not in allowed:
            _fail(target, attr, f"one of {allowed} expected, got {value!r}")
    if target.task == "regression" and n_classes != 1:
        _fail(target, "n_classes", f"a regressor has n_classes 1, got {n_classes}")
    for attr in ("model_id", "description"):
        value = getattr(target, attr, None)
        if not isinstance(value, str) or not value:
            _fail(target, attr, f"a non-empty str expected, got {value!r}")
    try:
        np.dtype(target.input_dtype)
    except (TypeError, AttributeError):
        _fail(target, "input_dtype", f"not a NumPy dtype: {getattr(target, 'input_dtype', None)!r}")
    clip = getattr(target, "clip_values", None)
    if not isinstance(clip, tuple | list) or len(clip) != 2:
        _fail(target, "clip_values", f"a (low, high) pair expected, got {clip!r}")
    try:
        low, high = (np.asarray(v, dtype="float64") for v in clip)
        np.broadcast_to(low, shape)
        np.broadcast_to(high, shape)
    except (TypeError, ValueError):
        _fail(target, "clip_values", f"low and high must be numbers or arrays broadcastable to "
                                     f"input_shape {shape}, got {clip!r}")
    if np.any(low >= high):
        _fail(target, "clip_values", f"low must be below high, got {clip!r}")
    classes = getattr(target, "classes", None)
    if target.task == "classification" and classes and len(classes) != n_classes:
        _fail(target, "classes", f"{len(classes)} class labels for n_classes {n_classes}")
    if target.access == "white-box" and target.estimator is None and \
            target.art_estimator() is None:
        _fail(target, "access", "white-box, but neither estimator nor art_estimator() is there")
    try:
        json.dumps(target.describe())
    except Exception as exc:
        _fail(target, "describe", f"not plain JSON data ({type(exc).__name__}: {exc})")


def _check_output(target: Target, y: Any, n: int, prop: str) -> None:
    import numpy as np

    expected = (n,) if target.task == "regression" else (n, target.n_classes)
    if y.shape != expected:
        _fail(target, prop, f"shape {y.shape} for {n} inputs, expected {expected}")
    if not np.issubdtype(y.dtype, np.floating):
        _fail(target, prop, f"dtype {y.dtype}, expected a float array")
    if not np.all(np.isfinite(y)):
        _fail(target, prop, "non-finite values")
    if target.task == "regression":
        return
    if target.output_kind == "scores":
        if np.any(y < -1e-6) or np.any(y > 1 + 1e-6):
            _fail(target, prop, "scores outside [0, 1] (logits instead of probabilities?)")
        sums = y.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            _fail(target, prop, f"score rows sum to {sums.round(4).tolist()}, expected 1")
    elif not (np.isin(y, (0.0, 1.0)).all() and np.all(y.sum(axis=1) == 1)):
        _fail(target, prop, "output_kind 'labels' but rows are not one-hot")


def _check_accounting(target: Target, x: Any) -> None:
    before = target.total_queries
    _predict(target, x, "total_queries")
    if target.total_queries != before + len(x):
        _fail(target, "total_queries", f"rose by {target.total_queries - before} for "
                                       f"{len(x)} rows, expected {len(x)}")
    with target.account("check-target", "evaluation") as outer:
        with target.account("check-target-inner", "evaluation") as inner:
            _predict(target, x[:2], "account")
        if inner.used != 2 or outer.used != 0:
            _fail(target, "account", f"nested accounts charged inner {inner.used}, outer "
                                     f"{outer.used} for 2 rows; expected 2 and 0")
        _predict(target, x[:3], "account")
        if outer.used != 3:
            _fail(target, "account", f"charged {outer.used} for 3 rows")

    calls: list[int] = []
    real = target._predict

    def spy(rows: Any) -> Any:
        calls.append(len(rows))
        return real(rows)

    before = target.total_queries
    own = vars(target).get("_predict")  # an instance attribute to put back, if there was one
    target._predict = spy  # type: ignore[method-assign,assignment]
    try:
        with target.account("check-target-budget", "evaluation", limit=2) as acc:
            try:
                target.predict(x[:3])
            except QueryBudgetExceeded:
                pass
            except Exception as exc:
                _fail(target, "query budget", f"3 rows over a limit of 2 raised "
                                              f"{type(exc).__name__}, not QueryBudgetExceeded")
            else:
                _fail(target, "query budget", "3 rows over a limit of 2 were answered")
            if calls:
                _fail(target, "query budget", "the model was queried before the budget check")
            if acc.used != 0 or target.total_queries != before:
                _fail(target, "query budget", "refused rows were counted")
            target.predict(x[:2])
            if calls != [2] or acc.used != 2:
                _fail(target, "query budget", f"2 rows within a limit of 2: sent {calls}, "
                                              f"counted {acc.used}")
    finally:
        if own is None:
            del target._predict
        else:
            target._predict = own  # type: ignore[method-assign]


def _check_bad_input(target: Target, x: Any) -> None:
    import numpy as np

    before = target.total_queries
    wide = np.concatenate([x[:2], x[:2, ..., :1]], axis=-1)
    try:
        target.predict(wide)
    except TargetError:
        pass
    except Exception as exc:
        _fail(target, "wrong input shape", f"shape {wide.shape[1:]} raised "
                                           f"{type(exc).__name__}, not TargetError")
    else:
        _fail(target, "wrong input shape", f"inputs of shape {wide.shape[1:]} were answered; "
                                           f"the model takes {target.input_shape}")
    if target.total_queries != before:
        _fail(target, "wrong input shape", "refused inputs were counted as queries")


def _check_class_index(target: Target) -> None:
    import numpy as np

    if target.task != "classification":
        return
    k = target.n_classes
    labels = list(target.classes) if target.classes else list(range(k))
    try:
        index = np.asarray(target.class_index(np.asarray(labels)))
    except Exception as exc:
        _fail(target, "class_index", f"raised {type(exc).__name__} on the target's own classes: "
                                     f"{exc}")
    if index.tolist() != list(range(k)):
        _fail(target, "class_index", f"mapped the classes to {index.tolist()[:10]}, expected "
                                     f"0..{k - 1}")
    if target.classes and target.classes != list(range(k)):
        unknown = "__not-a-class__" if isinstance(labels[0], str) else max(
            (v for v in labels if isinstance(v, int | float)), default=0) + 1
        try:
            target.class_index(np.asarray([unknown]))
        except TargetError:
            pass
        except Exception as exc:
            _fail(target, "class_index", f"an unknown label raised {type(exc).__name__}, not "
                                         "TargetError")
        else:
            _fail(target, "class_index", f"the unknown label {unknown!r} was accepted")


def check_target(target: Target, x_sample: Any) -> None:
    """Check that ``target`` keeps the Target contract; raise AssertionError if not.

    The properties, each named in the error with the target's description:

    - ``predict`` on ``x_sample[:5]`` returns a float array ``[5, n_classes]`` (a regressor:
      ``[5]``), finite; score rows in [0, 1] summing to 1 when ``output_kind`` is ``scores``,
      one-hot rows when it is ``labels``; a single row without its batch dimension works.
    - The attributes, before and after that first prediction (an endpoint may learn
      ``n_classes`` from its first answer, and until then raise TargetError reading it):
      ``input_shape`` a tuple of positive ints, ``n_classes >= 1``, ``clip_values`` a
      (low, high) pair, ``output_kind``, ``access`` and ``task`` in their sets, ``model_id``
      and ``description`` non-empty strings, ``describe()`` plain JSON data, a white-box
      target exposing ``estimator`` or ``art_estimator()``.
    - The same inputs twice give the same outputs.
    - Queries are counted: ``total_queries`` rises by exactly the rows sent; ``account``
      charges the innermost account; over a limit, :class:`QueryBudgetExceeded` is raised
      before the model is called and nothing is counted.
    - Inputs of the wrong shape raise :class:`TargetError` and are not counted.
    - ``class_index`` maps the target's classes to 0..n_classes-1 and refuses an unknown label.

    The check sends about 25 rows to the target. It stubs ``target._predict`` for a moment to
    see that a refused query never reaches the model.

    Parameters
    ----------
    target : Target
    x_sample : array [n, *input_shape], n >= 5
        Valid inputs (within ``clip_values``).

    Raises
    ------
    AssertionError
        Naming the target and the property that failed.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from mlthreat.assess.targets.sklearn import SklearnTarget
    >>> x, y = load_iris(return_X_y=True)
    >>> target = SklearnTarget(LogisticRegression(max_iter=500).fit(x, y), clip_values=(0, 8))
    >>> check_target(target, x[:10])
    """
    import numpy as np

    x = np.asarray(x_sample)
    if len(x) < 5:
        raise ValueError("check_target needs at least 5 sample rows")
    x = x[:5]
    shape = getattr(target, "input_shape", None)
    if not isinstance(shape, tuple) or tuple(x.shape[1:]) != shape:
        _fail(target, "input_shape", f"{shape!r} does not match the sample rows' shape "
                                     f"{tuple(x.shape[1:])}")
    _check_attributes(target, answered=False)
    original = x.copy()
    y = _predict(target, x, "predict")
    if not np.array_equal(x, original):
        _fail(target, "predict", "modified its input array")
    _check_attributes(target, answered=True)
    _check_output(target, y, len(x), "predict")
    again = _predict(target, x, "deterministic")
    if again.shape != y.shape or not np.allclose(again, y, rtol=0, atol=1e-6):
        _fail(target, "deterministic", "the same inputs gave different outputs")
    one = _predict(target, x[0], "single row")
    _check_output(target, one, 1, "single row")
    if not np.allclose(one[0], y[0], rtol=0, atol=1e-5):
        _fail(target, "single row", "a row alone gave a different answer than in a batch")
    _check_accounting(target, x)
    _check_bad_input(target, x)
    _check_class_index(target)
