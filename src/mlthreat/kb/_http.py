"""The HTTP download machinery of :mod:`mlthreat.kb.update`: http(s) URLs only, a body read in
chunks up to a size limit, and a deadline on the whole request.

``timeout`` bounds each wait for data; a whole request, headers and redirects included, must
finish within ``DEADLINE_FACTOR`` times ``timeout``, or its sockets are shut down. A body larger
than the caller's limit is refused (without being read, when its ``Content-Length`` says so), and
one shorter than announced is refused too. The body of a redirect is never read, and a redirect
may lead only to the same host, never from https to http.

A server that cannot be reached at all raises :class:`Unreachable` (the caller words the "looks
offline" message, knowing which data stays in use); an HTTP error status raises
:class:`HTTPStatusError` (a missing file, which a caller may answer by trying another).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from mlthreat.kb.errors import UpdateError

__all__ = ["DEADLINE_FACTOR", "HTTPStatusError", "Unreachable", "check_url", "fetch"]

DEADLINE_FACTOR = 4  # a whole request may take this many times ``timeout``
_CHUNK = 1 << 16


class Unreachable(UpdateError):
    """No connection could be made (no network, DNS failure, connection refused): ``url``, the
    ``reason`` the system gave, and ``keeps``, the data that stays in use, for the message."""

    def __init__(self, url: str, reason: str, keeps: str = "the data it has (the embedded "
                 "snapshot or the last release downloaded)") -> None:
        super().__init__(f"cannot reach {url} ({reason}): this machine looks offline; nothing "
                         f"was changed and mlthreat keeps using {keeps}")
        self.url = url
        self.reason = reason


class HTTPStatusError(UpdateError):
    """The server answered with an error status ``code``."""

    def __init__(self, url: str, code: int, reason: str) -> None:
        super().__init__(f"{url}: HTTP {code} {reason}")
        self.url = url
        self.code = code


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

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                             newurl: str) -> Any:
            # The URLs were checked by the caller; a redirect must not lead elsewhere (another
            # host, or plain http from https), or the checks would be moot.
            from urllib.parse import urlsplit

            old, new = urlsplit(req.full_url), urlsplit(newurl)
            if new.hostname != old.hostname or (old.scheme, new.scheme) == ("https", "http"):
                raise UpdateError(f"{req.full_url}: redirected to {newurl[:200]}, another host "
                                  "or a downgrade to http; refused")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

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
            raise HTTPStatusError(url, exc.code, str(exc.reason)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.passed():
                raise UpdateError(late) from None
            raise _failure(url, exc) from None
        with resp:
            return _read(resp, url, limit, deadline, late)
    finally:
        deadline.cancel()


def _failure(url: str, exc: BaseException) -> UpdateError:
    """No connection at all (DNS, refused, no route, connect timeout) is :class:`Unreachable`;
    a TLS failure or a server that hangs up without a proper answer is reachable, so it is a
    plain :class:`UpdateError` rather than a guess that the machine is offline."""
    import ssl
    import urllib.error

    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and not isinstance(reason, ssl.SSLError | ConnectionResetError):
        return Unreachable(url, reason.strerror or str(reason) or type(reason).__name__)
    text = str(reason) if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    return UpdateError(f"{url}: no usable answer ({text[:200]})")


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
