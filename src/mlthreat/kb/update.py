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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.kb.cache import CACHE_FILE, META_FILE, cache_dir, cached_release
from mlthreat.kb.errors import KnowledgeBaseError, UpdateError

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["RELEASES_API", "Release", "cache_dir", "cached_release", "remove", "update"]

RELEASES_API = "https://api.github.com/repos/mitre-atlas/atlas-data/releases/latest"
RAW_URL = "https://raw.githubusercontent.com/mitre-atlas/atlas-data/{tag}/dist/ATLAS.yaml"
MAX_RELEASE_BYTES = 1 << 20  # the release JSON: GitHub's is a few kB
MAX_ATLAS_BYTES = 16 << 20  # ATLAS.yaml: 0.45 MB in 5.6.0; parsing 16 MiB of YAML peaks ~1.5 GB
DEADLINE_FACTOR = 4  # a whole request may take this many times ``timeout``
MAX_TIMEOUT = 3600.0
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a plain tag: nothing to inject into a URL
_CHUNK = 1 << 16


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


# -- HTTP ---------------------------------------------------------------------------------------
class _Deadline:
    """Shuts the sockets of a request down when its time is up, so that a server dripping bytes
    (each within ``timeout``) cannot hold the request open for ever, headers included."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._conns: list[Any] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def track(self, cls: type) -> Any:
        def connect(host: str, **kwargs: Any) -> Any:
            conn = cls(host, **kwargs)
            self._conns.append(conn)
            return conn

        return connect

    def passed(self) -> bool:
        return self.expired or time.monotonic() > self.end

    def _expire(self) -> None:
        import socket

        self.expired = True
        for conn in self._conns:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _opener(deadline: _Deadline) -> Any:
    """http(s) only (redirects too), every connection watched by ``deadline``."""
    import http.client
    import io
    import urllib.request

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(deadline.track(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(deadline.track(http.client.HTTPSConnection), req,
                                context=self._context)  # type: ignore[attr-defined]

    class Redirect(urllib.request.HTTPRedirectHandler):
        def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
            fp.close()  # the body of a redirect is never read: it could be endless
            return super().http_error_302(req, io.BytesIO(), code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), HTTP(),
                    HTTPS(), urllib.request.HTTPDefaultErrorHandler(), Redirect(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _get(url: str, timeout: float, limit: int) -> bytes:
    """The body at ``url``, read in chunks: at most ``limit`` bytes, within the deadline."""
    import http.client
    import urllib.error
    import urllib.request

    deadline = _Deadline(timeout * DEADLINE_FACTOR)
    late = (f"{url}: no complete answer within {deadline.seconds:g} s ({DEADLINE_FACTOR} times the "
            f"{timeout:g} s timeout); the server is too slow or stalling")
    req = urllib.request.Request(url, headers={"User-Agent": "mlthreat", "Accept": "*/*"})
    try:
        try:
            resp = _opener(deadline).open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise UpdateError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.passed():
                raise UpdateError(late) from None
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            raise UpdateError(
                f"cannot reach {url} ({reason}); offline? mlthreat keeps working with the data "
                "it has (the embedded snapshot or the last release downloaded)"
            ) from None
        with resp:
            return _read(resp, url, limit, deadline, late)
    finally:
        deadline.cancel()


def _read(resp: Any, url: str, limit: int, deadline: _Deadline, late: str) -> bytes:
    import http.client

    too_big = f"{url}: the answer is larger than {limit:,} bytes, the most mlthreat accepts here"
    declared = resp.headers.get("Content-Length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else None
    if size is not None and size > limit:
        raise UpdateError(f"{too_big} ({size:,} bytes announced)")
    chunks: list[bytes] = []
    got = 0
    try:
        while True:
            if deadline.passed():
                raise UpdateError(late)
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise UpdateError(too_big)
            chunks.append(chunk)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.passed():
            raise UpdateError(late) from None
        raise UpdateError(f"{url}: the download broke off after {got:,} bytes "
                          f"({type(exc).__name__}: {exc})") from None
    if deadline.expired:
        raise UpdateError(late)
    if size is not None and got < size:
        raise UpdateError(f"{url}: the connection closed after {got:,} of the {size:,} bytes "
                          "announced")
    return b"".join(chunks)


# -- argument checks ----------------------------------------------------------------------------
def _check_url(url: str, what: str) -> None:
    from urllib.parse import urlsplit

    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise UpdateError(f"{what} {url!r} holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise UpdateError(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpdateError(f"{what} is not an http(s) URL: {url}")


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
    _check_url(raw_url.format(tag="v0"), "ATLAS.yaml URL template")


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
    _check_url(releases_api, "releases API URL")
    _check_template(raw_url)
    _check_timeout(timeout)
    target = cache_dir()
    _prepare(target)
    tag = _tag(_get(releases_api, timeout, MAX_RELEASE_BYTES), releases_api)
    url = raw_url.format(tag=tag)
    body = _get(url, timeout, MAX_ATLAS_BYTES)
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
