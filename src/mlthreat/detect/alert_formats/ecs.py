"""``ecs`` alerts: an Elastic Common Schema alert.

``event.kind: alert``, ``threat.framework: "MITRE ATLAS"``, ``threat.tactic.*``,
``threat.technique.*`` and ``threat.technique.subtechnique.*`` as arrays (the parent is the
technique of a sub-technique). The client is ``user.id``, the detector ``rule.name``; the rest
is under the custom ``mlthreat`` namespace.
"""

from __future__ import annotations

from typing import Any

from mlthreat import __version__
from mlthreat.detect.alerts import KIND, Alert, atlas_url, rfc3339

__all__ = ["FORMAT", "recognises", "render"]

FORMAT = "ecs"


def render(alert: Alert) -> dict[str, Any]:
    """Elastic Common Schema alert with ``threat.*`` in MITRE ATLAS terms."""
    own = {"id": [alert.technique], "name": [alert.technique_name],
           "reference": [atlas_url(alert.technique)]}
    if alert.parent:
        technique: dict[str, Any] = {"id": [alert.parent], "name": [alert.parent_name or ""],
                                     "reference": [atlas_url(alert.parent)], "subtechnique": own}
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
                       "reference": [atlas_url(t["id"]) for t in alert.tactics]},
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


def recognises(record: dict[str, Any]) -> bool:
    """Whether ``record`` (one parsed line of an alert file) is a :func:`render` output, by
    the fields this format alone carries."""
    event = record.get("event")
    return isinstance(event, dict) and event.get("dataset") == KIND and "threat" in record
