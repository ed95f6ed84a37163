"""``jsonl`` alerts: the alert's own fields plus the envelope every mlthreat document
carries (``kind``, ``schema_version``, ``mlthreat_version``, ``atlas_version``).
"""

from __future__ import annotations

from typing import Any

from mlthreat import __version__
from mlthreat.detect.alerts import KIND, SCHEMA_VERSION, Alert

__all__ = ["FORMAT", "recognises", "render"]

FORMAT = "jsonl"


def render(alert: Alert) -> dict[str, Any]:
    """The alert's fields with the document envelope."""
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "mlthreat_version": __version__,
        "atlas_version": alert.atlas_version,
        "id": alert.uid,
        **alert.to_dict(),
    }


def recognises(record: dict[str, Any]) -> bool:
    """Whether ``record`` (one parsed line of an alert file) is a :func:`render` output, by
    the fields this format alone carries."""
    return record.get("kind") == KIND
