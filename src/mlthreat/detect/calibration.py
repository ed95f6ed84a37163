"""Detector calibration files, and which calibration a run's detectors end up with.

A calibration (kind ``mlthreat.detect.calibration``, schema
``mlthreat/schemas/detect.calibration.schema.json``) holds, per detector, the thresholds set from
benign traffic at a target false-positive rate, in the detector's own terms (what its
``calibration()`` returns and ``load_calibration()`` accepts).

Precedence, in :func:`resolve_detectors`: a detector starts with its built-in defaults; a saved
detector state (:func:`mlthreat.detect.engine.save_state`) restores the calibration and per-client
state it was checkpointed with; an explicit calibration then wins over the calibration the state
held (the per-client state is kept). The command line (``mlthreat detect calibrate`` and
``--calibration``/``--state``) is a thin layer over these functions.

Example::

    from mlthreat import detect

    cal = detect.calibrate_detectors(["benign.jsonl"], ["prada", "volume"], target_fpr=0.01)
    detect.save_calibration(cal, "calibration.json")
    detectors = detect.resolve_detectors(calibration=detect.load_calibration("calibration.json"))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch
    from mlthreat.detect.detectors.base import Detector
    from mlthreat.detect.readers import ReadStats

__all__ = ["CALIBRATION_KIND", "CALIBRATION_SCHEMA_VERSION", "Calibration",
           "calibrate_detectors", "load_calibration", "resolve_detectors", "save_calibration",
           "state_suppression"]

CALIBRATION_KIND = "mlthreat.detect.calibration"
CALIBRATION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Calibration:
    """Thresholds per detector, set from benign traffic.

    Attributes
    ----------
    detectors : dict
        ``{detector name: calibration}``, each in the detector's own terms.
    target_fpr : float
        Fraction of benign clients allowed to be flagged when it was made.
    logs : tuple of str
        The benign logs it was made from.
    mlthreat_version : str
        The release that made it (default: this one).
    """

    detectors: dict[str, Any]
    target_fpr: float = 0.0
    logs: tuple[str, ...] = ()
    mlthreat_version: str = field(default="")

    def __post_init__(self) -> None:
        if not self.mlthreat_version:
            from mlthreat import __version__

            object.__setattr__(self, "mlthreat_version", __version__)

    def to_dict(self) -> dict[str, Any]:
        """The calibration file's document, fields in their fixed order."""
        return {"kind": CALIBRATION_KIND, "schema_version": CALIBRATION_SCHEMA_VERSION,
                "mlthreat_version": self.mlthreat_version, "target_fpr": self.target_fpr,
                "logs": list(self.logs), "detectors": self.detectors}

    def to_json(self) -> str:
        """:meth:`to_dict` as the text a calibration file holds."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def apply(self, detectors: Iterable[Detector]) -> None:
        """Load into each of ``detectors`` the calibration this holds for it (the others keep
        theirs)."""
        for d in detectors:
            if d.name in self.detectors:
                d.load_calibration(self.detectors[d.name])


def _read_logs(logs: Sequence[str | Path], mapping: str | None,
               quarantine: str | Path | None,
               stats: list[ReadStats] | None = None) -> Iterator[EventBatch]:
    from mlthreat.detect.readers import LogReader

    for path in logs:
        reader = LogReader(path, mapping=mapping, quarantine=quarantine)
        yield from reader
        if stats is not None:
            stats.append(reader.stats)


def calibrate_detectors(logs: Sequence[str | Path], detectors: Iterable[str] | None = None,
                        target_fpr: float = 0.001, *, mapping: str | None = None,
                        quarantine: str | Path | None = None) -> Calibration:
    """Set each detector's thresholds from the benign traffic in ``logs``.

    Parameters
    ----------
    logs : list of path
        Benign logs (JSONL, CSV, Parquet, or serving logs with ``mapping``), read in order, once
        per detector.
    detectors : list of str, optional
        Detector names (default: every registered detector).
    target_fpr : float
        Fraction of benign clients allowed to be flagged, in [0, 0.5].
    mapping, quarantine
        As for :class:`mlthreat.detect.readers.LogReader`.

    Returns
    -------
    Calibration

    Raises
    ------
    UsageError
        For an unknown detector name.
    LogFormatError
        For a log that cannot be read.
    """
    from mlthreat.detect.engine import DETECTORS, build_detectors

    names = list(detectors) if detectors else list(DETECTORS)
    saved: dict[str, Any] = {}
    for d in build_detectors(names):
        saved[d.name] = d.calibrate(_read_logs(logs, mapping, quarantine), target_fpr)
    return Calibration(saved, target_fpr=target_fpr, logs=tuple(str(p) for p in logs))


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write ``calibration`` to ``path`` whole or not at all (a run reading half a calibration
    would be mis-tuned); the folder must exist.

    Raises
    ------
    OutputError
        When the file cannot be written; an earlier file there is then untouched.
    """
    from mlthreat.files import write_atomic

    write_atomic(Path(path), calibration.to_json(), parents=False)
    return Path(path)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file (bounded: size, nesting, duplicate keys).

    Raises
    ------
    CalibrationError
        For a file that cannot be read or is not a calibration.
    """
    from mlthreat.detect.errors import CalibrationError
    from mlthreat.safeload import SafeLoadError, load

    try:
        data = load(path)
    except SafeLoadError as exc:
        raise CalibrationError(f"cannot read calibration: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != CALIBRATION_KIND or \
            not isinstance(data.get("detectors"), dict):
        raise CalibrationError(f"{path}: not an mlthreat calibration file (kind "
                               f"{CALIBRATION_KIND})")
    logs = data.get("logs")
    fpr = data.get("target_fpr")
    return Calibration(data["detectors"],
                       target_fpr=fpr if isinstance(fpr, int | float) else 0.0,
                       logs=tuple(str(p) for p in logs) if isinstance(logs, list) else (),
                       mlthreat_version=str(data.get("mlthreat_version") or ""))


def _state_document(state: Mapping[str, Any] | str | Path | None, source: str | None,
                    ) -> tuple[dict[str, Any] | None, str]:
    if state is None:
        return None, source or "state"
    if isinstance(state, str | Path):
        from mlthreat.detect.engine import load_state

        return (load_state(state) if Path(state).exists() else None), source or str(state)
    return dict(state), source or "state"


def resolve_detectors(names: Iterable[str] | None = None, *,
                      calibration: Calibration | str | Path | None = None,
                      state: Mapping[str, Any] | str | Path | None = None,
                      source: str | None = None) -> list[Detector]:
    """The detectors a run uses, each with the calibration and state it should start from.

    Parameters
    ----------
    names : list of str, optional
        Detector names. Default: :data:`~mlthreat.detect.engine.DEFAULT_DETECTORS`, plus every
        detector the calibration calibrates and every one the state holds.
    calibration : Calibration or path, optional
        Thresholds to load (a path is read with :func:`load_calibration`). It wins over the
        calibration a ``state`` holds.
    state : dict or path, optional
        A detector state document (:func:`mlthreat.detect.engine.load_state`), or the path of
        one; a path that does not exist yet means a first run, with nothing to restore.
    source : str, optional
        What error messages call the state (default: its path, or ``state``).

    Raises
    ------
    UsageError
        For an unknown detector name.
    CalibrationError, DetectError
        For a calibration or state that cannot be read or does not fit the detectors.

    Examples
    --------
    >>> from mlthreat.detect import Calibration, resolve_detectors
    >>> cal = Calibration({"volume": {"max_per_window": 50}})
    >>> [d.params["max_per_window"] for d in resolve_detectors(["volume"], calibration=cal)]
    [50]
    """
    from mlthreat.detect.engine import (
        DEFAULT_DETECTORS,
        DETECTORS,
        build_detectors,
        restore_detectors,
    )

    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = load_calibration(calibration)
    saved, source = _state_document(state, source)
    held = saved.get("detectors") if saved is not None else None
    chosen = list(names) if names else None
    if chosen is None:
        extra = [n for n in (held if isinstance(held, dict) else ()) if n in DETECTORS]
        chosen = list(dict.fromkeys([*DEFAULT_DETECTORS,
                                     *(calibration.detectors if calibration else ()), *extra]))
    detectors = build_detectors(chosen)
    if calibration is not None:
        calibration.apply(detectors)
    if saved is not None:
        restore_detectors(detectors, saved, source)
        if calibration is not None:  # an explicit calibration wins over the saved one
            calibration.apply(detectors)
    return detectors


def state_suppression(state: Mapping[str, Any] | None, source: str | Path | None = None,
                      ) -> dict[str, Any] | None:
    """The open suppression windows a detector state document holds (None when it holds none),
    checked entry by entry, for :func:`mlthreat.detect.engine.run_detectors`'s
    ``suppression_state``.

    Raises
    ------
    DetectError
        Naming ``source``, for a malformed ``suppression`` entry.
    """
    from mlthreat.detect.errors import DetectError

    data = (state or {}).get("suppression") or None
    if data is None:
        return None
    rows = data.get("last") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
            and isinstance(r[1], str) and isinstance(r[2], int | float)
            and not isinstance(r[2], bool) for r in rows):
        raise DetectError(f"{source}: bad 'suppression' in detector state: expected "
                          "{'last': [[client_id, technique, last_seen], ...]}")
    return dict(data)
