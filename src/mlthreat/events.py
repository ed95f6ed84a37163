"""QueryEvent: one inference request and its answer, the log schema ``assess`` writes and
``detect`` reads.

On disk a QueryEvent is one JSON object per line (JSONL)::

    {"ts": 1764410000.25, "client_id": "evasion-3", "model_id": "demo-mlp",
     "input": [0.0, 0.25, ...], "output": {"label": 7, "scores": [...]},
     "truth": "attack:AML.T0043.001"}

``ts`` is RFC 3339 text or epoch seconds; ``input`` may be replaced by ``input_ref`` (a
reference to a stored array); ``truth`` is only for evaluation: ``benign``,
``attack:<ATLAS ID>`` or ``evaluation``. CSV and Parquet logs use the flat columns
:data:`FLAT_COLUMNS`. The JSON Schema ships as
``mlthreat/schemas/records/query-event.schema.json`` (:func:`query_event_schema`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["FLAT_COLUMNS", "QueryEvent", "QueryLog", "query_event_schema"]

FLAT_COLUMNS = ("ts", "client_id", "model_id", "input", "output_label", "output_scores", "truth")


@dataclass(frozen=True)
class QueryEvent:
    """One query. ``input`` is the flattened feature vector (length d); ``output_scores`` the
    class scores (length n_classes) when the model exposes them."""

    ts: float | str
    client_id: str
    model_id: str
    input: tuple[float, ...] | None
    output_label: int | float | str | None
    output_scores: tuple[float, ...] | None = None
    truth: str | None = None
    input_ref: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSONL form (nested ``output``), leaving out absent optional fields."""
        out: dict[str, Any] = {"ts": self.ts, "client_id": self.client_id,
                               "model_id": self.model_id}
        if self.input is not None:
            out["input"] = list(self.input)
        if self.input_ref is not None:
            out["input_ref"] = self.input_ref
        output: dict[str, Any] = {"label": self.output_label}
        if self.output_scores is not None:
            output["scores"] = list(self.output_scores)
        out["output"] = output
        if self.truth is not None:
            out["truth"] = self.truth
        return out


def query_event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one QueryEvent line."""
    from importlib.resources import files

    text = files("mlthreat.schemas").joinpath("records", "query-event.schema.json").read_text(
        "utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


class QueryLog:
    """Appends QueryEvents to a JSONL file in batches (one write per ``log`` call).

    Parameters
    ----------
    path : path
        The file to append to (created, with its folder, on first write).
    model_id : str
        Written into every event.

    Inputs and scores are rounded to 6 decimals to keep logs small; that is far below any
    perturbation an attack in mlthreat uses.
    """

    def __init__(self, path: str | Path, model_id: str) -> None:
        self.path = Path(path)
        self.model_id = model_id
        self.events = 0
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    def log(self, inputs: Any, labels: Any, scores: Any | None, *, client_id: str,
            truth: str | None, ts: float, model_id: str | None = None) -> None:
        """Write one batch: ``inputs`` array [n, ...] (flattened per row), ``labels`` [n],
        ``scores`` [n, n_classes] or None; ``model_id`` overrides the log's own (one log may
        hold the queries of several targets)."""
        import numpy as np

        # rounded and converted in bulk: per-value Python work would dominate a fast model
        x = np.round(np.asarray(inputs, dtype="float64").reshape(len(inputs), -1), 6).tolist()
        y = np.asarray(labels).tolist()
        sc = None if scores is None else np.round(np.asarray(scores, dtype="float64"), 6).tolist()
        stamp = round(ts, 6)
        # the dicts QueryEvent.to_json writes, built directly: this runs for every query sent
        head = {"ts": stamp, "client_id": client_id, "model_id": model_id or self.model_id}
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        lines = []
        for i in range(len(x)):
            output: dict[str, Any] = {"label": y[i]}
            if sc is not None:
                output["scores"] = sc[i]
            event: dict[str, Any] = {**head, "input": x[i], "output": output}
            if truth is not None:
                event["truth"] = truth
            lines.append(dumps(event))
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write("\n".join(lines) + "\n")
            self.events += len(lines)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> QueryLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
