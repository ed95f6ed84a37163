"""Detectors, one module per method, listed in :data:`DETECTORS`.

Each entry names a :class:`~mlthreat.detect.detectors.base.Detector` subclass whose ``name`` is
its key; :func:`mlthreat.detect.engine.build_detectors` instantiates them by name and
:func:`mlthreat.testing.check_detector` is their conformance check. A new detector is one
module here and one line in :data:`DETECTORS`. Listing the names imports no detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlthreat.registry import Registry

if TYPE_CHECKING:
    from mlthreat.detect.detectors.base import Detector

__all__ = ["DEFAULT_DETECTORS", "DETECTORS"]

DETECTORS: Registry[type[Detector]] = Registry("detector", {
    "prada": "mlthreat.detect.detectors.prada:PradaDetector",
    "blacklight": "mlthreat.detect.detectors.blacklight:BlacklightDetector",
    "ood": "mlthreat.detect.detectors.ood:OodDetector",
    "volume": "mlthreat.detect.detectors.volume:VolumeDetector",
    "knn": "mlthreat.detect.detectors.knn:KnnDetector",
    "repeat": "mlthreat.detect.detectors.repeat:RepeatDetector",
    "coverage": "mlthreat.detect.detectors.coverage:CoverageDetector",
})
"""Detectors by name, in the order help texts list them."""

# What runs when none are named: the detectors that work without a calibration file. ``ood``
# learns the benign distribution from the log itself unless a calibration is loaded (on the
# assumption that most clients are benign; see its docstring); ``knn`` is the slower
# alternative to ``blacklight``.
DEFAULT_DETECTORS: tuple[str, ...] = ("prada", "blacklight", "volume", "repeat", "ood",
                                      "coverage")
