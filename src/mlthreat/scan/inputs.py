"""The top-level inputs of a scan: files named on the command line, and the files of folders
walked recursively in sorted order.

Symbolic links inside a folder are not followed by default. A link whose target stays inside
the scanned folder is skipped (the target is scanned under its own name). A link that leads
out of the folder, that dangles, or that cannot be resolved (a loop) is a problem entry: the
scan reports it as a high-severity finding naming the link and its target, since a model
file there would otherwise go unscanned (``models/pytorch_model.bin -> ../outside/evil.pkl``).

With ``follow_symlinks=True`` a link's target is scanned under the link's name, wherever it
is. Each folder is walked once (by device and inode): a link back to a folder being walked
is a ``scan.symlink-loop`` finding, a second link to a folder already walked is skipped, so
the walk ends on any tree. A link that dangles is still a finding.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LINK_RULES", "Entry", "iter_inputs"]

# rule -> what a problem link is (the finding's message starts with it)
LINK_RULES = {
    "scan.symlink-outside": "symbolic link to outside the scanned folder (not followed)",
    "scan.symlink-dangling": "symbolic link whose target cannot be read",
    "scan.symlink-loop": "symbolic link loop",
}


@dataclass(frozen=True)
class Entry:
    """A top-level input.

    Attributes
    ----------
    path : Path
        The file, as reached (through a followed link, the link's name).
    skipped : str
        Why it is not scanned (``""`` when it is).
    rule : str
        For a problem link, the finding to report (a key of :data:`LINK_RULES`).
    target : str
        For a link, where it points (as written in the link).
    """

    path: Path
    skipped: str = ""
    rule: str = ""
    target: str = ""


def iter_inputs(paths: Iterable[str | os.PathLike[str]],
                follow_symlinks: bool = False) -> Iterator[Entry]:
    """Each file under ``paths`` in order; folders recursively, sorted by name.

    A path given explicitly is followed even if it is a symbolic link (the user named it).
    Links found inside a folder are handled as the module docstring says; sockets, FIFOs
    and devices are yielded as skipped (``"not a regular file"``).

    Raises
    ------
    FileNotFoundError
        For an explicit path that does not exist.
    """
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        if p.is_dir():
            walk = _Walk(os.path.realpath(p), follow_symlinks)
            yield from walk.folder(p, ())
        elif p.is_file():
            yield Entry(p)
        else:
            yield Entry(p, "not a regular file")


def _readlink(p: Path) -> str:
    """Where ``p`` points, as written in the link (``""`` when it is no link)."""
    if not p.is_symlink():
        return ""
    try:
        return os.readlink(p)
    except OSError as exc:
        return f"? ({exc.strerror or exc})"


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


class _Walk:
    """One folder argument's walk: its real path and the folders walked so far."""

    def __init__(self, root: str, follow: bool) -> None:
        self.root = root
        self.follow = follow
        self.seen: set[tuple[int, int]] = set()

    def folder(self, folder: Path, ancestry: tuple[tuple[int, int], ...]) -> Iterator[Entry]:
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in ancestry:
                yield Entry(folder, f"{LINK_RULES['scan.symlink-loop']}: leads back to "
                            f"{os.path.realpath(folder)}, a folder being scanned",
                            "scan.symlink-loop", _readlink(folder))
                return
            if key in self.seen:
                yield Entry(folder, "folder already scanned under another name "
                            f"({os.path.realpath(folder)})", target=_readlink(folder))
                return
            self.seen.add(key)
            children = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError as exc:
            yield Entry(folder, f"cannot list folder: {exc.strerror or exc}")
            return
        for child in children:
            p = Path(child.path)
            if child.is_symlink():
                yield from self.link(p, (*ancestry, key))
            elif child.is_dir(follow_symlinks=False):
                yield from self.folder(p, (*ancestry, key))
            elif child.is_file(follow_symlinks=False):
                yield Entry(p)
            else:
                yield Entry(p, "not a regular file")

    def link(self, p: Path, ancestry: tuple[tuple[int, int], ...]) -> Iterator[Entry]:
        target = _readlink(p)
        try:
            real = os.path.realpath(p, strict=True)
            os.stat(p)
        except OSError as exc:
            rule = "scan.symlink-loop" if exc.errno == errno.ELOOP else "scan.symlink-dangling"
            yield Entry(p, f"{LINK_RULES[rule]}: {exc.strerror or exc}", rule, target)
            return
        except RuntimeError:  # Python < 3.13 reports some loops this way
            yield Entry(p, LINK_RULES["scan.symlink-loop"], "scan.symlink-loop", target)
            return
        if not self.follow:
            if _inside(real, self.root):
                yield Entry(p, "symbolic link (not followed)", target=target)
            else:
                yield Entry(p, f"{LINK_RULES['scan.symlink-outside']}: resolves to {real}",
                            "scan.symlink-outside", target)
            return
        if os.path.isdir(real):
            yield from self.folder(p, ancestry)
        elif os.path.isfile(real):
            yield Entry(p, target=target)
        else:
            yield Entry(p, "not a regular file", target=target)
