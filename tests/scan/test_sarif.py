"""SARIF output validated against the vendored OASIS SARIF 2.1.0 schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from mlthreat.scan.findings import TECHNIQUES, Finding
from mlthreat.scan.sarif import to_sarif

SCHEMA = Path(__file__).parents[1] / "data" / "sarif" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def kb():
    from mlthreat import kb as kbmod

    return kbmod.load()


def _findings(root: Path) -> list[Finding]:
    return [
        Finding(path="models/evil.pkl", format="pickle", severity="critical",
                rule="pickle.global-not-allowed", message="os.system is called on load",
                technique=TECHNIQUES["unsafe"], location="offset 0 (GLOBAL)",
                symbol="os.system", engine="mlthreat", details={"offset": 0}),
        Finding(path="models/bundle.zip!inner dir/m.pkl", format="pickle", severity="medium",
                rule="picklescan.unsafe-global", message="suspicious global",
                technique=TECHNIQUES["malware"], symbol="marshal.loads", engine="picklescan"),
        Finding(path=str(root / "weights.bin"), format="manifest", severity="high",
                rule="manifest.changed", message="weights.bin differs",
                technique=TECHNIQUES["tampered"], details={"expected_sha256": "0" * 64}),
        Finding(path="models/x.onnx", format="onnx", severity="info", rule="onnx.note",
                message="fyi", technique=TECHNIQUES["unsafe"]),
    ]


def test_sarif_is_schema_valid_and_complete(kb, tmp_path: Path) -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    log = to_sarif(_findings(tmp_path), kb=kb, tool_version="0.1.0",
                   scanned=["models", str(tmp_path)])
    jsonschema.validate(json.loads(json.dumps(log)), schema)

    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-schema-2.1.0.json")
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "mlthreat" and driver["version"] == "0.1.0"
    rules = {r["id"]: r for r in driver["rules"]}
    assert sorted(rules) == ["manifest.changed", "onnx.note", "pickle.global-not-allowed",
                             "picklescan.unsafe-global"]
    unsafe = rules["pickle.global-not-allowed"]
    assert unsafe["properties"]["atlas_technique"] == "AML.T0011.000"
    assert unsafe["properties"]["atlas_technique_name"] == kb.get("AML.T0011.000").name
    for m in kb.mitigations_of("AML.T0011.000"):
        assert f"{m.id} {m.name}" in unsafe["help"]["text"]
    assert unsafe["properties"]["security-severity"] == "9.5"

    res = run["results"]
    assert [r["level"] for r in res] == ["error", "warning", "error", "note"]
    assert [r["ruleId"] for r in res] == [f.rule for f in _findings(tmp_path)]
    for r in res:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert len(r["partialFingerprints"]["mlthreatFinding/v1"]) == 64
    first = res[0]
    assert first["properties"] == {
        "severity": "critical", "technique": "AML.T0011.000", "engine": "mlthreat",
        "engines": ["mlthreat"], "symbol": "os.system", "format": "pickle",
        "path": "models/evil.pkl",
        "details": {"offset": 0}}
    loc = first["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"] == {"uri": "models/evil.pkl"}
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == \
        "models/evil.pkl @ offset 0 (GLOBAL)"
    # archive member: uri is the outer archive; the member is a logical location
    member = res[1]["locations"][0]
    assert member["physicalLocation"]["artifactLocation"] == {"uri": "models/bundle.zip"}
    assert member["logicalLocations"][0] == {
        "name": "inner dir/m.pkl", "fullyQualifiedName": "models/bundle.zip!inner dir/m.pkl",
        "kind": "resource"}
    # absolute path outside the cwd: relative to its scanned root
    art = res[2]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert art == {"uri": "weights.bin", "uriBaseId": "SCANROOT1"}
    assert run["originalUriBaseIds"]["SCANROOT1"]["uri"] == tmp_path.resolve().as_uri() + "/"
    assert run["properties"]["scanned"] == ["models", str(tmp_path)]


def test_uri_is_percent_encoded_and_empty_log_valid(kb) -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    f = Finding(path="my models/a#b.pkl", format="pickle", severity="low", rule="x.y",
                message="m", technique=TECHNIQUES["unsafe"])
    log = to_sarif([f], kb=kb, tool_version="0.1.0", scanned=["my models"])
    jsonschema.validate(log, schema)
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri == {"uri": "my%20models/a%23b.pkl"}
    empty = to_sarif([], kb=kb, tool_version="0.1.0", scanned=[])
    jsonschema.validate(empty, schema)
    assert empty["runs"][0]["results"] == [] and empty["runs"][0]["tool"]["driver"]["rules"] == []


def test_unknown_severity_rejected(kb) -> None:
    f = Finding(path="a", format="pickle", severity="severe", rule="x.y", message="m",
                technique=TECHNIQUES["unsafe"])
    with pytest.raises(ValueError, match="severe"):
        to_sarif([f], kb=kb, tool_version="0.1.0", scanned=[])
