"""The scan as a CycloneDX 1.6 ML-BOM: valid against the CycloneDX schema (the library's
strict validator), model files as machine-learning-model components with their SHA-256,
archives as files, findings as vulnerabilities keyed by ATLAS technique."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from mlthreat.scan.cyclonedx import to_cyclonedx
from mlthreat.scan.scanner import Scanner

pytest.importorskip("cyclonedx")

# GLOBAL os.system; MARK; STRING 'id'; TUPLE; REDUCE; STOP  (protocol 0, never loaded)
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."


def _validate(text: str) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert error is None, error


@pytest.fixture()
def scanned(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "evil.pkl").write_bytes(MALICIOUS)
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as zf:
        zf.writestr("inner.pkl", MALICIOUS)
    (tmp_path / "README.md").write_text("# card\n", "utf-8")
    return Scanner(engines=()).run([tmp_path])


def test_bom_is_valid_cyclonedx_1_6_with_components_and_atlas_vulnerabilities(
        scanned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlthreat.kb import load

    kb = load()
    text = to_cyclonedx(scanned, tool_version="0.1.0", kb=kb)
    _validate(text)
    doc = json.loads(text)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    assert doc["metadata"]["tools"]["components"][0]["name"] == "mlthreat"
    comps = {c["name"].removeprefix(f"{tmp_path}/"): c for c in doc["components"]}
    # the model card was skipped by the scan: not in the BOM of what was scanned
    assert sorted(comps) == ["bundle.zip", "bundle.zip!inner.pkl", "evil.pkl"]
    assert comps["evil.pkl"]["type"] == "machine-learning-model"
    assert comps["bundle.zip"]["type"] == "file"
    records = {r.path: r for r in scanned.files}
    for comp in comps.values():
        [digest] = comp["hashes"]
        assert digest == {"alg": "SHA-256", "content": records[comp["name"]].sha256}
        props = {p["name"]: p["value"] for p in comp["properties"]}
        assert props["mlthreat:scan:format"] == records[comp["name"]].format
    vulns = doc["vulnerabilities"]
    assert len(vulns) == len(scanned.findings) == 2
    refs = {c["bom-ref"] for c in doc["components"]}
    for v in vulns:
        assert v["id"] == "AML.T0011.000"
        assert v["source"] == {"name": "MITRE ATLAS",
                               "url": "https://atlas.mitre.org/techniques/AML.T0011.000"}
        assert v["ratings"][0]["severity"] == "critical"
        [target] = v["affects"]
        assert target["ref"] in refs
        assert "AML.M0014" in v["recommendation"]
    affected = sorted(comps_name for v in vulns for comps_name in
                      [next(c["name"] for c in doc["components"]
                            if c["bom-ref"] == v["affects"][0]["ref"])])
    assert [a.removeprefix(f"{tmp_path}/") for a in affected] == [
        "bundle.zip!inner.pkl", "evil.pkl"]


def test_bom_is_deterministic_and_needs_no_knowledge_base(scanned) -> None:  # type: ignore[no-untyped-def]
    first = to_cyclonedx(scanned, tool_version="0.1.0")
    assert first == to_cyclonedx(scanned, tool_version="0.1.0")
    _validate(first)
    assert "recommendation" not in json.loads(first)["vulnerabilities"][0]
