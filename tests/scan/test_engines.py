"""The third-party engines on a benign scikit-learn pickle and a hand-made malicious one.

The malicious pickle is written as protocol-0 opcode bytes and never loaded."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest

from mlthreat.scan.engines import ENGINES, engine_versions, run_engines
from mlthreat.scan.findings import SEVERITIES, TECHNIQUES, Limits

# GLOBAL os.system; MARK; STRING 'id'; TUPLE; REDUCE; STOP
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."
# GLOBAL marshal.loads with a bytes argument: a payload unpacker
PAYLOAD = b"cmarshal\nloads\n(S'x'\ntR."


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = tmp_path_factory.mktemp("benign") / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


@pytest.fixture()
def malicious(tmp_path: Path) -> Path:
    path = tmp_path / "evil.pkl"
    path.write_bytes(MALICIOUS)
    return path


def _by_engine(findings):
    out = {e: [] for e in ENGINES}
    for f in findings:
        out[f.engine].append(f)
    return out


def test_malicious_pickle_every_engine_critical_os_system(malicious: Path) -> None:
    findings, messages = run_engines(malicious, "pickle", limits=Limits())
    assert messages == []
    by = _by_engine(findings)
    for engine in ENGINES:
        crit = [f for f in by[engine] if f.severity == "critical"]
        assert crit, engine
        assert {f.symbol for f in crit} == {"os.system"}, engine
        assert all(f.technique == TECHNIQUES["unsafe"] for f in crit)
        assert all(f.rule.startswith(engine + ".") for f in crit)
    assert {f.rule for f in by["fickling"] if f.severity == "critical"} == {
        "fickling.unsafe-imports"}
    assert [f.rule for f in by["picklescan"]] == ["picklescan.unsafe-global"]
    assert [f.rule for f in by["modelscan"]] == ["modelscan.unsafe-operator"]
    assert all(f.severity in SEVERITIES and f.path == str(malicious) for f in findings)


def test_benign_sklearn_pickle_nothing_above_low(benign: Path) -> None:
    findings, messages = run_engines(benign, "pickle", limits=Limits())
    assert messages == []
    by = _by_engine(findings)
    assert all(f.severity in ("low", "info") for f in findings), findings
    # fickling flags every non-stdlib import LIKELY_UNSAFE (ours: low)
    assert "sklearn.linear_model._logistic.LogisticRegression" in {
        f.symbol for f in by["fickling"]}
    assert all(f.details["engine_severity"] == "LIKELY_UNSAFE" for f in by["fickling"])
    # picklescan: LogisticRegression is "suspicious" (not on its list); numpy is innocuous
    assert [(f.symbol, f.severity) for f in by["picklescan"]] == [
        ("sklearn.linear_model._logistic.LogisticRegression", "low")]
    assert by["modelscan"] == []


def test_renamed_file_still_scanned_by_modelscan(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin.renamed"
    path.write_bytes(MALICIOUS)
    findings, messages = run_engines(path, "pickle", engines=["modelscan"], limits=Limits())
    assert messages == []
    assert [f.symbol for f in findings] == ["os.system"]


def test_payload_global_is_malware_technique(tmp_path: Path) -> None:
    path = tmp_path / "payload.pkl"
    path.write_bytes(PAYLOAD)
    findings, _ = run_engines(path, "pickle", engines=["picklescan"], limits=Limits())
    assert [(f.symbol, f.technique) for f in findings] == [
        ("marshal.loads", TECHNIQUES["malware"])]


def test_malicious_member_of_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", MALICIOUS)
        zf.writestr("archive/version", "3\n")
    findings, _ = run_engines(path, "pytorch-zip", limits=Limits())
    by = _by_engine(findings)
    for engine in ENGINES:
        assert "os.system" in {f.symbol for f in by[engine] if f.severity == "critical"}, engine
    assert any(f.location.startswith("entry archive/data.pkl") for f in by["fickling"])
    assert any(f.location == "entry archive/data.pkl" for f in by["modelscan"])


def test_unsupported_format_and_size_cap_reported(malicious: Path) -> None:
    findings, messages = run_engines(malicious, "onnx", limits=Limits())
    assert findings == []
    assert messages == [f"{e}: does not support format 'onnx'" for e in ENGINES]
    findings, messages = run_engines(malicious, "pickle", limits=Limits(), max_bytes=4)
    assert findings == []
    assert len(messages) == 3 and all("size cap" in m for m in messages)


def test_engine_crash_does_not_stop_others(malicious: Path, monkeypatch) -> None:
    import picklescan.scanner

    def boom(*_a, **_k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(picklescan.scanner, "scan_pickle_bytes", boom)
    findings, messages = run_engines(malicious, "pickle", limits=Limits())
    assert messages == ["picklescan: failed: RuntimeError: kaput"]
    assert {f.engine for f in findings} == {"fickling", "modelscan"}


def test_unknown_engine_and_versions() -> None:
    with pytest.raises(ValueError, match="nope"):
        run_engines(Path("x"), "pickle", engines=["nope"], limits=Limits())
    versions = engine_versions()
    assert versions == {"fickling": "0.1.12", "picklescan": "1.0.5", "modelscan": "0.8.8"}
