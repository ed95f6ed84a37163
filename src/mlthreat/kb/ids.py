"""ATLAS identifier patterns and what kind of object an ID names.

The full patterns follow the official data: tactics ``AML.TA0000``, techniques ``AML.T0000`` and
sub-techniques ``AML.T0000.000``, mitigations ``AML.M0000``, case studies ``AML.CS0000``. An
organisation extension uses its own prefix in place of ``AML`` (for example ``ACME.T0001``), so
the same shapes are accepted with any upper-case prefix.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["ANY_ID", "ID_PATTERN", "Kind", "find_ids", "kind_of", "parent_id"]

Kind = Literal["tactic", "technique", "sub-technique", "mitigation", "case-study"]

_PREFIX = r"[A-Z][A-Z0-9]{1,15}"
ID_PATTERN = re.compile(
    rf"^(?P<prefix>{_PREFIX})\.(?:(?P<tactic>TA\d{{4}})|(?P<technique>T\d{{4}})(?P<sub>\.\d{{3}})?"
    rf"|(?P<mitigation>M\d{{4}})|(?P<case>CS\d{{4}}))$"
)
# Finds IDs inside free text, file cells and layer fields.
ANY_ID = re.compile(rf"\b{_PREFIX}\.(?:TA\d{{4}}|T\d{{4}}(?:\.\d{{3}})?|M\d{{4}}|CS\d{{4}})\b")


def kind_of(atlas_id: str) -> Kind | None:
    """Return the kind of object ``atlas_id`` names, or ``None`` when it is not a valid ID."""
    m = ID_PATTERN.match(atlas_id)
    if not m:
        return None
    if m["tactic"]:
        return "tactic"
    if m["technique"]:
        return "sub-technique" if m["sub"] else "technique"
    if m["mitigation"]:
        return "mitigation"
    return "case-study"


def parent_id(technique_id: str) -> str | None:
    """The parent technique of a sub-technique ID (``AML.T0043.001`` → ``AML.T0043``), else None."""
    m = ID_PATTERN.match(technique_id)
    if m and m["sub"]:
        return technique_id[: -len(m["sub"])]
    return None


def find_ids(text: str) -> list[str]:
    """Every ATLAS-shaped ID in ``text``, in order of appearance (repeats kept)."""
    return ANY_ID.findall(text)
