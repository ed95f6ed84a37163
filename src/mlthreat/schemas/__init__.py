"""JSON Schemas (draft 2020-12) of every machine-readable document mlthreat prints.

One file per output kind, named after it: the document with ``"kind": "mlthreat.kb.check"`` is
described by ``kb.check.schema.json``. Every document carries ``kind``, ``schema_version`` and the
mlthreat version; those resolved against ATLAS data also carry ``atlas_version`` and
``atlas_source``.

>>> s = schema("mlthreat.kb.check")
>>> s["properties"]["kind"]["const"]
'mlthreat.kb.check'
>>> sorted(KINDS)[:2]
['mlthreat.kb.case-study', 'mlthreat.kb.check']
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

__all__ = ["KINDS", "schema"]

#: Every output kind that has a schema here.
KINDS: tuple[str, ...] = (
    "mlthreat.kb.matrix",
    "mlthreat.kb.object",
    "mlthreat.kb.search",
    "mlthreat.kb.case-study",
    "mlthreat.kb.diff",
    "mlthreat.kb.check",
    "mlthreat.kb.update",
)

_PREFIX = "mlthreat."


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of the output kind ``kind``.

    Parameters
    ----------
    kind : str
        The document's ``kind`` (``"mlthreat.kb.check"``); the short form without the
        ``mlthreat.`` prefix (``"kb.check"``) is accepted too.

    Returns
    -------
    dict
        A fresh copy of the schema, safe to modify.

    Raises
    ------
    KeyError
        When no schema is shipped for ``kind``.
    """
    full = kind if kind.startswith(_PREFIX) else _PREFIX + kind
    if full not in KINDS:
        raise KeyError(f"no schema for output kind {kind!r}; known: {', '.join(KINDS)}")
    name = f"{full.removeprefix(_PREFIX)}.schema.json"
    data: dict[str, Any] = json.loads(files(__name__).joinpath(name).read_text("utf-8"))
    return data
