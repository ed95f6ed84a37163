"""Find attacks on a model in its inference logs; alerts keyed by ATLAS techniques.

Example::

    from mlthreat import detect, kb

    detectors = detect.build_detectors(["prada", "blacklight", "volume"])
    result = detect.run_detectors(detect.LogReader("queries.jsonl"), detectors, kb.load())
    for alert in result.alerts:
        print(detect.render(alert, "ocsf"))

Calibration (:func:`calibrate_detectors`, :func:`save_calibration`, :func:`load_calibration`)
and which calibration and state a run starts from (:func:`resolve_detectors`) are in
:mod:`mlthreat.detect.calibration`. The command line (``mlthreat detect run|calibrate|evaluate``)
is a thin layer over these names.
"""

from __future__ import annotations

from mlthreat.detect.alerts import Alert, Suppressor, render
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.calibration import (
    Calibration,
    calibrate_detectors,
    load_calibration,
    resolve_detectors,
    save_calibration,
    state_suppression,
)
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
from mlthreat.detect.engine import DETECTORS, DetectionResult, build_detectors, run_detectors
from mlthreat.detect.errors import CalibrationError, DetectError, LogFormatError
from mlthreat.detect.evaluate import DetectorScore, benign_events, evaluate
from mlthreat.detect.readers import LogReader, ReadStats
from mlthreat.detect.report import EvaluationReport, RunReport

__all__ = [
    "DETECTORS",
    "Alert",
    "Calibration",
    "CalibrationError",
    "ClientStatus",
    "DetectError",
    "Detection",
    "DetectionResult",
    "Detector",
    "DetectorScore",
    "EvaluationReport",
    "EventBatch",
    "LogFormatError",
    "LogReader",
    "ReadStats",
    "RunReport",
    "Suppressor",
    "benign_events",
    "build_detectors",
    "calibrate_detectors",
    "evaluate",
    "load_calibration",
    "render",
    "resolve_detectors",
    "run_detectors",
    "save_calibration",
    "state_suppression",
]
