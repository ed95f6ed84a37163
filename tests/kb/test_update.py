"""``kb update`` against a real HTTP server on 127.0.0.1 started by the test, serving an
atlas-data ``dist/`` folder: a manifest and format-6 releases made from the official 5.6.0 file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from atlas_paths import ATLAS_YAML, RELEASES
from atlas_v6 import release_2026_09, to_v6, write_v6
from route_server import Route, route_server

from mlthreat import kb as kbmod
from mlthreat.kb import _manifest
from mlthreat.kb import update as upd

OFFICIAL = ATLAS_YAML.read_bytes()
MANIFEST = b"""\
# one layout a manifest may have; the reader assumes none in particular
format-version: 1.0.0
latest: 2026.09
releases:
  2026.05:
    date: 2026-05-20
    files:
      "6.0.0": v6/ATLAS-2026.05.yaml
      "5.6.0": legacy/ATLAS-5.6.0.yaml
  2026.09:
    files:
      "6.0.0": v6/ATLAS-2026.09.yaml
"""


@pytest.fixture(scope="module")
def legacy():
    """The official 5.6.0 file, parsed once per module (the converters copy, never change it)."""
    return yaml.load(OFFICIAL, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def v6(tmp_path_factory, legacy):
    """The bytes of releases 2026.05 (5.6.0 content) and 2026.09, built once per module."""
    tmp = tmp_path_factory.mktemp("v6")
    return {"2026.05": write_v6(to_v6(legacy, "2026.05"), tmp / "a.yaml").read_bytes(),
            "2026.09": write_v6(release_2026_09(legacy), tmp / "b.yaml").read_bytes()}


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


def _publish(routes, v6, manifest=MANIFEST):
    """The dist/ folder atlas-data serves since 2026.05."""
    routes.update({"/dist/manifest.yaml": (200, manifest),
                   "/dist/v6/ATLAS-2026.05.yaml": (200, v6["2026.05"]),
                   "/dist/v6/ATLAS-2026.09.yaml": (200, v6["2026.09"]),
                   "/dist/v6/ATLAS-latest.yaml": (200, v6["2026.09"]),
                   "/dist/ATLAS-latest.yaml": (200, v6["2026.09"])})


def _serve_latest(routes, body):
    """No manifest and no v6/ATLAS-latest.yaml: only dist/ATLAS-latest.yaml, holding ``body``."""
    routes["/dist/ATLAS-latest.yaml"] = (200, body)


def _update(base, **kwargs):
    kwargs.setdefault("dist_url", f"{base}/dist")
    kwargs.setdefault("timeout", 5)
    return upd.update(**kwargs)


def _cache_listing():
    return sorted(p.name for p in upd.cache_dir().iterdir())


def _cached(name="ATLAS.yaml"):
    return (upd.cache_dir() / name).read_bytes()


def _cli(*args):
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "kb", "update", *args],
                          capture_output=True, text=True, env=env, timeout=60)


# -- the newest release, the one asked for, and the way back -------------------------------------
def test_update_installs_the_newest_release_and_keeps_the_previous_copy(server, v6):
    base, routes = server
    _publish(routes, v6)
    first = _update(base, release="2026.05")
    assert (first.release, first.format_version, first.found_by) == ("2026.05", "6.0.0",
                                                                     "release")
    assert first.previous is None and first.changed
    assert _cache_listing() == ["ATLAS.yaml", "release.json"]
    out = _cli("--dist-url", f"{base}/dist", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    cache = upd.cache_dir()
    assert " ".join(out.stdout.split()) == (
        f"installed ATLAS 2026.09 (format 6.0.0) from {base}/dist/v6/ATLAS-2026.09.yaml to "
        f"{cache / 'ATLAS.yaml'}, {len(v6['2026.09']):,} bytes, sha256 "
        f"{hashlib.sha256(v6['2026.09']).hexdigest()[:16]}…; previous copy kept at "
        f"{cache / 'ATLAS.previous.yaml'} (mlthreat kb update --previous goes back)")
    assert _cache_listing() == ["ATLAS.previous.yaml", "ATLAS.yaml", "release.json",
                                "release.previous.json"]
    assert _cached() == v6["2026.09"] and _cached("ATLAS.previous.yaml") == v6["2026.05"]
    meta = json.loads(_cached("release.json"))
    assert (meta["release"], meta["found_by"], meta["previous"]) == (
        "2026.09", "manifest", str(cache / "ATLAS.previous.yaml"))
    assert json.loads(_cached("release.previous.json"))["release"] == "2026.05"
    loaded = kbmod.load()
    assert (loaded.version, loaded.format_version) == ("2026.09", "6.0.0")
    assert "AML.T0115.000" in loaded and "AML.T0019" not in loaded  # 2026.07 moved it
    # The same bytes again: nothing is rewritten, the previous copy stays 2026.05.
    again = _update(base)
    assert (again.release, again.changed) == ("2026.09", False)
    assert _cached("ATLAS.previous.yaml") == v6["2026.05"]
    # --previous swaps the two copies, and back.
    assert upd.restore_previous() == "2026.05"
    assert kbmod.load().version == "2026.05" and _cached("ATLAS.previous.yaml") == v6["2026.09"]
    assert upd.restore_previous() == "2026.09"
    assert _cached() == v6["2026.09"]
    assert upd.remove() is True
    assert _cache_listing() == [] and kbmod.load().source == "embedded snapshot"
    with pytest.raises(kbmod.UpdateError, match="no previous copy"):
        upd.restore_previous()


def test_release_option_installs_an_older_release(server, v6):
    base, routes = server
    _publish(routes, v6)
    assert _update(base).release == "2026.09"
    older = _update(base, release="2026.05")
    assert (older.release, older.url) == ("2026.05", f"{base}/dist/v6/ATLAS-2026.05.yaml")
    assert older.previous == str(upd.cache_dir() / "ATLAS.previous.yaml")
    assert _cached() == v6["2026.05"] and _cached("ATLAS.previous.yaml") == v6["2026.09"]
    assert kbmod.load().version == "2026.05"


def test_a_manifest_naming_an_older_release_than_the_cache_is_refused(server, v6):
    base, routes = server
    _publish(routes, v6)
    _update(base)
    routes["/dist/manifest.yaml"] = (200, b"releases:\n  2026.05: v6/ATLAS-2026.05.yaml\n")
    with pytest.raises(kbmod.UpdateError, match=r"ATLAS 2026.05, older than the cached release "
                                                r".*\(ATLAS 2026.09\).*--release 2026.05"):
        _update(base)
    # A legacy 5.6.0 file, served as ATLAS-latest.yaml, is older than any content release.
    del routes["/dist/manifest.yaml"], routes["/dist/v6/ATLAS-latest.yaml"]
    routes["/dist/ATLAS-latest.yaml"] = (200, OFFICIAL)
    with pytest.raises(kbmod.UpdateError, match=r"ATLAS 5.6.0, older than the cached release"):
        _update(base)
    assert _cached() == v6["2026.09"] and _cache_listing() == ["ATLAS.yaml", "release.json"]


def test_a_file_that_is_not_the_release_named_is_refused(server, v6):
    base, routes = server
    _publish(routes, v6)
    routes["/dist/v6/ATLAS-2026.09.yaml"] = (200, v6["2026.05"])
    with pytest.raises(kbmod.UpdateError, match=r"holds ATLAS '2026.05', not the release 2026.09"):
        _update(base)
    assert _cache_listing() == []


# -- the manifest, read tolerantly --------------------------------------------------------------
def test_garbage_or_missing_manifest_falls_back_to_atlas_latest(server, v6):
    base, routes = server
    _publish(routes, v6, manifest=b"<html>\n  <p>rate limited</p>\n</html>\n")
    got = _update(base)
    assert (got.release, got.url) == ("2026.09", f"{base}/dist/v6/ATLAS-latest.yaml")
    assert got.found_by == ("v6/ATLAS-latest.yaml (manifest.yaml unreadable: no content release "
                            "(YYYY.MM) in it)")
    upd.remove()
    del routes["/dist/manifest.yaml"], routes["/dist/v6/ATLAS-latest.yaml"]
    got = _update(base)
    assert got.url == f"{base}/dist/ATLAS-latest.yaml"
    assert got.found_by == ("ATLAS-latest.yaml (manifest.yaml: HTTP 404; v6/ATLAS-latest.yaml: "
                            "HTTP 404)")
    assert _cached() == v6["2026.09"]
    del routes["/dist/ATLAS-latest.yaml"]
    upd.remove()
    with pytest.raises(kbmod.UpdateError, match=r"no ATLAS release found under .*/dist: "
                                                r"manifest.yaml: HTTP 404"):
        _update(base)
    assert _cache_listing() == []


@pytest.mark.parametrize(("text", "release", "path"), [
    (MANIFEST.decode(), "2026.09", "v6/ATLAS-2026.09.yaml"),
    # unquoted 2026.10 is the float 2026.1 to a YAML loader; compared as a release it is newest
    ("releases:\n  2026.09: {v6: v6/ATLAS-2026.09.yaml}\n  2026.10: {v6: v6/x.yaml}\n",
     "2026.10", "v6/x.yaml"),
    ("- release: 2026.09\n  files:\n    - {format: 6.0.0, path: dist/six/A.yaml}\n"
     "    - {format: 5.6.0, path: dist/five/A.yaml}\n"
     "- {release: 2026.09.1, files: [{format-version: '6', path: six/B.yaml}]}\n",
     "2026.09.1", "six/B.yaml"),
    ("files: [v6/ATLAS-2026.08.yaml, v6/ATLAS-2026.11.yaml, legacy/ATLAS-2027.01.yaml]\n",
     "2026.11", "v6/ATLAS-2026.11.yaml"),
    ("releases: [2026.05, 2026.09, 2026.13]\n", "2026.09", "v6/ATLAS-2026.09.yaml"),
    # a path that climbs out of dist/ or names another host is not used; the usual name is
    ("releases:\n  2026.09: {6: ../../evil.yaml}\n  2026.08: {6: 'https://x.invalid/a.yaml'}\n",
     "2026.09", "v6/ATLAS-2026.09.yaml"),
])
def test_manifest_layouts(text, release, path):
    assert _manifest.newest(text, "manifest.yaml")[:2] == (release, path)


@pytest.mark.parametrize("text", ["", "just text\n", "a: [1, 2\n", "version: 5.6.0\n",
                                  "a: &a [1]\nb: *a\na: 2\n"])
def test_unusable_manifests(text):
    with pytest.raises(_manifest.ManifestError):
        _manifest.newest(text, "manifest.yaml")


@pytest.mark.parametrize("bad", ["2026.13", "2026.9", "26.09", "latest", "../2026.09",
                                 "2026.09/../../x", "2026.09?x=1", "2026.09.12345", ""])
def test_a_bad_release_value_is_refused_before_any_request(bad):
    # Port 9 on loopback: a request would fail as "offline", not with this message.
    with pytest.raises(kbmod.UpdateError, match=r"release must be a content release such as "
                                                r"2026.09 or 2026.09.1"):
        upd.update(release=bad, dist_url="http://127.0.0.1:9/dist", timeout=2)


def test_cli_bad_release_is_one_line_and_non_zero():
    out = _cli("--release", "2026/09", "--dist-url", "http://127.0.0.1:9/dist")
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.strip() == ("mlthreat: error: release must be a content release such as "
                                  "2026.09 or 2026.09.1 (YYYY.MM, month 01-12, optional .N), "
                                  "not '2026/09'")


# -- offline ------------------------------------------------------------------------------------
def test_offline_says_so_and_leaves_the_cache_alone(server, v6):
    with pytest.raises(kbmod.UpdateError, match=r"cannot reach http://127.0.0.1:9/dist/manifest"
                                                r".yaml \(.*\): this machine looks offline; "
                                                r"nothing was changed and mlthreat keeps using "
                                                r"the embedded snapshot$"):
        upd.update(dist_url="http://127.0.0.1:9/dist", timeout=2)
    base, routes = server
    _publish(routes, v6)
    _update(base)
    before = {name: _cached(name) for name in _cache_listing()}
    out = _cli("--dist-url", "http://127.0.0.1:9/dist", "--timeout", "2")
    assert out.returncode != 0 and out.stdout == ""
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("mlthreat: error: cannot reach http://127.0.0.1:9/")
    assert line.endswith(f"this machine looks offline; nothing was changed and mlthreat keeps "
                         f"using the cached ATLAS 2026.09 ({upd.cache_dir() / 'ATLAS.yaml'})")
    assert {name: _cached(name) for name in _cache_listing()} == before


# -- checks of the download (legacy bodies reach them through dist/ATLAS-latest.yaml) ----------
def test_bad_download_keeps_previous_cache(server):
    base, routes = server
    _serve_latest(routes, b"<html>rate limited</html>")
    with pytest.raises(kbmod.UpdateError, match="did not serve ATLAS data"):
        _update(base)
    assert upd.cached_release() is None
    assert list(upd.cache_dir().iterdir()) == []


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
    _serve_latest(routes, OFFICIAL)
    _update(base)
    cached = _cached()
    _serve_latest(routes, _truncated_half(tmp_path))
    with pytest.raises(kbmod.UpdateError,
                       match=r"fewer objects than the cached release .*0 case studies against 57"
                             r", more than a release retires \(at most 5% or 2 per section\)"):
        _update(base)
    assert _cached() == cached
    assert _cache_listing() == ["ATLAS.yaml", "release.json"]  # no part file left behind
    # No cache: the embedded 5.6.0 snapshot is what an older release would replace.
    upd.remove()
    _serve_latest(routes, (RELEASES / "ATLAS-5.0.0.yaml").read_bytes())
    with pytest.raises(kbmod.UpdateError, match=r"embedded snapshot .*130 techniques against 170"):
        _update(base)
    assert _cache_listing() == []


def test_a_release_may_retire_a_few_objects_but_not_more(server, v6, legacy, tmp_path):
    """2026.09 retires three techniques of 5.6.0 and passes; ten fewer mitigations do not."""
    assert upd.allowed_loss(35) == 2 and upd.allowed_loss(170) == 9 and upd.allowed_loss(16) == 2
    base, routes = server
    _publish(routes, v6)
    _update(base, release="2026.05")
    doc = release_2026_09(legacy)
    for mid in list(doc["mitigations"])[:3]:
        del doc["mitigations"][mid], doc["relationships"][mid]
    routes["/dist/v6/ATLAS-2026.09.yaml"] = (200, write_v6(doc, tmp_path / "x.yaml").read_bytes())
    with pytest.raises(kbmod.UpdateError, match=r"32 mitigations against 35"):
        _update(base)
    assert _cached() == v6["2026.05"]


def test_dangling_references_are_refused(server, tmp_path):
    base, routes = server
    body = OFFICIAL.replace(b"subtechnique-of: AML.T0000\n", b"subtechnique-of: AML.T0999\n", 1)
    assert body != OFFICIAL
    _serve_latest(routes, body)
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
    _serve_latest(routes, b"version: 1\nmatrices: []\nhuge: " + b"7" * 5000 + b"\n")
    with pytest.raises(kbmod.UpdateError, match=r"did not serve (valid )?ATLAS data"):
        _update(base)
    assert _cache_listing() == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dist_url": "http://127.0.0.1:abc/x"}, "not a valid URL"),
    ({"dist_url": "ftp://127.0.0.1/x"}, "not an http"),
    ({"dist_url": "http://127.0.0.1/a b"}, "spaces"),
    ({"dist_url": "http://127.0.0.1/dist?x=1"}, "without '\\?' or '#'"),
    ({"dist_url": "http://127.0.0.1/dist#x"}, "without '\\?' or '#'"),
    ({"dist_url": "http://127.0.0.1:99999/dist"}, "not a valid URL"),
    ({"timeout": float("inf")}, "timeout must be"),
    ({"timeout": float("nan")}, "timeout must be"),
    ({"timeout": -1}, "timeout must be"),
    ({"timeout": 0}, "timeout must be"),
])
def test_bad_arguments_are_refused_before_any_request(kwargs, match):
    with pytest.raises(kbmod.UpdateError, match=match):
        upd.update(**{"dist_url": "http://127.0.0.1:9/dist", **kwargs})


def test_short_oversized_and_slow_answers(server, monkeypatch, v6):
    base, routes = server

    def short(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"format-version: 6.0.0\n")

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

    def asked(route):  # served as the release asked for by name, so nothing falls back
        routes["/dist/v6/ATLAS-2026.09.yaml"] = route

    monkeypatch.setattr(upd, "MAX_ATLAS_BYTES", 1 << 20)
    asked(short)
    with pytest.raises(kbmod.UpdateError, match=r"closed after 22 of the 1,000 bytes"):
        _update(base, release="2026.09")
    asked((200, b" " * ((1 << 20) + 1)))
    with pytest.raises(kbmod.UpdateError, match=r"larger than 1,048,576 bytes.*announced"):
        _update(base, release="2026.09")
    asked(endless)
    with pytest.raises(kbmod.UpdateError, match=r"larger than 1,048,576 bytes"):
        _update(base, release="2026.09")
    for route in (drip_body, drip_headers):
        asked(route)
        start = time.monotonic()
        with pytest.raises(kbmod.UpdateError, match=r"no complete answer within 1.2 s"):
            _update(base, release="2026.09", timeout=0.3)
        assert time.monotonic() - start < 5
    # The manifest has its own, smaller limit: past it the manifest is passed over.
    monkeypatch.setattr(upd, "MAX_MANIFEST_BYTES", 100)
    _publish(routes, v6, manifest=MANIFEST + b"#" * 100)
    assert _update(base).found_by.startswith("v6/ATLAS-latest.yaml (manifest.yaml unreadable: "
                                             f"{base}/dist/manifest.yaml: the answer is larger")
    upd.remove()
    assert _cache_listing() == []


def test_redirects_stay_on_the_same_host(server, v6):
    base, routes = server
    _publish(routes, v6)

    def redirect_to(location):
        def answer(h):
            h.send_response(302)
            h.send_header("Location", location)
            h.end_headers()
            while True:  # the body of a redirect is never read
                h.wfile.write(b" " * 65536)
        return answer

    routes["/dist/moved/2026.05.yaml"] = routes["/dist/v6/ATLAS-2026.05.yaml"]
    routes["/dist/v6/ATLAS-2026.05.yaml"] = redirect_to("/dist/moved/2026.05.yaml")
    assert _update(base, release="2026.05").release == "2026.05"
    assert _cached() == v6["2026.05"]


def test_redirect_to_another_host_is_refused(server, v6):
    base, routes = server
    other = base.replace("127.0.0.1", "localhost")
    routes["/dist/v6/ATLAS-2026.09.yaml"] = (
        lambda h: (h.send_response(302), h.send_header("Location", f"{other}/x"),
                   h.end_headers()))
    with pytest.raises(kbmod.UpdateError, match=r"redirected to http://localhost:\d+/x, another "
                                                r"host or a downgrade to http; refused"):
        _update(base, release="2026.09")
    assert _cache_listing() == []


def test_unusable_cache_directory(server, monkeypatch, tmp_path, v6):
    base, routes = server
    _publish(routes, v6)
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
    for name in ("ATLAS.yaml", "release.json", "ATLAS.previous.yaml"):
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
