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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# ``evaluate`` is also a submodule's name: importing that submodule anywhere rebinds the package
# attribute to the module, so the function is bound here, first (it imports no numpy).
from mlthreat.detect.evaluate import evaluate

# The other names load on first use: the CLI builds its help texts from the registries under
# this package, and importing it must not pull numpy into every 'mlthreat kb' command.
_WHERE: dict[str, str] = {
    "Alert": "mlthreat.detect.alerts",
    "Suppressor": "mlthreat.detect.alerts",
    "render": "mlthreat.detect.alerts",
    "EventBatch": "mlthreat.detect.batch",
    "Calibration": "mlthreat.detect.calibration",
    "calibrate_detectors": "mlthreat.detect.calibration",
    "load_calibration": "mlthreat.detect.calibration",
    "resolve_detectors": "mlthreat.detect.calibration",
    "save_calibration": "mlthreat.detect.calibration",
    "state_suppression": "mlthreat.detect.calibration",
    "ClientStatus": "mlthreat.detect.detectors.base",
    "Detection": "mlthreat.detect.detectors.base",
    "Detector": "mlthreat.detect.detectors.base",
    "DETECTORS": "mlthreat.detect.engine",
    "DetectionResult": "mlthreat.detect.engine",
    "build_detectors": "mlthreat.detect.engine",
    "run_detectors": "mlthreat.detect.engine",
    "CalibrationError": "mlthreat.detect.errors",
    "DetectError": "mlthreat.detect.errors",
    "LogFormatError": "mlthreat.detect.errors",
    "DetectorScore": "mlthreat.detect.evaluate",
    "benign_events": "mlthreat.detect.evaluate",
    "LogReader": "mlthreat.detect.readers",
    "ReadStats": "mlthreat.detect.readers",
    "EvaluationReport": "mlthreat.detect.report",
    "RunReport": "mlthreat.detect.report",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
