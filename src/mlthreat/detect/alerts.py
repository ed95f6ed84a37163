"""Alerts: a detection resolved against the knowledge base, and its formats for a SOC.

An :class:`Alert` is built from a detector's :class:`~mlthreat.detect.detectors.base.Detection`
with :meth:`Alert.from_detection`: the technique and tactic names come from the knowledge base
(a sub-technique inherits its parent's tactics), never from strings in the detector.

Formats live in :mod:`mlthreat.detect.alert_formats`, one module each (``jsonl``, ``ocsf``,
``ecs``, ``stix``), listed in :data:`FORMATS` and reached through :func:`render`; each is a pure
function ``alert -> dict`` (no I/O, deterministic), and :func:`format_of` reads a rendered
line's format back.

Raw inputs never leave the detector unless asked: evidence keys named in :data:`INPUT_KEYS`
are dropped by :meth:`Alert.from_detection` unless ``include_inputs=True``.

Suppression (:class:`Suppressor`): allow-listed clients (exact IDs or globs) are dropped
before alerting, and at most one alert per client and technique is let through per window of
event time; both are counted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from mlthreat.detect.alert_formats import FORMATS
from mlthreat.errors import UsageError

if TYPE_CHECKING:
    from mlthreat.detect.detectors.base import Detection
    from mlthreat.kb.model import KnowledgeBase

__all__ = [
    "FORMATS", "INPUT_KEYS", "KIND", "SCHEMA_VERSION", "Alert", "Suppressor", "atlas_url",
    "format_of", "render",
]

KIND = "mlthreat.detect.alert"
SCHEMA_VERSION = 1
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


def atlas_url(atlas_id: str) -> str:
    """The ATLAS web page of a technique or tactic ID."""
    route = "tactics" if ".TA" in atlas_id else "techniques"
    return f"{ATLAS_URL}/{route}/{atlas_id}"


def __getattr__(name: str) -> Any:
    # render_jsonl, render_ocsf, render_ecs, render_stix: each format's render under the name
    # it had before formats were modules (use render(alert, fmt) instead)
    fmt = name.removeprefix("render_")
    if name.startswith("render_") and fmt in FORMATS:
        return FORMATS.load(fmt).render
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_of(record: Any) -> str | None:
    """Which of :data:`FORMATS` rendered ``record`` (one parsed line of an alert file), or None
    when it is not an mlthreat alert: the inverse of :func:`render`, by the fields each format
    alone carries (pure)."""
    if not isinstance(record, dict):
        return None
    return next((name for name in FORMATS if FORMATS.load(name).recognises(record)), None)


def render(alert: Alert, fmt: str = "jsonl") -> dict[str, Any]:
    """The alert in format ``fmt`` (one of :data:`FORMATS`), as JSON-ready data.

    Raises
    ------
    UsageError
        When ``fmt`` is not a known format.
    """
    rendered: dict[str, Any] = FORMATS.load(fmt).render(alert)
    return rendered


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
