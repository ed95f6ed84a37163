"""The embedded snapshot: every object of one ATLAS release, shipped as package data.

Facts (IDs, names, relations, maturity, dates, ATT&CK references, procedures) come from the
official release; descriptions and case-study summaries are this project's own short texts.
Procedure step descriptions and mitigation "use" texts are empty: load the official file for
them. The snapshot also records ``history``, the names IDs had in older releases and the IDs
they dropped, for the stale-mapping check.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from mlthreat.kb.model import KnowledgeBase
from mlthreat.kb.serialize import from_dict

__all__ = ["FORMAT", "KIND", "SNAPSHOT_FILE", "history", "load", "load_embedded", "sniff"]

FORMAT = "snapshot"
KIND = "mlthreat.atlas-snapshot"
SNAPSHOT_FILE = "atlas-5.6.0.json"


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def load(data: Any, path: Path) -> KnowledgeBase:
    return from_dict(data, source=str(path))


@cache
def _embedded_data() -> dict[str, Any]:
    text = resources.files("mlthreat.kb").joinpath("data", SNAPSHOT_FILE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def load_embedded() -> KnowledgeBase:
    """The knowledge base shipped with mlthreat (no file access beyond the package)."""
    return from_dict(_embedded_data(), source="embedded snapshot")


def history() -> dict[str, Any]:
    """Names from older releases: ``{"releases": [...], "names": {id: [[name, release], ...]},
    "removed": {id: [name, last_release]}}`` covering tactics, techniques and mitigations."""
    names: dict[str, Any] = _embedded_data().get(
        "history", {"releases": [], "names": {}, "removed": {}})
    return names
