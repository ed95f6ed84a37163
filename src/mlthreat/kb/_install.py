"""Putting a checked download into the cache, going back to the previous copy, and removing
both: each file is staged beside its destination, flushed to disk and renamed into place, so the
cache holds a whole, usable file at every moment, even if the process is killed half-way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from mlthreat.files import OutputError, staging_path, write_synced
from mlthreat.kb.cache import CACHE_FILE, META_FILE, PREVIOUS_FILE, PREVIOUS_META, cache_dir
from mlthreat.kb.errors import UpdateError

__all__ = ["keep", "prepare", "remove", "replace", "restore_previous", "sha256_of", "write"]


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare(target: Path) -> None:
    """Create the cache directory; refuse one that is a file, not writable, or whose entries
    are directories (UpdateError)."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UpdateError(f"cannot use the cache directory {target}: it is a file; set "
                          "MLTHREAT_CACHE_DIR to a directory") from None
    except OSError as exc:
        raise UpdateError(f"cannot use the cache directory {target}: {_why(exc)}") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise UpdateError(f"cannot use the cache directory {target}: not writable")
    for name in (CACHE_FILE, META_FILE, PREVIOUS_FILE, PREVIOUS_META):
        path = target / name
        if path.is_dir():
            raise UpdateError(f"cannot install into {path}: it is a directory; remove it")


def write(path: Path, data: bytes) -> None:
    """Write and flush to disk (:func:`mlthreat.files.write_synced`), as an UpdateError."""
    try:
        write_synced(path, data)
    except OutputError as exc:
        raise UpdateError(str(exc)) from None


def replace(part: Path, path: Path) -> None:
    """Rename ``part`` over ``path``; UpdateError naming ``path`` when that fails."""
    try:
        os.replace(part, path)
    except OSError as exc:
        raise UpdateError(f"cannot install {path}: {_why(exc)}") from None


def _stage_copy(src: Path, stage: Path) -> None:
    try:
        os.link(src, stage)  # same folder: a hard link is instant and copies nothing
    except OSError:  # a file system without hard links
        write(stage, src.read_bytes())


def keep(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (renamed into place whole), leaving ``src`` where it is:
    the cache holds a usable file at every moment, even if the process dies here.

    Raises
    ------
    UpdateError
        When ``src`` cannot be read or ``dst`` written."""
    stage = staging_path(dst)
    try:
        _stage_copy(src, stage)
        replace(stage, dst)
    except OSError as exc:
        raise UpdateError(f"cannot keep the previous copy as {dst}: {_why(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            stage.unlink(missing_ok=True)


def sha256_of(path: Path) -> str | None:
    """The SHA-256 of the file at ``path``, or None when there is none to read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def restore_previous() -> str:
    """Swap the cached release with the copy the last update replaced; return the release now
    in use (from its description, or ``unknown``).

    Raises
    ------
    UpdateError
        When there is no previous copy, or a file cannot be renamed.
    """
    target = cache_dir()
    pairs = ((target / CACHE_FILE, target / PREVIOUS_FILE),
             (target / META_FILE, target / PREVIOUS_META))
    if not pairs[0][1].is_file():
        raise UpdateError(f"no previous copy to go back to ({pairs[0][1]} does not exist)")
    for current, older in pairs:
        if not older.is_file():
            with contextlib.suppress(OSError):
                current.unlink(missing_ok=True)
            continue
        # current -> staged copy, older -> current, staged -> older: a usable file stays at
        # ``current`` throughout
        stage = staging_path(older)
        try:
            if current.is_file():
                _stage_copy(current, stage)
            replace(older, current)
            if stage.exists():
                replace(stage, older)
        except OSError as exc:
            raise UpdateError(f"cannot go back to {older}: {_why(exc)}") from None
        finally:
            with contextlib.suppress(OSError):
                stage.unlink(missing_ok=True)
    try:
        meta = json.loads(pairs[1][0].read_text("utf-8"))
        name = meta.get("release") or meta.get("version")
        return name if isinstance(name, str) else "unknown"
    except (OSError, ValueError, AttributeError):
        return "unknown"


def remove() -> bool:
    """Delete the downloaded release and the previous copy; return whether there was any.

    Raises
    ------
    UpdateError
        When a cache entry cannot be deleted (it is a directory, or not writable).
    """
    found = False
    for name in (CACHE_FILE, META_FILE, PREVIOUS_FILE, PREVIOUS_META):
        path = cache_dir() / name
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except IsADirectoryError:
            raise UpdateError(f"cannot remove {path}: it is a directory, not a downloaded "
                              "release; remove it yourself") from None
        except OSError as exc:
            raise UpdateError(f"cannot remove {path}: {_why(exc)}") from None
        found = True
    return found
