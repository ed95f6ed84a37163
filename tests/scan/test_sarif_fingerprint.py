"""A finding's identity (SARIF ``partialFingerprints``, CycloneDX finding ``bom-ref``) hashes
its path relative to the scanned root, so the same tree scanned by absolute path from two
places gives the same fingerprints (it gave new ones wherever the folder sat)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlthreat.cli import app
from mlthreat.scan.findings import Finding
from mlthreat.scan.sarif import Locator, fingerprint

# GLOBAL os.system; MARK; SHORT_STRING 'id'; TUPLE; REDUCE; STOP (protocol 0, never loaded)
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."
RULE = "pickle.dangerous-global"


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _tree(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "evil.pkl").write_bytes(MALICIOUS)
    with zipfile.ZipFile(folder / "bundle.zip", "w") as z:
        z.writestr("inner/evil.pkl", MALICIOUS)
    return folder


def _scan(root: Path, fmt: str) -> Any:
    out = root.parent / f"report.{fmt}"
    result = CliRunner().invoke(app, ["scan", str(root), "--format", fmt, "--engines", "none",
                                      "--output", str(out)])
    assert result.exit_code == 1, result.output
    return json.loads(out.read_text("utf-8"))


@pytest.fixture
def copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The same tree in two folders, neither under the current one (a third)."""
    first = _tree(tmp_path / "checkout-a" / "models")
    second = tmp_path / "elsewhere" / "deeper" / "models"
    shutil.copytree(first, second)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return first, second


def test_sarif_fingerprints_survive_a_move(copies: tuple[Path, Path]) -> None:
    logs = [_scan(root, "sarif") for root in copies]
    prints = [{r["properties"]["path"].split("models/", 1)[1]:
               r["partialFingerprints"]["mlthreatFinding/v1"] for r in log["runs"][0]["results"]}
              for log in logs]
    expected = {
        "sub/evil.pkl": _sha(RULE, "SCANROOT0\x00sub/evil.pkl", "os.system",
                             "offset 0 (GLOBAL)", "mlthreat"),
        "bundle.zip!inner/evil.pkl": _sha(RULE, "SCANROOT0\x00bundle.zip!inner/evil.pkl",
                                          "os.system", "offset 0 (GLOBAL)", "mlthreat"),
    }
    assert prints[0] == prints[1] == expected
    # the absolute paths still differ, and the roots are still named
    assert [log["runs"][0]["originalUriBaseIds"]["SCANROOT0"]["uri"] for log in logs] == [
        root.as_uri() + "/" for root in copies]


def test_cyclonedx_finding_refs_survive_a_move(copies: tuple[Path, Path]) -> None:
    refs = [sorted(v["bom-ref"] for v in _scan(root, "cyclonedx")["vulnerabilities"])
            for root in copies]
    sarif = sorted("finding:" + r["partialFingerprints"]["mlthreatFinding/v1"]
                   for r in _scan(copies[0], "sarif")["runs"][0]["results"])
    assert refs[0] == refs[1] == sarif


def test_relative_path_hashes_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path given relative (under the current folder) hashes the path as given, as it always
    did: fingerprints of existing relative scans do not change."""
    monkeypatch.chdir(tmp_path)
    locator = Locator(["models"])
    f = Finding(path="models/bundle.zip!inner/evil.pkl", format="pickle", severity="critical",
                rule=RULE, message="m", technique="AML.T0011.000", symbol="os.system",
                location="offset 0 (GLOBAL)", engine="mlthreat")
    assert fingerprint(f, locator) == _sha(RULE, "models/bundle.zip!inner/evil.pkl",
                                           "os.system", "offset 0 (GLOBAL)", "mlthreat")
    # the same file by absolute path, the current folder holding it: the same fingerprint
    absolute = Finding(**{**f.__dict__, "path": str(tmp_path / f.path)})
    assert fingerprint(absolute, Locator([str(tmp_path / "models")])) == fingerprint(f, locator)
