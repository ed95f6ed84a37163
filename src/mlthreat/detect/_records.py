"""Validation of flat log records and their collection into :class:`EventBatch` arrays.

The record-level half of :mod:`mlthreat.detect.readers`: each check raises
:class:`~mlthreat.detect.mappings.BadRecord` with the reason the reader counts and quarantines
(see the normalisation rules in that module's docstring).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from mlthreat.detect.batch import EventBatch
from mlthreat.detect.mappings import BadRecord

if TYPE_CHECKING:
    from mlthreat.detect.readers import LogReader

__all__ = ["RecordBuilder", "from_native"]

def from_native(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSONL QueryEvent in the flat form."""
    output = obj.get("output")
    if output is None:
        raise BadRecord("missing_field", "output")
    if not isinstance(output, dict):
        raise BadRecord("bad_value", "output is not an object")
    if "label" not in output and "scores" not in output:
        raise BadRecord("missing_field", "output.label")
    return {"ts": obj.get("ts"), "client_id": obj.get("client_id"),
            "model_id": obj.get("model_id"), "input": obj.get("input"),
            "input_ref": obj.get("input_ref"), "output_label": output.get("label"),
            "output_scores": output.get("scores"), "truth": obj.get("truth")}


class RecordBuilder:
    """Validates flat records and collects them into arrays."""

    def __init__(self, reader: LogReader, source: str) -> None:
        self.reader = reader
        self.source = source
        self.dim: int | None = None
        self.k: int | None = None
        self.codes: dict[str, int] = {}
        self._clear()

    def _clear(self) -> None:
        self.ts: list[float] = []
        self.client: list[str] = []
        self.model: list[str] = []
        self.x: list[np.ndarray] = []
        self.label: list[int] = []
        self.scores: list[np.ndarray | None] = []
        self.truth: list[str | None] = []
        self.line: list[int] = []

    @property
    def size(self) -> int:
        return len(self.ts)

    def add(self, number: int, rec: dict[str, Any]) -> None:
        ts = _epoch(rec.get("ts"))
        client = _ident(rec.get("client_id"), "client_id")
        model = _ident(rec.get("model_id"), "model_id")
        if rec.get("input") is None:
            if rec.get("input_ref") is not None:
                raise BadRecord("no_input", "input_ref without the input itself")
            raise BadRecord("missing_field", "input")
        x = _vector(rec["input"], "input")
        if self.dim is not None and len(x) != self.dim:
            raise BadRecord("dim_mismatch", f"input has {len(x)} values, the file {self.dim}")
        scores = None
        if rec.get("output_scores") is not None:
            scores = _vector(rec["output_scores"], "output_scores")
            if self.k is not None and len(scores) != self.k:
                raise BadRecord("dim_mismatch",
                                f"output_scores has {len(scores)} values, the file {self.k}")
        label = self._label(rec.get("output_label"))
        truth = rec.get("truth")
        if truth is not None and not isinstance(truth, str):
            raise BadRecord("bad_value", "truth is not text")
        # all checks passed: commit
        self.dim = len(x)
        if scores is not None:
            self.k = len(scores)
        self.ts.append(ts)
        self.client.append(client)
        self.model.append(model)
        self.x.append(x)
        self.label.append(label)
        self.scores.append(scores)
        self.truth.append(truth or None)
        self.line.append(number)

    def _label(self, value: Any) -> int:
        if value is None:
            return -1
        if isinstance(value, bool):
            raise BadRecord("bad_value", "output_label is a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                pass
            try:
                value = float(text)
            except ValueError:
                if text not in self.codes:
                    self.codes[text] = len(self.codes)
                    self.reader.label_names.append(text)
                return self.codes[text]
        if isinstance(value, float):
            if not math.isfinite(value):
                raise BadRecord("non_finite", "output_label")
            return int(value) if value.is_integer() else -1
        raise BadRecord("bad_value", f"output_label is a {type(value).__name__}")

    def flush(self) -> EventBatch:
        n = self.size
        scores = None
        if any(s is not None for s in self.scores):
            scores = np.full((n, self.k or 0), np.nan, dtype=np.float32)
            for i, s in enumerate(self.scores):
                if s is not None:
                    scores[i] = s
        truth = None
        if any(t is not None for t in self.truth):
            truth = np.array(self.truth, dtype=object)
        batch = EventBatch(
            ts=np.array(self.ts, dtype=np.float64),
            client_id=np.array(self.client, dtype=object),
            model_id=np.array(self.model, dtype=object),
            x=np.stack(self.x).astype(np.float32, copy=False),
            label=np.array(self.label, dtype=np.int64), scores=scores, truth=truth,
            line=np.array(self.line, dtype=np.int64), source=self.source)
        self._clear()
        return batch


def _epoch(value: Any) -> float:
    if value is None or value == "":
        raise BadRecord("missing_field", "ts")
    if isinstance(value, bool):
        raise BadRecord("bad_ts", "ts is a boolean")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, datetime):
        out = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            try:
                stamp = datetime.fromisoformat(value.strip())
            except ValueError:
                raise BadRecord("bad_ts", f"ts {value[:40]!r} is neither epoch seconds nor "
                                          "RFC 3339") from None
            out = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    else:
        raise BadRecord("bad_ts", f"ts is a {type(value).__name__}")
    if not math.isfinite(out):
        raise BadRecord("bad_ts", "ts is not finite")
    return out


def _ident(value: Any, name: str) -> str:
    if value is None or value == "":
        raise BadRecord("missing_field", name)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord("bad_value", f"{name} is a {type(value).__name__}")


def _vector(value: Any, name: str) -> np.ndarray:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRecord("bad_value", f"{name} is not a JSON array") from None
    if not isinstance(value, list | tuple):
        raise BadRecord("bad_value", f"{name} is not a list")
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        raise BadRecord("bad_value", f"{name} is ragged") from None
    if arr.size == 0:
        raise BadRecord("bad_value", f"{name} is empty")
    if arr.dtype.kind not in "iuf":
        raise BadRecord("bad_value", f"{name} holds non-numeric values")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32).ravel()
    if not np.isfinite(out).all():
        raise BadRecord("non_finite", f"{name} holds NaN or infinite values")
    return out
