"""Turning a model's raw answers into the arrays of the Target contract.

Shared by the adapters whose model answers in its own shape: ``onnx`` (label tensors),
``http`` (JSON lists) and ``python`` (whatever the callable returns). Labels become one-hot rows;
scores are checked for shape and finiteness; logits can be turned into probabilities.
:class:`AnswerTarget` is the base of adapters that may learn the output kind and the number of
classes from the model's first answer instead of sending a probe.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.target import OutputKind, Target, Task
from mlthreat.safeload import excerpt

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LABEL_KEYS", "AnswerTarget", "check_choice", "clip_pair", "label_indices", "one_hot",
           "parse_shape", "read_scores", "softmax"]

# Keys under which endpoints put a predicted class in a per-row object ({"label": 3}, the
# Hugging Face pipelines' {"label": "LABEL_1", "score": 0.98}, {"class": "cat"}…).
LABEL_KEYS = ("label", "class", "class_name", "predicted_class", "prediction", "predicted_label",
              "category")
_SUM_TOLERANCE = 1e-3  # float32 probabilities sum to 1 within a few ulps per class


def check_choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> Any:
    """``value`` if it is one of ``choices`` (or None), else a TargetError naming the option."""
    if value is not None and value not in choices:
        raise TargetError(f"{where}: {name}={value!r}, expected one of {', '.join(choices)}")
    return value


def clip_pair(where: str, clip_values: Any) -> tuple[Any, Any]:
    """The ``clip_values`` option as ``(low, high)`` (floats, or arrays for per-feature bounds,
    where ``low == high`` marks a constant feature); ``(0.0, 1.0)`` when None."""
    import numpy as np

    if clip_values is None:
        return (0.0, 1.0)
    if isinstance(clip_values, str):
        clip_values = clip_values.split(",")
    try:
        low, high = clip_values
        lo, hi = np.asarray(low, dtype="float64"), np.asarray(high, dtype="float64")
    except (TypeError, ValueError):
        raise TargetError(f"{where}: clip_values must be a pair (low, high), "
                          f"got {clip_values!r}") from None
    if lo.ndim == 0 and hi.ndim == 0:
        if lo >= hi:
            raise TargetError(f"{where}: clip_values low must be below high, "
                              f"got {clip_values!r}")
        return (float(lo), float(hi))
    if np.any(lo > hi):  # per feature, low == high is a constant column of the data
        raise TargetError(f"{where}: clip_values low must not be above high, "
                          f"got {clip_values!r}")
    return (lo, hi)


def parse_shape(where: str, input_shape: Any, n_features: Any, why: str) -> tuple[int, ...]:
    """The ``input_shape`` option (a tuple, or text like ``"1,28,28"``), or ``(n_features,)``.

    Raises
    ------
    TargetError
        When neither is given (``why`` says why it is needed) or it is not a shape.
    """
    if input_shape is None and n_features is not None:
        input_shape = (n_features,)
    if input_shape is None:
        raise TargetError(f"{where}: pass the n_features (or input_shape) option: {why}")
    if isinstance(input_shape, int | str):
        input_shape = str(input_shape).replace("x", ",").split(",")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise TargetError(f"{where}: input_shape={input_shape!r} is not a shape") from None
    if not shape or any(d <= 0 for d in shape):
        raise TargetError(f"{where}: input_shape={input_shape!r} is not a shape")
    return shape


def one_hot(indices: Any, n_classes: int) -> np.ndarray:
    """Rows [n, n_classes] of 0.0 with 1.0 at each of ``indices`` [n]."""
    import numpy as np

    out = np.zeros((len(indices), n_classes))
    out[np.arange(len(indices)), np.asarray(indices, dtype="int64")] = 1.0
    return out


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax of ``logits`` [n, k], in float64."""
    import numpy as np

    z = np.asarray(logits, dtype="float64")
    with np.errstate(over="ignore"):  # 1e308 - (-1e308) is -inf, whose exp is the 0 we want
        z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def read_scores(arr: Any) -> tuple[np.ndarray, str | None]:
    """Probabilities [n, k] from a model's score rows ``arr`` [n, k] (float64, finite), and a
    note saying how they were read when they were not probabilities already.

    * one column: P(class 1) of a binary model when every value is in [0, 1] (a sigmoid),
      else a logit; either becomes ``[1 - p, p]`` (k = 2);
    * non-negative rows summing to 1 (within float32 rounding): as they are;
    * non-negative rows with other sums (votes, percentages, counts): divided by their sum;
    * anything with negative values: logits, softmaxed;
    * non-negative rows of which some sum to 0 cannot be normalised: the note says so and the
      caller reads the answer as labels (the argmax of each row).
    """
    import numpy as np

    a = np.asarray(arr, dtype="float64")
    if a.shape[1] == 1:
        p = a[:, 0]
        if np.all((p >= 0) & (p <= 1)):
            return np.column_stack([1 - p, p]), ("one score per input read as P(class 1) of a "
                                                 "binary model")
        p = 1.0 / (1.0 + np.exp(-p))
        return np.column_stack([1 - p, p]), ("one value per input outside [0, 1] read as the "
                                             "logit of a binary model (sigmoid)")
    if not len(a):
        return a, None
    sums = a.sum(axis=1)
    if np.all(a >= 0):
        if np.all(np.abs(sums - 1) <= _SUM_TOLERANCE):
            return a, None
        if np.any(sums <= 0):
            return a, "some rows of scores are all zero and cannot be normalised: read as labels"
        return a / sums[:, None], (f"scores are not probabilities (rows sum to "
                                   f"{float(np.median(sums)):.4g}, not 1): renormalised")
    return softmax(a), "scores have negative values: read as logits and softmaxed"


def label_indices(where: str, labels: Any, classes: list[Any] | None,
                  n_classes: int) -> np.ndarray:
    """Score-column indices [n] of predicted ``labels`` [n].

    With ``classes`` a label is looked up in it; without, a label must be an integer in
    ``0..n_classes-1``.

    Raises
    ------
    TargetError
        For a label that is not a class of the model, naming it.
    """
    import numpy as np

    values = [v.item() if hasattr(v, "item") else v for v in np.asarray(labels).reshape(-1)]
    if classes:
        index = {(c.item() if hasattr(c, "item") else c): i for i, c in enumerate(classes)}
        out = []
        for v in values:
            key = v.decode() if isinstance(v, bytes) else v
            if key not in index and isinstance(key, float) and key.is_integer():
                key = int(key)
            if key not in index and str(key) in index:  # classes given as text, "0", "1"…
                key = str(key)
            if key not in index:
                raise TargetError(f"{where} answered label {excerpt(v)}, which is not one of "
                                  f"its classes {excerpt(list(classes))}")
            out.append(index[key])
        return np.asarray(out, dtype="int64")
    out = []
    for v in values:
        # the range test comes first: float() of a 4,000-digit integer overflows
        if isinstance(v, bool) or not isinstance(v, int | float) or \
                not 0 <= v < n_classes or not float(v).is_integer():
            raise TargetError(f"{where} answered label {excerpt(v)}; without the classes option "
                              f"a label must be an integer in 0..{n_classes - 1}")
        out.append(int(v))
    return np.asarray(out, dtype="int64")


class AnswerTarget(Target):
    """A target that may learn its output kind and number of classes from its first answer.

    Endpoints and callables do not describe themselves, and mlthreat sends no probe query to
    find out (a probe would be traffic the user did not budget for). So ``n_classes`` and
    ``output_kind`` come from the options when given; otherwise from the first answer: rows of
    scores give both, bare labels give ``output_kind="labels"`` but cannot tell how many classes
    there are (pass ``n_classes`` or ``classes``). Until that first answer, ``output_kind``
    reads ``"scores"`` and ``n_classes`` raises :class:`TargetError` asking for the option.
    """

    _n_classes: int | None = None
    _data_labels: list[Any] | None = None
    _kind_given: bool = False
    _answered: bool = False
    softmax: bool = False

    def _init_answers(self, *, n_classes: Any, classes: Any, output_kind: Any, task: Any,
                      softmax: bool) -> None:
        where = self.description
        self.task = check_choice(where, "task", task, ("classification", "regression")) or \
            "classification"
        kind = check_choice(where, "output_kind", output_kind, ("scores", "labels"))
        self._kind_given = kind is not None
        self.output_kind = kind or "scores"
        self.softmax = bool(softmax)
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",")]
        self.classes = list(classes) if classes is not None else None
        if self.task == "regression":
            self._n_classes, self.classes, self.output_kind = 1, [], "scores"
            return
        if n_classes is not None:
            try:
                n = int(n_classes)
            except (TypeError, ValueError):
                raise TargetError(f"{where}: n_classes={n_classes!r} is not an integer") from None
            if n < 1:
                raise TargetError(f"{where}: n_classes must be at least 1, got {n}")
            if self.classes and len(self.classes) != n:
                raise TargetError(f"{where}: {len(self.classes)} classes given but "
                                  f"n_classes={n}")
            self._n_classes = n
        elif self.classes:
            self._n_classes = len(self.classes)

    @property
    def n_classes(self) -> int:
        if self._n_classes is None and self._data_labels:
            # until the first answer says, the data's labels stand in; a score answer of
            # another width then sets the number (a 3-class model on rows of 2 classes)
            return len(self._data_labels)
        if self._n_classes is None:
            raise TargetError(f"{self.description}: the number of classes is known only after "
                              "the model's first answer; pass the n_classes option")
        return self._n_classes

    @n_classes.setter
    def n_classes(self, value: int) -> None:
        self._n_classes = value

    def _learn_kind(self, kind: OutputKind) -> None:
        if self._kind_given and kind != self.output_kind:
            raise TargetError(f"{self.description} answered {kind}, but output_kind="
                              f"{self.output_kind!r} was given")
        if self._answered and kind != self.output_kind:
            # the runs so far read its answers one way; switching would mix scores and
            # one-hot labels in one run's measurements
            raise TargetError(f"{self.description} answered {kind} after answering "
                              f"{self.output_kind} earlier in the assessment; an endpoint must "
                              "answer one way")
        if not self._answered and kind != self.output_kind:
            warnings.warn(f"{self.description} answers labels only: output_kind is 'labels' "
                          "(pass output_kind='labels' to say so up front)", stacklevel=4)
        self.output_kind = kind
        self._answered = True

    def _to_output(self, raw: Any, n: int) -> np.ndarray:
        """The contract's array for ``n`` inputs from a raw answer (a list or array of ``n``
        score rows, ``n`` labels, or ``n`` values for a regressor).

        Raises
        ------
        TargetError
            For the wrong number of answers, ragged or non-numeric rows, rows of the wrong
            length, non-finite scores, or labels that are not classes of the model.
        """
        import numpy as np

        where = self.description
        if isinstance(raw, tuple):
            raw = list(raw)
        if not isinstance(raw, list | np.ndarray) and not hasattr(raw, "__array__"):
            raise TargetError(f"{where} answered {type(raw).__name__}, expected a list of "
                              f"{n} predictions")
        if len(raw) != n:
            raise TargetError(f"{where} answered {len(raw)} predictions for {n} inputs")
        if isinstance(raw, list) and any(r is None for r in raw):
            nulls = sum(r is None for r in raw)
            raise TargetError(f"{where} answered null for {nulls} of {n} predictions")
        task: Task = self.task
        if task == "regression":
            arr = self._numeric(raw, where)
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise TargetError(f"{where} answered shape {arr.shape} for {n} inputs; a "
                                  "regressor answers one number per input")
            return arr
        if isinstance(raw, list) and raw and all(isinstance(r, dict) for r in raw):
            raw = self._labels_from_objects(raw)
        if isinstance(raw, list):
            rows = [isinstance(r, list | tuple) for r in raw]
            if any(rows) and not all(rows):
                raise TargetError(f"{where} answered a mix of score rows and labels")
            is_scores = bool(rows) and all(rows)
        else:
            is_scores = np.ndim(raw) == 2
        if not is_scores and np.ndim(raw) != 1 and len(raw):
            raise TargetError(f"{where} answered shape {np.shape(raw)} for {n} inputs; "
                              "expected [n, n_classes] scores or [n] labels")
        if is_scores or (not len(raw) and self.output_kind == "scores"):
            arr = self._numeric(raw, where).reshape(n, -1)
            if arr.shape[1] == 1 and len(arr) and np.all(arr == np.round(arr)) and \
                    (arr.max() > 1 or (self._n_classes or 0) > 2):
                return self._labels_out(arr[:, 0], where)  # [[3], [1]]: labels in a column
            if self.softmax and len(arr):
                arr = softmax(arr)
            elif len(arr):
                arr, note = read_scores(arr)
                if note is not None:
                    self.note(note)
                if note is not None and note.endswith("read as labels"):
                    if self._n_classes is None:  # the rows' width still says how many
                        self._n_classes = arr.shape[1]
                    return self._labels_out(arr.argmax(axis=1), where)
            if self._n_classes is None:
                self._n_classes = arr.shape[1]
            if arr.shape[1] != self._n_classes:
                raise TargetError(f"{where} answered rows of {arr.shape[1]} scores, expected "
                                  f"{self._n_classes} (one per class)")
            self._learn_kind("scores")
            return arr
        return self._labels_out(raw, where)

    def _labels_out(self, raw: Any, where: str) -> np.ndarray:
        """One-hot rows for answered labels; without the classes or their number, the labels
        of the user's data stand in (:meth:`use_data_labels`), with a note."""
        if self._n_classes is None and self._data_labels:
            hint = self._data_labels
            if all(isinstance(v, str) for v in hint):
                self.classes = list(hint)
            self._n_classes = len(hint)
            self.note(f"answers are labels and no classes were given: the {len(hint)} labels "
                      "of the data stand for the model's classes (pass --n-classes if it has "
                      "more)")
        if self._n_classes is None:
            raise TargetError(f"{where} answers labels, which do not tell how many classes "
                              "the model has: pass the n_classes (or classes) option")
        self._learn_kind("labels")
        return one_hot(label_indices(where, raw, self.classes, self._n_classes),
                       self._n_classes)

    def _labels_from_objects(self, raw: list[dict[str, Any]]) -> list[Any]:
        """Labels from per-row objects (``[{"label": 3}, …]``), by the first of
        :data:`LABEL_KEYS` every row has."""
        for key in LABEL_KEYS:
            if all(key in r for r in raw):
                return [r[key] for r in raw]
        for key in LABEL_KEYS:
            if any(key in r for r in raw):
                row = next(i for i, r in enumerate(raw) if key not in r)
                raise TargetError(f"{self.description} answered objects with a {key!r} but "
                                  f"prediction {row} has none (keys: "
                                  f"{', '.join(sorted(map(str, raw[row]))[:8]) or 'none'})")
        raise TargetError(f"{self.description} answered objects with keys "
                          f"{', '.join(sorted(raw[0])[:8])}, none a label "
                          f"({', '.join(LABEL_KEYS[:4])}…); set response_path to the "
                          "predictions")

    def use_data_labels(self, labels: Any) -> None:
        import numpy as np

        from mlthreat.assess.target import _plain

        values = {_plain(v) for v in np.asarray(labels).reshape(-1)}
        self._data_labels = sorted(values, key=lambda v: (isinstance(v, str), v))

    @staticmethod
    def _numeric(raw: Any, where: str) -> np.ndarray:
        import numpy as np

        try:
            arr = np.asarray(raw, dtype="float64")
        except OverflowError:  # JSON integers have no size limit; float64 stops near 1e308
            raise TargetError(f"{where} answered numbers too large for float64") from None
        except (TypeError, ValueError):
            raise TargetError(f"{where} answered non-numeric or ragged predictions") from None
        if not np.all(np.isfinite(arr)):
            raise TargetError(f"{where} answered non-finite numbers (NaN or infinity)")
        return arr
