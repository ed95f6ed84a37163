"""Download the newest official ATLAS release into the user cache directory.

The release is found through the GitHub releases API of ``mitre-atlas/atlas-data`` and its
``dist/ATLAS.yaml`` fetched from that tag. The file is checked (it must load as ATLAS data) before
it replaces the cached copy, so a failed or partial download never leaves a broken cache. Every
later ``mlthreat`` command uses the cached release until ``--atlas`` or ``MLTHREAT_ATLAS`` says
otherwise; delete it with ``mlthreat kb update --remove`` to go back to the embedded snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mlthreat.kb.errors import KnowledgeBaseError, UpdateError

__all__ = ["RELEASES_API", "Release", "cache_dir", "cached_release", "remove", "update"]

RELEASES_API = "https://api.github.com/repos/mitre-atlas/atlas-data/releases/latest"
RAW_URL = "https://raw.githubusercontent.com/mitre-atlas/atlas-data/{tag}/dist/ATLAS.yaml"
CACHE_FILE = "ATLAS.yaml"
META_FILE = "release.json"


@dataclass(frozen=True)
class Release:
    """A downloaded release: ATLAS data ``version``, the ``tag`` and ``url`` it came from, the
    cached ``path``, its ``sha256`` and size in bytes."""

    version: str
    tag: str
    url: str
    path: str
    sha256: str
    size: int


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
    return path if path.is_file() else None


def _get(url: str, timeout: float) -> bytes:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "mlthreat", "Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        raise UpdateError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpdateError(
            f"cannot reach {url} ({reason}); offline? mlthreat keeps working with the data it "
            "has (the embedded snapshot or the last release downloaded)"
        ) from None


def update(
    *, releases_api: str = RELEASES_API, raw_url: str = RAW_URL, timeout: float = 30.0
) -> Release:
    """Download the newest official release and install it in :func:`cache_dir`.

    Parameters
    ----------
    releases_api : str
        URL of a GitHub-style "latest release" JSON document (its ``tag_name`` is used).
    raw_url : str
        URL template of the release's ATLAS.yaml, with ``{tag}``.
    timeout : float
        Seconds to wait for each request.

    Raises
    ------
    UpdateError
        When a server cannot be reached, answers with an error, or serves data that does not
        load as ATLAS; the cached copy is then left as it was.
    """
    if not releases_api.startswith(("https://", "http://")):
        raise UpdateError(f"not an http(s) URL: {releases_api}")
    try:
        tag = json.loads(_get(releases_api, timeout))["tag_name"]
    except (ValueError, KeyError, TypeError):
        raise UpdateError(f"{releases_api}: no 'tag_name' in the answer") from None
    url = raw_url.format(tag=tag)
    body = _get(url, timeout)
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{CACHE_FILE}.{os.getpid()}.part"
    tmp.write_bytes(body)
    try:
        from mlthreat.kb.sources import load_file

        kb = load_file(tmp)
    except KnowledgeBaseError as exc:
        tmp.unlink(missing_ok=True)
        raise UpdateError(f"{url} did not serve ATLAS data: {exc}") from None
    final = target / CACHE_FILE
    os.replace(tmp, final)
    release = Release(kb.version, str(tag), url, str(final), hashlib.sha256(body).hexdigest(),
                      len(body))
    meta = {**release.__dict__, "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())}
    (target / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
    return release


def remove() -> bool:
    """Delete the downloaded release; return whether there was one."""
    found = False
    for name in (CACHE_FILE, META_FILE):
        path = cache_dir() / name
        if path.exists():
            path.unlink()
            found = True
    return found
