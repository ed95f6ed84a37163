"""Errors of the knowledge base (bad data files, unknown IDs, unreachable releases) and the
warnings a loader records when it reads past something (:class:`DataWarning`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlthreat.errors import MlthreatError

__all__ = [
    "DataFileError", "DataWarning", "KnowledgeBaseError", "UnknownIdError", "UpdateError",
    "WrongKindError",
]


class KnowledgeBaseError(MlthreatError):
    """Base class of knowledge-base errors."""


def _where(path: str, line: int | None, entry: str | None, field: str | None,
           origin: str | None = None) -> str:
    """``file:line (from VAR), entry E, field 'F'``: where a problem is, in one format for
    errors and warnings."""
    parts = [path if line is None else f"{path}:{line}"]
    if origin:
        parts[0] += f" (from {origin})"
    if entry:
        parts.append(f"entry {entry}")
    if field:
        parts.append(f"field '{field}'")
    return ", ".join(parts)


class DataFileError(KnowledgeBaseError):
    """A data file (official ATLAS file, STIX bundle, extension, layer) is malformed.

    The message names the file and, where known, the line, the entry (an ID or a position) and
    the field, so the user can go straight to the mistake. ``origin`` names the environment
    variable the path came from, when it did not come from the caller.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        entry: str | None = None,
        field: str | None = None,
        origin: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.entry = entry
        self.field = field
        self.reason = message
        self.origin = origin
        super().__init__(f"{_where(self.path, line, entry, field, origin)}: {message}")

    def with_origin(self, origin: str) -> DataFileError:
        """The same error, saying the path came from ``origin`` (an environment variable)."""
        return DataFileError(self.path, self.reason, line=self.line, entry=self.entry,
                             field=self.field, origin=origin)


@dataclass(frozen=True)
class DataWarning:
    """Something a data file holds that was read past rather than refused: a revoked object, a
    link to an object that is not there, a parent inferred from an ID.

    ``code`` names the kind of problem (``revoked``, ``dangling-relationship``…), ``entry`` the
    object (a STIX ID with its ATLAS ID, a layer entry), ``atlas_id`` the ATLAS ID concerned
    when there is one. ``str()`` gives the one-line form of :class:`DataFileError`.
    """

    path: str
    code: str
    message: str
    entry: str | None = None
    field: str | None = None
    atlas_id: str = ""
    line: int | None = None

    def __str__(self) -> str:
        return f"{_where(self.path, self.line, self.entry, self.field)}: {self.message}"


_SHOWN = 60  # characters of an unknown ID echoed in its error (the repr escapes the rest)


class UnknownIdError(KnowledgeBaseError, KeyError):
    """An ATLAS ID that the loaded knowledge base does not hold."""

    def __init__(self, atlas_id: str, version: str, suggestion: str | None = None,
                 hint: str | None = None) -> None:
        self.atlas_id = atlas_id
        self.suggestion = suggestion
        shown = atlas_id if len(atlas_id) <= _SHOWN else atlas_id[:_SHOWN] + "…"
        msg = f"unknown ATLAS ID {shown!r} in ATLAS data {version}"
        if suggestion:
            msg += f" (did you mean {suggestion}?)"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WrongKindError(UnknownIdError):
    """A known ID used where another kind of object is needed (a technique ID as a case study):
    unknown as that kind, so it is an :class:`UnknownIdError` too."""

    def __init__(self, atlas_id: str, kind: str, wanted: str) -> None:
        self.atlas_id = atlas_id
        self.suggestion = None
        KnowledgeBaseError.__init__(self, f"{atlas_id} is a {kind}, not a {wanted}")


class UpdateError(KnowledgeBaseError):
    """The newest official release could not be downloaded or installed."""
