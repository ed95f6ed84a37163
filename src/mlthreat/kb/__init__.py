"""The threat matrix as a knowledge base: every ATLAS ID the rest of mlthreat resolves.

>>> from mlthreat import kb
>>> base = kb.load()                       # embedded ATLAS snapshot, offline
>>> base.technique("AML.T0024.002").name
'Extract AI Model'
>>> [m.id for m in base.mitigations_of("AML.T0024.002")][:2]
['AML.M0002', 'AML.M0004']

``load`` picks its data in this order: the ``atlas`` argument, the ``MLTHREAT_ATLAS``
environment variable, the release ``mlthreat kb update`` downloaded, the embedded snapshot.
Organisation extensions are merged on top.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mlthreat.kb.errors import (
    DataFileError,
    DataWarning,
    KnowledgeBaseError,
    UnknownIdError,
    UpdateError,
    WrongKindError,
)
from mlthreat.kb.model import (
    AttackReference,
    CaseStudy,
    KnowledgeBase,
    Mitigation,
    MitigationUse,
    ProcedureStep,
    Reference,
    Retired,
    SearchHit,
    Tactic,
    Technique,
)

__all__ = [
    "AttackReference",
    "CaseStudy",
    "DataFileError",
    "DataWarning",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Mitigation",
    "MitigationUse",
    "ProcedureStep",
    "Reference",
    "Retired",
    "SearchHit",
    "Tactic",
    "Technique",
    "UnknownIdError",
    "UpdateError",
    "WrongKindError",
    "load",
    "load_file",
]

ENV_ATLAS = "MLTHREAT_ATLAS"
ENV_EXTENSIONS = "MLTHREAT_EXTENSIONS"


def load_file(path: str | Path) -> KnowledgeBase:
    """Load one matrix file (official ATLAS.yaml, official STIX bundle, or snapshot), nothing
    merged. Raises :class:`DataFileError` naming the file, line and entry on bad input."""
    from mlthreat.kb.sources import load_file as _load

    return _load(path)


def load(
    atlas: str | Path | None = None,
    extensions: Sequence[str | Path] = (),
    *,
    use_cache: bool = True,
) -> KnowledgeBase:
    """Load the knowledge base the way every mlthreat command does.

    Parameters
    ----------
    atlas : path, optional
        An official ``ATLAS.yaml``, official STIX bundle, or snapshot. Defaults to
        ``$MLTHREAT_ATLAS``, then the release ``mlthreat kb update`` downloaded (when
        ``use_cache``), then the embedded ATLAS 5.6.0 snapshot.
    extensions : sequence of paths
        Organisation extension YAML files merged in order over the base; ``$MLTHREAT_EXTENSIONS``
        (paths separated by ``os.pathsep``) is used when none are given.

    Returns
    -------
    KnowledgeBase
        ``version`` names the ATLAS data version (plus extensions), ``source`` the file.

    Raises
    ------
    DataFileError
        For a missing, malformed or invalid file, naming file, line, entry and field; a path
        taken from ``$MLTHREAT_ATLAS`` or ``$MLTHREAT_EXTENSIONS`` is said to come from it.
    """
    atlas_origin = ext_origin = None
    if atlas is None:
        atlas = os.environ.get(ENV_ATLAS) or None
        atlas_origin = ENV_ATLAS if atlas else None
    if atlas is None and use_cache:
        from mlthreat.kb.cache import cached_release

        atlas = cached_release()
    if not extensions:
        env = os.environ.get(ENV_EXTENSIONS, "")
        extensions = [p for p in env.split(os.pathsep) if p]
        ext_origin = ENV_EXTENSIONS
    try:
        if atlas is not None:
            base = load_file(atlas)
        else:
            from mlthreat.kb.sources.snapshot import load_embedded

            base = load_embedded()
    except DataFileError as exc:
        raise exc.with_origin(atlas_origin) if atlas_origin else exc from None
    if extensions:
        from mlthreat.kb.sources.extension import merge

        for path in extensions:
            try:
                base = merge(base, path)
            except DataFileError as exc:
                raise exc.with_origin(ext_origin) if ext_origin else exc from None
    return base
