"""7z archives as containers (payload found under ``a.7z!x.pkl``, bombs refused from their
declared sizes before anything is unpacked) and encrypted members (zip and 7z) reported as
``archive.encrypted`` (medium), not as corrupt archives. Nothing here is ever loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_builders import MALICIOUS, encrypted_zip, seven_zip

from mlthreat.scan.findings import Limits
from mlthreat.scan.scanner import Scanner
from mlthreat.scan.sniff import CONTAINERS, sniff

py7zr = pytest.importorskip("py7zr")

def _records(report, root: Path) -> dict[str, tuple[str | None, str]]:  # type: ignore[no-untyped-def]
    """Each file's (format, verdict), by its name under ``root``."""
    return {r.path.removeprefix(f"{root}/"): (r.format, r.verdict) for r in report.files}


def test_7z_is_sniffed_as_a_container(tmp_path: Path) -> None:
    path = seven_zip(tmp_path / "a.7z", {"x.pkl": MALICIOUS})
    with path.open("rb") as fh:
        assert sniff(fh) == "7z"
    assert "7z" in CONTAINERS


def test_payload_pickle_in_7z_is_found_under_its_member_name(tmp_path: Path) -> None:
    path = seven_zip(tmp_path / "a.7z", {"x.pkl": MALICIOUS,
                                         "docs/card.md": b"# a model card\n"})
    report = Scanner(engines=()).run([path])
    [finding] = [f for f in report.findings if f.severity == "critical"]
    assert (finding.path, finding.symbol) == (f"{path}!x.pkl", "os.system")
    assert _records(report, tmp_path) == {
        "a.7z": ("7z", "findings"), "a.7z!x.pkl": ("pickle", "findings"),
        "a.7z!docs/card.md": (None, "skipped")}
    # members were unpacked into the scan's own temporary folder, which is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.7z"]


def test_7z_bomb_refused_from_declared_sizes_before_unpacking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = seven_zip(tmp_path / "bomb.7z", {"zeros.bin": bytes(8 << 20)})
    assert bomb.stat().st_size < 4096  # 8 MiB declared from a few hundred bytes

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a declared bomb must not be unpacked")

    monkeypatch.setattr(py7zr.SevenZipFile, "extract", never)
    report = Scanner(engines=()).run([bomb])
    [finding] = report.findings
    assert (finding.rule, finding.severity, finding.details["declared_bytes"]) == (
        "archive.bomb", "high", 8 << 20)
    assert _records(report, tmp_path) == {"bomb.7z": ("7z", "error")}
    # the unpacked-bytes budget is checked on declared sizes too
    small = seven_zip(tmp_path / "small.7z", {"a.pkl": MALICIOUS, "b.pkl": MALICIOUS})
    report = Scanner(engines=(), limits=Limits(max_unpacked_bytes=len(MALICIOUS))).run([small])
    assert [f.rule for f in report.findings] == ["archive.bomb"]


def test_7z_member_count_and_depth_bounds(tmp_path: Path) -> None:
    path = seven_zip(tmp_path / "many.7z", {f"{i}.pkl": MALICIOUS for i in range(4)})
    report = Scanner(engines=(), limits=Limits(max_members=2)).run([path])
    assert [f.rule for f in report.findings if f.rule.startswith("archive.")] == [
        "archive.too-many-members"]
    assert len([f for f in report.findings if f.severity == "critical"]) == 2
    inner = seven_zip(tmp_path / "inner.7z", {"x.pkl": MALICIOUS})
    outer = seven_zip(tmp_path / "outer.7z", {"inner.7z": inner.read_bytes()})
    report = Scanner(engines=(), limits=Limits(max_depth=1)).run([outer])
    assert [(Path(f.path).name, f.rule) for f in report.findings] == [
        ("outer.7z!inner.7z", "archive.too-deep")]


def test_corrupt_7z_is_unparseable(tmp_path: Path) -> None:
    good = seven_zip(tmp_path / "good.7z", {"x.pkl": MALICIOUS}).read_bytes()
    bad = tmp_path / "bad.7z"
    bad.write_bytes(good[:40])
    [finding] = Scanner(engines=()).run([bad]).findings
    assert (finding.rule, finding.severity) == ("scan.unparseable", "high")


def test_encrypted_zip_member_is_medium_encrypted_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(encrypted_zip())
    report = Scanner(engines=()).run([path])
    by_rule = {f.rule: f for f in report.findings}
    assert set(by_rule) == {"archive.encrypted", "pickle.dangerous-global"}
    enc = by_rule["archive.encrypted"]
    assert (enc.path, enc.severity, enc.details["encryption"]) == (
        f"{path}!secret.pkl", "medium", "ZipCrypto")
    assert enc.message.startswith("encrypted: member secret.pkl cannot be scanned")
    # the other member is still scanned; the encrypted one is recorded as not scanned
    assert by_rule["pickle.dangerous-global"].path == f"{path}!plain.pkl"
    assert _records(report, tmp_path)["bundle.zip!secret.pkl"] == (None, "error")


@pytest.mark.parametrize("header", [False, True])
def test_encrypted_7z_is_medium_encrypted(tmp_path: Path, header: bool) -> None:
    path = seven_zip(tmp_path / "s.7z", {"x.pkl": MALICIOUS}, password="pw",
               header_encryption=header)
    [finding] = Scanner(engines=()).run([path]).findings
    assert (finding.rule, finding.severity) == ("archive.encrypted", "medium")
    # with the file list encrypted too, even the member's name is unknown
    assert finding.path == (str(path) if header else f"{path}!x.pkl")


def test_7z_member_unpacking_past_its_declared_size_is_stopped(tmp_path: Path) -> None:
    """A header that lies: the writer py7zr is given counts bytes against the declared size."""
    from mlthreat.scan.sevenzip import _Spool, _Stop
    from mlthreat.scan.walk import Budget

    spool = _Spool(tmp_path, "lie.7z", {"x.pkl": 4}, Budget(Limits()))
    writer = spool.create("x.pkl")
    assert writer.write(b"1234") == 4
    with pytest.raises(_Stop) as stop:
        writer.write(b"5")
    assert (stop.value.finding.rule, stop.value.finding.location) == ("archive.bomb",
                                                                      "entry x.pkl")
    writer.fh.close()
    # and the archive's total against the unpacked-bytes budget
    tight = _Spool(tmp_path, "big.7z", {}, Budget(Limits(max_unpacked_bytes=3)))
    other = tight.create("y.pkl")
    with pytest.raises(_Stop, match="budget"):
        other.write(b"1234")
    other.fh.close()
