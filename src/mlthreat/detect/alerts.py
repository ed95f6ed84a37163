"""Alerts: a detection resolved against the knowledge base, and its formats for a SOC.

An :class:`Alert` is built from a detector's :class:`~mlthreat.detect.detectors.base.Detection`
with :meth:`Alert.from_detection`: the technique and tactic names come from the knowledge base
(a sub-technique inherits its parent's tactics), never from strings in the detector.

Formats are pure functions ``alert -> dict`` (no I/O, deterministic), listed in :data:`FORMATS`
and reached through :func:`render`:

``jsonl``
    The alert's own fields plus the envelope every mlthreat document carries (``kind``,
    ``schema_version``, ``mlthreat_version``, ``atlas_version``).
``ocsf``
    OCSF 1.5.0 Detection Finding (``class_uid`` 2004, ``type_uid`` 200401). One
    ``finding_info.attacks[]`` entry per tactic of the technique, each with ``technique`` (the
    parent, for a sub-technique), ``sub_technique`` and ``tactic`` (``uid``, ``name``,
    ``src_url``) and ``version`` (the ATLAS data version). The model is the finding's resource,
    the client the actor of its evidence.
``ecs``
    Elastic Common Schema alert (``event.kind: alert``, ``threat.framework: "MITRE ATLAS"``,
    ``threat.tactic.*``, ``threat.technique.*`` and ``threat.technique.subtechnique.*`` as
    arrays; the parent is the technique of a sub-technique). The client is ``user.id``, the
    detector ``rule.name``; the rest is under the custom ``mlthreat`` namespace.
``stix``
    A STIX 2.1 bundle: the ``identity`` of mlthreat (the same object as the knowledge-base
    export's) and one ``sighting`` whose ``sighting_of_ref`` is the official ATLAS
    attack-pattern ID of the technique (:func:`mlthreat.kb.export.stix.stix_id`), so it joins
    the ATLAS bundle a SOC already loads. Client, model, detector and statistics are
    ``x_mlthreat_*`` properties.

Raw inputs never leave the detector unless asked: evidence keys named in :data:`INPUT_KEYS`
are dropped by :meth:`Alert.from_detection` unless ``include_inputs=True``.

Suppression (:class:`Suppressor`): allow-listed clients (exact IDs or globs) are dropped
before alerting, and at most one alert per client and technique is let through per window of
event time; both are counted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from mlthreat import __version__
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    from mlthreat.detect.detectors.base import Detection
    from mlthreat.kb.model import KnowledgeBase

__all__ = [
    "FORMATS", "INPUT_KEYS", "KIND", "SCHEMA_VERSION", "Alert", "Suppressor", "format_of",
    "render", "render_ecs", "render_jsonl", "render_ocsf", "render_stix",
]

KIND = "mlthreat.detect.alert"
SCHEMA_VERSION = 1
OCSF_VERSION = "1.5.0"
INPUT_KEYS = frozenset({"input", "inputs", "raw_input", "raw_inputs"})
"""Evidence keys that hold raw model inputs; dropped unless ``include_inputs=True``."""

ATLAS_URL = "https://atlas.mitre.org"
NS_ALERT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlthreat:detect-alert")
"""Namespace of alert IDs (OCSF ``finding_info.uid``, ECS ``event.id``, STIX sighting)."""
# Tactics whose techniques are rated High rather than Medium (Exfiltration, Impact).
_HIGH_TACTICS = frozenset({"AML.TA0010", "AML.TA0011"})


@dataclass(frozen=True)
class Alert:
    """One detector's alert on one client, keyed by ATLAS IDs resolved in the knowledge base.

    ``technique`` is the detection's ATLAS ID (the most specific); ``parent`` and
    ``parent_name`` are its parent technique for a sub-technique (else ``None``); ``tactics``
    are all tactics of the technique as ``{"id", "name"}`` (a sub-technique's are its
    parent's). ``first_seen`` and ``last_seen`` are epoch seconds (rendered RFC 3339);
    ``score`` and ``threshold`` are in ``unit``; ``evidence`` holds statistics and
    fingerprints; ``atlas_version`` is the version of the knowledge base that resolved it.
    """

    detector: str
    technique: str
    technique_name: str
    tactics: tuple[dict[str, str], ...]
    client_id: str
    model_id: str
    first_seen: float
    last_seen: float
    queries_observed: int
    score: float
    threshold: float
    unit: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    atlas_version: str = ""
    parent: str | None = None
    parent_name: str | None = None

    @classmethod
    def from_detection(
        cls, detection: Detection, kb: KnowledgeBase, *, include_inputs: bool = False
    ) -> Alert:
        """Resolve a detection's technique and tactics in ``kb``.

        Raises
        ------
        mlthreat.kb.errors.KnowledgeBaseError
            When the technique is not in the knowledge base (or is not a technique).
        """
        tech = kb.technique(detection.technique)
        parent = kb.technique(tech.parent) if tech.parent else None
        evidence = {k: v for k, v in detection.evidence.items()
                    if include_inputs or k not in INPUT_KEYS}
        return cls(
            detector=detection.detector,
            technique=tech.id,
            technique_name=tech.name,
            tactics=tuple({"id": t.id, "name": t.name} for t in kb.tactics_of(tech.id)),
            client_id=detection.client_id,
            model_id=detection.model_id,
            first_seen=float(detection.first_seen),
            last_seen=float(detection.last_seen),
            queries_observed=int(detection.queries_observed),
            score=float(detection.score),
            threshold=float(detection.threshold),
            unit=detection.unit,
            evidence=evidence,
            atlas_version=kb.version,
            parent=parent.id if parent else None,
            parent_name=parent.name if parent else None,
        )

    @property
    def uid(self) -> str:
        """Deterministic alert ID: uuid5 of detector, client, technique and first_seen."""
        key = json.dumps([self.detector, self.client_id, self.technique, self.first_seen])
        return str(uuid.uuid5(NS_ALERT, key))

    @property
    def severity(self) -> tuple[int, str]:
        """OCSF severity: High for Exfiltration and Impact techniques, else Medium."""
        if any(t["id"] in _HIGH_TACTICS for t in self.tactics):
            return 4, "High"
        return 3, "Medium"

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "technique": self.technique,
            "technique_name": self.technique_name,
            "tactics": [dict(t) for t in self.tactics],
            "client_id": self.client_id,
            "model_id": self.model_id,
            "first_seen": rfc3339(self.first_seen),
            "last_seen": rfc3339(self.last_seen),
            "queries_observed": self.queries_observed,
            "score": self.score,
            "threshold": self.threshold,
            "unit": self.unit,
            "evidence": dict(self.evidence),
        }


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _ms(ts: float) -> int:
    return round(ts * 1000)


def _url(atlas_id: str) -> str:
    route = "tactics" if ".TA" in atlas_id else "techniques"
    return f"{ATLAS_URL}/{route}/{atlas_id}"


def _ref(atlas_id: str, name: str) -> dict[str, str]:
    return {"uid": atlas_id, "name": name, "src_url": _url(atlas_id)}


# -- formats --------------------------------------------------------------------------------------
def render_jsonl(alert: Alert) -> dict[str, Any]:
    """The alert's fields with the document envelope."""
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "mlthreat_version": __version__,
        "atlas_version": alert.atlas_version,
        "id": alert.uid,
        **alert.to_dict(),
    }


def render_ocsf(alert: Alert) -> dict[str, Any]:
    """OCSF 1.5.0 Detection Finding (class 2004, activity Create)."""
    if alert.parent:
        technique = _ref(alert.parent, alert.parent_name or "")
        sub: dict[str, Any] = {"sub_technique": _ref(alert.technique, alert.technique_name)}
    else:
        technique, sub = _ref(alert.technique, alert.technique_name), {}
    attacks = [{"technique": technique, **sub, "tactic": _ref(t["id"], t["name"]),
                "version": alert.atlas_version} for t in alert.tactics]
    if not attacks:  # a technique without a tactic still names itself
        attacks = [{"technique": technique, **sub, "version": alert.atlas_version}]
    severity_id, severity = alert.severity
    return {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": _ms(alert.last_seen),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "mlthreat", "vendor_name": "mlthreat", "version": __version__},
            "log_name": KIND,
        },
        "finding_info": {
            "uid": alert.uid,
            "title": f"{alert.technique_name} ({alert.technique}) by client {alert.client_id}",
            "analytic": {"name": alert.detector, "type_id": 3, "type": "Statistical"},
            "attacks": attacks,
            "first_seen_time": _ms(alert.first_seen),
            "last_seen_time": _ms(alert.last_seen),
        },
        "resources": [{"uid": alert.model_id, "name": alert.model_id, "type": "AI Model"}],
        "evidences": [{"actor": {"user": {"uid": alert.client_id}},
                       "data": dict(alert.evidence)}],
        "unmapped": {
            "client_id": alert.client_id,
            "model_id": alert.model_id,
            "queries_observed": alert.queries_observed,
            "score": alert.score,
            "threshold": alert.threshold,
            "unit": alert.unit,
            "atlas_version": alert.atlas_version,
        },
    }


def render_ecs(alert: Alert) -> dict[str, Any]:
    """Elastic Common Schema alert with ``threat.*`` in MITRE ATLAS terms."""
    own = {"id": [alert.technique], "name": [alert.technique_name],
           "reference": [_url(alert.technique)]}
    if alert.parent:
        technique: dict[str, Any] = {"id": [alert.parent], "name": [alert.parent_name or ""],
                                     "reference": [_url(alert.parent)], "subtechnique": own}
    else:
        technique = own
    severity_id, _ = alert.severity
    return {
        "@timestamp": rfc3339(alert.last_seen),
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["info"],
            "id": alert.uid,
            "start": rfc3339(alert.first_seen),
            "end": rfc3339(alert.last_seen),
            "severity": severity_id,
            "module": "mlthreat",
            "dataset": KIND,
        },
        "threat": {
            "framework": "MITRE ATLAS",
            "tactic": {"id": [t["id"] for t in alert.tactics],
                       "name": [t["name"] for t in alert.tactics],
                       "reference": [_url(t["id"]) for t in alert.tactics]},
            "technique": technique,
        },
        "user": {"id": alert.client_id},
        "rule": {"name": alert.detector},
        "observer": {"product": "mlthreat", "vendor": "mlthreat", "version": __version__},
        "mlthreat": {
            "model_id": alert.model_id,
            "queries_observed": alert.queries_observed,
            "score": alert.score,
            "threshold": alert.threshold,
            "unit": alert.unit,
            "evidence": dict(alert.evidence),
            "atlas_version": alert.atlas_version,
        },
    }


def render_stix(alert: Alert) -> dict[str, Any]:
    """A STIX 2.1 bundle with mlthreat's identity and one sighting of the ATLAS technique.

    The identity is :func:`mlthreat.kb.export.stix.mlthreat_identity`, the very object of the
    knowledge-base export (same ``id``, ``modified`` and content). Every timestamp has
    millisecond precision, like :func:`rfc3339`: ``stix2`` declares the sighting's
    ``first_seen`` and ``last_seen`` with any precision and would write ``00:00:00Z`` or
    ``00:01:30.5Z``, so they are set from :func:`rfc3339` once ``stix2`` has checked them.
    """
    import stix2  # heavy: only the stix format needs it

    from mlthreat.kb.export.stix import mlthreat_identity, stix_id

    identity = mlthreat_identity()
    seen = rfc3339(alert.last_seen)
    first = rfc3339(alert.first_seen)
    sighting = stix2.Sighting(
        id=f"sighting--{alert.uid}",
        created=seen, modified=seen,
        created_by_ref=identity.id,
        sighting_of_ref=stix_id(alert.technique),
        first_seen=first,
        last_seen=seen,
        count=min(max(alert.queries_observed, 0), 999_999_999),
        where_sighted_refs=[identity.id],
        description=f"{alert.detector}: {alert.technique_name} ({alert.technique}) by client "
                    f"{alert.client_id} on model {alert.model_id}",
        x_mlthreat_detector=alert.detector,
        x_mlthreat_technique=alert.technique,
        x_mlthreat_client_id=alert.client_id,
        x_mlthreat_model_id=alert.model_id,
        x_mlthreat_queries_observed=alert.queries_observed,
        x_mlthreat_score=alert.score,
        x_mlthreat_threshold=alert.threshold,
        x_mlthreat_unit=alert.unit,
        x_mlthreat_evidence=dict(alert.evidence),
        x_mlthreat_atlas_version=alert.atlas_version,
        allow_custom=True,
    )
    bundle = stix2.Bundle(identity, sighting, id=f"bundle--{uuid.uuid5(NS_ALERT, alert.uid)}",
                          allow_custom=True)
    data: dict[str, Any] = json.loads(bundle.serialize())
    # the same instants, in place (key order kept), written to the millisecond
    data["objects"][1].update(first_seen=first, last_seen=seen)
    return data


FORMATS: dict[str, Callable[[Alert], dict[str, Any]]] = {
    "jsonl": render_jsonl,
    "ocsf": render_ocsf,
    "ecs": render_ecs,
    "stix": render_stix,
}
"""Alert formats by name; each is a pure function ``Alert -> dict``."""


def format_of(record: Any) -> str | None:
    """Which of :data:`FORMATS` rendered ``record`` (one parsed line of an alert file), or None
    when it is not an mlthreat alert: the inverse of :func:`render`, by the fields each format
    alone carries (pure)."""
    if not isinstance(record, dict):
        return None
    if record.get("kind") == KIND:
        return "jsonl"
    metadata = record.get("metadata")
    if record.get("class_uid") == 2004 and isinstance(metadata, dict) \
            and metadata.get("log_name") == KIND:
        return "ocsf"
    event = record.get("event")
    if isinstance(event, dict) and event.get("dataset") == KIND and "threat" in record:
        return "ecs"
    objects = record.get("objects")
    if record.get("type") == "bundle" and isinstance(objects, list) and any(
            isinstance(o, dict) and o.get("type") == "sighting" and "x_mlthreat_detector" in o
            for o in objects):
        return "stix"
    return None


def render(alert: Alert, fmt: str = "jsonl") -> dict[str, Any]:
    """The alert in format ``fmt`` (one of :data:`FORMATS`), as JSON-ready data.

    Raises
    ------
    UsageError
        When ``fmt`` is not a known format.
    """
    try:
        formatter = FORMATS[fmt]
    except KeyError:
        raise UsageError(f"unknown alert format {fmt!r}; choose from "
                         f"{', '.join(FORMATS)}") from None
    return formatter(alert)


# -- SOC hygiene ----------------------------------------------------------------------------------
class Suppressor:
    """Allow-list and per-window suppression of alerts (or detections).

    Parameters
    ----------
    window_seconds : float
        At most one alert per client and technique is admitted per window, measured in event
        time from the ``last_seen`` of the admitted alert; 0 admits every alert.
    allow_list : iterable of str
        Client IDs of known bulk clients, exact or shell-style globs (``batch-*``); their
        alerts are dropped before alerting.

    Attributes
    ----------
    counts : dict
        ``admitted``, ``suppressed`` (inside a window) and ``allow_listed``.
    """

    def __init__(self, window_seconds: float = 3600.0, allow_list: Iterable[str] = ()) -> None:
        self.window_seconds = window_seconds
        self.allow_list = tuple(allow_list)
        self.counts = {"admitted": 0, "suppressed": 0, "allow_listed": 0}
        self._last: dict[tuple[str, str], float] = {}

    def checkpoint(self) -> dict[str, Any]:
        """The open suppression windows as JSON-ready data (for a restart that loses
        nothing)."""
        return {"last": [[c, t, ts] for (c, t), ts in sorted(self._last.items())]}

    def restore(self, data: dict[str, Any]) -> None:
        """Reopen the windows :meth:`checkpoint` saved."""
        self._last = {(str(c), str(t)): float(ts) for c, t, ts in data.get("last", [])}

    def allowed(self, client_id: str) -> bool:
        """Whether ``client_id`` is on the allow list (exact or glob)."""
        return any(client_id == p or fnmatchcase(client_id, p) for p in self.allow_list)

    def admit(self, alert: Alert | Detection) -> bool:
        """Whether to raise this alert; counts the ones dropped."""
        if self.window_seconds < 0:
            raise UsageError(f"suppression window must be >= 0, got {self.window_seconds}")
        if self.allowed(alert.client_id):
            self.counts["allow_listed"] += 1
            return False
        key = (alert.client_id, alert.technique)
        last = self._last.get(key)
        if last is not None and alert.last_seen - last < self.window_seconds:
            self.counts["suppressed"] += 1
            return False
        self._last[key] = alert.last_seen
        self.counts["admitted"] += 1
        return True

    def filter(self, alerts: Iterable[Alert]) -> list[Alert]:
        """The admitted alerts, in order."""
        return [a for a in alerts if self.admit(a)]
