"""``kb update`` against a real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from atlas_paths import ATLAS_YAML, RELEASES

from mlthreat import kb as kbmod
from mlthreat.kb import update as upd


@pytest.fixture
def server():
    routes: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, routes
    httpd.shutdown()
    httpd.server_close()


def test_update_downloads_validates_and_is_used(server):
    base, routes = server
    routes["/latest"] = (200, json.dumps({"tag_name": "v5.0.0"}).encode())
    routes["/v5.0.0/ATLAS.yaml"] = (200, (RELEASES / "ATLAS-5.0.0.yaml").read_bytes())
    release = upd.update(releases_api=f"{base}/latest", raw_url=f"{base}/{{tag}}/ATLAS.yaml",
                         timeout=5)
    assert (release.version, release.tag) == ("5.0.0", "v5.0.0")
    assert release.size == (RELEASES / "ATLAS-5.0.0.yaml").stat().st_size
    assert upd.cached_release() is not None
    loaded = kbmod.load()
    assert loaded.version == "5.0.0" and loaded.source == release.path
    assert kbmod.load(ATLAS_YAML).version == "5.6.0"  # an explicit file still wins
    meta = json.loads((upd.cache_dir() / "release.json").read_text())
    assert meta["sha256"] == release.sha256
    assert upd.remove() is True
    assert kbmod.load().source == "embedded snapshot"


def test_bad_download_keeps_previous_cache(server):
    base, routes = server
    routes["/latest"] = (200, b'{"tag_name": "v9"}')
    routes["/v9/ATLAS.yaml"] = (200, b"<html>rate limited</html>")
    with pytest.raises(kbmod.UpdateError, match="did not serve ATLAS data"):
        upd.update(releases_api=f"{base}/latest", raw_url=f"{base}/{{tag}}/ATLAS.yaml",
                   timeout=5)
    assert upd.cached_release() is None
    assert list(upd.cache_dir().iterdir()) == []
    with pytest.raises(kbmod.UpdateError, match="HTTP 404"):
        upd.update(releases_api=f"{base}/missing", timeout=5)
    routes["/latest"] = (200, b"{}")
    with pytest.raises(kbmod.UpdateError, match="no 'tag_name'"):
        upd.update(releases_api=f"{base}/latest", timeout=5)


def test_offline_gives_clear_error():
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(kbmod.UpdateError, match=r"cannot reach .*offline"):
        upd.update(releases_api="http://127.0.0.1:9/latest", timeout=2)
