"""Errors of the knowledge base: bad data files, unknown IDs, unreachable releases."""

from __future__ import annotations

from pathlib import Path

from mlthreat.errors import MlthreatError

__all__ = [
    "DataFileError", "KnowledgeBaseError", "UnknownIdError", "UpdateError", "WrongKindError",
]


class KnowledgeBaseError(MlthreatError):
    """Base class of knowledge-base errors."""


class DataFileError(KnowledgeBaseError):
    """A data file (official ATLAS file, STIX bundle, extension, layer) is malformed.

    The message names the file and, where known, the line, the entry (an ID or a position) and
    the field, so the user can go straight to the mistake.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        entry: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.entry = entry
        self.field = field
        self.reason = message
        where = self.path if line is None else f"{self.path}:{line}"
        parts = [where]
        if entry:
            parts.append(f"entry {entry}")
        if field:
            parts.append(f"field '{field}'")
        super().__init__(f"{', '.join(parts)}: {message}")


class UnknownIdError(KnowledgeBaseError, KeyError):
    """An ATLAS ID that the loaded knowledge base does not hold."""

    def __init__(self, atlas_id: str, version: str, suggestion: str | None = None) -> None:
        self.atlas_id = atlas_id
        msg = f"unknown ATLAS ID {atlas_id!r} in ATLAS data {version}"
        if suggestion:
            msg += f" (did you mean {suggestion}?)"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WrongKindError(UnknownIdError):
    """A known ID used where another kind of object is needed (a technique ID as a case study):
    unknown as that kind, so it is an :class:`UnknownIdError` too."""

    def __init__(self, atlas_id: str, kind: str, wanted: str) -> None:
        self.atlas_id = atlas_id
        KnowledgeBaseError.__init__(self, f"{atlas_id} is a {kind}, not a {wanted}")


class UpdateError(KnowledgeBaseError):
    """The newest official release could not be downloaded or installed."""
