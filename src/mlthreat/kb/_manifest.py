"""Read atlas-data's ``dist/manifest.yaml`` without knowing its exact layout.

The manifest maps each monthly content release (``2026.09``) to its files, one per data format.
No copy of it can be fetched from the machines this was written on, so the reader trusts only
what any sensible layout must show: a release name ``YYYY.MM`` or ``YYYY.MM.N`` (as a mapping
key, as the value of a key such as ``release`` or ``version``, or inside a file name such as
``ATLAS-2026.09.yaml``), and, for that release, the path of its format-6 file (a path under
``v6/``, or one reached through a key naming format 6: ``6``, ``v6``, ``6.0.0``, ``format-6``, or
a sibling ``format``/``format-version`` of 6). Releases are compared as numbers, so ``2026.10``
is newer than ``2026.09`` and ``2026.09.1`` newer than ``2026.09``.

The YAML is read as a node tree, never converted to Python values: an unquoted ``2026.10`` is the
float ``2026.1`` to a YAML loader, and would then sort before ``2026.09``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlthreat.kb.history import parse_release

__all__ = ["ManifestError", "newest", "v6_path"]

_IN_NAME = re.compile(r"(?<![\d.])(\d{4}\.\d{2}(?:\.\d{1,4})?)(?=\.ya?ml$|\.json$)")
_FORMAT_6_KEY = re.compile(r"(?:v|format[-_ ]?(?:version[-_ ]?)?)?6(?:\.\d+)*", re.IGNORECASE)
_FORMAT_KEYS = {"format", "format-version", "format_version", "formatversion"}
_RELEASE_KEYS = {"release", "version", "content-release", "content_release", "id", "name", "tag"}
_PATH = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
MAX_NODES = 200_000  # far above any real manifest; shared alias nodes are counted once per visit


class ManifestError(ValueError):
    """The manifest names no release with a usable format-6 file, or is too large to walk."""


def v6_path(release: str) -> str:
    """Where atlas-data publishes a release's format-6 file, relative to ``dist/``."""
    return f"v6/ATLAS-{release}.yaml"


@dataclass
class _Found:
    releases: set[str]
    paths: dict[str, list[str]]  # release -> format-6 paths, in the order met


def _clean(path: str) -> str | None:
    """A path relative to ``dist/`` made of plain segments, or None (an absolute path, a URL,
    ``..`` or odd characters would let the manifest point the download anywhere)."""
    path = path.strip().removeprefix("./").removeprefix("dist/")
    if not _PATH.fullmatch(path) or any(seg in (".", "..") for seg in path.split("/")):
        return None
    return path


def _scalar(node: Any) -> str | None:
    import yaml

    return node.value if isinstance(node, yaml.ScalarNode) else None


def _walk(root: Any) -> _Found:
    """Collect releases and their format-6 paths from the node tree, iteratively."""
    import yaml

    found = _Found(set(), {})
    # (node, release of the enclosing entry, whether a key above named format 6, key name)
    stack: list[tuple[Any, str | None, bool, str]] = [(root, None, False, "")]
    visits = 0
    while stack:
        node, release, fmt6, key = stack.pop()
        visits += 1
        if visits > MAX_NODES:
            raise ManifestError(f"more than {MAX_NODES:,} nodes to read")
        if isinstance(node, yaml.ScalarNode):
            _scalar_found(found, node.value, release, fmt6, key)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, release, fmt6, key) for item in reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            pairs = [(_scalar(k), v) for k, v in node.value]
            for k, v in pairs:  # an entry such as {release: 2026.09, files: ...}
                value = _scalar(v)
                if k is not None and k.lower() in _RELEASE_KEYS and value is not None \
                        and parse_release(value):
                    release = value
                if k is not None and k.lower() in _FORMAT_KEYS and value is not None \
                        and _FORMAT_6_KEY.fullmatch(value.strip()):
                    fmt6 = True
            for k, v in reversed(pairs):
                if k is not None and parse_release(k):
                    found.releases.add(k)
                    stack.append((v, k, fmt6, k))
                else:
                    named6 = k is not None and bool(_FORMAT_6_KEY.fullmatch(k.strip()))
                    stack.append((v, release, fmt6 or named6, k or ""))
    return found


def _scalar_found(found: _Found, value: str, release: str | None, fmt6: bool, key: str) -> None:
    text = value.strip()
    if parse_release(text):
        if key.lower() in _RELEASE_KEYS or key == "" or key.lower() in ("latest", "releases"):
            found.releases.add(text)
        return
    path = _clean(text)
    if path is None or not path.endswith((".yaml", ".yml", ".json")) \
            or path.startswith("legacy/"):  # the old layout, even under a format-6 heading
        return
    named = _IN_NAME.search(path.rsplit("/", 1)[-1])
    if named and parse_release(named.group(1)):
        release = named.group(1)  # the file's own name beats the entry it sits in
    if release is None or not (fmt6 or path.startswith("v6/")):
        return
    found.releases.add(release)
    found.paths.setdefault(release, []).append(path)


def newest(text: str, source: str) -> tuple[str, str, bool]:
    """The newest release the manifest ``text`` names: ``(release, path, listed)``, ``path``
    relative to ``dist/``; ``listed`` says whether the manifest gave the path (else it is the
    conventional :func:`v6_path`).

    Raises
    ------
    ManifestError
        When the text is not YAML, is hostile (see :mod:`mlthreat.safeload`), names no release,
        or holds too many nodes to walk.
    """
    from mlthreat.safeload import SafeLoadError, parse_yaml_node

    try:
        _, root = parse_yaml_node(text, source)
    except SafeLoadError as exc:
        raise ManifestError(exc.reason) from None
    if root is None:
        raise ManifestError("empty")
    found = _walk(root)
    if not found.releases:
        raise ManifestError("no content release (YYYY.MM) in it")
    best = max(found.releases, key=lambda r: parse_release(r) or (0, 0, 0))
    paths = found.paths.get(best, [])
    # a path under v6/ is the surest sign of the format-6 file; then the first one met
    for path in sorted(paths, key=lambda p: not p.startswith("v6/")):
        return best, path, True
    return best, v6_path(best), False
