"""A real HTTP server on 127.0.0.1 answering GET requests from a table of routes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: A route: ``(status, body)``, or a function given the request handler to write the answer.
Route = tuple[int, bytes] | Callable[[BaseHTTPRequestHandler], Any]


@contextlib.contextmanager
def route_server(routes: dict[str, Route]) -> Iterator[str]:
    """``with route_server(routes) as base: … f"{base}/path" …``; a path not in ``routes`` (which
    may change while the server runs) is answered 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path, (404, b"not found"))
            if callable(route):
                with contextlib.suppress(OSError):  # the client gave up, as it should
                    route(self)
                return
            status, body = route
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
