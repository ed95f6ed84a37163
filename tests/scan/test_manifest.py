"""Digest manifests: build, write, check; tampering found; malformed manifests refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlthreat.errors import UsageError
from mlthreat.scan import manifest as mf
from mlthreat.scan.findings import TECHNIQUES


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(b"\x00" * 3000)
    return root


def test_build_manifest_shape(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    data = mf.build_manifest(root)
    assert data["kind"] == "mlthreat.scan.manifest"
    assert data["schema_version"] == 1 and data["algorithm"] == "sha256"
    assert data["files"] == [
        {"path": "config.json", "sha256": hashlib.sha256(b'{"a": 1}').hexdigest(), "size": 8},
        {"path": "sub/weights.bin", "sha256": hashlib.sha256(b"\x00" * 3000).hexdigest(),
         "size": 3000},
    ]


def test_digest_is_streamed_in_1mib_chunks(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (2 * mf.CHUNK + 5))
    sizes: list[int] = []
    real_open = Path.open

    def spy_open(self, *a, **k):
        fh = real_open(self, *a, **k)
        real_read = fh.read

        class Wrapped:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def read(self, n=-1):
                sizes.append(n)
                return real_read(n)

        return Wrapped()

    monkeypatch.setattr(Path, "open", spy_open)
    digest, size = mf.digest_file(path)
    assert size == 2 * mf.CHUNK + 5
    assert digest == hashlib.sha256(b"x" * size).hexdigest()
    assert sizes and all(n == 1024 * 1024 for n in sizes)


def test_write_then_check_clean_then_tampered(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    out = root / "MANIFEST.json"
    mf.write_manifest(root, out)
    assert "MANIFEST.json" not in {e["path"] for e in json.loads(out.read_text())["files"]}
    assert mf.check_manifest(out, root) == []

    (root / "sub" / "weights.bin").write_bytes(b"\x01" * 3000)
    (root / "config.json").unlink()
    (root / "extra.pkl").write_bytes(b"N.")
    findings = mf.check_manifest(out, root)
    got = {(Path(f.path).name, f.rule, f.severity) for f in findings}
    assert got == {("config.json", "manifest.missing", "high"),
                   ("extra.pkl", "manifest.added", "medium"),
                   ("weights.bin", "manifest.changed", "high")}
    assert all(f.technique == TECHNIQUES["tampered"] for f in findings)
    changed = next(f for f in findings if f.rule == "manifest.changed")
    assert changed.details["expected_sha256"] == hashlib.sha256(b"\x00" * 3000).hexdigest()
    assert changed.details["actual_sha256"] == hashlib.sha256(b"\x01" * 3000).hexdigest()


def test_write_manifest_of_listed_files(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    out = root / "m.json"
    data = mf.write_manifest([root / "config.json"], out)
    assert [e["path"] for e in data["files"]] == ["config.json"]
    with pytest.raises(UsageError, match="outside"):
        mf.write_manifest([root / "config.json"], root / "sub" / "x.json")


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(kind="other"), "'kind'"),
    (lambda d: d.update(schema_version=2), "'schema_version'"),
    (lambda d: d.update(algorithm="md5"), "'algorithm'"),
    (lambda d: d.update(files={}), "'files'"),
    (lambda d: d["files"][0].update(path="../etc/passwd"), "'files[0].path'"),
    (lambda d: d["files"][1].update(sha256="zz"), "'files[1].sha256'"),
    (lambda d: d["files"][0].update(size=-1), "'files[0].size'"),
])
def test_malformed_manifest_names_file_and_field(tmp_path: Path, mutate, field: str) -> None:
    root = _model(tmp_path / "m")
    data = mf.build_manifest(root)
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UsageError) as err:
        mf.check_manifest(bad, root)
    assert str(bad) in str(err.value) and field in str(err.value)


def test_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match=r"bad\.json"):
        mf.check_manifest(bad, tmp_path)


def test_one_file_against_a_folder_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.pkl").write_bytes(b"a")
    (folder / "sub" / "b.pkl").write_bytes(b"b")
    manifest = folder / "manifest.json"
    mf.write_manifest(folder, manifest)
    assert mf.check_manifest(manifest, folder / "a.pkl") == []
    assert mf.check_manifest(manifest, folder / "sub" / "b.pkl") == []
    (folder / "sub" / "b.pkl").write_bytes(b"B")
    [changed] = mf.check_manifest(manifest, folder / "sub" / "b.pkl")
    assert (changed.rule, Path(changed.path)) == ("manifest.changed", folder / "sub" / "b.pkl")
    other = tmp_path / "c.pkl"
    other.write_bytes(b"c")
    assert [f.rule for f in mf.check_manifest(manifest, other)] == ["manifest.added"]
