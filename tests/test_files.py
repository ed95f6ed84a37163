"""Output files whole or not at all (mlthreat.files), as kb export -o and posture --out use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlthreat import files


def test_write_set_keeps_the_previous_set_when_a_member_fails(tmp_path, monkeypatch):
    out = tmp_path / "posture"
    files.write_set(out, {"layers/a.json": "old a", "posture.json": "old"})
    real = files._write_staged

    def full_disk(path, data):
        if path.name == "posture.json":
            raise files._fail(path, OSError(28, "No space left on device"))
        return real(path, data)

    monkeypatch.setattr(files, "_write_staged", full_disk)
    with pytest.raises(files.OutputError, match=r"posture\.json: No space left on device"):
        files.write_set(out, {"layers/a.json": "new a", "posture.json": "new"})
    assert (out / "layers" / "a.json").read_text() == "old a"
    assert (out / "posture.json").read_text() == "old"
    assert sorted(p.name for p in out.rglob("*")) == ["a.json", "layers", "posture.json"]


def test_kb_export_to_an_unwritable_place_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "reports").write_text("a file where the folder should be")
    target = tmp_path / "reports" / "layer.json"
    res = subprocess.run([sys.executable, "-m", "mlthreat", "kb", "export", "-f", "navigator",
                          "-o", str(target)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"cannot write {tmp_path / 'reports'}" in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_kb_export_replaces_a_file_whole(tmp_path):
    target = tmp_path / "layer.json"
    target.write_text("previous")
    res = subprocess.run([sys.executable, "-m", "mlthreat", "kb", "export", "-f", "navigator",
                          "-o", str(target)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert target.read_text().startswith("{") and target.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["layer.json"]  # no staging file left
