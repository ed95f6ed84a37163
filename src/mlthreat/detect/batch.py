"""EventBatch: QueryEvents of one log chunk as arrays, the unit every detector consumes.

Detectors work on batches, not single events, so that hashing and distance computations are
vectorised (the stateful detector must keep up with tens of thousands of events per second).
Events in a batch are in time order; a batch may mix clients and models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EventBatch"]


@dataclass(frozen=True)
class EventBatch:
    """``n`` events as arrays.

    Attributes
    ----------
    ts : ndarray [n] float64
        Epoch seconds.
    client_id, model_id : ndarray [n] of str (object)
    x : ndarray [n, d] float32
        Inputs, flattened.
    label : ndarray [n] int64
        Predicted class (``-1`` when the log has none).
    scores : ndarray [n, k] float32 or None
    truth : ndarray [n] of str or None (object)
        Evaluation labels (``benign``, ``attack:<ID>``, ``evaluation``) when present.
    line : ndarray [n] int64
        Source line (or row) of each event, for error messages.
    source : str
        The file the batch came from.
    """

    ts: np.ndarray
    client_id: np.ndarray
    model_id: np.ndarray
    x: np.ndarray
    label: np.ndarray
    scores: np.ndarray | None = None
    truth: np.ndarray | None = None
    line: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1]) if self.x.ndim == 2 else 0

    def take(self, index: Any) -> EventBatch:
        """The events at ``index`` (a boolean mask or integer array), as a new batch."""
        def pick(a: Any) -> Any:
            return None if a is None else a[index]

        return EventBatch(ts=self.ts[index], client_id=self.client_id[index],
                          model_id=self.model_id[index], x=self.x[index],
                          label=self.label[index], scores=pick(self.scores),
                          truth=pick(self.truth), line=pick(self.line), source=self.source)
