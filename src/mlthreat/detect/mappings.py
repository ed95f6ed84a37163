"""Field mappings: turn real serving logs into flat QueryEvent records.

A mapping is fed one parsed log record (a dict) at a time and returns flat records with the
keys of :data:`mlthreat.events.FLAT_COLUMNS`; :class:`~mlthreat.detect.readers.LogReader`
validates them exactly like a native log. One request with several rows becomes several
events, all carrying the request's line number.

``kserve``
    KServe payload logging (CloudEvents 1.0), one JSON object per line, in structured mode::

        {"specversion": "1.0", "id": "5d1f…", "type": "org.kubeflow.serving.inference.request",
         "source": "http://localhost:9081/", "time": "2024-05-01T12:00:00.123456789Z",
         "inferenceservicename": "sklearn-iris", "clientid": "key-17",
         "data": {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}}
        {"specversion": "1.0", "id": "5d1f…", "type": "org.kubeflow.serving.inference.response",
         …, "data": {"predictions": [1, 1]}}

    Attributes may also be written as the binary-mode headers (``ce-id``, ``ce-type``…).
    ``data`` is an object, JSON text, or ``data_base64``. Request and response are paired by
    ``id`` in either order; the open-inference (V2) bodies ``{"inputs": [{"shape", "data"}]}`` /
    ``{"outputs": [...]}`` are accepted too. A prediction is a label, a list of scores (label =
    arg max) or an object with ``label`` / ``scores``. ``ts`` is the request's ``time``;
    ``model_id`` its ``inferenceservicename``. KServe logs carry no caller identity: the
    ``clientid`` extension attribute is used when an upstream proxy sets it, otherwise the
    ``source`` attribute. An id still unpaired at the end of the file (or when more than
    ``max_pending`` are open) is quarantined as ``unmatched``.

``sagemaker``
    SageMaker Data Capture JSONL: ``captureData.endpointInput`` / ``endpointOutput`` with
    ``data``, ``encoding`` (``CSV``, ``JSON`` or ``BASE64`` of ``observedContentType``), and
    ``eventMetadata.inferenceTime`` (ts), ``eventId``, ``inferenceId``. ``client_id`` is the
    ``inferenceId``, else the ``client_id=…`` pair of ``customAttributes``, else
    ``"anonymous"`` (all unattributed traffic counts as one client). ``model_id`` is the
    endpoint name from the capture path (``…/<endpoint>/<variant>/YYYY/MM/DD/HH/file``), else
    the file's stem. CSV bodies hold one row per line.

FILE
    A YAML file (read with the safe loader) naming a dotted path per field (a numeric part
    indexes a list); ``client_id``, ``model_id`` and ``truth`` may instead be
    ``{value: literal}``::

        ts: request.time
        client_id: request.headers.x-api-key
        model_id: {value: fraud-v3}
        input: request.body.features
        output_label: response.body.label        # optional
        output_scores: response.body.probabilities  # optional
        truth: labels.truth                      # optional

    ``ts``, ``client_id``, ``model_id`` and ``input`` are required. When ``input`` is a list of
    lists it holds several rows, and ``output_label`` / ``output_scores`` then hold one entry
    per row.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mlthreat.detect.errors import LogFormatError

__all__ = ["MAPPINGS", "BadRecord", "FieldMapping", "KServeMapping", "Mapping",
           "SageMakerMapping", "resolve_mapping"]


class BadRecord(Exception):
    """One log record that cannot become an event: ``reason`` (a short key counted in
    :class:`~mlthreat.detect.readers.ReadStats`) and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


#: (line, raw text, flat record or the reason it is bad)
Item = tuple[int, str, "dict[str, Any] | BadRecord"]


class Mapping(Protocol):
    def feed(self, record: dict[str, Any], line: int, raw: str) -> list[Item]: ...

    def finish(self) -> list[Item]: ...


_MISSING = object()


def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif (isinstance(cur, list) and part.lstrip("-").isdigit()
              and -len(cur) <= int(part) < len(cur)):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, list) for r in value)


def _prediction(pred: Any) -> tuple[Any, Any]:
    """(label, scores) of one row's prediction."""
    if isinstance(pred, dict):
        label = next((pred[k] for k in ("label", "predicted_label", "class") if k in pred), None)
        scores = next((pred[k] for k in ("scores", "probabilities", "probability")
                       if k in pred), None)
        if label is None and isinstance(scores, list) and scores:
            label = _argmax(scores)
        return label, scores
    if isinstance(pred, list):
        return (_argmax(pred) if pred else None), pred
    return pred, None


def _argmax(scores: list[Any]) -> Any:
    try:
        return max(range(len(scores)), key=lambda i: float(scores[i]))
    except (TypeError, ValueError):
        return None  # the reader reports the non-numeric scores


def _per_row(value: Any, n: int, what: str) -> list[Any]:
    """Split an output into ``n`` row predictions."""
    if isinstance(value, dict):
        for key in ("predictions", "outputs", "results"):
            if key in value:
                return _per_row(value[key], n, what)
        if n == 1:
            return [value]
    if isinstance(value, list):
        if len(value) == n and (n > 1 or len(value) == 1 or isinstance(value[0], list | dict)):
            return value
        if n == 1:
            return [value]
    elif n == 1:
        return [value]
    raise BadRecord("bad_value", f"{what} does not hold one prediction for each of {n} rows")


def _events(rows: list[Any], preds: list[Any] | None, base: dict[str, Any], line: int,
            raw: str) -> list[Item]:
    out: list[Item] = []
    for i, row in enumerate(rows):
        label, scores = _prediction(preds[i]) if preds is not None else (None, None)
        out.append((line, raw, {**base, "input": row, "output_label": label,
                                "output_scores": scores}))
    return out


# -- KServe ----------------------------------------------------------------------------------

class KServeMapping:
    """KServe payload logging (CloudEvents), request and response paired by ``id``."""

    REQUEST = "org.kubeflow.serving.inference.request"
    RESPONSE = "org.kubeflow.serving.inference.response"

    def __init__(self, source: str | Path = "", max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        self._pending: dict[str, tuple[str, int, str, dict[str, Any]]] = {}

    @staticmethod
    def _attr(record: dict[str, Any], key: str) -> Any:
        return record.get(key, record.get("ce-" + key))

    def feed(self, record: dict[str, Any], line: int, raw: str) -> list[Item]:
        kind = self._attr(record, "type")
        if kind not in (self.REQUEST, self.RESPONSE):
            raise BadRecord("bad_value", f"type {kind!r} is not a KServe request or response")
        eid = self._attr(record, "id")
        if not eid:
            raise BadRecord("missing_field", "id")
        eid = str(eid)
        out: list[Item] = []
        other = self._pending.pop(eid, None)
        if other is None or other[0] == kind:
            if other is not None:
                out.append((other[1], other[2], BadRecord("unmatched", f"duplicate {eid}")))
            self._pending[eid] = (kind, line, raw, record)
            if len(self._pending) > self.max_pending:
                old = next(iter(self._pending))
                _, oline, oraw, _ = self._pending.pop(old)
                out.append((oline, oraw, BadRecord("unmatched", f"{old}: too many open ids")))
            return out
        req, resp = ((kind, line, raw, record), other) if kind == self.REQUEST else (other, (
            kind, line, raw, record))
        try:
            return self._pair(req[3], resp[3], req[1], req[2])
        except BadRecord as bad:
            return [(req[1], req[2], bad)]

    def _pair(self, req: dict[str, Any], resp: dict[str, Any], line: int, raw: str) -> list[Item]:
        base = {"ts": self._attr(req, "time"),
                "client_id": self._attr(req, "clientid") or self._attr(req, "source"),
                "model_id": self._attr(req, "inferenceservicename") or self._attr(req, "source"),
                "truth": None}
        for key in ("ts", "client_id", "model_id"):
            if base[key] in (None, ""):
                raise BadRecord("missing_field", f"{key} (CloudEvent attribute)")
        rows = self._rows(_payload(req))
        preds = _per_row(self._outputs(_payload(resp)), len(rows), "response")
        return _events(rows, preds, base, line, raw)

    @staticmethod
    def _rows(data: Any) -> list[Any]:
        if isinstance(data, dict) and "instances" in data:
            rows = data["instances"]
            return rows if _is_rows(rows) else [rows]
        if isinstance(data, dict) and isinstance(data.get("inputs"), list) and data["inputs"]:
            return _tensor(data["inputs"][0], rows=True)
        raise BadRecord("missing_field", "request data.instances / data.inputs")

    @staticmethod
    def _outputs(data: Any) -> Any:
        if isinstance(data, dict) and "predictions" in data:
            return data["predictions"]
        if isinstance(data, dict) and isinstance(data.get("outputs"), list) and data["outputs"]:
            return _tensor(data["outputs"][0], rows=False)
        raise BadRecord("missing_field", "response data.predictions / data.outputs")

    def finish(self) -> list[Item]:
        out: list[Item] = [(line, raw, BadRecord("unmatched", f"{kind.rsplit('.', 1)[-1]} "
                                                 f"{eid} has no partner"))
                           for eid, (kind, line, raw, _) in self._pending.items()]
        self._pending.clear()
        return out


def _payload(record: dict[str, Any]) -> Any:
    data = record.get("data")
    if data is None and "data_base64" in record:
        try:
            data = base64.b64decode(record["data_base64"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
            raise BadRecord("bad_value", f"data_base64: {exc}") from None
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            raise BadRecord("bad_json", "data is not JSON") from None
    return data


def _tensor(spec: Any, *, rows: bool) -> list[Any]:
    """Rows of an open-inference-protocol tensor ``{"shape": [...], "data": [...]}``."""
    import numpy as np

    try:
        arr = np.asarray(spec["data"]).reshape([int(s) for s in spec["shape"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord("bad_value", f"tensor: {exc}") from None
    if rows or arr.ndim > 1:
        return list(arr.reshape(len(arr), -1).tolist())
    return list(arr.tolist())


# -- SageMaker -------------------------------------------------------------------------------

class SageMakerMapping:
    """SageMaker Data Capture records."""

    def __init__(self, source: str | Path = "", client_attribute: str = "client_id",
                 model_id: str | None = None) -> None:
        self.client_attribute = client_attribute
        self.model_id = model_id or _endpoint_name(Path(source))

    def feed(self, record: dict[str, Any], line: int, raw: str) -> list[Item]:
        capture = record.get("captureData")
        meta = record.get("eventMetadata")
        if not isinstance(capture, dict) or not isinstance(meta, dict):
            raise BadRecord("missing_field", "captureData / eventMetadata")
        if "endpointInput" not in capture:
            raise BadRecord("missing_field", "captureData.endpointInput")
        rows = _decode(capture["endpointInput"], "endpointInput", numeric=True)
        if isinstance(rows, dict):
            rows = next((rows[k] for k in ("instances", "inputs", "features", "data")
                         if k in rows), rows)
        rows = rows if _is_rows(rows) else [rows]
        preds = None
        if capture.get("endpointOutput") is not None:
            preds = _per_row(_decode(capture["endpointOutput"], "endpointOutput",
                                     numeric=False), len(rows), "endpointOutput")
        base = {"ts": meta.get("inferenceTime"), "model_id": self.model_id, "truth": None,
                "client_id": meta.get("inferenceId") or self._custom(meta) or "anonymous"}
        return _events(rows, preds, base, line, raw)

    def _custom(self, meta: dict[str, Any]) -> str | None:
        attrs = meta.get("customAttributes")
        if isinstance(attrs, str):
            attrs = [attrs]
        for item in attrs if isinstance(attrs, list) else []:
            for pair in str(item).replace(";", ",").split(","):
                key, sep, value = pair.partition("=")
                if sep and key.strip() == self.client_attribute and value.strip():
                    return value.strip()
        return None

    def finish(self) -> list[Item]:
        return []


def _endpoint_name(path: Path) -> str:
    parts = path.parts
    if len(parts) >= 7 and all(p.isdigit() for p in parts[-5:-1]):
        return parts[-7]
    return path.stem or "sagemaker"


def _decode(part: Any, what: str, *, numeric: bool) -> Any:
    if not isinstance(part, dict) or "data" not in part:
        raise BadRecord("missing_field", f"captureData.{what}.data")
    encoding = str(part.get("encoding", "")).upper()
    ctype = str(part.get("observedContentType", "")).lower()
    text = part["data"]
    if encoding == "BASE64":
        try:
            text = base64.b64decode(text).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
            raise BadRecord("bad_value", f"{what}: {exc}") from None
        encoding = "CSV" if "csv" in ctype else "JSON"
    if not isinstance(text, str):
        raise BadRecord("bad_value", f"{what}.data is not text")
    if encoding == "CSV" or (encoding != "JSON" and "csv" in ctype):
        rows = [[_cell(c, numeric) for c in r] for r in csv.reader(io.StringIO(text)) if r]
        if numeric:
            return rows
        cells = [r[0] if len(r) == 1 else r for r in rows]  # one cell per row: a label
        return cells[0] if len(cells) == 1 else cells
    try:
        return json.loads(text)
    except ValueError:
        raise BadRecord("bad_json", f"{what}.data is not JSON") from None


def _cell(text: str, numeric: bool) -> Any:
    try:
        return float(text)
    except ValueError:
        if numeric:
            raise BadRecord("bad_value", f"non-numeric CSV value {text!r}") from None
        return text.strip()


# -- YAML field mapping ----------------------------------------------------------------------

class FieldMapping:
    """Dotted paths per QueryEvent field, from a YAML file (see the module docstring)."""

    FIELDS: ClassVar[dict[str, bool]] = {
        "ts": True, "client_id": True, "model_id": True, "input": True,
        "output_label": False, "output_scores": False, "truth": False}
    LITERAL = ("client_id", "model_id", "truth")

    def __init__(self, spec: dict[str, Any], origin: str = "<mapping>") -> None:
        for key, value in spec.items():
            if key not in self.FIELDS:
                raise LogFormatError(f"mapping file {origin}: unknown field {key!r} (expected "
                                     f"one of {', '.join(self.FIELDS)})")
            literal = isinstance(value, dict) and set(value) == {"value"}
            if not (isinstance(value, str) and value) and not (literal and key in self.LITERAL):
                raise LogFormatError(f"mapping file {origin}: field {key!r} must be a dotted "
                                     "path" + (" or {value: ...}" if key in self.LITERAL else ""))
        for key, required in self.FIELDS.items():
            if required and key not in spec:
                raise LogFormatError(f"mapping file {origin}: required field {key!r} missing")
        self.spec = spec

    @classmethod
    def from_file(cls, path: str | Path) -> FieldMapping:
        from mlthreat.safeload import SafeLoadError, load

        try:
            spec = load(path)
        except SafeLoadError as exc:
            raise LogFormatError("mapping file " + str(exc).replace("invalid YAML: ",
                                                                     "not valid YAML: ")
                                 ) from None
        if not isinstance(spec, dict):
            raise LogFormatError(f"mapping file {path}: expected a mapping of field names to "
                                 "dotted paths")
        return cls(spec, str(path))

    def _value(self, record: dict[str, Any], key: str) -> Any:
        path = self.spec.get(key)
        if path is None:
            return None
        if isinstance(path, dict):
            return path["value"]
        value = _get(record, path)
        if value is _MISSING:
            if self.FIELDS[key]:
                raise BadRecord("missing_field", f"{key} ({path})")
            return None
        return value

    def feed(self, record: dict[str, Any], line: int, raw: str) -> list[Item]:
        values = {key: self._value(record, key) for key in self.FIELDS}
        inputs = values["input"]
        if not _is_rows(inputs):
            return [(line, raw, values)]
        n = len(inputs)
        per_row = {}
        for key in ("output_label", "output_scores"):
            if values[key] is not None:
                per_row[key] = _per_row(values[key], n, key)
        return [(line, raw, {**values, "input": row,
                             **{k: v[i] for k, v in per_row.items()}})
                for i, row in enumerate(inputs)]

    def finish(self) -> list[Item]:
        return []


#: built-in mappings by name, each a factory of a fresh (possibly stateful) mapping
MAPPINGS: dict[str, Callable[[str | Path], Mapping]] = {
    "kserve": KServeMapping,
    "sagemaker": SageMakerMapping,
}


def resolve_mapping(spec: str | Path | Mapping | None, source: str | Path) -> Mapping | None:
    """A fresh mapping for reading ``source``: a built-in name, a YAML file, or a mapping
    object (used as is)."""
    if spec is None or not isinstance(spec, str | Path):
        return spec
    if isinstance(spec, str) and spec in MAPPINGS:
        return MAPPINGS[spec](source)
    if Path(spec).is_file():
        return FieldMapping.from_file(spec)
    raise LogFormatError(f"unknown mapping {str(spec)!r}: expected {', '.join(MAPPINGS)} or a "
                         "YAML mapping file")
