"""Exports of the knowledge base: one module per format, each with a pure ``render``.

Every exporter module exposes ``FORMAT`` (the name ``mlthreat kb export --format`` takes),
``SUFFIX`` (the usual file suffix) and ``render(kb, **options) -> str``: no I/O, deterministic
output for the same input. :data:`EXPORTERS` is the registry the CLI and
``mlthreat.testing.check_exporter`` walk; a new format is one module and one line there.
"""

from __future__ import annotations

from types import ModuleType

from mlthreat.registry import Registry

__all__ = ["EXPORTERS", "exporter"]

EXPORTERS: Registry[ModuleType] = Registry("export format", {
    "navigator": "mlthreat.kb.export.navigator",
    "stix": "mlthreat.kb.export.stix",
    "markdown": "mlthreat.kb.export.markdown",
    "csv": "mlthreat.kb.export.csv",
    "html": "mlthreat.kb.export.html",
})
"""Exporter modules by format name, in the order help texts list them (imports none of them)."""


def exporter(name: str) -> ModuleType:
    """The exporter module registered as ``name``. Raises :class:`UsageError` if none is."""
    return EXPORTERS.load(name)
