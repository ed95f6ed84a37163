"""Exports of the knowledge base: one module per format, each with a pure ``render``.

Every exporter module exposes ``FORMAT`` (the name ``mlthreat kb export --format`` takes),
``SUFFIX`` (the usual file suffix) and ``render(kb, **options) -> str``: no I/O, deterministic
output for the same input. :data:`EXPORTERS` is the registry the CLI and
``mlthreat.testing.check_exporter`` walk.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from mlthreat.errors import UsageError

__all__ = ["EXPORTERS", "exporter"]

EXPORTERS: dict[str, str] = {
    "navigator": "mlthreat.kb.export.navigator",
    "stix": "mlthreat.kb.export.stix",
    "markdown": "mlthreat.kb.export.markdown",
    "csv": "mlthreat.kb.export.csv",
    "html": "mlthreat.kb.export.html",
}


def exporter(name: str) -> ModuleType:
    """The exporter module registered as ``name``. Raises :class:`UsageError` if none is."""
    try:
        return import_module(EXPORTERS[name])
    except KeyError:
        raise UsageError(
            f"unknown export format {name!r}; choose one of {', '.join(EXPORTERS)}"
        ) from None
