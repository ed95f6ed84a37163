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

__all__ = ["SOURCES", "load_file", "read_structured"]


def _sources() -> tuple[ModuleType, ...]:
    from mlthreat.kb.sources import atlas_yaml, snapshot, stix_bundle

    return (snapshot, stix_bundle, atlas_yaml)


SOURCES = ("snapshot", "stix-bundle", "atlas-yaml")


def read_structured(path: str | Path) -> Any:
    """Parse a JSON or YAML file (YAML always with a safe loader).

    Raises
    ------
    DataFileError
        When the file is missing, unreadable, or not valid JSON/YAML; the message gives the line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFileError(path, exc.strerror or str(exc)) from None
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith(("{", "[")):
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise DataFileError(path, f"invalid YAML: {problem}", line=line) from None


def load_file(path: str | Path) -> KnowledgeBase:
    """Load any supported matrix file: official ATLAS.yaml, official STIX bundle, or a snapshot.

    Raises
    ------
    DataFileError
        When the file cannot be parsed or matches no known format, naming the file.
    """
    data = read_structured(path)
    for module in _sources():
        if module.sniff(data):
            return module.load(data, Path(path))
    raise DataFileError(
        path,
        "not an ATLAS data file: expected the official ATLAS.yaml (with 'matrices'), "
        "the official STIX 2.1 bundle, or an mlthreat snapshot",
    )
