"""What ``mlthreat scan`` writes on stdout is one document, whatever the engines print, and
``-f cyclonedx`` writes a valid CycloneDX 1.6 ML-BOM to stdout or to ``-o FILE``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# PROTO 4; BININT1 1; BININT1 2; STACK_GLOBAL; EMPTY_TUPLE; REDUCE; STOP: fickling 0.1.12
# writes "Warning: malformed pickle file …" to stdout for a STACK_GLOBAL on integers
MALFORMED = b"\x80\x04K\x01K\x02\x93)R."
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlthreat", "scan", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_json_on_stdout_is_one_document_when_fickling_prints(tmp_path: Path) -> None:
    pytest.importorskip("fickling")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(MALFORMED)
    out = scan(str(bad), "--json", "--engines", "fickling")
    doc = json.loads(out.stdout)  # raises if anything else reached stdout
    assert out.stdout.startswith("{")  # nothing printed before the document
    assert any("fickling: printed" in m for m in doc["engine_messages"])
    sarif = scan(str(bad), "-f", "sarif", "--engines", "fickling")
    assert json.loads(sarif.stdout)["version"] == "2.1.0"


def test_cyclonedx_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    (tmp_path / "evil.pkl").write_bytes(MALICIOUS)
    out = scan(str(tmp_path), "-f", "cyclonedx", "--engines", "none")
    assert out.returncode == 1, out.stderr  # findings at or above --fail-on high
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(out.stdout) is None
    doc = json.loads(out.stdout)
    [vuln] = doc["vulnerabilities"]
    assert vuln["id"] == "AML.T0011.000" and vuln["ratings"][0]["severity"] == "critical"
    [component] = doc["components"]
    assert component["type"] == "machine-learning-model"
    assert vuln["affects"] == [{"ref": component["bom-ref"]}]
    bom = tmp_path / "out" / "bom.json"
    bom.parent.mkdir()
    written = scan(str(tmp_path / "evil.pkl"), "-f", "cyclonedx", "-o", str(bom),
                   "--engines", "none")
    assert written.returncode == 1 and written.stdout == ""
    assert json.loads(bom.read_text("utf-8"))["specVersion"] == "1.6"
