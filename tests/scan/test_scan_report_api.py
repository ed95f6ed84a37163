"""The scan report API (:mod:`mlthreat.scan.report`) as a notebook user calls it, and
``mlthreat scan --json`` writing exactly ``ScanResult.to_json()``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pickle_builders import call_p0
from typer.testing import CliRunner

from mlthreat import kb
from mlthreat.cli import app
from mlthreat.errors import UsageError
from mlthreat.scan.manifest import write_manifest
from mlthreat.scan.report import build_report, check_integrity, signature_in, technique_info
from mlthreat.scan.scanner import Scanner


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A model folder as a user has one: a malicious pickle, a model card, and a manifest
    written before one file changed."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "weights.pkl").write_bytes(call_p0("os", "system", "id"))
    (models / "README.md").write_text("# card\n", "utf-8")
    write_manifest(models, tmp_path / "manifest.json")
    (models / "README.md").write_text("# card, changed\n", "utf-8")
    return models


def test_build_report_merges_manifest_findings(folder: Path) -> None:
    found = Scanner(engines=()).run([folder])
    result = build_report(found, [folder], kb.load(), manifest=folder.parent / "manifest.json")
    rules = [f.rule for f in result.findings]
    assert any(r.startswith("manifest.") for r in rules) and len(rules) == len(
        found.findings) + 1
    assert len(found.findings) == len(rules) - 1  # the scanner's report is left as it was
    assert result.notes == [f"manifest {folder.parent / 'manifest.json'}: 1 difference(s)"]
    assert result.exit_code == 1 and dataclasses.replace(result, fail_on="never").exit_code == 0
    doc = result.to_dict()
    assert doc["kind"] == "mlthreat.scan.report" and doc["checks"] == result.notes
    assert set(doc["techniques"]) == {f.technique for f in result.findings}


def test_cli_json_equals_to_json_byte_for_byte(folder: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's clock is fixed so that two scans of one folder give the same report."""
    run = Scanner.run

    def fixed(self: Scanner, *args: object, **kwargs: object) -> object:
        return dataclasses.replace(run(self, *args, **kwargs),  # type: ignore[arg-type]
                                   started="2026-12-01T00:00:00Z", seconds=1.0)

    monkeypatch.setattr(Scanner, "run", fixed)
    manifest = tmp_path / "manifest.json"
    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["scan", str(folder), "--engines", "none", "--json",
                                   "--manifest", str(manifest), "-o", str(out)])
    assert res.exit_code == 1, res.output
    result = build_report(Scanner(engines=()).run([folder]), [folder], kb.load(),
                          manifest=manifest)
    assert out.read_bytes() == result.to_json().encode("utf-8", "backslashreplace")
    assert json.loads(out.read_text("utf-8")) == result.to_dict()


def test_unverified_signature_note_names_parameters(tmp_path: Path) -> None:
    (tmp_path / "model.sig").write_text("{}", "utf-8")
    assert signature_in([tmp_path]) == tmp_path / "model.sig"
    assert signature_in([tmp_path, tmp_path]) is None
    findings, notes = check_integrity([tmp_path])
    assert findings == [] and notes == [
        f"signature {tmp_path}/model.sig: an OpenSSF model signature, not verified; "
        "public_key or certificate_chain verifies it"]


def test_checks_need_exactly_one_path(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="exactly one path"):
        check_integrity([folder, folder], manifest=tmp_path / "manifest.json")
    with pytest.raises(UsageError, match="need a signature"):
        check_integrity([folder], public_key=tmp_path / "key.pem")
    with pytest.raises(UsageError, match="for fail_on"):
        build_report(Scanner(engines=()).run([folder]), [folder], kb.load(), fail_on="severe")


def test_technique_info_names_mitigations(folder: Path) -> None:
    found = Scanner(engines=()).run([folder])
    info = technique_info(kb.load(), found.findings)
    assert all(v["name"] and v["mitigations"] for v in info.values())
