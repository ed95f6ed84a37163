"""``stix`` alerts: a STIX 2.1 bundle of mlthreat's ``identity`` and one ``sighting``.

The identity is the same object as the knowledge-base export's; the sighting's
``sighting_of_ref`` is the official ATLAS attack-pattern ID of the technique
(:func:`mlthreat.kb.export.stix.stix_id`), so it joins the ATLAS bundle a SOC already loads.
Client, model, detector and statistics are ``x_mlthreat_*`` properties.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from mlthreat.detect.alerts import NS_ALERT, Alert, rfc3339

__all__ = ["FORMAT", "recognises", "render"]

FORMAT = "stix"


def render(alert: Alert) -> dict[str, Any]:
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


def recognises(record: dict[str, Any]) -> bool:
    """Whether ``record`` (one parsed line of an alert file) is a :func:`render` output, by
    the fields this format alone carries."""
    objects = record.get("objects")
    return record.get("type") == "bundle" and isinstance(objects, list) and any(
        isinstance(o, dict) and o.get("type") == "sighting" and "x_mlthreat_detector" in o
        for o in objects)
