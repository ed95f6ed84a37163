"""Posture computation: applicability, coverage, priority and gaps for every system.

Every number is defined here; the weights are module constants and are echoed in
:attr:`PostureResult.parameters` so a report can show how it was computed.

Applicability
    A technique applies to a system when a rule's condition matches the system (see
    :mod:`mlthreat.posture.rules`), or when evidence shows it *exposed* (an attack that worked
    is applicable whatever the rules say; its reason is the pseudo-rule ``evidence``).

Mitigation coverage ``M`` (0-1)
    Over the mitigations the knowledge base links to the technique (a sub-technique inherits its
    parent's links) that the system declares: ``M = min(1, sum(w(status)) / 2)`` with
    ``w(implemented) = 1``, ``w(partial) = 0.5``, ``w(planned) = 0``. Two implemented
    mitigations count as full coverage: one defence alone is rarely enough, and the matrix links
    each technique to several complementary ones.

Detection coverage ``D`` (0-1)
    Declared: the best 0-5 score of the system's detections that name the technique or its
    parent, divided by 5. Measured: when a detection evaluation covers the technique (or one of
    its sub-techniques), ``D = max over detectors of TPR x (1 - FPR)`` and it *replaces* the
    declared value: a measurement beats a claim, even when it is lower.

Effective coverage ``C`` (0-1)
    ``C = 1 - (1 - M') x (1 - 0.5 x D)``. Detection counts for at most half the residual risk:
    it notices an attack under way, it does not stop it. ``M' = M`` unless the technique is
    *exposed* (an assessment run succeeded, or a scan found a problem, for the technique or one
    of its sub-techniques), in which case ``M' = 0``: evidence that the attack works overrides
    any mitigation claim, while a detection may still notice it.

Status
    ``exposed`` (evidence as above), else ``covered`` (``C >= 0.75``), ``partial``
    (``0 < C < 0.75``) or ``uncovered`` (``C = 0``).

Priority ``P`` (0-100)
    ``P = 100 x L x X x (1 - C)``, rounded to 0.1, where

    * likelihood ``L = 0.6 x m + 0.4 x f``;
    * maturity ``m``: realized 1.0, demonstrated 0.7, feasible 0.4 (a sub-technique without its
      own maturity takes its parent's; unknown counts as feasible);
    * frequency ``f = ln(1 + n) / ln(1 + n_max)``, ``n`` the case studies using the technique
      (a parent counts its sub-techniques' uses), ``n_max`` the largest such count in the
      knowledge base, so the most used technique scores 1 and an unused one 0;
    * exposure ``X``, the highest over the system's exposures: public-api 1.0, partner-api 0.75,
      internal 0.5, on-device 0.35, physical-sensor 0.35 (how many people can reach the model
      and how little we know about them).

    Band: ``high`` for ``P >= 40``, ``medium`` for ``P >= 20``, else ``low``.

Gaps
    Every applicable technique not ``covered``, by priority (highest first): the knowledge-base
    mitigations that are not yet implemented for it and the mlthreat commands that would verify
    it (``mlthreat assess``, ``mlthreat detect run``, ``mlthreat scan``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

from mlthreat.kb.model import KnowledgeBase, Technique
from mlthreat.posture.evidence import Observation
from mlthreat.posture.profile import Profile, System
from mlthreat.posture.rules import Rule, RuleSet, load_rules

__all__ = [
    "BANDS", "DETECTION_SHARE", "EXPOSURE_WEIGHT", "MATURITY_WEIGHT", "MITIGATIONS_FOR_FULL",
    "STATUS_WEIGHT", "Applicability", "Gap", "MitigationStatus", "PostureResult",
    "SystemPosture", "TechniquePosture", "Verification", "assess_posture",
]

STATUS_WEIGHT = {"implemented": 1.0, "partial": 0.5, "planned": 0.0}
MITIGATIONS_FOR_FULL = 2.0
DETECTION_SHARE = 0.5
COVERED_AT = 0.75
MATURITY_WEIGHT = {"realized": 1.0, "demonstrated": 0.7, "feasible": 0.4, "": 0.4}
MATURITY_SHARE, FREQUENCY_SHARE = 0.6, 0.4
EXPOSURE_WEIGHT = {"public-api": 1.0, "partner-api": 0.75, "internal": 0.5,
                   "on-device": 0.35, "physical-sensor": 0.35}
BANDS = (("high", 40.0), ("medium", 20.0), ("low", 0.0))

# `mlthreat detect run` watches inference traffic; these are the techniques its detectors
# look for (a parent ID stands for all its sub-techniques)
DETECT_TECHNIQUES = ("AML.T0024", "AML.T0043", "AML.T0034", "AML.T0029")
# `mlthreat scan` findings are keyed by these (see mlthreat.scan.findings.TECHNIQUES)
SCAN_TECHNIQUES = ("AML.T0010.003", "AML.T0011.000", "AML.T0018.002")

CoverageStatus = Literal["exposed", "covered", "partial", "uncovered"]


@dataclass(frozen=True)
class Applicability:
    """Why a technique applies: the rule id (or ``evidence``) and its reason."""

    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MitigationStatus:
    """A knowledge-base mitigation of a technique and what the system declares for it
    (``status`` None: not declared; ``weight`` per :data:`STATUS_WEIGHT`, 0 when absent)."""

    id: str
    name: str
    status: str | None
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """An mlthreat command that tests the technique. ``ready`` is false when the system lacks
    what the command needs (``needs`` says what: inference logs for ``detect run``)."""

    tool: Literal["assess", "detect", "scan"]
    command: str
    needs: str
    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TechniquePosture:
    """One applicable technique of one system, every score as defined in the module docs."""

    id: str
    name: str
    parent: str | None
    tactics: tuple[str, ...]
    maturity: str
    case_studies: int
    applicability: tuple[Applicability, ...]
    mitigations: tuple[MitigationStatus, ...]
    mitigation_coverage: float
    detection_score: int | None
    detection_coverage: float
    detection_source: Literal["measured", "declared", "none"]
    evidence: tuple[Observation, ...]
    status: CoverageStatus
    coverage: float
    likelihood: float
    exposure_weight: float
    priority: float
    band: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tactics"] = list(self.tactics)
        d["applicability"] = [a.to_dict() for a in self.applicability]
        d["mitigations"] = [m.to_dict() for m in self.mitigations]
        d["evidence"] = [o.to_dict() for o in self.evidence]
        return d


@dataclass(frozen=True)
class Gap:
    """A technique not yet covered: what would cover it and how to verify it."""

    technique: str
    name: str
    status: CoverageStatus
    coverage: float
    priority: float
    band: str
    mitigations: tuple[MitigationStatus, ...]
    verify: tuple[Verification, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "name": self.name, "status": self.status,
                "coverage": self.coverage, "priority": self.priority, "band": self.band,
                "mitigations": [m.to_dict() for m in self.mitigations],
                "verify": [v.to_dict() for v in self.verify]}


@dataclass(frozen=True)
class SystemPosture:
    """The posture of one system: its applicable techniques (highest priority first) and gaps."""

    name: str
    owner: str
    kind: str
    exposure: tuple[str, ...]
    exposure_weight: float
    techniques: tuple[TechniquePosture, ...]
    gaps: tuple[Gap, ...]
    _index: dict[str, TechniquePosture] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t.id: t for t in self.techniques})

    def technique(self, technique_id: str) -> TechniquePosture:
        """The posture of an applicable technique. Raises KeyError when it does not apply."""
        return self._index[technique_id]

    @property
    def summary(self) -> dict[str, Any]:
        """Counts per status, the mean coverage and the highest priority."""
        counts = {s: sum(1 for t in self.techniques if t.status == s)
                  for s in ("exposed", "uncovered", "partial", "covered")}
        n = len(self.techniques)
        return {"applicable": n, **counts, "gaps": len(self.gaps),
                "mean_coverage": round(sum(t.coverage for t in self.techniques) / n, 3)
                if n else 0.0,
                "max_priority": max((t.priority for t in self.techniques), default=0.0)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "kind": self.kind,
                "exposure": list(self.exposure), "exposure_weight": self.exposure_weight,
                "summary": self.summary,
                "techniques": [t.to_dict() for t in self.techniques],
                "gaps": [g.to_dict() for g in self.gaps]}


@dataclass(frozen=True)
class PostureResult:
    """The posture of every system of a profile; :meth:`to_dict` is JSON-ready."""

    organisation: str
    source: str
    atlas_version: str
    systems: tuple[SystemPosture, ...]
    rules: tuple[str, ...]
    parameters: dict[str, Any]

    def system(self, name: str) -> SystemPosture:
        """The posture of the system called ``name``. Raises KeyError."""
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mlthreat.posture", "schema_version": 1,
                "organisation": self.organisation, "source": self.source,
                "atlas_version": self.atlas_version, "parameters": self.parameters,
                "rules": list(self.rules), "systems": [s.to_dict() for s in self.systems]}


def _parameters() -> dict[str, Any]:
    return {"status_weight": dict(STATUS_WEIGHT), "mitigations_for_full": MITIGATIONS_FOR_FULL,
            "detection_share": DETECTION_SHARE, "covered_at": COVERED_AT,
            "maturity_weight": dict(MATURITY_WEIGHT), "maturity_share": MATURITY_SHARE,
            "frequency_share": FREQUENCY_SHARE, "exposure_weight": dict(EXPOSURE_WEIGHT),
            "bands": {name: low for name, low in BANDS}}


def _under(technique_id: str, prefixes: tuple[str, ...]) -> bool:
    return any(technique_id == p or technique_id.startswith(p + ".") for p in prefixes)


def _concerns(observation: Observation, technique: Technique) -> bool:
    # evidence about a sub-technique is evidence about its parent too (the parent covers all
    # its variants); evidence about a parent says nothing certain about one variant
    return observation.technique == technique.id or (
        observation.technique.startswith(technique.id + ".")
    )


_N_MAX: dict[int, tuple[KnowledgeBase, int]] = {}


def _max_case_studies(kb: KnowledgeBase) -> int:
    # cached by identity: hashing a whole knowledge base would cost more than the count
    hit = _N_MAX.get(id(kb))
    if hit is None or hit[0] is not kb:
        hit = (kb, max((len(kb.case_studies_using(t.id)) for t in kb.techniques), default=0))
        _N_MAX[id(kb)] = hit
    return hit[1]


@lru_cache(maxsize=1)
def _assess_techniques() -> frozenset[str]:
    from mlthreat.assess.techniques import run_classes

    return frozenset(c.technique for c in run_classes())


def _maturity(kb: KnowledgeBase, t: Technique) -> str:
    if not t.maturity and t.parent:
        return kb.technique(t.parent).maturity
    return t.maturity


def likelihood(kb: KnowledgeBase, technique_id: str) -> tuple[float, str, int]:
    """``(L, maturity, n)`` for a technique, per the module docs (L rounded to 3 places)."""
    t = kb.technique(technique_id)
    maturity = _maturity(kb, t)
    n = len(kb.case_studies_using(t.id))
    n_max = _max_case_studies(kb)
    f = math.log1p(n) / math.log1p(n_max) if n_max else 0.0
    value = MATURITY_SHARE * MATURITY_WEIGHT.get(maturity, MATURITY_WEIGHT[""]) + (
        FREQUENCY_SHARE * f)
    return round(value, 3), maturity, n


def _verifications(technique_id: str, system: System) -> tuple[Verification, ...]:
    out: list[Verification] = []
    from mlthreat.posture.evidence import DEMONSTRATES

    tested = _assess_techniques()
    # evading the model is measured by the runs that craft adversarial data
    runs = next((p for p, then in DEMONSTRATES.items() if then == technique_id), technique_id)
    if runs in tested or any(t.startswith(runs + ".") for t in tested):
        out.append(Verification("assess", f"mlthreat assess --target TARGET --techniques "
                                f"{runs}", "the model or its endpoint as --target"))
    if _under(technique_id, DETECT_TECHNIQUES):
        out.append(Verification("detect", "mlthreat detect run INFERENCE_LOGS",
                                "inference logs (telemetry: inference-logs)",
                                "inference-logs" in system.telemetry))
    if technique_id in SCAN_TECHNIQUES:
        out.append(Verification("scan", "mlthreat scan MODEL_FILES", "the model files"))
    return tuple(out)


def _band(priority: float) -> str:
    return next(name for name, low in BANDS if priority >= low)


def _technique(kb: KnowledgeBase, system: System, tid: str, why: list[Applicability],
               exposure_weight: float) -> TechniquePosture:
    t = kb.technique(tid)
    declared = {m.id: m for m in system.mitigations}
    mits = tuple(
        MitigationStatus(m.id, m.name, declared[m.id].status if m.id in declared else None,
                         STATUS_WEIGHT[declared[m.id].status] if m.id in declared else 0.0)
        for m in kb.mitigations_of(tid)
    )
    m_cov = round(min(1.0, sum(m.weight for m in mits) / MITIGATIONS_FOR_FULL), 3)

    names = {tid, t.parent} if t.parent else {tid}
    scores = [d.score for d in system.detections if names & set(d.techniques)]
    observations = tuple(o for e in system.evidence for o in e.observations if _concerns(o, t))
    measured = [o for o in observations if o.outcome == "measured"]
    source: Literal["measured", "declared", "none"]
    if measured:
        d_cov = max((o.tpr or 0.0) * (1.0 - (o.fpr or 0.0)) for o in measured)
        source = "measured"
    elif scores:
        d_cov, source = max(scores) / 5.0, "declared"
    else:
        d_cov, source = 0.0, "none"
    d_cov = round(d_cov, 3)

    exposed = any(o.outcome == "exposed" for o in observations)
    effective_m = 0.0 if exposed else m_cov
    coverage = round(1.0 - (1.0 - effective_m) * (1.0 - DETECTION_SHARE * d_cov), 3)
    status: CoverageStatus
    if exposed:
        status = "exposed"
    elif coverage >= COVERED_AT:
        status = "covered"
    else:
        status = "partial" if coverage > 0 else "uncovered"

    like, maturity, n = likelihood(kb, tid)
    priority = round(100.0 * like * exposure_weight * (1.0 - coverage), 1)
    return TechniquePosture(
        id=tid, name=t.name, parent=t.parent,
        tactics=tuple(x.id for x in kb.tactics_of(tid)), maturity=maturity, case_studies=n,
        applicability=tuple(why), mitigations=mits, mitigation_coverage=m_cov,
        detection_score=max(scores) if scores else None, detection_coverage=d_cov,
        detection_source=source, evidence=observations, status=status, coverage=coverage,
        likelihood=like, exposure_weight=exposure_weight, priority=priority,
        band=_band(priority),
    )


def system_posture(system: System, kb: KnowledgeBase, rules: RuleSet) -> SystemPosture:
    """The posture of one system under ``rules``."""
    why: dict[str, list[Applicability]] = {}
    for tid, fired in rules.applicable(system).items():
        why[tid] = [Applicability(r.id, r.reason) for r in fired]
    for e in system.evidence:
        for o in e.observations:
            if o.outcome == "exposed" and o.technique in kb:
                why.setdefault(o.technique, []).append(Applicability(
                    "evidence", f"{o.source} shows the attack works: {o.detail}"))
    x = max(EXPOSURE_WEIGHT[e] for e in system.exposure)
    techniques = sorted((_technique(kb, system, tid, reasons, x) for tid, reasons in why.items()),
                        key=lambda p: (-p.priority, p.id))
    gaps = tuple(
        Gap(p.id, p.name, p.status, p.coverage, p.priority, p.band,
            tuple(m for m in p.mitigations if m.status != "implemented"),
            _verifications(p.id, system))
        for p in techniques if p.status != "covered"
    )
    return SystemPosture(system.name, system.owner, system.kind, system.exposure, x,
                         tuple(techniques), gaps)


def assess_posture(profile: Profile, kb: KnowledgeBase,
                   rules: RuleSet | list[Rule] | None = None) -> PostureResult:
    """Compute the posture of every system of ``profile``.

    ``rules`` defaults to the built-in rules (:func:`~mlthreat.posture.rules.load_rules`); pass
    ``load_rules(kb, [user_file])`` to merge an organisation's own.
    """
    ruleset = load_rules(kb) if rules is None else (
        rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules)))
    return PostureResult(
        organisation=profile.organisation, source=profile.source, atlas_version=kb.version,
        systems=tuple(system_posture(s, kb, ruleset) for s in profile.systems),
        rules=tuple(r.id for r in ruleset), parameters=_parameters(),
    )
