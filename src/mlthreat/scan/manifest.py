"""A digest manifest of a model folder, and the check that finds files added, removed or
changed since it was written (ATLAS AML.T0010.003, a tampered artifact).

The manifest is JSON::

    {"kind": "mlthreat.scan.manifest", "schema_version": 1, "algorithm": "sha256",
     "files": [{"path": "sub/model.pkl", "sha256": "<64 hex>", "size": 123}, ...]}

Paths are relative to the root, POSIX separators, sorted. Digests are streamed in 1 MiB
chunks, so no file is ever held in memory whole. Symbolic links are not followed (a link is
not listed) so a manifest cannot be made to read outside its root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlthreat.errors import UsageError
from mlthreat.scan.findings import TECHNIQUES, Finding

__all__ = ["CHUNK", "KIND", "build_manifest", "check_manifest", "digest_file",
           "write_manifest"]

KIND = "mlthreat.scan.manifest"
SCHEMA_VERSION = 1
CHUNK = 1024 * 1024


def digest_file(path: Path) -> tuple[str, int]:
    """The SHA-256 hex digest and size of a file, read in :data:`CHUNK` (1 MiB) pieces.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _entries(paths: Iterable[Path], root: Path) -> list[dict[str, Any]]:
    files = []
    for p in paths:
        digest, size = digest_file(p)
        files.append({"path": p.relative_to(root).as_posix(), "sha256": digest, "size": size})
    return sorted(files, key=lambda e: e["path"])


def build_manifest(root: str | Path, *, exclude: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The manifest of every regular file under ``root`` (a folder, or one file whose
    manifest lists just its name).

    ``exclude`` are files to leave out (the manifest file itself, when written inside root).

    Raises
    ------
    UsageError
        When ``root`` does not exist.
    OSError
        When a file cannot be read.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    skip = {Path(e).resolve() for e in exclude}
    if root.is_file():
        paths, base = [root], root.parent
    else:
        paths, base = _walk(root), root
    paths = [p for p in paths if p.resolve() not in skip]
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "algorithm": "sha256",
            "files": _entries(paths, base)}


def write_manifest(paths: str | Path | Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Write the manifest of ``paths`` to ``out`` and return it.

    ``paths`` is a root folder (every file under it, except ``out``), or an iterable of files
    that are listed relative to the folder ``out`` is written in.

    Raises
    ------
    UsageError
        When a given path does not exist or lies outside the manifest's folder.
    OutputError
        When ``out`` cannot be written (its folder missing, a full disk); ``out`` is then as
        it was, never a truncated manifest.
    """
    from mlthreat.files import write_atomic

    out = Path(out)
    if isinstance(paths, str | Path):
        manifest = build_manifest(paths, exclude=[out])
    else:
        base = out.resolve().parent
        files: list[Path] = []
        for p in paths:
            rp = Path(p).resolve()
            if not rp.is_file():
                raise UsageError(f"{p}: not a file")
            try:
                rp.relative_to(base)
            except ValueError:
                raise UsageError(f"{p}: outside {base}, the manifest's folder") from None
            files.append(rp)
        manifest = {"kind": KIND, "schema_version": SCHEMA_VERSION, "algorithm": "sha256",
                    "files": _entries(files, base)}
    write_atomic(out, json.dumps(manifest, indent=2) + "\n", parents=False)
    return manifest


def _read(manifest_path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's files by path. Raises UsageError naming the file and field."""
    src = str(manifest_path)
    try:
        data = json.loads(manifest_path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"{src}: cannot read manifest: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{src}: not a JSON manifest ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{src}: a manifest is a JSON object")
    if data.get("kind") != KIND:
        raise UsageError(f"{src}: field 'kind' must be {KIND!r}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{src}: field 'schema_version' must be {SCHEMA_VERSION}")
    if data.get("algorithm") != "sha256":
        raise UsageError(f"{src}: field 'algorithm' must be 'sha256'")
    files = data.get("files")
    if not isinstance(files, list):
        raise UsageError(f"{src}: field 'files' must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(files):
        where = f"{src}: field 'files[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}' must be an object")
        path = entry.get("path")
        if (not isinstance(path, str) or not path or path.startswith("/")
                or ".." in path.split("/") or "\\" in path):
            raise UsageError(f"{where}.path' must be a relative POSIX path inside the root")
        digest = entry.get("sha256")
        if (not isinstance(digest, str) or len(digest) != 64
                or any(c not in "0123456789abcdef" for c in digest)):
            raise UsageError(f"{where}.sha256' must be 64 lower-case hex digits")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UsageError(f"{where}.size' must be a non-negative integer")
        if path in out:
            raise UsageError(f"{where}.path' repeats {path!r}")
        out[path] = entry
    return out


def check_manifest(manifest_path: str | Path, root: str | Path) -> list[Finding]:
    """Compare ``root`` (a folder, or one file) with a manifest.

    Returns findings (engine ``mlthreat``, format ``manifest``, technique
    ``TECHNIQUES["tampered"]``): ``manifest.changed`` (high; details with the expected and
    actual digest and size), ``manifest.missing`` (high) and ``manifest.added`` (medium), in
    path order. No findings: the files are exactly those listed.

    Raises
    ------
    UsageError
        Naming the file and field, for a malformed manifest; or when ``root`` is missing.
    """
    manifest_path = Path(manifest_path)
    expected = _read(manifest_path)
    actual = {e["path"]: e for e in build_manifest(root, exclude=[manifest_path])["files"]}
    base = Path(root) if Path(root).is_dir() else Path(root).parent
    if Path(root).is_file():
        # one file checked against a folder's manifest: only its own entry counts (by name,
        # or by its path relative to the manifest's folder), the others are not "missing"
        names = [Path(root).name]
        with contextlib.suppress(ValueError):
            names.append(Path(root).resolve().relative_to(
                manifest_path.resolve().parent).as_posix())
        entry = next(iter(actual.values()))
        hit = next((n for n in names if n in expected), None)
        expected = {hit: expected[hit]} if hit is not None else {}
        actual = {hit or names[0]: entry}
        if hit is not None and hit != names[0]:
            base = manifest_path.parent
    tampered = TECHNIQUES["tampered"]
    findings: list[Finding] = []
    for path in sorted(set(expected) | set(actual)):
        shown = (base / path).as_posix()
        exp, act = expected.get(path), actual.get(path)
        if exp is None and act is not None:
            findings.append(Finding(
                path=shown, format="manifest", severity="medium", rule="manifest.added",
                message=f"{path} is not in the manifest", technique=tampered,
                details={"expected_sha256": None, "actual_sha256": act["sha256"],
                         "actual_size": act["size"], "manifest": str(manifest_path)}))
        elif act is None and exp is not None:
            findings.append(Finding(
                path=shown, format="manifest", severity="high", rule="manifest.missing",
                message=f"{path} is in the manifest but missing", technique=tampered,
                details={"expected_sha256": exp["sha256"], "actual_sha256": None,
                         "expected_size": exp["size"], "manifest": str(manifest_path)}))
        elif exp is not None and act is not None and exp["sha256"] != act["sha256"]:
            findings.append(Finding(
                path=shown, format="manifest", severity="high", rule="manifest.changed",
                message=f"{path} differs from the manifest (sha256 {act['sha256'][:12]}…, "
                        f"expected {exp['sha256'][:12]}…)", technique=tampered,
                details={"expected_sha256": exp["sha256"], "actual_sha256": act["sha256"],
                         "expected_size": exp["size"], "actual_size": act["size"],
                         "manifest": str(manifest_path)}))
    return findings
