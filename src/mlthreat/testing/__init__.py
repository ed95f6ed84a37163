"""Public conformance checks: the plug-in contracts of mlthreat, as executable tests.

Modelled on scikit-learn's ``check_estimator``: CI runs each check over every registered
implementation, and a user runs it over their own (an exporter written for an in-house format, say),
their own Target adapter or their own detector (``check_detector``), to know it behaves like the
built-in ones. A check returns ``None`` when the implementation conforms and raises
:class:`AssertionError` naming the implementation and the property that failed otherwise, so it
can be called straight from a test.

>>> from mlthreat.kb.export import exporter
>>> from mlthreat.kb.sources.snapshot import load_embedded
>>> check_exporter(exporter("markdown"), load_embedded())
"""

from __future__ import annotations

from mlthreat.testing.detectors import check_detector
from mlthreat.testing.exporters import check_exporter
from mlthreat.testing.targets import check_target

__all__ = ["check_detector", "check_exporter", "check_target"]
