"""The HTTP download machinery of :mod:`mlthreat.kb.update`: http(s) URLs only, a body read in
chunks up to a size limit, and a deadline on the whole request.

``timeout`` bounds each wait for data; a whole request, headers and redirects included, must
finish within ``DEADLINE_FACTOR`` times ``timeout``, or its sockets are shut down. A body larger
than the caller's limit is refused (without being read, when its ``Content-Length`` says so), and
one shorter than announced is refused too. The body of a redirect is never read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from mlthreat.kb.errors import UpdateError

__all__ = ["DEADLINE_FACTOR", "check_url", "fetch"]

DEADLINE_FACTOR = 4  # a whole request may take this many times ``timeout``
_CHUNK = 1 << 16


def check_url(url: str, what: str) -> None:
    """Refuse anything but a plain http(s) URL; ``what`` names the URL in the message."""
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


def fetch(url: str, timeout: float, limit: int) -> bytes:
    """The body at ``url``, read in chunks: at most ``limit`` bytes, within ``DEADLINE_FACTOR``
    times ``timeout`` seconds in all. Raises UpdateError naming the URL and what went wrong."""
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
