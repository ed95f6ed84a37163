"""Where knowledge bases come from: one module per data format, chosen by content, not name.

A source module exposes ``FORMAT`` (its name), ``sniff(data) -> bool`` over the parsed file, and
``load(data, path) -> KnowledgeBase``. :func:`load_file` parses the file once (JSON, or YAML with
the safe loader) and hands it to the first source whose ``sniff`` accepts it, so a new layout of
the official data is one more module in ``SOURCES``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from mlthreat.kb.errors import DataFileError
from mlthreat.kb.model import KnowledgeBase

__all__ = ["SOURCES", "load_file", "read_structured", "read_text"]


def _sources() -> tuple[ModuleType, ...]:
    from mlthreat.kb.sources import atlas_v6, atlas_yaml, snapshot, stix_bundle

    return (snapshot, stix_bundle, atlas_v6, atlas_yaml)


SOURCES = ("snapshot", "stix-bundle", "atlas-v6", "atlas-yaml")


MAX_BYTES = 256 * 1024 * 1024  # far above any matrix file; keeps a wrong path from eating RAM


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The text of ``path``, decoded with ``encoding`` (a UTF-8 codec).

    Raises
    ------
    DataFileError
        When the file cannot be read or is not UTF-8 text.
    """
    try:
        return path.read_text(encoding=encoding)
    except OSError as exc:
        raise DataFileError(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise DataFileError(path, "not UTF-8 text") from None


def read_structured(path: str | Path) -> Any:
    """Parse a JSON or YAML file (YAML always with a safe loader).

    Raises
    ------
    DataFileError
        When the file is missing, not a regular file, larger than :data:`MAX_BYTES`, or not
        valid JSON/YAML (bad syntax, impossible dates, numbers too long), or hostile: a key
        given twice, nesting or alias expansion past the bounds of :mod:`mlthreat.safeload`;
        the message gives the line where the parser knows it.
    """
    from mlthreat.safeload import SafeLoadError, load

    try:
        return load(path, max_bytes=MAX_BYTES)
    except SafeLoadError as exc:
        raise DataFileError(exc.path, exc.reason, line=exc.line) from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, RecursionError):
        text = "nested too deeply"
    return text[:200]


def load_file(path: str | Path) -> KnowledgeBase:
    """Load any supported matrix file: official ATLAS data in format 6 (``ATLAS-latest.yaml``)
    or the legacy ``ATLAS.yaml``, the official STIX bundle, or a snapshot, and check it holds
    together (:func:`validate`).

    Raises
    ------
    DataFileError
        When the file cannot be parsed, matches no known format, or its content is malformed
        (wrong types, bad or duplicate IDs, references to IDs it does not hold), naming the
        file and, where known, the entry and field.
    """
    data = read_structured(path)
    for module in _sources():
        if module.sniff(data):
            try:
                kb: KnowledgeBase = module.load(data, Path(path))
            except DataFileError:
                raise
            except (KeyError, TypeError, AttributeError, ValueError, IndexError,
                    RecursionError) as exc:
                # A file of the right kind but the wrong shape somewhere the loader did not
                # check field by field: name the file and the cause, never a traceback.
                raise DataFileError(path, f"malformed {module.FORMAT} data: "
                                    f"{type(exc).__name__}: {_short(exc)}") from None
            validate(kb, path)
            return kb
    raise DataFileError(
        path,
        "not an ATLAS data file: expected official ATLAS data (format 6 with "
        "'format-version', or the legacy ATLAS.yaml with 'matrices'), the official STIX 2.1 "
        "bundle, or an mlthreat snapshot",
    )


def validate(kb: KnowledgeBase, path: str | Path) -> None:
    """Check that a loaded knowledge base holds together: every ID well formed and of the kind
    its section says, no ID twice, names and texts are strings, and every reference (tactics of
    a technique, parents, mitigation links, procedure steps) resolves.

    Raises
    ------
    DataFileError
        For the first problem found, naming the entry and field.
    """
    from mlthreat.kb.ids import kind_of

    seen: set[str] = set()
    sections = (("tactics", ("tactic",)), ("techniques", ("technique", "sub-technique")),
                ("mitigations", ("mitigation",)), ("case_studies", ("case-study",)))
    for section, kinds in sections:
        for i, obj in enumerate(getattr(kb, section)):
            where = f"{section}[{i}]"
            if not isinstance(obj.id, str) or kind_of(obj.id) not in kinds:
                raise DataFileError(path, f"{obj.id!r} is not a {kinds[0]} ID", entry=where,
                                    field="id")
            if obj.id in seen:
                raise DataFileError(path, f"duplicate ID {obj.id}", entry=obj.id, field="id")
            seen.add(obj.id)
            for attr in ("name", "description", "summary", "incident_date", "created",
                         "modified", "maturity", "target", "actor"):
                value = getattr(obj, attr, "")
                if not isinstance(value, str):
                    raise DataFileError(path, f"expected text, got {type(value).__name__}",
                                        entry=obj.id, field=attr)

    for r in kb.retired:
        if kind_of(r.object.id) is None or r.object.id in seen:
            raise DataFileError(path, f"{r.object.id!r} is not a valid ATLAS ID or is given "
                                "twice", entry=r.object.id, field="id")
        seen.add(r.object.id)

    def need(ref: object, kinds: tuple[str, ...], entry: str, field: str) -> None:
        if not isinstance(ref, str) or ref not in seen or kind_of(ref) not in kinds:
            raise DataFileError(path, f"refers to {ref!r}, which is not a {kinds[0]} in this "
                                "file", entry=entry, field=field)

    for t in kb.techniques:
        for tac in t.tactics:
            need(tac, ("tactic",), t.id, "tactics")
        if t.parent is not None:
            need(t.parent, ("technique",), t.id, "subtechnique-of")
            if kind_of(t.id) != "sub-technique":  # a parent on a top-level ID is a cycle risk
                raise DataFileError(path, f"{t.id} is not a sub-technique ID but has parent "
                                    f"{t.parent}", entry=t.id, field="subtechnique-of")
    for m in kb.mitigations:
        for use in m.techniques:
            need(use.technique, ("technique", "sub-technique"), m.id, "techniques")
    for cs in kb.case_studies:
        for n, step in enumerate(cs.procedure):
            need(step.tactic, ("tactic",), cs.id, f"procedure[{n}].tactic")
            need(step.technique, ("technique", "sub-technique"), cs.id,
                 f"procedure[{n}].technique")
