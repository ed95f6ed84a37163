"""Output files written whole or not at all.

Every file the tool hands to a user (a report, an export, a layer) is written to a temporary
name in its own folder and renamed over the destination once complete, so a kill or a full disk
never leaves a truncated file that looks finished, and the previous version survives until the
new one is whole. :func:`write_set` does the same for a folder of files that belong together:
nothing is renamed into place until every member is written. This module imports nothing else
of the package but its errors, so every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mlthreat.errors import MlthreatError

__all__ = ["OutputError", "staging_path", "write_atomic", "write_set", "write_synced"]


class OutputError(MlthreatError):
    """An output file could not be written (no space, no permission…); the message names it.

    ``path`` and ``reason`` are kept apart so a command can word the line its own way."""

    def __init__(self, path: str | Path, reason: object) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = Path(path)
        self.reason = str(reason)


def staging_path(path: str | Path) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place: hidden,
    in the same folder (so the rename is atomic), unique to this process."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.partial")


def _fail(path: Path, exc: OSError) -> OutputError:
    return OutputError(path, exc.strerror or exc)


def write_synced(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to exactly ``path`` and flush it to disk, so a rename
    that follows never exposes a short file. Raises :class:`OutputError` naming ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(path, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _fail(Path(path), exc) from None


def _write_staged(path: Path, data: str | bytes) -> Path:
    tmp = staging_path(path)
    try:
        write_synced(tmp, data)
    except OutputError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, exc.reason) from None
    return tmp


def write_atomic(path: str | Path, data: str | bytes, *, parents: bool = True) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all.

    ``parents=False`` leaves a missing folder an error (a mistyped ``-o`` path is refused
    rather than made).

    Raises
    ------
    OutputError
        When the folder cannot be created or the file written (the message names the file);
        ``path`` is then as it was before.
    """
    p = Path(path)
    if parents:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(p.parent, exc) from None
    tmp = _write_staged(p, data)
    try:
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(p, exc) from None
    return p


def write_set(folder: str | Path, files: Mapping[str, str | bytes],
              staged: Mapping[str, str | Path] | None = None) -> dict[str, Path]:
    """Write the files of one result into ``folder`` as a set.

    Parameters
    ----------
    folder : path
        Created if missing.
    files : mapping of file name to content
        Written to temporary names first; a name may hold a subfolder.
    staged : mapping of file name to an already written temporary file, optional
        Files produced during the work (a query log) that join the set.

    Every member is written before any is renamed into place, the names of ``files`` last in
    the order given (put the file that says the set is complete last). On failure the
    temporary files are removed and the folder keeps its previous set.

    Raises
    ------
    OutputError
        Naming the file that could not be written.
    """
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(out, exc) from None
    ready: list[tuple[str, Path, Path]] = [(name, Path(tmp), out / name)
                                           for name, tmp in (staged or {}).items()]
    try:
        for name, data in files.items():
            final = out / name  # a name may hold a subfolder ("layers/x.json")
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _fail(final.parent, exc) from None
            ready.append((name, _write_staged(final, data), final))
    except OutputError:
        for _, tmp, _ in ready:
            tmp.unlink(missing_ok=True)
        raise
    written: dict[str, Path] = {}
    for name, tmp, final in ready:
        try:
            os.replace(tmp, final)
        except OSError as exc:
            raise _fail(final, exc) from None
        written[name] = final
    return written
