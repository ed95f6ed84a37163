"""``mlthreat posture``: an organisation's ML systems measured against the threat matrix.

>>> from mlthreat import kb, posture
>>> base = kb.load()
>>> profile = posture.load_profile("profile.yaml", base)       # doctest: +SKIP
>>> result = posture.assess_posture(profile, base)             # doctest: +SKIP
>>> result.system("scoring-api").gaps[0].technique             # doctest: +SKIP
'AML.T0024.002'

* :func:`load_profile` reads and validates the YAML profile (errors are one line,
  ``FILE:LINE: FIELD: REASON``); :func:`example_profile_text` is a complete commented example.
* :func:`assess_posture` decides which techniques apply to each system (rules kept as data,
  :func:`load_rules` merges a user's file over the built-in ones), their coverage from declared
  mitigations and detections and from evidence files, their priority and the gap list; every
  formula is in :mod:`mlthreat.posture.compute`.
* :func:`diff_posture` compares two results (or their saved ``to_dict()`` JSON).
"""

from __future__ import annotations

from importlib import resources

from mlthreat.posture.compute import (
    Applicability,
    Gap,
    MitigationStatus,
    PostureResult,
    SystemPosture,
    TechniquePosture,
    Verification,
    assess_posture,
)
from mlthreat.posture.diff import Change, PostureDiff, SystemDiff, diff_posture
from mlthreat.posture.evidence import Evidence, EvidenceError, Observation, load_evidence
from mlthreat.posture.profile import (
    DETECTION_LEVELS,
    DetectionClaim,
    MitigationClaim,
    Profile,
    ProfileError,
    System,
    load_profile,
    parse_profile,
)
from mlthreat.posture.rules import Rule, RuleSet, load_rules

__all__ = [
    "DETECTION_LEVELS", "Applicability", "Change", "DetectionClaim", "Evidence",
    "EvidenceError", "Gap", "MitigationClaim", "MitigationStatus", "Observation",
    "PostureDiff", "PostureResult", "Profile", "ProfileError", "Rule", "RuleSet", "System",
    "SystemDiff", "SystemPosture", "TechniquePosture", "Verification", "assess_posture",
    "diff_posture", "example_profile_text", "load_evidence", "load_profile", "load_rules",
    "parse_profile",
]

EXAMPLE_PROFILE = "data/example-profile.yaml"


def example_profile_text() -> str:
    """The complete, commented example profile shipped with mlthreat (YAML text)."""
    return resources.files("mlthreat.posture").joinpath(EXAMPLE_PROFILE).read_text("utf-8")
