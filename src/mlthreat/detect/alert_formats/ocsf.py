"""``ocsf`` alerts: an OCSF 1.5.0 Detection Finding (``class_uid`` 2004, ``type_uid`` 200401).

One ``finding_info.attacks[]`` entry per tactic of the technique, each with ``technique`` (the
parent, for a sub-technique), ``sub_technique`` and ``tactic`` (``uid``, ``name``,
``src_url``) and ``version`` (the ATLAS data version). The model is the finding's resource,
the client the actor of its evidence.
"""

from __future__ import annotations

from typing import Any

from mlthreat import __version__
from mlthreat.detect.alerts import KIND, Alert, atlas_url

__all__ = ["FORMAT", "recognises", "render"]

FORMAT = "ocsf"

OCSF_VERSION = "1.5.0"


def _ms(ts: float) -> int:
    return round(ts * 1000)


def _ref(atlas_id: str, name: str) -> dict[str, str]:
    return {"uid": atlas_id, "name": name, "src_url": atlas_url(atlas_id)}


def render(alert: Alert) -> dict[str, Any]:
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


def recognises(record: dict[str, Any]) -> bool:
    """Whether ``record`` (one parsed line of an alert file) is a :func:`render` output, by
    the fields this format alone carries."""
    metadata = record.get("metadata")
    return record.get("class_uid") == 2004 and isinstance(metadata, dict) \
        and metadata.get("log_name") == KIND
