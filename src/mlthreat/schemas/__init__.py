"""JSON Schemas (draft 2020-12) of the machine-readable documents mlthreat writes.

One file per document kind, named after it without the ``mlthreat.`` prefix: the document with
``"kind": "mlthreat.kb.check"`` is described by ``kb.check.schema.json``. Every such document
carries ``kind``, ``schema_version`` and ``mlthreat_version``; those resolved against ATLAS data
also carry ``atlas_version`` and ``atlas_source``.

>>> s = schema("mlthreat.kb.check")
>>> s["properties"]["kind"]["const"]
'mlthreat.kb.check'
>>> "mlthreat.kb.diff" in kinds()
True
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

__all__ = ["kinds", "schema"]

_PREFIX = "mlthreat."
_SUFFIX = ".schema.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


def kinds() -> list[str]:
    """Every kind with a schema shipped here (``mlthreat.kb.check`` …), sorted."""
    return sorted(_PREFIX + p.name.removesuffix(_SUFFIX) for p in files(__name__).iterdir()
                  if p.name.endswith(_SUFFIX))


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of the document kind ``kind``.

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
    short = kind.removeprefix(_PREFIX)
    resource = files(__name__).joinpath(short + _SUFFIX)
    if not _NAME.match(short) or not resource.is_file():
        raise KeyError(f"no schema for document kind {kind!r}; known: {', '.join(kinds())}")
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data
