"""Run ATLAS techniques against a model and report on the matrix.

Example::

    from mlthreat import assess, kb

    data = assess.digits_demo()
    targets = assess.demo_targets(data)
    result = assess.Assessment(targets, data, techniques=["AML.T0024.002"]).run()
    assess.write_report(result, "mlthreat-report", kb.load())

``Assessment.demo(seed)`` is the demo assessment; ``load_target_for(spec, data)`` loads a model
to attack with the user's rows (what the model cannot say taken from the rows, which are checked
to fit it); ``result.counts()`` and ``report_data(result, kb)`` are what the report says. The
command line (``mlthreat assess``) is a thin layer over these names.
"""

from __future__ import annotations

from mlthreat.assess.data import (
    AssessmentData,
    check_fits,
    digits_demo,
    load_data,
    load_target_for,
)
from mlthreat.assess.demo import demo_targets
from mlthreat.assess.errors import AssessError, DataError, QueryBudgetExceeded, TargetError
from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.mitigations import MitigatedTarget, Mitigation, parse_mitigation
from mlthreat.assess.report import report_data, write_report
from mlthreat.assess.runner import Assessment, AssessmentResult, PlannedRun
from mlthreat.assess.target import Target
from mlthreat.assess.targets import load_target

__all__ = [
    "AssessError",
    "Assessment",
    "AssessmentData",
    "AssessmentResult",
    "DataError",
    "Finding",
    "Metric",
    "MitigatedTarget",
    "Mitigation",
    "PlannedRun",
    "QueryBudgetExceeded",
    "Target",
    "TargetError",
    "check_fits",
    "demo_targets",
    "digits_demo",
    "load_data",
    "load_target",
    "load_target_for",
    "parse_mitigation",
    "report_data",
    "write_report",
]
