"""The conformance check for detectors (``mlthreat.detect.detectors`` classes).

What :func:`check_detector` holds a detector to, property by property (each failure's
AssertionError reads ``detector <name>: <property>: <detail>``):

``class attributes``
    ``name`` a non-empty lower-case string; ``technique`` (and every ``related`` ID) an ATLAS
    technique ID held by the embedded knowledge base; ``defaults`` a JSON-ready dict that
    includes ``max_clients``; the defaults pass ``validate()``.
``unknown parameter``
    ``validate()`` raises :class:`~mlthreat.errors.UsageError` naming an unknown parameter.
``calibration``
    ``calibrate(benign, target_fpr)`` returns JSON-serialisable data; a fresh instance given it
    (through ``json.dumps``/``json.loads``) by ``load_calibration`` reports the same
    ``calibration()`` and raises the same detections on the same traffic.
``checkpoint``
    ``checkpoint()`` mid-stream, through JSON, then ``restore()`` into a fresh (calibrated)
    instance, gives the same detections and final statuses as an uninterrupted run.
``detections``
    Fields have their declared types (str, int, float), the detector's own name, and a
    technique that is its ``technique`` or one of ``related``; ``evidence`` is JSON-ready and
    holds no raw input: no list of ``d`` numbers (``d`` the input dimension) outside the keys
    of :data:`mlthreat.detect.alerts.INPUT_KEYS`, which alerts drop unless asked.
``statuses``
    Verdicts are ``flagged``, ``clear`` or ``untested`` (with a reason); the flagged clients are
    exactly those detected.
``batch invariance``
    The same events fed in batches of different sizes give the same detections (floats equal
    to a relative 1e-6) and statuses. A detector whose results legitimately depend on batch
    boundaries declares the class attribute ``batch_invariant = False`` to skip this property
    only.

Traffic: ``benign_batches`` calibrate the detector and, merged in time order with
``attack_batches``, form the stream every property is checked on. Give enough benign traffic
for every detector to calibrate (PRADA needs clients with more than ``min_queries`` distances).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, NoReturn

import numpy as np

from mlthreat.detect.alerts import INPUT_KEYS
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
from mlthreat.errors import UsageError
from mlthreat.kb.errors import KnowledgeBaseError

__all__ = ["check_detector"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_TECHNIQUE = re.compile(r"^[A-Z][A-Z0-9]{1,15}\.T\d{4}(\.\d{3})?$")
_VERDICTS = frozenset({"flagged", "clear", "untested"})
_SIZES = (1, 7, 64, 3, 200, 2, 31)  # irregular batch sizes, cycled
_UNKNOWN = "no_such_parameter_xyz"


def _fail(cls: type[Detector], prop: str, detail: str) -> NoReturn:
    raise AssertionError(f"detector {getattr(cls, 'name', cls.__qualname__)}: {prop}: {detail}")


def _merge(batches: list[EventBatch]) -> EventBatch:
    """One batch of all events, in time order (stable)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        raise ValueError("no events")

    def cat(attr: str) -> Any:
        parts = [getattr(b, attr) for b in batches]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    x = np.concatenate([np.asarray(b.x).reshape(len(b), -1) for b in batches])
    merged = EventBatch(ts=cat("ts"), client_id=cat("client_id"), model_id=cat("model_id"),
                        x=x, label=cat("label"), scores=cat("scores"), truth=cat("truth"),
                        line=cat("line"), source=batches[0].source)
    return merged.take(np.argsort(merged.ts, kind="stable"))


def _split(batch: EventBatch, sizes: Iterable[int]) -> list[EventBatch]:
    out, start, it = [], 0, iter(sizes)
    while start < len(batch):
        size = next(it, 0) or 64
        out.append(batch.take(slice(start, start + size)))
        start += size
    return out


def _cycled(n: int) -> list[int]:
    return [_SIZES[i % len(_SIZES)] for i in range(n)]


def _fresh(cls: type[Detector], params: dict[str, Any],
           calibration: dict[str, Any] | None) -> Detector:
    det = cls(**params)
    det.validate()
    if calibration is not None:
        det.load_calibration(json.loads(json.dumps(calibration)))
    return det


def _feed(det: Detector, batches: Iterable[EventBatch]) -> list[Detection]:
    out: list[Detection] = []
    for b in batches:
        out.extend(det.observe(b))
    return out


def _plain(value: Any) -> Any:
    """JSON round trip (tuples become lists), for comparing results."""
    return json.loads(json.dumps(value, default=str))


def _close(a: Any, b: Any, exact: bool) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return False
        return a == b or (not exact and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], exact) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, exact) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _dets(found: list[Detection]) -> list[Any]:
    rows: list[Any] = _plain(sorted((asdict(d) for d in found),
                                    key=lambda d: (d["last_seen"], d["client_id"],
                                                   d["model_id"])))
    return rows


def _stats(found: list[ClientStatus]) -> list[Any]:
    rows: list[Any] = _plain(sorted((asdict(s) for s in found),
                                    key=lambda s: (s["client_id"], s["model_id"])))
    return rows


def _compare(cls: type[Detector], prop: str, what: str, want: Any, got: Any,
             exact: bool = True) -> None:
    if _close(want, got, exact):
        return
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            _fail(cls, prop, f"{len(got)} {what} instead of {len(want)}")
        first = next(i for i, (a, b) in enumerate(zip(want, got, strict=True))
                     if not _close(a, b, exact))
        _fail(cls, prop, f"{what} #{first} differ: {got[first]!r} instead of {want[first]!r}")
    _fail(cls, prop, f"{what} differ")


def _check_attributes(cls: type[Detector]) -> None:
    from mlthreat.kb.sources.snapshot import load_embedded

    prop = "class attributes"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(cls, prop, f"name must be a lower-case identifier, got {name!r}")
    kb = load_embedded()
    for attr, value in [("technique", getattr(cls, "technique", None)),
                        *(("related", v) for v in getattr(cls, "related", ()))]:
        if not isinstance(value, str) or not _TECHNIQUE.match(value):
            _fail(cls, prop, f"{attr} {value!r} is not an ATLAS technique ID")
        try:
            kb.technique(value)
        except KnowledgeBaseError:
            _fail(cls, prop, f"{attr} {value} is not a technique of the embedded ATLAS data "
                             f"({kb.version})")
    defaults = getattr(cls, "defaults", None)
    if not isinstance(defaults, dict) or "max_clients" not in defaults:
        _fail(cls, prop, "defaults must be a dict that includes max_clients")
    try:
        json.dumps(defaults, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _fail(cls, prop, f"defaults are not JSON-ready ({exc})")
    try:
        cls().validate()
    except UsageError as exc:
        _fail(cls, prop, f"the defaults do not validate: {exc}")


def _check_unknown_parameter(cls: type[Detector]) -> None:
    prop = "unknown parameter"
    det = cls(**{_UNKNOWN: 1})
    try:
        det.validate()
    except UsageError as exc:
        if _UNKNOWN not in str(exc):
            _fail(cls, prop, f"the UsageError does not name the parameter: {exc}")
        return
    except Exception as exc:
        _fail(cls, prop, f"validate() raised {type(exc).__name__} instead of UsageError: {exc}")
    _fail(cls, prop, f"validate() accepted {_UNKNOWN}=1")


def _check_detection(cls: type[Detector], d: Any, dim: int) -> None:
    prop = "detections"
    if not isinstance(d, Detection):
        _fail(cls, prop, f"observe() returned {type(d).__name__}, not Detection")
    for field in ("detector", "technique", "client_id", "model_id", "unit"):
        if not isinstance(getattr(d, field), str):
            _fail(cls, prop, f"{field} is {type(getattr(d, field)).__name__}, not str")
    for field in ("first_seen", "last_seen", "score", "threshold"):
        value = getattr(d, field)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(cls, prop, f"{field} is {type(value).__name__}, not float")
    if type(d.queries_observed) is not int or d.queries_observed < 1:
        _fail(cls, prop, f"queries_observed {d.queries_observed!r} is not an int >= 1")
    if d.detector != cls.name:
        _fail(cls, prop, f"detector field {d.detector!r} is not the class name")
    if d.technique not in (cls.technique, *cls.related):
        _fail(cls, prop, f"technique {d.technique} is neither technique nor related")
    if not isinstance(d.evidence, dict):
        _fail(cls, prop, "evidence is not a dict")
    try:
        json.dumps(d.evidence)
    except (TypeError, ValueError) as exc:
        _fail(cls, prop, f"evidence is not JSON-serialisable ({exc})")
    _check_no_inputs(cls, d.evidence, dim, "evidence")


def _check_no_inputs(cls: type[Detector], value: Any, dim: int, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if where == "evidence" and k in INPUT_KEYS:
                continue  # raw inputs under their declared keys; alerts drop them by default
            _check_no_inputs(cls, v, dim, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        if dim > 1 and len(value) == dim and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            _fail(cls, "detections", f"{where} holds {dim} numbers, a raw input (put raw "
                                     f"inputs only under {', '.join(sorted(INPUT_KEYS))})")
        for i, v in enumerate(value):
            _check_no_inputs(cls, v, dim, f"{where}[{i}]")


def _check_statuses(cls: type[Detector], statuses: Any, found: list[Detection]) -> None:
    prop = "statuses"
    if not isinstance(statuses, list):
        _fail(cls, prop, f"statuses() returned {type(statuses).__name__}, not list")
    flagged = set()
    for s in statuses:
        if not isinstance(s, ClientStatus):
            _fail(cls, prop, f"statuses() holds {type(s).__name__}, not ClientStatus")
        if s.detector != cls.name:
            _fail(cls, prop, f"detector field {s.detector!r} is not the class name")
        if s.verdict not in _VERDICTS:
            _fail(cls, prop, f"verdict {s.verdict!r} is not one of {sorted(_VERDICTS)}")
        if s.verdict == "untested" and not (isinstance(s.reason, str) and s.reason.strip()):
            _fail(cls, prop, f"client {s.client_id} is untested without a reason")
        if type(s.queries_observed) is not int or s.queries_observed < 0:
            _fail(cls, prop, f"queries_observed {s.queries_observed!r} is not an int >= 0")
        if s.verdict == "flagged":
            flagged.add((s.client_id, s.model_id))
    detected = {(d.client_id, d.model_id) for d in found}
    if flagged != detected:
        diff = sorted(flagged ^ detected)[:3]
        _fail(cls, prop, f"flagged clients differ from detected ones (e.g. {diff})")


def check_detector(detector_cls: type[Detector], benign_batches: Iterable[EventBatch],
                   attack_batches: Iterable[EventBatch] | None = None, *,
                   params: dict[str, Any] | None = None, target_fpr: float = 0.01) -> None:
    """Check that a detector class honours the detector contract (see the module docstring).

    Parameters
    ----------
    detector_cls : type
        A :class:`~mlthreat.detect.detectors.base.Detector` subclass.
    benign_batches : iterable of EventBatch
        Benign traffic, enough to calibrate on; also part of the stream checked.
    attack_batches : iterable of EventBatch, optional
        Attack traffic, merged with the benign traffic in time order, so that detections
        happen (recommended: without any, the detection properties are checked on nothing).
    params : dict, optional
        Constructor parameters (default: the detector's defaults).
    target_fpr : float, default 0.01
        Passed to ``calibrate``.

    Raises
    ------
    AssertionError
        ``detector <name>: <property>: <detail>`` for the first property that fails.

    Examples
    --------
    >>> import numpy as np
    >>> from mlthreat.detect.batch import EventBatch
    >>> from mlthreat.detect.detectors.volume import VolumeDetector
    >>> n = 200
    >>> batch = EventBatch(ts=np.arange(n, dtype=float), client_id=np.array(
    ...     [f"c{i % 4}" for i in range(n)], dtype=object), model_id=np.array(["m"] * n,
    ...     dtype=object), x=np.random.default_rng(0).random((n, 8), dtype=np.float32),
    ...     label=np.zeros(n, dtype=np.int64))
    >>> check_detector(VolumeDetector, [batch])
    """
    cls = detector_cls
    params = dict(params or {})
    benign = list(benign_batches)
    attack = list(attack_batches or [])
    _check_attributes(cls)
    _check_unknown_parameter(cls)

    # -- calibration ---------------------------------------------------------------------------
    prop = "calibration"
    det = cls(**params)
    det.validate()
    try:
        cal = det.calibrate(iter(benign), target_fpr)
    except Exception as exc:
        _fail(cls, prop, f"calibrate() raised {type(exc).__name__}: {exc} (is the benign "
                         "traffic enough to calibrate on?)")
    try:
        text = json.dumps(cal, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _fail(cls, prop, f"calibrate() returned data that is not JSON-serialisable ({exc})")
    if not isinstance(cal, dict):
        _fail(cls, prop, f"calibrate() returned {type(cal).__name__}, not dict")
    loaded = _fresh(cls, params, json.loads(text))
    _compare(cls, prop, "calibration() after load_calibration", _plain(cal),
             _plain(loaded.calibration()))

    stream = _merge(benign + attack)
    dim = stream.dim
    natural = _split(stream, [64] * len(stream))
    want = _feed(det, natural)
    got = _feed(loaded, natural)
    _compare(cls, prop, "detections of the calibrated and the loaded instance", _dets(want),
             _dets(got))
    for d in want:
        _check_detection(cls, d, dim)
    statuses = det.statuses()
    _check_statuses(cls, statuses, want)
    want_statuses = _stats(statuses)

    # -- checkpoint / restore ------------------------------------------------------------------
    prop = "checkpoint"
    first = _fresh(cls, params, cal)
    half = len(natural) // 2
    found = _feed(first, natural[:half])
    try:
        state = json.loads(json.dumps(first.checkpoint()))
    except (TypeError, ValueError) as exc:
        _fail(cls, prop, f"checkpoint() is not JSON-serialisable ({exc})")
    second = _fresh(cls, params, cal)
    second.restore(state)
    found += _feed(second, natural[half:])
    _compare(cls, prop, "detections after restore", _dets(want), _dets(found))
    _compare(cls, prop, "statuses after restore", want_statuses, _stats(second.statuses()))

    # -- batch invariance ----------------------------------------------------------------------
    if getattr(cls, "batch_invariant", True):
        prop = "batch invariance"
        for label, batches in [("one batch", [stream]),
                               ("irregular batches", _split(stream, _cycled(len(stream))))]:
            other = _fresh(cls, params, cal)
            found = _feed(other, batches)
            _compare(cls, prop, f"detections ({label} vs 64 per batch)", _dets(want),
                     _dets(found), exact=False)
            _compare(cls, prop, f"statuses ({label} vs 64 per batch)", want_statuses,
                     _stats(other.statuses()), exact=False)
