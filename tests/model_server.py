"""A real HTTP server on 127.0.0.1 for the HTTP target's tests: each request is recorded and
answered by a function the test gives."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# respond(payload, headers) -> body (JSON-able, 200) or (status, body, headers); bytes bodies
# are sent as they are.
Responder = Callable[[Any, dict[str, str]], Any]


class ModelServer:
    """``with ModelServer(respond) as server: … server.url …``; ``server.requests`` holds
    ``{"headers": {...}, "json": payload}`` per request received."""

    def __init__(self, respond: Responder, path: str = "/v1/models/m:predict") -> None:
        self.respond = respond
        self.path = path
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                headers = dict(self.headers.items())
                outer.requests.append({"headers": headers, "json": payload, "path": self.path})
                answer = outer.respond(payload, headers)
                status, body, extra = 200, answer, {}
                if isinstance(answer, tuple):
                    status, body, extra = (*answer, {})[:3]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", extra.pop("Content-Type",
                                                               "application/json"))
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_estimator(model: Any, *, labels: bool = False) -> Responder:
    """KServe V1 answers from a scikit-learn classifier: probability rows, or bare labels."""
    import numpy as np

    def respond(payload: Any, headers: dict[str, str]) -> Any:
        x = np.asarray(payload["instances"], dtype="float64")
        if labels:
            return {"predictions": model.predict(x).tolist()}
        return {"predictions": model.predict_proba(x).tolist()}

    return respond
