"""``kb update`` against a real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from atlas_paths import ATLAS_YAML, RELEASES
from route_server import Route, route_server

from mlthreat import kb as kbmod
from mlthreat.kb import update as upd

OFFICIAL = ATLAS_YAML.read_bytes()


@pytest.fixture(scope="module")
def _http():
    """Routes map a path to ``(status, body)`` or to a function writing the answer itself."""
    routes: dict[str, Route] = {}
    with route_server(routes) as base:
        yield base, routes


@pytest.fixture
def server(_http):
    base, routes = _http
    routes.clear()
    return base, routes


def _update(base, **kwargs):
    kwargs.setdefault("releases_api", f"{base}/latest")
    kwargs.setdefault("raw_url", f"{base}/{{tag}}/ATLAS.yaml")
    kwargs.setdefault("timeout", 5)
    return upd.update(**kwargs)


def _serve(routes, body, tag="v5.6.0"):
    routes["/latest"] = (200, json.dumps({"tag_name": tag}).encode())
    routes[f"/{tag}/ATLAS.yaml"] = (200, body)


def _cache_listing():
    return sorted(p.name for p in upd.cache_dir().iterdir())


def test_update_downloads_validates_and_is_used(server):
    base, routes = server
    _serve(routes, OFFICIAL)
    release = _update(base)
    assert (release.version, release.tag) == ("5.6.0", "v5.6.0")
    assert release.size == len(OFFICIAL)
    assert upd.cached_release() is not None
    loaded = kbmod.load()
    assert loaded.version == "5.6.0" and loaded.source == release.path
    assert kbmod.load(RELEASES / "ATLAS-5.0.0.yaml").version == "5.0.0"  # explicit file wins
    meta = json.loads((upd.cache_dir() / "release.json").read_text())
    assert meta["sha256"] == release.sha256
    assert _cache_listing() == ["ATLAS.yaml", "release.json"]
    assert upd.remove() is True
    assert kbmod.load().source == "embedded snapshot"


def test_bad_download_keeps_previous_cache(server):
    base, routes = server
    routes["/latest"] = (200, b'{"tag_name": "v9"}')
    routes["/v9/ATLAS.yaml"] = (200, b"<html>rate limited</html>")
    with pytest.raises(kbmod.UpdateError, match="did not serve ATLAS data"):
        _update(base)
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


def _truncated_half(tmp_path):
    """The first half of the official file, cut at the first line where it still loads."""
    lines = OFFICIAL.decode().splitlines(keepends=True)
    cut = len(lines) // 2
    for end in range(cut, cut + 100):
        text = "".join(lines[:end])
        path = tmp_path / "half.yaml"
        path.write_text(text)
        try:
            kbmod.load_file(path)
        except kbmod.DataFileError:
            continue
        return text.encode()
    raise AssertionError("no loadable cut")


def test_truncated_or_older_release_does_not_replace_the_cache(server, tmp_path):
    base, routes = server
    _serve(routes, OFFICIAL)
    _update(base)
    cached = (upd.cache_dir() / "ATLAS.yaml").read_bytes()
    _serve(routes, _truncated_half(tmp_path), tag="v5.6.1")
    with pytest.raises(kbmod.UpdateError,
                       match=r"fewer objects than the cached release .*0 case studies against 57"):
        _update(base)
    assert (upd.cache_dir() / "ATLAS.yaml").read_bytes() == cached
    assert _cache_listing() == ["ATLAS.yaml", "release.json"]  # no part file left behind
    # No cache: the embedded 5.6.0 snapshot is what an older release would replace.
    upd.remove()
    _serve(routes, (RELEASES / "ATLAS-5.0.0.yaml").read_bytes(), tag="v5.0.0")
    with pytest.raises(kbmod.UpdateError, match=r"embedded snapshot .*130 techniques against 170"):
        _update(base)
    assert _cache_listing() == []


def test_dangling_references_are_refused(server, tmp_path):
    base, routes = server
    body = OFFICIAL.replace(b"subtechnique-of: AML.T0000\n", b"subtechnique-of: AML.T0999\n", 1)
    assert body != OFFICIAL
    _serve(routes, body)
    with pytest.raises(kbmod.UpdateError, match=r"did not serve \w* ?ATLAS data"):
        _update(base)
    assert _dangling_names(body, tmp_path)
    assert _cache_listing() == []


def _dangling_names(body, tmp_path):
    path = tmp_path / "dangling.yaml"
    path.write_bytes(body)
    try:
        return upd._dangling(kbmod.load_file(path))
    except kbmod.DataFileError:
        return ["refused by the loader"]  # the loaders may check references themselves


def test_non_atlas_failure_of_the_parser_is_an_update_error(server):
    base, routes = server
    # An integer too long for Python to convert: a ValueError, not a YAML error.
    _serve(routes, b"version: 1\nmatrices: []\nhuge: " + b"7" * 5000 + b"\n")
    with pytest.raises(kbmod.UpdateError, match=r"did not serve (valid )?ATLAS data"):
        _update(base)
    assert _cache_listing() == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"releases_api": "http://127.0.0.1:abc/x"}, "not a valid URL"),
    ({"releases_api": "ftp://127.0.0.1/x"}, "not an http"),
    ({"releases_api": "http://127.0.0.1/a b"}, "spaces"),
    ({"raw_url": "http://127.0.0.1/{x}"}, r"field \{x\}; only \{tag\}"),
    ({"raw_url": "http://127.0.0.1/{0}"}, r"field \{0\}"),
    ({"raw_url": "http://127.0.0.1/{tag!r}"}, r"field \{tag!r\}"),
    ({"raw_url": "http://127.0.0.1/{"}, "Single '{'"),
    ({"raw_url": "http://127.0.0.1:99999/{tag}"}, "not a valid URL"),
    ({"timeout": float("inf")}, "timeout must be"),
    ({"timeout": float("nan")}, "timeout must be"),
    ({"timeout": -1}, "timeout must be"),
    ({"timeout": 0}, "timeout must be"),
])
def test_bad_arguments_are_refused_before_any_request(kwargs, match):
    with pytest.raises(kbmod.UpdateError, match=match):
        upd.update(**{"releases_api": "http://127.0.0.1:9/latest", **kwargs})


@pytest.mark.parametrize(("answer", "match"), [
    (b'{"tag_name": {"a": 1}}', "'tag_name' is a dict"),
    (b'{"tag_name": "../../evil?x="}', "not a plain release tag"),
    (b'{"tag_name": "v1 2"}', "not a plain release tag"),
    (b'{"tag_name": "' + b"v" * 65 + b'"}', "not a plain release tag"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff\xfe not json", "not JSON"),
    (b"[1, 2]", "no 'tag_name'"),
])
def test_bad_release_answers(server, answer, match):
    base, routes = server
    routes["/latest"] = (200, answer)
    with pytest.raises(kbmod.UpdateError, match=match):
        _update(base)


def test_short_oversized_and_slow_answers(server, monkeypatch):
    base, routes = server

    def short(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"tag_name": "v1"')

    def endless(h):  # no Content-Length: the size is only known by reading
        h.send_response(200)
        h.end_headers()
        while True:
            h.wfile.write(b" " * 65536)

    def drip_body(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        while True:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.05)

    def drip_headers(h):
        h.wfile.write(b"HTTP/1.0 200 OK\r\n")
        while True:
            h.wfile.write(b"X-Slow: 1\r\n")
            h.wfile.flush()
            time.sleep(0.05)

    routes.update({"/short": short, "/endless": endless, "/body": drip_body,
                   "/headers": drip_headers, "/big": (200, b" " * (upd.MAX_RELEASE_BYTES + 1))})
    with pytest.raises(kbmod.UpdateError, match=r"closed after 17 of the 1,000 bytes"):
        _update(base, releases_api=f"{base}/short")
    with pytest.raises(kbmod.UpdateError, match=r"larger than 1,048,576 bytes.*announced"):
        _update(base, releases_api=f"{base}/big")
    with pytest.raises(kbmod.UpdateError, match=r"larger than 1,048,576 bytes"):
        _update(base, releases_api=f"{base}/endless")
    for path in ("/body", "/headers"):
        start = time.monotonic()
        with pytest.raises(kbmod.UpdateError, match=r"no complete answer within 1.2 s"):
            _update(base, releases_api=f"{base}{path}", timeout=0.3)
        assert time.monotonic() - start < 5
    # The ATLAS.yaml limit applies to the second request.
    monkeypatch.setattr(upd, "MAX_ATLAS_BYTES", 1000)
    _serve(routes, OFFICIAL)
    with pytest.raises(kbmod.UpdateError, match=r"ATLAS.yaml: the answer is larger than 1,000"):
        _update(base)
    assert _cache_listing() == []


def test_redirect_body_is_not_read(server):
    base, routes = server
    _serve(routes, OFFICIAL)

    def redirect(h):
        h.send_response(302)
        h.send_header("Location", "/latest")
        h.end_headers()
        while True:
            h.wfile.write(b" " * 65536)

    routes["/moved"] = redirect
    assert _update(base, releases_api=f"{base}/moved").version == "5.6.0"


def test_unusable_cache_directory(server, monkeypatch, tmp_path):
    base, routes = server
    _serve(routes, OFFICIAL)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for cache, match in ((a_file, "it is a file"), (a_file / "sub", "Not a directory")):
        monkeypatch.setenv("MLTHREAT_CACHE_DIR", str(cache))
        with pytest.raises(kbmod.UpdateError, match=f"cache directory {cache}: {match}"):
            _update(base)
        assert upd.cached_release() is None
        assert upd.remove() is False
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLTHREAT_CACHE_DIR", str(cache))
    for name in ("ATLAS.yaml", "release.json"):
        (cache / name).mkdir(parents=True)
        with pytest.raises(kbmod.UpdateError, match=f"{cache / name}: it is a directory"):
            _update(base)
        with pytest.raises(kbmod.UpdateError, match=f"cannot remove {cache / name}"):
            upd.remove()
        assert upd.cached_release() is None
        (cache / name).rmdir()
    assert os.listdir(cache) == []
    release = _update(base)
    assert hashlib.sha256((cache / "ATLAS.yaml").read_bytes()).hexdigest() == release.sha256
