"""A JSON prediction endpoint over HTTP(S): ``http://…`` or ``https://…``.

The default protocol is the KServe V1 / TensorFlow Serving JSON convention::

    POST {"instances": [[0.0, 0.1, …], …]}
    →    {"predictions": [[0.01, 0.97, …], …]}      (scores: one row per input)
    or   {"predictions": [3, 1, …]}                   (labels: output_kind "labels", one-hot)

Other shapes are mapped with two options:

``request_template``
    Where the inputs go. Either a dotted path (``"inputs.data"`` sends
    ``{"inputs": {"data": [[…], …]}}``) or a JSON template (text or dict) in which the string
    ``"$instances"`` stands for the list of input rows and ``"$n"`` for their number. KServe V2
    (the Open Inference Protocol of Triton and MLServer)::

        request_template='{"inputs": [{"name": "input-0", "datatype": "FP32",
                           "shape": ["$n", 64], "data": "$instances"}]}'
        response_path="outputs.0.data", n_classes=10

``response_path``
    Dotted path to the list of predictions in the answer (default ``"predictions"``; list
    positions are numbers, ``""`` is the whole answer). A flat list of ``n * n_classes`` numbers
    (V2's row-major ``data``) is read as ``n`` rows when ``n_classes`` is given.

mlthreat sends no probe request: ``n_features`` (or ``input_shape``) is required; ``n_classes``
and ``output_kind`` are read from the first answer when not given (labels cannot tell how many
classes there are, so a labels endpoint needs ``n_classes``); see
:class:`~mlthreat.assess.targets._answers.AnswerTarget`.

Transport: ``timeout`` seconds per request, the whole answer included (default 10);
``retries`` (default 3) with exponential
backoff from ``backoff`` seconds (default 0.5) on connection errors, timeouts, HTTP 5xx and 429,
honouring ``Retry-After``; other 4xx answers fail at once; ``max_rps`` limits requests per
second on the client side; ``batch_size`` rows go in one request (default 64). Redirects are not
followed, so credentials never travel to another host.

Authentication comes from the environment only, never from the command line (where it would
land in shell history and process listings): ``MLTHREAT_HTTP_HEADERS`` holds a JSON object of
extra headers, ``MLTHREAT_HTTP_AUTHORIZATION`` the ``Authorization`` header's value. Their values
never appear in error messages.

Examples
--------
>>> from mlthreat.assess.targets import load_target
>>> target = load_target("http://127.0.0.1:8080/v1/models/digits:predict",
...                      n_features=64, max_rps=50)                       # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import mlthreat
from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets._answers import AnswerTarget, clip_pair, parse_shape

__all__ = ["ENV_AUTHORIZATION", "ENV_HEADERS", "SCHEME", "HttpTarget", "load"]

SCHEME = "http"
ENV_HEADERS = "MLTHREAT_HTTP_HEADERS"
ENV_AUTHORIZATION = "MLTHREAT_HTTP_AUTHORIZATION"
INSTANCES, ROW_COUNT = "$instances", "$n"
MAX_RETRY_AFTER = 60.0  # seconds; a server asking for longer fails the run instead
MAX_BACKOFF = 30.0
MAX_BODY = 64 << 20  # bytes of one answer


def _env_headers() -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = os.environ.get(ENV_HEADERS)
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in parsed.items()):
            raise TargetError(f"{ENV_HEADERS} must be a JSON object of header names to string "
                              "values (its content is not shown)")
        headers.update(parsed)
    auth = os.environ.get(ENV_AUTHORIZATION)
    if auth:
        headers["Authorization"] = auth
    for name, value in headers.items():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            bad = True
        else:
            bad = any(c in value for c in "\r\n\0")
        if bad or not name or any(c in name for c in ":\r\n \t"):
            raise TargetError(f"header {name!r} from the environment has a malformed name or "
                              "value (the value is not shown)")
    return headers


def _public_url(url: str) -> str:
    """``url`` without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _template(where: str, spec: Any) -> Any:
    """The request template as JSON data with ``$instances`` (and maybe ``$n``) placeholders."""
    if spec is None:
        return {"instances": INSTANCES}
    if isinstance(spec, str) and spec.lstrip().startswith(("{", "[")):
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise TargetError(f"{where}: request_template is not valid JSON ({exc})") from None
    elif isinstance(spec, str):
        keys = [k for k in spec.split(".") if k]
        if not keys:
            raise TargetError(f"{where}: request_template {spec!r} is an empty path")
        template: Any = INSTANCES
        for key in reversed(keys):
            template = {key: template}
        return template
    found = json.dumps(spec).count(json.dumps(INSTANCES))
    if found != 1:
        raise TargetError(f"{where}: request_template must hold the placeholder "
                          f"{INSTANCES!r} exactly once (found {found})")
    return spec


def _fill(template: Any, rows: list[Any]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, rows) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, rows) for v in template]
    if template == INSTANCES:
        return rows
    if template == ROW_COUNT:
        return len(rows)
    return template


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class HttpTarget(AnswerTarget):
    """A remote model behind a JSON prediction endpoint (black-box). See the module docstring
    for the protocol, the mapping options and the transport settings.

    Parameters
    ----------
    url : str
    input_shape : tuple of int
    n_classes, classes, output_kind, task, softmax, clip_values
        As for :class:`~mlthreat.assess.targets.python.PythonTarget`.
    timeout : float
        Seconds to wait for each request.
    retries : int
        Retries after the first attempt, on connection errors, timeouts, 5xx and 429.
    backoff : float
        First wait between attempts in seconds, doubled each time (``Retry-After`` wins).
    max_rps : float, optional
        Most requests per second (every attempt counts).
    batch_size : int
        Most input rows per request.
    request_template, response_path
        The request/response mapping.

    Attributes
    ----------
    requests : int
        HTTP requests sent so far, every attempt included (``total_queries`` counts rows
        answered).
    """

    kind = "http"
    access = "black-box"

    def __init__(self, url: str, *, input_shape: tuple[int, ...], n_classes: int | None = None,
                 classes: list[Any] | None = None, output_kind: str | None = None,
                 task: str | None = None, softmax: bool = False,
                 clip_values: tuple[Any, Any] | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.5, max_rps: float | None = None,
                 batch_size: int = 64, request_template: Any = None,
                 response_path: str = "predictions", input_dtype: str = "float32",
                 model_id: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.description = _public_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(f"{self.description}: not an http(s) URL")
        where = self.description
        self.model_id = model_id or f"{parts.hostname}{parts.path}".rstrip("/")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_dtype = input_dtype
        self.clip_values = clip_pair(where, clip_values)
        try:
            self.timeout = float(timeout)
            self.retries = int(retries)
            self.backoff = float(backoff)
            self.max_rps = float(max_rps) if max_rps not in (None, "", 0) else None
            self.batch_size = int(batch_size)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"{where}: bad transport option ({exc})") from None
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.batch_size < 1 \
                or (self.max_rps is not None and self.max_rps <= 0):
            raise TargetError(f"{where}: timeout, max_rps and batch_size must be positive, "
                              "retries and backoff not negative")
        self._template = _template(where, request_template)
        self.response_path = [k for k in str(response_path or "").split(".") if k]
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": f"mlthreat/{mlthreat.__version__}", **_env_headers()}
        values = [v for k, v in self._headers.items()
                  if k not in ("Content-Type", "Accept", "User-Agent") and v]
        # the whole values, and their parts (the token after "Bearer ", say), longest first
        pieces = {p for v in values for p in v.split() if len(p) >= 6}
        self._secrets = sorted(set(values) | pieces, key=len, reverse=True)
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.requests = 0  # HTTP requests sent, every attempt included (see Attributes)
        self._init_answers(n_classes=n_classes, classes=classes, output_kind=output_kind,
                           task=task, softmax=softmax)

    # -- transport ------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _snippet(self, body: bytes) -> str:
        text = " ".join(body[:200].decode("utf-8", "replace").split())
        return repr(self._redact(text[:80]))

    def _throttle(self) -> None:
        if self.max_rps is None:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self.max_rps
        if wait > 0:
            time.sleep(wait)

    def _retry_after(self, headers: Any) -> float | None:
        value = headers.get("Retry-After") if headers is not None else None
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def _read_body(self, response: Any, deadline: float) -> bytes:
        """The answer's body, at most ``MAX_BODY + 1`` bytes, read in chunks until
        ``deadline`` (monotonic seconds): the socket timeout bounds one read only, so an
        endpoint that trickles its answer a byte at a time would otherwise never end.

        Raises
        ------
        TimeoutError
            When the body is not complete by the deadline (retried like any timeout).
        """
        parts: list[bytes] = []
        size = 0
        while size <= MAX_BODY:
            if time.monotonic() > deadline:
                raise TimeoutError(f"answer not complete within {self.timeout:g} s")
            chunk = response.read1(min(1 << 16, MAX_BODY + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def _post(self, payload: Any) -> Any:
        where = self.description
        try:
            body = json.dumps(payload, allow_nan=False).encode()
        except ValueError:
            raise TargetError(f"{where}: inputs contain NaN or infinity, "
                              "which JSON cannot carry") from None
        attempt = 0
        while True:
            self._throttle()
            self.requests += 1
            request = urllib.request.Request(self.url, data=body, headers=self._headers,
                                             method="POST")
            wait: float | None = None
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = self._read_body(response, time.monotonic() + self.timeout)
                    if len(raw) > MAX_BODY:
                        raise TargetError(f"{where}: answer larger than {MAX_BODY >> 20} MiB; "
                                          "lower batch_size")
                    ctype = response.headers.get("Content-Type", "") or "no content type"
                break
            except urllib.error.HTTPError as exc:
                status = exc.code
                detail = self._snippet(exc.read() if exc.fp is not None else b"")
                if status in (301, 302, 303, 307, 308):
                    raise TargetError(f"{where}: HTTP {status} redirect to "
                                      f"{_public_url(exc.headers.get('Location', '?'))}, not "
                                      "followed (so credentials stay with this host); use the "
                                      "final URL") from None
                if status != 429 and status < 500:
                    hint = (f" (set {ENV_AUTHORIZATION} or {ENV_HEADERS})"
                            if status in (401, 403) else "")
                    raise TargetError(f"{where}: HTTP {status} {exc.reason}{hint}: "
                                      f"{detail}") from None
                cause = f"HTTP {status} {exc.reason}"
                wait = self._retry_after(exc.headers)
                if wait is not None and wait > MAX_RETRY_AFTER:
                    raise TargetError(f"{where}: {cause}, asked to retry after {wait:.0f} s "
                                      f"(more than {MAX_RETRY_AFTER:.0f} s)") from None
            except TimeoutError:
                cause = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    cause = f"timed out after {self.timeout:g} s"
                else:
                    cause = f"connection failed ({self._redact(str(exc.reason))})"
            except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, bad lines
                cause = f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})"
            if attempt >= self.retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise TargetError(f"{where}: {cause}{tries}")
            if wait is None:
                wait = min(MAX_BACKOFF, self.backoff * 2 ** attempt)
            time.sleep(wait)
            attempt += 1
        try:
            return json.loads(raw)
        except ValueError:
            raise TargetError(f"{where} answered non-JSON ({ctype}): "
                              f"{self._snippet(raw)}") from None
        except RecursionError:  # JSON nested deeper than Python's parser goes
            raise TargetError(f"{where} answered JSON nested too deeply to read: "
                              f"{self._snippet(raw)}") from None

    # -- protocol -------------------------------------------------------------------------------
    def _extract(self, answer: Any, n: int) -> Any:
        where = self.description
        value = answer
        for i, key in enumerate(self.response_path):
            path = ".".join(self.response_path[: i + 1])
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                keys = f" (keys: {', '.join(list(value)[:10])})" if isinstance(value, dict) else ""
                raise TargetError(f"{where}: the answer has no {path!r}{keys}; "
                                  "set response_path")
        k = self._n_classes
        if isinstance(value, list) and k and k > 1 and n > 0 and len(value) == n * k and \
                all(not isinstance(v, list | dict) for v in value) and self.task != "regression":
            value = [value[i * k:(i + 1) * k] for i in range(n)]  # flat row-major (KServe V2)
        return value

    def _predict(self, x: Any) -> Any:
        import numpy as np

        n = len(x)
        if n == 0:
            return np.zeros(0) if self.task == "regression" else np.zeros((0, self.n_classes))
        parts = []
        for start in range(0, n, self.batch_size):
            rows = x[start:start + self.batch_size]
            answer = self._post(_fill(self._template, rows.tolist()))
            parts.append(self._to_output(self._extract(answer, len(rows)), len(rows)))
        return np.concatenate(parts)


def load(url: str, *, n_features: Any = None, input_shape: Any = None,
         n_classes: int | None = None, classes: list[Any] | None = None,
         output_kind: str | None = None, task: str | None = None, softmax: bool = False,
         clip_values: tuple[Any, Any] | None = None, timeout: float = 10.0, retries: int = 3,
         backoff: float = 0.5, max_rps: float | None = None, batch_size: int = 64,
         request_template: Any = None, response_path: str = "predictions",
         input_dtype: str = "float32", model_id: str | None = None,
         **options: Any) -> HttpTarget:
    """The endpoint at ``url`` as a target (see the module docstring for the options).

    Raises
    ------
    TargetError
        Not an http(s) URL; no ``n_features``/``input_shape``; a bad mapping or transport
        option; ``headers`` or ``authorization`` given as options (they belong in the
        environment); malformed ``MLTHREAT_HTTP_HEADERS``.
    """
    where = _public_url(url)
    for name in ("headers", "authorization", "auth", "token"):
        if options.get(name) is not None:
            raise TargetError(f"{where}: credentials are read from the environment only: set "
                              f"{ENV_AUTHORIZATION} or {ENV_HEADERS}, not the {name} option")
    shape = parse_shape(where, input_shape, n_features,
                        "mlthreat sends no probe request to find out")
    return HttpTarget(url, input_shape=shape, n_classes=n_classes, classes=classes,
                      output_kind=output_kind, task=task, softmax=softmax,
                      clip_values=clip_values, timeout=timeout, retries=retries, backoff=backoff,
                      max_rps=max_rps, batch_size=batch_size, request_template=request_template,
                      response_path=response_path, input_dtype=input_dtype, model_id=model_id)
