"""The STIX format of an alert: its identity is the knowledge-base export's very object, and
every timestamp of the sighting is written to the millisecond."""

from __future__ import annotations

import json

import pytest

from mlthreat.detect.alerts import Alert, render
from mlthreat.detect.detectors.base import Detection
from mlthreat.kb import KnowledgeBase

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _alert(kb: KnowledgeBase, first: float, last: float) -> Alert:
    return Alert.from_detection(Detection(
        detector="prada", technique="AML.T0024.002", client_id="client-7", model_id="credit",
        first_seen=first, last_seen=last, queries_observed=412, score=0.61, threshold=0.9,
        unit="shapiro_w", evidence={}), kb)


def test_identity_is_the_kb_exports(embedded: KnowledgeBase) -> None:
    """STIX 2.1 (3.6): one ``id`` and ``modified``, one content (it lacked the description)."""
    from mlthreat.kb.export import stix

    exported = json.loads(stix.render(embedded))["objects"][0]
    sighted = render(_alert(embedded, T0, T0 + 1), "stix")["objects"][0]
    assert sighted == exported
    assert sighted["id"] == "identity--ee5426e4-816c-5eab-9e63-6a3f4987da7b"
    assert sighted["modified"] == "2026-01-01T00:00:00.000Z"
    assert sighted["description"].startswith("mlthreat, the adversarial ML threat matrix")


@pytest.mark.parametrize(("first", "last", "first_text", "last_text"), [
    # stix2 wrote these "…00:00Z" and "…01:30.5Z"
    (T0, T0 + 90.5, "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:30.500Z"),
    (T0 + 3600, T0 + 3600.25, "2026-01-01T01:00:00.000Z", "2026-01-01T01:00:00.250Z"),
    # and these "…00.123456Z": cut to the millisecond, as rfc3339 does for every format
    (T0 + 0.123456, T0 + 1.9996, "2026-01-01T00:00:00.123Z", "2026-01-01T00:00:01.999Z"),
])
def test_sighting_times_have_milliseconds(embedded: KnowledgeBase, first: float, last: float,
                                          first_text: str, last_text: str) -> None:
    import stix2
    from stix2validator import ValidationOptions, validate_instance

    bundle = render(_alert(embedded, first, last), "stix")
    sighting = bundle["objects"][1]
    assert (sighting["first_seen"], sighting["last_seen"]) == (first_text, last_text)
    assert (sighting["created"], sighting["modified"]) == (last_text, last_text)
    assert list(sighting)[:9] == ["type", "spec_version", "id", "created_by_ref", "created",
                                  "modified", "description", "first_seen", "last_seen"]
    assert validate_instance(bundle, ValidationOptions(strict=False)).is_valid
    parsed = stix2.parse(bundle, allow_custom=True)
    assert parsed.objects[1].last_seen >= parsed.objects[1].first_seen
    # the JSON-lines alert names the same instants
    assert render(_alert(embedded, first, last), "jsonl")["first_seen"] == first_text
