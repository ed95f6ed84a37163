"""Download the newest ATLAS content release into the user cache directory.

Since May 2026 atlas-data publishes a content release each month (``2026.09``) in data format 6
and no longer updates the legacy ``dist/ATLAS.yaml``. Under ``dist/`` it serves ``manifest.yaml``
(each release and its files, one per format), ``v6/ATLAS-<release>.yaml`` for every release,
``v6/ATLAS-latest.yaml`` and ``ATLAS-latest.yaml``. :func:`update` reads the manifest (see
:mod:`mlthreat.kb._manifest`) and fetches the newest release's format-6 file; when the manifest
is missing or unreadable it takes ``v6/ATLAS-latest.yaml``, then ``ATLAS-latest.yaml``. With
``release=`` it fetches ``v6/ATLAS-<release>.yaml`` directly.

The file is checked before it replaces the cached copy, so a failed, partial or hostile download
never leaves a broken cache: it must load as ATLAS data, every ID its objects reference must be in
it, it must be the release the manifest named, not older than the cached release (a legacy 5.x
file is older than any content release), and no section (tactics, techniques, mitigations, case
studies) may hold much less than the data it replaces.
A content release may retire a few IDs (2026.07 moved three techniques under a new parent), so
each section may shrink by ``SHRINK_SHARE`` of its size or ``SHRINK_MIN`` objects, whichever is
more; a file cut short loses far more than that. An explicitly asked ``release`` may be older than
the cache, so it is compared with the embedded snapshot instead.

The copy it replaces is kept as ``ATLAS.previous.yaml`` (:func:`restore_previous` swaps the two
back); each file is renamed into place whole. Every later ``mlthreat`` command uses the cached
release until ``--atlas`` or ``MLTHREAT_ATLAS`` says otherwise; :func:`remove` deletes both copies.

Each request must finish within ``DEADLINE_FACTOR`` times ``timeout`` seconds in all, may be
redirected only on the same host, and its body may hold at most ``MAX_MANIFEST_BYTES`` (the
manifest) or ``MAX_ATLAS_BYTES`` (a data file); a larger body is refused without being read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlthreat.files import staging_path
from mlthreat.kb._http import DEADLINE_FACTOR as DEADLINE_FACTOR  # named in the docs above
from mlthreat.kb._http import HTTPStatusError, Unreachable, check_url, fetch
from mlthreat.kb._install import (
    keep,
    prepare,
    remove,
    replace,
    restore_previous,
    sha256_of,
    write,
)
from mlthreat.kb._manifest import ManifestError, newest, v6_path
from mlthreat.kb.cache import (
    CACHE_FILE,
    META_FILE,
    PREVIOUS_FILE,
    PREVIOUS_META,
    cache_dir,
    cached_release,
)
from mlthreat.kb.errors import KnowledgeBaseError, UpdateError
from mlthreat.kb.history import parse_release

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["DIST_URL", "Release", "cache_dir", "cached_release", "remove", "restore_previous",
           "update"]

DIST_URL = "https://raw.githubusercontent.com/mitre-atlas/atlas-data/main/dist"
MAX_MANIFEST_BYTES = 1 << 20  # a list of releases and file names: a few kB
MAX_ATLAS_BYTES = 16 << 20  # a data file: ~0.5 MB today; parsing 16 MiB of YAML peaks ~1.5 GB
MAX_TIMEOUT = 3600.0
SHRINK_SHARE = 0.05  # a release may retire this share of a section…
SHRINK_MIN = 2  # …or this many objects, whichever is more
_FALLBACKS = ("v6/ATLAS-latest.yaml", "ATLAS-latest.yaml")


@dataclass(frozen=True)
class Release:
    """An installed release: the content ``release`` the file declares (``2026.09``; the data
    version for legacy files) and its ``format_version`` (``6.0.0``; empty for the legacy
    layout), how it was ``found_by`` (``manifest``, ``release``, or the fallback file's name and
    why the manifest was not used), the ``url`` it came from, the cached ``path``, its ``sha256``
    and ``size`` in bytes, where the replaced copy was kept (``previous``, None if there was
    none) and whether anything ``changed`` (False when the cache already held these bytes)."""

    release: str
    format_version: str
    found_by: str
    url: str
    path: str
    sha256: str
    size: int
    previous: str | None
    changed: bool


# -- argument checks ----------------------------------------------------------------------------
def _check_timeout(timeout: float) -> None:
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT):
        raise UpdateError(f"timeout must be a number of seconds above 0 and at most "
                          f"{MAX_TIMEOUT:g}, not {timeout!r}")


def _check_dist(dist_url: str) -> str:
    from urllib.parse import urlsplit

    check_url(dist_url, "data URL")
    parts = urlsplit(dist_url)
    if parts.query or parts.fragment or "?" in dist_url or "#" in dist_url:
        raise UpdateError(f"data URL {dist_url!r} must be a plain folder URL, without '?' or '#'")
    return dist_url.rstrip("/")


def _check_release(release: str) -> str:
    if not isinstance(release, str) or parse_release(release.strip()) is None:
        shown = repr(release[:40]) if isinstance(release, str) else type(release).__name__
        raise UpdateError(f"release must be a content release such as 2026.09 or 2026.09.1 "
                          f"(YYYY.MM, month 01-12, optional .N), not {shown}")
    return release.strip()


# -- finding the file ---------------------------------------------------------------------------
def _offline(exc: Unreachable, target: Path) -> Unreachable:
    """The same failure, worded with the data that stays in use."""
    keeps = "the embedded snapshot"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if (target / CACHE_FILE).is_file():
            meta = json.loads((target / META_FILE).read_text("utf-8"))
            name = meta.get("release") or meta.get("version")  # "version" before 2026.09
            keeps = f"the cached ATLAS {name} ({target / CACHE_FILE})" if isinstance(name, str) \
                else f"the cached copy {target / CACHE_FILE}"
    return Unreachable(exc.url, exc.reason, keeps=keeps)


def _from_manifest(dist: str, timeout: float) -> tuple[str, str, str] | str:
    """``(url, expected release, "manifest")`` from the manifest, or why it cannot be used."""
    url = f"{dist}/manifest.yaml"
    try:
        text = fetch(url, timeout, MAX_MANIFEST_BYTES).decode("utf-8")
        release, path, _ = newest(text, url)
    except Unreachable:
        raise
    except HTTPStatusError as exc:
        return f"manifest.yaml: HTTP {exc.code}"
    except (UpdateError, ManifestError, UnicodeDecodeError) as exc:
        return f"manifest.yaml unreadable: {str(exc).splitlines()[0][:120]}"
    return f"{dist}/{path}", release, "manifest"


def _download(dist: str, release: str | None, timeout: float) -> tuple[bytes, str, str | None,
                                                                        str]:
    """``(body, url, release the file must declare or None, found_by)``."""
    if release is not None:
        url = f"{dist}/{v6_path(release)}"
        return fetch(url, timeout, MAX_ATLAS_BYTES), url, release, "release"
    found = _from_manifest(dist, timeout)
    if not isinstance(found, str):
        url, expected, how = found
        return fetch(url, timeout, MAX_ATLAS_BYTES), url, expected, how
    why = found
    for name in _FALLBACKS:
        url = f"{dist}/{name}"
        try:
            return fetch(url, timeout, MAX_ATLAS_BYTES), url, None, f"{name} ({why})"
        except HTTPStatusError as exc:  # not published: try the next name
            if name == _FALLBACKS[-1]:
                raise UpdateError(f"no ATLAS release found under {dist}: {why}, "
                                  f"{' and '.join(_FALLBACKS)} are missing (last: HTTP "
                                  f"{exc.code})") from None
            why = f"{why}; {name}: HTTP {exc.code}"
    raise AssertionError("unreachable")  # pragma: no cover


# -- checks of the download ---------------------------------------------------------------------
def _dangling(kb: KnowledgeBase) -> list[str]:
    """References to IDs the data does not hold: a technique's tactics and parent, a mitigation's
    technique links, a case-study step's tactic and technique."""
    tactics = {t.id for t in kb.tactics}
    techniques = {t.id for t in kb.techniques}
    out = []
    for t in kb.techniques:
        out += [f"{t.id} tactic {x}" for x in t.tactics if x not in tactics]
        if t.parent is not None and t.parent not in techniques:
            out.append(f"{t.id} parent {t.parent}")
    for m in kb.mitigations:
        out += [f"{m.id} technique {u.technique}" for u in m.techniques
                if u.technique not in techniques]
    for c in kb.case_studies:
        for i, step in enumerate(c.procedure):
            if step.tactic not in tactics:
                out.append(f"{c.id} procedure[{i}] tactic {step.tactic}")
            if step.technique not in techniques:
                out.append(f"{c.id} procedure[{i}] technique {step.technique}")
    return out


_COUNTS = (("tactics", "tactics"), ("techniques", "techniques"), ("mitigations", "mitigations"),
           ("case studies", "case_studies"))


def allowed_loss(count: int) -> int:
    """How many objects a section of ``count`` may lose from one release to the next."""
    return max(SHRINK_MIN, math.ceil(count * SHRINK_SHARE))


def _baseline(final: Path, explicit: bool) -> tuple[KnowledgeBase, str, bool]:
    """The data a download is compared with, its description, and whether it is the cache: the
    cached release if it loads (unless a release was asked for by name), else the snapshot."""
    from mlthreat.kb.sources import load_file
    from mlthreat.kb.sources.snapshot import load_embedded

    if not explicit and cached_release() is not None:
        try:
            return load_file(final), f"the cached release {final}", True
        except Exception:  # a broken cache is replaced, not compared with
            pass
    return load_embedded(), "the embedded snapshot", False


def _validate(part: Path, url: str, final: Path, expected: str | None,
              explicit: bool) -> KnowledgeBase:
    from mlthreat.kb.sources import load_file

    try:
        kb = load_file(part)
    except KnowledgeBaseError as exc:
        raise UpdateError(f"{url} did not serve ATLAS data: "
                          f"{str(exc).replace(str(part), CACHE_FILE)}") from None
    except Exception as exc:  # the download is untrusted input
        msg = (str(exc).splitlines() or [""])[0][:200]
        raise UpdateError(f"{url} did not serve valid ATLAS data: {type(exc).__name__}: "
                          f"{msg}") from None
    dangling = _dangling(kb)
    if dangling:
        more = f" and {len(dangling) - 5} more" if len(dangling) > 5 else ""
        raise UpdateError(f"{url} did not serve consistent ATLAS data: ATLAS {kb.version} "
                          f"references IDs it does not hold ({', '.join(dangling[:5])}{more})")
    if expected is not None and kb.version != expected:
        raise UpdateError(f"{url} holds ATLAS {kb.version[:40]!r}, not the release {expected} "
                          "it was fetched as; the cache is left as it was")
    from mlthreat.kb.history import release_key  # legacy 5.x sorts before any content release

    old, where, is_cache = _baseline(final, explicit)
    new_key, old_key = release_key(kb.version), release_key(old.version)
    if is_cache and (-1,) not in (new_key, old_key) and new_key < old_key:
        raise UpdateError(f"{url} holds ATLAS {kb.version}, older than {where} (ATLAS "
                          f"{old.version}); a stale mirror? mlthreat keeps using {where} "
                          f"(ask for an older release by name with --release {kb.version})")
    fewer = [f"{len(getattr(kb, attr))} {label} against {len(getattr(old, attr))}"
             for label, attr in _COUNTS
             if len(getattr(kb, attr)) < len(getattr(old, attr)) - allowed_loss(
                 len(getattr(old, attr)))]
    if fewer:
        raise UpdateError(f"{url} holds fewer objects than {where} (ATLAS {old.version}) it would "
                          f"replace: {', '.join(fewer)}, more than a release retires (at most "
                          f"{SHRINK_SHARE:.0%} or {SHRINK_MIN} per section); a truncated download "
                          f"or an older release? mlthreat keeps using {where}")
    return kb


def update(*, release: str | None = None, dist_url: str = DIST_URL,
           timeout: float = 30.0) -> Release:
    """Download the newest content release (or ``release``) and install it in :func:`cache_dir`.

    Parameters
    ----------
    release : str or None
        A content release to fetch by name (``2026.09``, ``2026.09.1``); None for the newest.
    dist_url : str
        The http(s) URL of atlas-data's ``dist/`` folder (no query or fragment).
    timeout : float
        Seconds to wait for each connection and each read, above 0 and at most ``MAX_TIMEOUT``.
        A whole request may take ``DEADLINE_FACTOR`` (4) times as long.

    Returns
    -------
    Release
        What was installed; ``changed`` is False when the cache already held the same bytes
        (nothing is rewritten then, and the previous copy stays what it was).

    Raises
    ------
    Unreachable
        (an UpdateError) When no connection can be made: the machine looks offline; the
        message names the data that stays in use.
    UpdateError
        When an argument is invalid, the cache directory is unusable, a server answers with an
        error, too slowly or too much, none of manifest, ``v6/ATLAS-latest.yaml`` and
        ``ATLAS-latest.yaml`` leads to a file, or the file does not load as ATLAS data,
        references IDs it does not hold, is not the release it was fetched as, is older than
        the cached release, or holds much less than the data it would replace. The cache is
        then left as it was.
    """
    dist = _check_dist(dist_url)
    _check_timeout(timeout)
    asked = None if release is None else _check_release(release)
    target = cache_dir()
    prepare(target)
    try:
        body, url, expected, found_by = _download(dist, asked, timeout)
    except Unreachable as exc:
        raise _offline(exc, target) from None
    final, meta_path = target / CACHE_FILE, target / META_FILE
    previous, previous_meta = target / PREVIOUS_FILE, target / PREVIOUS_META
    part, meta_part = staging_path(final), staging_path(meta_path)
    sha = hashlib.sha256(body).hexdigest()
    try:
        write(part, body)
        kb = _validate(part, url, final, expected, asked is not None)
        changed = sha256_of(final) != sha
        had = final.is_file()
        kept = str(previous) if (had and changed) or (not changed and previous.is_file()) \
            else None
        result = Release(kb.version, kb.format_version, found_by, url, str(final), sha,
                         len(body), kept, changed)
        if not changed:
            return result
        meta = {**asdict(result), "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime())}
        write(meta_part, (json.dumps(meta, indent=2) + "\n").encode())
        if had:
            keep(final, previous)
            if meta_path.is_file():
                keep(meta_path, previous_meta)
            else:  # a stale description would name the wrong release
                with contextlib.suppress(OSError):
                    previous_meta.unlink(missing_ok=True)
        replace(part, final)
        replace(meta_part, meta_path)
    finally:
        for leftover in (part, meta_part):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return result
