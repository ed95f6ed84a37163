"""Alert formats, one module per format, listed in :data:`FORMATS`.

Each module exposes ``FORMAT`` (its name, what ``mlthreat detect run --format`` takes),
``render(alert) -> dict`` (pure: no I/O, deterministic, JSON-ready) and
``recognises(record) -> bool`` (whether one parsed line of an alert file is a ``render``
output, by the fields that format alone carries, so an alert file's format can be read back).
A new format is one module here and one line in :data:`FORMATS`;
:func:`mlthreat.detect.alerts.render` and :func:`mlthreat.detect.alerts.format_of` reach it.
"""

from __future__ import annotations

from types import ModuleType

from mlthreat.registry import Registry

__all__ = ["FORMATS"]

FORMATS: Registry[ModuleType] = Registry("alert format", {
    "jsonl": "mlthreat.detect.alert_formats.jsonl",
    "ocsf": "mlthreat.detect.alert_formats.ocsf",
    "ecs": "mlthreat.detect.alert_formats.ecs",
    "stix": "mlthreat.detect.alert_formats.stix",
})
"""Alert formats by name, in the order help texts list them (imports none of them)."""
