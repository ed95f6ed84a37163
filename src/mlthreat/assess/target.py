"""The model under test: the Target contract and the query accounting every adapter shares.

An adapter subclasses :class:`Target` and implements ``_predict`` (and says what it knows:
``input_shape``, ``n_classes``, ``clip_values``, ``output_kind``, ``access``, ``task``). The
base class casts queries to the model's input dtype, counts every query against the current
budget, and logs them as QueryEvents under the current client and truth label, so a technique
run cannot send a query that goes unaccounted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mlthreat.assess.errors import QueryBudgetExceeded, RunTimeLimit, TargetError

if TYPE_CHECKING:
    import numpy as np

    from mlthreat.events import QueryLog

__all__ = ["QueryAccount", "Target"]

OutputKind = Literal["scores", "labels"]
Access = Literal["black-box", "white-box"]
Task = Literal["classification", "regression"]


@dataclass
class QueryAccount:
    """Queries sent under one account (a technique run, or the evaluation of one).

    ``limit`` is the most queries allowed (None: no limit); ``used`` counts rows sent.
    """

    client_id: str
    truth: str | None
    limit: int | None = None
    used: int = 0
    batches: int = field(default=0, repr=False)


class Target:
    """Base class of every target adapter.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of one input (``(64,)`` for 8x8 digits flattened).
    n_classes : int
        Number of classes (1 for a regressor).
    clip_values : tuple of (float, float) or (ndarray, ndarray)
        Lowest and highest valid feature values, overall or per feature.
    output_kind : {"scores", "labels"}
        Whether ``predict`` returns class scores or one-hot labels.
    access : {"black-box", "white-box"}
        White-box targets expose gradients (see ``estimator`` or ``loss_gradient``).
    task : {"classification", "regression"}
    model_id : str
        Name written into query logs and reports.
    description : str
        One line for reports (``sklearn:model.skops (LogisticRegression)``).
    """

    kind: ClassVar[str] = "target"
    input_shape: tuple[int, ...]
    n_classes: int
    clip_values: tuple[Any, Any]
    output_kind: OutputKind = "scores"
    access: Access = "black-box"
    task: Task = "classification"
    model_id: str = "model"
    description: str = ""
    input_dtype: str = "float32"
    classes: list[Any] | None = None  # the model's class labels, in score order

    _account: QueryAccount | None = None
    _deadline: tuple[float, float] | None = None  # (time.monotonic() to stop at, seconds)
    _log: QueryLog | None = None
    total_queries: int = 0
    notes: tuple[str, ...] = ()  # what the adapter noticed about the answers, for reports

    # -- to implement --------------------------------------------------------------------------
    def _predict(self, x: np.ndarray) -> np.ndarray:
        """Scores [n, n_classes] (or one-hot labels [n, n_classes], or values [n] for a
        regressor) for inputs ``x`` [n, *input_shape], already cast to ``input_dtype``."""
        raise NotImplementedError

    # -- the contract ----------------------------------------------------------------------------
    def predict(self, x: Any) -> np.ndarray:
        """Query the model: ``x`` [n, *input_shape] → scores [n, n_classes] (regressor: [n]).

        Raises
        ------
        QueryBudgetExceeded
            When the rows would exceed the current account's limit (nothing is sent).
        RunTimeLimit
            When the :meth:`time_limit` in force has passed and the account has a limit (an
            attack's queries; nothing is sent).
        TargetError
            When the model answers with the wrong shape or not at all.
        """
        import numpy as np

        x = np.asarray(x)
        if x.ndim == len(self.input_shape):
            x = x[None, ...]
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise TargetError(f"{self.description or self.model_id}: inputs of shape "
                              f"{tuple(x.shape[1:])}, the model takes {tuple(self.input_shape)}")
        x = x.astype(self.input_dtype, copy=False)
        account = self._account
        if account is not None and account.limit is not None and \
                account.used + len(x) > account.limit:
            raise QueryBudgetExceeded(account.client_id, account.limit, account.used, len(x))
        # the limit is on the attack's queries (accounts with a budget): the measurement
        # after it still runs, so a run cut short reports on what it did
        if self._deadline is not None and account is not None and account.limit is not None \
                and time.monotonic() >= self._deadline[0]:
            raise RunTimeLimit(self._deadline[1], account.used)
        y = np.asarray(self._predict(x))
        expected = (len(x),) if self.task == "regression" else (len(x), self.n_classes)
        if y.shape != expected:
            raise TargetError(f"{self.description or self.model_id} answered shape "
                              f"{y.shape} for {len(x)} inputs, expected {expected}")
        self.total_queries += len(x)
        if account is not None:
            account.used += len(x)
            account.batches += 1
            if self._log is not None:
                self._write_log(x, y, account)
        return y

    def _write_log(self, x: np.ndarray, y: np.ndarray, account: QueryAccount) -> None:
        assert self._log is not None
        if self.task == "regression":
            labels, scores = y, None
        else:
            labels = y.argmax(axis=1)
            scores = y if self.output_kind == "scores" else None
        self._log.log(x, labels, scores, client_id=account.client_id, truth=account.truth,
                      model_id=self.model_id,
                      ts=time.time())

    @contextmanager
    def account(self, client_id: str, truth: str | None = None,
                limit: int | None = None) -> Iterator[QueryAccount]:
        """Count (and log) every query inside the block under ``client_id`` and ``truth``.

        Accounts nest: the inner one is charged; the outer one sees nothing of it, so the
        queries an evaluation spends never count against an attack's budget.
        """
        previous = self._account
        acc = QueryAccount(client_id, truth, limit)
        self._account = acc
        try:
            yield acc
        finally:
            self._account = previous

    @contextmanager
    def time_limit(self, seconds: float | None) -> Iterator[None]:
        """Refuse queries charged to a limited account (an attack's) with
        :class:`RunTimeLimit` once ``seconds`` have passed inside the block (None: no limit).
        A query under way is not cut: the HTTP target's ``timeout`` bounds each answer."""
        previous = self._deadline
        self._deadline = None if seconds is None else (time.monotonic() + seconds, seconds)
        try:
            yield
        finally:
            self._deadline = previous

    def attach_log(self, log: QueryLog | None) -> None:
        """Log every accounted query to ``log`` (None stops logging)."""
        self._log = log

    def class_index(self, y: Any) -> np.ndarray:
        """Map ground-truth labels [n] to score-column indices [n].

        A label that is one of the model's ``classes`` (also as text: ``"3"`` for 3, or 3.0
        for 3) maps to its position. When they do not match but the mapping is unambiguous it
        is made, with a note: integer codes 0..k-1 against named classes are positions in the
        model's (sorted) classes, as scikit-learn's LabelEncoder writes them; k named labels
        against k integer classes map in sorted order. Without ``classes``, labels must be
        integers in ``0..n_classes-1``.

        Raises
        ------
        TargetError
            When the labels fit none of these, naming both sets.
        """
        import numpy as np

        values = [_plain(v) for v in np.asarray(y).reshape(-1)]
        mapping = self._label_mapping(sorted(set(values), key=str))
        return np.asarray([mapping[v] for v in values], dtype="int64")

    def _label_mapping(self, labels: list[Any]) -> dict[Any, int]:
        n = self.n_classes
        ints = all(isinstance(v, int) for v in labels)
        if not self.classes:
            if ints and all(0 <= v < n for v in labels):
                return {v: v for v in labels}
            raise TargetError(f"{self.description or self.model_id}: labels "
                              f"{_show(labels)} are not class indices 0..{n - 1}; pass the "
                              "model's classes")
        classes = [_plain(c) for c in self.classes]
        index: dict[Any, int] = {}
        for i, c in enumerate(classes):
            index.setdefault(c, i)
            index.setdefault(str(c), i)
        direct = {v: index.get(v, index.get(str(v))) for v in labels}
        if all(i is not None for i in direct.values()):
            return {v: int(i) for v, i in direct.items() if i is not None}
        if ints and all(0 <= v < n for v in labels):
            self.note(f"integer labels in the data read as positions in the model's classes "
                      f"{_show(classes)}")
            return {v: v for v in labels}
        if len(labels) == n and all(isinstance(v, str) for v in labels) and \
                not any(isinstance(c, str) for c in classes):
            self.note(f"the data's labels {_show(labels)} mapped in sorted order to the "
                      f"model's classes {_show(classes)}")
            return {v: i for i, v in enumerate(labels)}
        raise TargetError(f"{self.description or self.model_id}: the data's labels "
                          f"{_show(labels)} do not match the model's classes {_show(classes)}; "
                          "recode the label column")

    def labels(self, x: Any) -> np.ndarray:
        """Predicted class per row [n] (one query per row)."""
        out: np.ndarray = self.predict(x).argmax(axis=1)
        return out

    def describe(self) -> dict[str, Any]:
        """Plain data about the target, for reports."""
        return {
            "kind": self.kind, "model_id": self.model_id, "description": self.description,
            "input_shape": list(self.input_shape), "n_classes": self.n_classes,
            "output_kind": self.output_kind, "access": self.access, "task": self.task,
            "notes": list(self.notes),
        }

    def note(self, text: str) -> None:
        """Record (once) something the adapter noticed about the model's answers."""
        if text not in self.notes:
            self.notes = (*self.notes, text)

    @property
    def estimator(self) -> Any:
        """The in-process model for white-box techniques (None when there is none)."""
        return None

    def art_estimator(self) -> Any:
        """An ART estimator with loss and class gradients built by the target itself (a torch
        target's), or None: white-box techniques then wrap :attr:`estimator`."""
        return None

    def reset_limit(self) -> None:
        """A technique run starts: limits that count per run (a mitigation's query limit)
        count from zero again. Nothing to do for a plain target."""

    def use_data_labels(self, labels: Any) -> None:
        """Tell the target which labels the user's data holds. Adapters that learn their
        classes from answers use them when an answer is labels and no classes were given."""


def _plain(v: Any) -> Any:
    """A label as a plain Python value: NumPy scalars unwrapped, bytes decoded, integral
    floats as int."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v


def _show(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:8])
    return "{" + shown + (", …" if len(values) > 8 else "") + "}"
