"""Find attacks on a model in its inference logs; alerts keyed by ATLAS techniques.

Example::

    from mlthreat import detect, kb

    detectors = detect.build_detectors(["prada", "blacklight", "volume"])
    result = detect.run_detectors(detect.LogReader("queries.jsonl"), detectors, kb.load())
    for alert in result.alerts:
        print(detect.render(alert, "ocsf"))

The command line (``mlthreat detect run|calibrate|evaluate``) is a thin layer over these names.
"""

from __future__ import annotations

from mlthreat.detect.alerts import Alert, Suppressor, render
from mlthreat.detect.batch import EventBatch
from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
from mlthreat.detect.engine import DETECTORS, DetectionResult, build_detectors, run_detectors
from mlthreat.detect.errors import CalibrationError, DetectError, LogFormatError
from mlthreat.detect.evaluate import DetectorScore, benign_events, evaluate
from mlthreat.detect.readers import LogReader, ReadStats

__all__ = [
    "DETECTORS",
    "Alert",
    "CalibrationError",
    "ClientStatus",
    "DetectError",
    "Detection",
    "DetectionResult",
    "Detector",
    "DetectorScore",
    "EventBatch",
    "LogFormatError",
    "LogReader",
    "ReadStats",
    "Suppressor",
    "benign_events",
    "build_detectors",
    "evaluate",
    "render",
    "run_detectors",
]
