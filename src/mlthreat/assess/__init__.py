"""Run ATLAS techniques against a model and report on the matrix.

Example::

    from mlthreat import assess, kb

    data = assess.digits_demo()
    targets = assess.demo_targets(data)
    result = assess.Assessment(targets, data, techniques=["AML.T0024.002"]).run()
    assess.write_report(result, "mlthreat-report", kb.load())

The command line (``mlthreat assess``) is a thin layer over these names.
"""

from __future__ import annotations

from mlthreat.assess.data import AssessmentData, digits_demo, load_data
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
    "demo_targets",
    "digits_demo",
    "load_data",
    "load_target",
    "parse_mitigation",
    "report_data",
    "write_report",
]
