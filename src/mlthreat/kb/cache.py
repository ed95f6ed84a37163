"""Where ``mlthreat kb update`` keeps the release it downloaded (kept apart from the download
code: every command asks whether a cached release exists, and that must cost nothing)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_FILE", "META_FILE", "PREVIOUS_FILE", "PREVIOUS_META", "cache_dir",
           "cached_release"]

CACHE_FILE = "ATLAS.yaml"  # the data in use, in whichever format atlas-data served it
META_FILE = "release.json"
# the copy an update replaced, kept so the user can go back to it (``--atlas`` or ``--previous``)
PREVIOUS_FILE = "ATLAS.previous.yaml"
PREVIOUS_META = "release.previous.json"


def cache_dir() -> Path:
    """``$MLTHREAT_CACHE_DIR``, else the platform's user cache directory for mlthreat."""
    env = os.environ.get("MLTHREAT_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mlthreat"))


def cached_release() -> Path | None:
    """The path of the release ``update`` downloaded, or None if there is none."""
    path = cache_dir() / CACHE_FILE
    try:
        return path if path.is_file() else None
    except OSError:  # an unreadable cache directory holds no usable release
        return None
