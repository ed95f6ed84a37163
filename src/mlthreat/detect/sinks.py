"""Where rendered alerts go: a JSONL file, stdout, syslog, or an HTTP collector.

A file is replaced by each run unless appended to, and then only with alerts of the format it
already holds (:class:`FileSink`, :func:`existing_format`). A run that resumes (a stream from
its checkpoint, a run from its state file) always appends: its file holds the alerts the run
delivered before it stopped, and replacing it would lose them.

Every sink has ``send(record, *, time=None)`` for one rendered alert (a JSON-ready dict from
:func:`mlthreat.detect.alerts.render`; ``time`` is the alert's epoch seconds) and ``close()``;
:func:`deliver` renders and sends a run's alerts; :func:`open_sink` turns a command-line
destination into a sink. Delivery failures raise :class:`~mlthreat.detect.errors.DetectError`
with one line naming the destination.

``syslog`` follows RFC 5424 over UDP (RFC 5426): ``<PRI>1 TIMESTAMP HOSTNAME mlthreat - alert -
BOM+JSON``, one datagram per alert. ``hec`` posts in the Splunk HTTP Event Collector style:
``{"event": record, "sourcetype": "mlthreat:alert", "time": epoch}`` with ``Authorization:
Splunk <token>``, the token read from the environment variable ``MLTHREAT_HEC_TOKEN`` only (never
an argument, so it stays out of shell history and process lists, and never in a message). A
redirect is never followed (it would carry the token to wherever the answer points): a 3xx
answer is a delivery error naming its ``Location``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time as _time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from mlthreat.detect.alerts import render, rfc3339
from mlthreat.detect.errors import DetectError

if TYPE_CHECKING:
    from mlthreat.detect.alerts import Alert

__all__ = [
    "HEC_TOKEN_ENV", "FileSink", "HecSink", "Sink", "StdoutSink", "SyslogSink", "deliver",
    "existing_format", "is_file", "open_sink",
]

HEC_TOKEN_ENV = "MLTHREAT_HEC_TOKEN"
SOURCETYPE = "mlthreat:alert"


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Sink(Protocol):
    def send(self, record: dict[str, Any], *, time: float | None = None) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Write one JSON line per alert to ``path`` (created with its directory if missing).

    The file is replaced when the sink opens, unless ``append`` or ``resuming``: then the
    alerts go after the ones already there, which must be in the same format ``fmt`` (judged by
    the file's first line, see :func:`existing_format`), so that one file never mixes formats.
    ``resuming`` names what the run resumes from (``"checkpoint DIR"``, ``"state FILE"``): a
    resumed run's file holds the alerts it delivered before, so it is never replaced.

    Raises
    ------
    DetectError
        One line naming the file: it cannot be opened, or (appending) it holds alerts in
        another format or something that is not mlthreat alerts.
    """

    def __init__(self, path: str | Path, *, append: bool = False, fmt: str = "jsonl",
                 resuming: str | None = None) -> None:
        self.path = Path(path)
        self.append = append or resuming is not None
        self.fmt = fmt
        if self.append:
            held = existing_format(self.path)
            if held not in (None, fmt):
                why = f", added to on resuming from {resuming}" if resuming else ""
                raise DetectError(f"cannot append {fmt} alerts to {self.path}: it holds {held} "
                                  f"alerts{why} (use --format {held} or another file)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[bytes] | None = self.path.open("ab" if self.append else "wb",
                                                        buffering=0)
        except OSError as exc:
            raise DetectError(f"cannot write alerts to {self.path}: {exc.strerror or exc}"
                              ) from None

    def send(self, record: dict[str, Any], *, time: float | None = None) -> None:
        """Write the record's line whole or not at all: one write of its complete bytes; if
        that fails or falls short (a full disk), the part written is cut off again."""
        data = (_line(record) + "\n").encode("utf-8")
        try:
            if self._fh is None:
                raise ValueError("sink is closed")
            start = self._fh.seek(0, os.SEEK_END)
            try:
                written = self._fh.write(data)
                if written is not None and written < len(data):
                    raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written "
                                                f"({os.strerror(errno.ENOSPC)})")
                self._fh.flush()
            except OSError:
                self._fh.truncate(start)  # no torn last line
                raise
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise DetectError(f"cannot write alerts to {self.path}: {reason}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def existing_format(path: str | Path) -> str | None:
    """The alert format of the file at ``path``, from its first non-blank line; None when the
    file is missing or empty.

    Raises
    ------
    DetectError
        Naming the file, when it cannot be read or its first line is not an mlthreat alert.
    """
    from mlthreat.detect.alerts import FORMATS, format_of

    path = Path(path)
    try:
        with path.open("rb") as fh:
            first = b""
            for raw in fh:
                if raw.strip():
                    first = raw
                    break
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DetectError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not first:
        return None
    try:
        fmt = format_of(json.loads(first.decode("utf-8-sig")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        fmt = None
    if fmt is None:
        raise DetectError(f"cannot append alerts to {path}: its first line is not an mlthreat "
                          f"alert in any format ({', '.join(FORMATS)})")
    return fmt


class StdoutSink:
    """One JSON line per alert on standard output (or the given stream)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def send(self, record: dict[str, Any], *, time: float | None = None) -> None:
        out = self.stream if self.stream is not None else sys.stdout
        out.write(_line(record) + "\n")
        out.flush()

    def close(self) -> None:
        pass


class SyslogSink:
    """RFC 5424 messages over UDP to ``host:port``.

    ``facility`` defaults to 10 (security/authorization), ``severity`` to 4 (warning).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 514, *, facility: int = 10,
                 severity: int = 4, app_name: str = "mlthreat",
                 hostname: str | None = None) -> None:
        self.host, self.port = host, port
        self.facility, self.severity = facility, severity
        self.app_name = app_name
        self.hostname = hostname
        self._sock: socket.socket | None = None

    def format(self, record: dict[str, Any], time: float | None = None) -> bytes:
        """The RFC 5424 message for one record (pure)."""
        pri = self.facility * 8 + self.severity
        stamp = rfc3339(time) if time is not None else "-"
        host = (self.hostname or socket.gethostname() or "-")[:255].replace(" ", "_")
        header = f"<{pri}>1 {stamp} {host} {self.app_name} - alert -"
        return header.encode("ascii", "replace") + b" \xef\xbb\xbf" + _line(record).encode()

    def send(self, record: dict[str, Any], *, time: float | None = None) -> None:
        where = f"syslog://{self.host}:{self.port}"
        try:
            if self._sock is None:
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.sendto(self.format(record, time), (self.host, self.port))
        except OSError as exc:
            raise DetectError(f"cannot send alert to {where}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: the 3xx answer reaches the caller as an HTTPError."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class HecSink:
    """POST alerts to an HTTP collector in the Splunk HEC style.

    A redirect (3xx) is not followed, since the request carries the token: it fails at once,
    naming the ``Location`` it pointed to.

    Parameters
    ----------
    url : str
        The collector endpoint (``https://splunk:8088/services/collector/event``).
    retries : int
        Attempts after the first on a connection error, HTTP 429 or 5xx; 3xx and other 4xx fail
        at once.
    backoff : float
        Seconds before the first retry, doubled for each next one.
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, *, retries: int = 3, backoff: float = 0.5,
                 timeout: float = 10.0, sourcetype: str = SOURCETYPE) -> None:
        self.url = url
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.sourcetype = sourcetype

    def _token(self) -> str:
        token = os.environ.get(HEC_TOKEN_ENV, "")
        if not token:
            raise DetectError(f"HTTP collector {self.url}: set {HEC_TOKEN_ENV} to its token")
        return token

    def send(self, record: dict[str, Any], *, time: float | None = None) -> None:
        body: dict[str, Any] = {"event": record, "sourcetype": self.sourcetype}
        if time is not None:
            body["time"] = round(time, 3)
        data = _line(body).encode()
        token = self._token()
        headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                _time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    response.read()
                if 300 <= response.status < 400:  # not raised by every urllib version
                    problem = _redirect(response.status, response.headers, token)
                    break
                return
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if 300 <= exc.code < 400:
                    problem = _redirect(exc.code, exc.headers, token)
                    break
                if exc.code != 429 and exc.code < 500:
                    break
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problem = str(reason).replace("\n", " ")
        tries = attempt + 1
        raise DetectError(f"cannot deliver alert to {self.url}: {problem} "
                          f"({tries} attempt{'s' if tries > 1 else ''})")

    def close(self) -> None:
        pass


def _redirect(code: int, headers: Any, token: str) -> str:
    """The problem text for a redirect not followed, its Location without the token."""
    location = str((headers.get("Location") if headers is not None else None) or "none given")
    location = location.replace(token, "***").replace("\r", " ").replace("\n", " ")
    return f"HTTP {code} redirect to {location} not followed"


def is_file(destination: str) -> bool:
    """Whether a command-line alert destination is a file (not stdout, syslog or HTTP)."""
    return destination not in ("-", "stdout") and \
        urlsplit(destination).scheme not in ("syslog", "http", "https")


def open_sink(destination: str, *, append: bool = False, fmt: str = "jsonl",
              resuming: str | None = None) -> Sink:
    """A sink for a command-line destination: ``-`` or ``stdout``, ``syslog://HOST[:PORT]``,
    ``http(s)://…`` (HEC), or a file path (replaced, unless ``append`` or ``resuming``: see
    :class:`FileSink`; other destinations ignore ``resuming``).

    Raises
    ------
    UsageError
        For ``append`` with a destination that is not a file.
    DetectError
        From :class:`FileSink`.
    """
    parts = urlsplit(destination)
    if append and not is_file(destination):
        from mlthreat.errors import UsageError

        raise UsageError(f"--append applies to an alert file, not {destination}")
    if destination in ("-", "stdout"):
        return StdoutSink()
    if parts.scheme == "syslog":
        return SyslogSink(parts.hostname or "127.0.0.1", parts.port or 514)
    if parts.scheme in ("http", "https"):
        return HecSink(destination)
    return FileSink(destination, append=append, fmt=fmt, resuming=resuming)


def deliver(alerts: Iterable[Alert], sink: Sink, fmt: str = "jsonl") -> int:
    """Render each alert in ``fmt`` and send it to ``sink``; return how many were sent."""
    n = 0
    for alert in alerts:
        sink.send(render(alert, fmt), time=alert.last_seen)
        n += 1
    return n
