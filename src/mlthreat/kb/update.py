"""Download the newest official ATLAS release into the user cache directory.

The release is found through the GitHub releases API of ``mitre-atlas/atlas-data`` and its
``dist/ATLAS.yaml`` fetched from that tag. The file is checked before it replaces the cached copy,
so a failed, partial or hostile download never leaves a broken cache: it must load as ATLAS data,
every ID its objects reference must be in it, and it must hold at least as many tactics,
techniques, mitigations and case studies as the data it replaces (the cached release, else the
embedded snapshot), which catches a file cut short that still parses. Every later ``mlthreat``
command uses the cached release until ``--atlas`` or ``MLTHREAT_ATLAS`` says otherwise; delete it
with ``mlthreat kb update --remove`` to go back to the embedded snapshot.

Each request must finish within ``DEADLINE_FACTOR`` times ``timeout`` seconds in all (``timeout``
bounds each wait for data) and its body may hold at most ``MAX_RELEASE_BYTES`` (the release JSON)
or ``MAX_ATLAS_BYTES`` (ATLAS.yaml); a larger body is refused without being read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlthreat.kb._http import DEADLINE_FACTOR as DEADLINE_FACTOR  # named in the docs above
from mlthreat.kb._http import check_url, fetch
from mlthreat.kb.cache import CACHE_FILE, META_FILE, cache_dir, cached_release
from mlthreat.kb.errors import KnowledgeBaseError, UpdateError

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["RELEASES_API", "Release", "cache_dir", "cached_release", "remove", "update"]

RELEASES_API = "https://api.github.com/repos/mitre-atlas/atlas-data/releases/latest"
RAW_URL = "https://raw.githubusercontent.com/mitre-atlas/atlas-data/{tag}/dist/ATLAS.yaml"
MAX_RELEASE_BYTES = 1 << 20  # the release JSON: GitHub's is a few kB
MAX_ATLAS_BYTES = 16 << 20  # ATLAS.yaml: 0.45 MB in 5.6.0; parsing 16 MiB of YAML peaks ~1.5 GB
MAX_TIMEOUT = 3600.0
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a plain tag: nothing to inject into a URL


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


# -- argument checks ----------------------------------------------------------------------------
def _check_template(raw_url: str) -> None:
    """Only ``{tag}`` may be a field of the template (``{{``/``}}`` are literal braces)."""
    import string

    why = "only {tag} may stand in braces (write {{ and }} for literal ones)"
    try:
        fields = [(n, s, c) for _, n, s, c in string.Formatter().parse(raw_url) if n is not None]
    except ValueError as exc:
        raise UpdateError(f"ATLAS.yaml URL template {raw_url!r}: {exc}; {why}") from None
    bad = [n + (f"!{c}" if c else "") + (f":{s}" if s else "") for n, s, c in fields
           if n != "tag" or s or c]
    if bad:
        raise UpdateError(f"ATLAS.yaml URL template {raw_url!r} has the field {{{bad[0]}}}; {why}")
    check_url(raw_url.format(tag="v0"), "ATLAS.yaml URL template")


def _check_timeout(timeout: float) -> None:
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT):
        raise UpdateError(f"timeout must be a number of seconds above 0 and at most "
                          f"{MAX_TIMEOUT:g}, not {timeout!r}")


def _tag(body: bytes, api: str) -> str:
    try:
        doc = json.loads(body)
    except RecursionError:
        raise UpdateError(f"{api}: the answer is nested too deeply to be a release") from None
    except ValueError as exc:
        raise UpdateError(f"{api}: the answer is not JSON ({exc}), so no 'tag_name'") from None
    tag = doc.get("tag_name") if isinstance(doc, dict) else None
    if tag is None:
        raise UpdateError(f"{api}: no 'tag_name' in the answer")
    if not isinstance(tag, str):
        raise UpdateError(f"{api}: 'tag_name' is a {type(tag).__name__}, not a string")
    if not _TAG.fullmatch(tag):
        raise UpdateError(f"{api}: 'tag_name' {tag[:80]!r} is not a plain release tag (up to "
                          "64 letters, digits, '.', '_' or '-', starting with a letter or digit)")
    return tag


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


def _baseline(final: Path) -> tuple[KnowledgeBase, str]:
    """The data a download would replace: the cached release if it loads, else the snapshot."""
    from mlthreat.kb.sources import load_file
    from mlthreat.kb.sources.snapshot import load_embedded

    if cached_release() is not None:
        try:
            return load_file(final), f"the cached release {final}"
        except Exception:  # a broken cache is replaced, not compared with
            pass
    return load_embedded(), "the embedded snapshot"


def _validate(part: Path, url: str, final: Path) -> KnowledgeBase:
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
    old, where = _baseline(final)
    fewer = [f"{len(getattr(kb, attr))} {label} against {len(getattr(old, attr))}"
             for label, attr in _COUNTS if len(getattr(kb, attr)) < len(getattr(old, attr))]
    if fewer:
        raise UpdateError(f"{url} holds fewer objects than {where} (ATLAS {old.version}) it would "
                          f"replace: {', '.join(fewer)}; a truncated download or an older release? "
                          f"mlthreat keeps using {where}")
    return kb


# -- the cache ----------------------------------------------------------------------------------
def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _prepare(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UpdateError(f"cannot use the cache directory {target}: it is a file; set "
                          "MLTHREAT_CACHE_DIR to a directory") from None
    except OSError as exc:
        raise UpdateError(f"cannot use the cache directory {target}: {_why(exc)}") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise UpdateError(f"cannot use the cache directory {target}: not writable")
    for name in (CACHE_FILE, META_FILE):
        path = target / name
        if path.is_dir():
            raise UpdateError(f"cannot install into {path}: it is a directory; remove it")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UpdateError(f"cannot write {path}: {_why(exc)}") from None


def _replace(part: Path, path: Path) -> None:
    try:
        os.replace(part, path)
    except OSError as exc:
        raise UpdateError(f"cannot install {path}: {_why(exc)}") from None


def update(
    *, releases_api: str = RELEASES_API, raw_url: str = RAW_URL, timeout: float = 30.0
) -> Release:
    """Download the newest official release and install it in :func:`cache_dir`.

    Parameters
    ----------
    releases_api : str
        URL of a GitHub-style "latest release" JSON document (its ``tag_name`` is used; it must
        be a plain tag of letters, digits, ``.``, ``_`` and ``-``).
    raw_url : str
        URL template of the release's ATLAS.yaml; ``{tag}`` is its only allowed field.
    timeout : float
        Seconds to wait for each connection and each read, above 0 and at most ``MAX_TIMEOUT``.
        A whole request may take ``DEADLINE_FACTOR`` (4) times as long.

    Raises
    ------
    UpdateError
        When an argument is invalid, the cache directory is unusable, a server cannot be
        reached, answers with an error, too slowly or too much, or serves data that does not
        load as ATLAS, references IDs it does not hold, or holds fewer objects than the data it
        would replace; the cached copy is then left as it was.
    """
    check_url(releases_api, "releases API URL")
    _check_template(raw_url)
    _check_timeout(timeout)
    target = cache_dir()
    _prepare(target)
    tag = _tag(fetch(releases_api, timeout, MAX_RELEASE_BYTES), releases_api)
    url = raw_url.format(tag=tag)
    body = fetch(url, timeout, MAX_ATLAS_BYTES)
    final, meta_path = target / CACHE_FILE, target / META_FILE
    part = target / f".{CACHE_FILE}.{os.getpid()}.part"
    meta_part = target / f".{META_FILE}.{os.getpid()}.part"
    try:
        _write(part, body)
        kb = _validate(part, url, final)
        release = Release(kb.version, tag, url, str(final), hashlib.sha256(body).hexdigest(),
                          len(body))
        meta = {**release.__dict__,
                "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write(meta_part, (json.dumps(meta, indent=2) + "\n").encode())
        _replace(part, final)
        _replace(meta_part, meta_path)
    finally:
        for leftover in (part, meta_part):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return release


def remove() -> bool:
    """Delete the downloaded release; return whether there was one.

    Raises
    ------
    UpdateError
        When a cache entry cannot be deleted (it is a directory, or not writable).
    """
    found = False
    for name in (CACHE_FILE, META_FILE):
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
