"""The whole scan: sniffing by bytes, folders, nested archives, bombs, bounds and reports.

Every fixture is built in ``tmp_path`` from opcode bytes or by the real writers of benign
formats; nothing malicious is ever loaded. Layer names of compressed files: a gzip/bz2/xz
layer's single member is the outer name without its suffix (``x.tar.gz!x.tar``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import format_builders as fb
import numpy as np
import pickle_builders as pb
import pytest

from mlthreat.errors import UsageError
from mlthreat.scan.findings import TECHNIQUES, Finding, Limits
from mlthreat.scan.scanner import FileRecord, Scanner, ScanReport
from mlthreat.scan.sniff import sniff

# GLOBAL os.system; MARK; STRING 'id'; TUPLE; REDUCE; STOP  (protocol 0, never loaded)
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."
UNSAFE = TECHNIQUES["unsafe"]
MB = 1024 * 1024


def ours(report: ScanReport) -> list[tuple[str, str, str]]:
    return [(f.path, f.rule, f.symbol) for f in report.findings if f.engine == "mlthreat"]


def records(report: ScanReport) -> dict[str, tuple[str | None, str]]:
    return {r.path: (r.format, r.verdict) for r in report.files}


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def sklearn_pickle() -> bytes:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    return pickle.dumps(LogisticRegression(max_iter=300).fit(x, y))


# ---- sniffing ---------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    return sniff(io.BytesIO(data))


@pytest.mark.parametrize(("data", "expected"), [
    (MALICIOUS, "pickle"),
    (MALICIOUS[:-4], "pickle"),                       # truncated after the import
    (pb.call_p4("os", "system", "id"), "pickle"),
    (pickle.dumps({"a": 1}, protocol=1), "pickle"),
    (b"\x93NUMPY\x01\x00", "numpy"),
    (b"\x89HDF\r\n\x1a\n" + bytes(8), "keras-h5"),
    (b"GGUF\x03\x00\x00\x00", "gguf"),
    (fb.safetensors_bytes({"w": np.zeros(2, np.float32)}), "safetensors"),
    (gzip.compress(MALICIOUS, mtime=0), "gzip"),
    (zlib.compress(MALICIOUS), "zlib"),
    (tar_bytes({"a.pkl": MALICIOUS}), "tar"),
    (zip_bytes({"archive/data.pkl": MALICIOUS, "archive/version": b"3\n"}), "pytorch-zip"),
    (zip_bytes({"a.npy": b"\x93NUMPY", "b.npy": b"\x93NUMPY"}), "npz"),
    (zip_bytes({"config.json": b"{}", "metadata.json": b"{}"}), "keras-zip"),
    (zip_bytes({"schema.json": b"{}"}), "skops"),
    (zip_bytes({"notes.txt": b"hi"}), "zip"),
    (b"PK\x05\x06" + bytes(18), "zip"),               # empty zip: end record only
    (b"PK\x03\x04garbage", "zip"),
    (b"# Title\n\nSome text.\n", None),
    (b"cat\nfoo\n", None),                             # looks like GLOBAL, then nothing
    (b"Version 1\nNotes\n", None),
    (b"(not a pickle)\n", None),
    (b'{"model_type": "bert"}', None),
    (b"x^2 + y^2\n", None),                            # a zlib-like header that is text
    (b"\x89PNG\r\n\x1a\n", None),
    (b"", None),
])
def test_sniff_by_bytes(data: bytes, expected: str | None) -> None:
    assert _sniff(data) == expected


def test_sniff_onnx_and_real_writers(tmp_path: Path) -> None:
    onnx_path = fb.onnx_model(tmp_path)
    keras_path = fb.keras_zip(tmp_path, fb.keras_sequential(with_lambda=False))
    skops_path = fb.skops_model(tmp_path)
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    for path, expected in [(onnx_path, "onnx"), (keras_path, "keras-zip"),
                           (skops_path, "skops"), (tmp_path / "arrays.npz", "npz")]:
        with path.open("rb") as fh:
            assert sniff(fh, path.name) == expected, path.name
    # protobuf that is not a ModelProto: field 1 then an unknown field 9
    assert _sniff(b"\x08\x07\x48\x01") is None


# ---- folders ----------------------------------------------------------------------------


def test_folder_benign_text_and_renamed_pickle(tmp_path: Path, sklearn_pickle: bytes) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "model.pkl").write_bytes(sklearn_pickle)
    (root / "README.md").write_text("# My model\n\nTrained on iris.\n")
    (root / "config.json").write_text(json.dumps({"model_type": "logreg"}))
    (root / "weights.safetensors").write_bytes(MALICIOUS)   # a pickle by its bytes
    (root / "link.pkl").symlink_to("model.pkl")  # inside the folder: scanned as model.pkl
    seen: list[tuple[int, int | None, str]] = []
    report = Scanner(engines=()).run([root], progress=lambda *a: seen.append(a))
    assert records(report) == {
        str(root / "README.md"): (None, "skipped"),
        str(root / "config.json"): (None, "skipped"),
        str(root / "link.pkl"): (None, "skipped"),
        str(root / "model.pkl"): ("pickle", "clean"),
        str(root / "weights.safetensors"): ("pickle", "findings"),
    }
    assert [r.path for r in report.files] == sorted(r.path for r in report.files)
    assert ours(report) == [(str(root / "weights.safetensors"), "pickle.dangerous-global",
                             "os.system")]
    (finding,) = report.findings
    assert (finding.format, finding.severity, finding.technique) == ("pickle", "critical", UNSAFE)
    link = next(r for r in report.files if r.path.endswith("link.pkl"))
    assert link.note == "symbolic link (not followed)"
    benign = next(r for r in report.files if r.path.endswith("model.pkl"))
    assert benign.size == len(sklearn_pickle)
    import hashlib
    assert benign.sha256 == hashlib.sha256(sklearn_pickle).hexdigest()
    assert [s[:2] for s in seen] == [(i, 5) for i in range(1, 6)]
    d = report.to_dict()
    assert (d["kind"], d["schema_version"]) == ("mlthreat.scan.report", 1)
    assert d["counts"] == {"critical": 1, "high": 0, "medium": 0, "low": 0, "info": 0}
    assert d["verdicts"] == {"clean": 1, "findings": 1, "error": 0, "skipped": 3}
    json.dumps(d)


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        Scanner(engines=()).run([tmp_path / "nope"])
    with pytest.raises(UsageError, match="unknown engine"):
        Scanner(engines=("clamav",)).validate()


# ---- archives ---------------------------------------------------------------------------


def test_zip_named_bin_is_pytorch_zip(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(zip_bytes({"archive/data.pkl": MALICIOUS, "archive/version": b"3\n"}))
    report = Scanner(engines=()).run([path])
    assert records(report) == {str(path): ("pytorch-zip", "findings")}
    assert ours(report) == [(f"{path}!archive/data.pkl", "pickle.dangerous-global", "os.system")]
    assert report.findings[0].format == "pytorch-zip"


def test_tar_gz_zip_pickle_nesting(tmp_path: Path) -> None:
    inner = zip_bytes({"evil.pkl": MALICIOUS})
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(tar_bytes({"inner.zip": inner})))
    report = Scanner(engines=()).run([path])
    evil = f"{path}!x.tar!inner.zip!evil.pkl"
    assert records(report) == {
        # an archive is as bad as its worst member
        str(path): ("gzip", "findings"),
        f"{path}!x.tar": ("tar", "findings"),
        f"{path}!x.tar!inner.zip": ("zip", "findings"),
        evil: ("pickle", "findings"),
    }
    assert ours(report) == [(evil, "pickle.dangerous-global", "os.system")]
    assert report.exit_code("critical") == 1


def test_nesting_beyond_max_depth(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(zip_bytes({"b.zip": zip_bytes({"c.pkl": MALICIOUS})}))
    report = Scanner(engines=(), limits=Limits(max_depth=1)).run([path])
    assert ours(report) == [(f"{path}!b.zip", "archive.too-deep", "")]
    assert records(report) == {str(path): ("zip", "error"), f"{path}!b.zip": ("zip", "error")}
    assert report.findings[0].severity == "high"
    # the default depth reaches the pickle
    deep = Scanner(engines=()).run([path])
    assert ours(deep) == [(f"{path}!b.zip!c.pkl", "pickle.dangerous-global", "os.system")]


def _write_zeros(w: io.BufferedIOBase | gzip.GzipFile | object, megabytes: int) -> None:
    chunk = bytes(MB)
    for _ in range(megabytes):
        w.write(chunk)  # type: ignore[attr-defined]


def test_zip_and_gzip_bombs_bounded_memory(tmp_path: Path) -> None:
    zbomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zbomb, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("zeros", "w", force_zip64=True) as w:
        _write_zeros(w, 200)
    gbomb = tmp_path / "bomb.gz"
    with gzip.open(gbomb, "wb", compresslevel=9) as g:
        _write_zeros(g, 200)
    assert zbomb.stat().st_size < MB and gbomb.stat().st_size < MB
    tracemalloc.start()
    try:
        report = Scanner(engines=()).run([zbomb, gbomb])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MB
    assert ours(report) == [(str(gbomb), "archive.bomb", ""), (str(zbomb), "archive.bomb", "")]
    zf_finding = next(f for f in report.findings if f.path == str(zbomb))
    assert zf_finding.location == "entry zeros"
    assert zf_finding.details["unpacked_bytes"] == 200 * MB
    gz_finding = next(f for f in report.findings if f.path == str(gbomb))
    assert gz_finding.location == "entry bomb"
    # the gzip has no trusted size: it was stopped while streaming, at the ratio cap
    assert gz_finding.details["unpacked_bytes_at_stop"] > 200 * gbomb.stat().st_size
    assert records(report) == {str(zbomb): ("zip", "error"), str(gbomb): ("gzip", "error")}


def test_unpacked_budget_and_member_count(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    path.write_bytes(zip_bytes({f"m{i}.pkl": MALICIOUS for i in range(5)}))
    report = Scanner(engines=(), limits=Limits(max_members=3)).run([path])
    rules = [(f.path, f.rule) for f in report.findings]
    assert rules.count((str(path), "archive.too-many-members")) == 1
    assert [r.path for r in report.files] == [str(path)] + [f"{path}!m{i}.pkl" for i in range(3)]
    budget = Scanner(engines=(), limits=Limits(max_unpacked_bytes=2 * len(MALICIOUS)))
    report = budget.run([path])
    assert [r.path for r in report.files] == [str(path)] + [f"{path}!m{i}.pkl" for i in range(2)]
    assert [f.rule for f in report.findings if f.rule.startswith("archive.")] == ["archive.bomb"]


def test_timeout_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(zip_bytes({"c.pkl": MALICIOUS}))
    report = Scanner(engines=(), limits=Limits(seconds_per_file=0)).run([path])
    assert ours(report) == [(str(path), "scan.timeout", "")]
    assert records(report) == {str(path): ("zip", "error")}


def test_truncated_pickle_and_corrupt_zip(tmp_path: Path) -> None:
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(MALICIOUS[:-4])          # ends inside STRING, after GLOBAL os.system
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + os.urandom(64))
    report = Scanner(engines=()).run([trunc, corrupt])
    assert sorted(ours(report)) == [
        (str(corrupt), "scan.unparseable", ""),
        (str(trunc), "pickle.dangerous-global", "os.system"),
        (str(trunc), "scan.unparseable", ""),
    ]
    unparseable = next(f for f in report.findings
                       if f.rule == "scan.unparseable" and f.path == str(trunc))
    assert unparseable.message.startswith("cannot parse as pickle at offset 17:")
    assert (unparseable.severity, unparseable.technique) == ("high", UNSAFE)
    assert records(report) == {str(trunc): ("pickle", "error"), str(corrupt): ("zip", "error")}


def test_sparse_3gb_files_are_quick_and_bounded(tmp_path: Path) -> None:
    big_pickle = tmp_path / "big.pkl"
    with big_pickle.open("wb") as f:
        # PROTO 4; BINBYTES8 declaring 3 GiB: the analyser seeks over it, finds no STOP
        f.write(b"\x80\x04\x8e" + struct.pack("<Q", 3 * 1024**3))
        f.truncate(3 * 1024**3)
    big_st = tmp_path / "big.bin"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with big_st.open("wb") as f:
        f.write(fb.safetensors_raw(header, b""))
        f.truncate(3 * 1024**3)
    start = time.monotonic()
    tracemalloc.start()
    try:
        # hashing would read all 3 GiB twice (seconds per GiB): the analysis itself only seeks
        report = Scanner(hash_files=False).run([big_pickle, big_st])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5
    assert peak < 16 * MB
    assert ours(report) == [(str(big_pickle), "scan.unparseable", ""),
                            (str(big_st), "safetensors.bad-header", "")]
    assert "truncated pickle" in report.findings[0].message
    assert records(report) == {str(big_pickle): ("pickle", "error"),
                               str(big_st): ("safetensors", "findings")}
    assert {(r.size, r.sha256) for r in report.files} == {(3 * 1024**3, "")}
    # over the engines' size cap: they are skipped, and the skip is reported
    assert [m.split(": ")[1] for m in report.engine_messages] == [
        "fickling", "picklescan", "modelscan"]
    assert all("over the engine size cap" in m for m in report.engine_messages)


def test_internal_error_does_not_stop_the_scan(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mlthreat.scan.formats import pickle as pkfmt

    def boom(*args: object, **kwargs: object) -> list[Finding]:
        raise RuntimeError("analyser bug")

    monkeypatch.setattr(pkfmt, "analyze", boom)
    (tmp_path / "a.pkl").write_bytes(MALICIOUS)
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY\x01\x00")   # truncated header
    report = Scanner(engines=()).run([tmp_path])
    assert sorted(ours(report)) == [(str(tmp_path / "a.pkl"), "scan.internal-error", ""),
                                    (str(tmp_path / "b.npy"), "scan.unparseable", "")]
    err = next(f for f in report.findings if f.rule == "scan.internal-error")
    assert err.message == ("internal error in mlthreat.scan.formats.pickle:analyze: "
                           "RuntimeError: analyser bug")


# ---- engines and exit codes -------------------------------------------------------------


def test_engines_on_files_and_archive_members(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(MALICIOUS)
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(tar_bytes({"inner/evil.pkl": MALICIOUS}))
    only_ours = Scanner(engines=()).run([evil, bundle])
    assert {f.engine for f in only_ours.findings} == {"mlthreat"}
    assert only_ours.engine_messages == []
    full = Scanner().run([evil, bundle])
    member = f"{bundle}!inner/evil.pkl"
    # one finding per file and global, ours kept, every engine that agreed listed on it
    critical = sorted((f.path, f.symbol, f.engine, f.engines) for f in full.findings
                      if f.severity == "critical")
    agreed = ("mlthreat", "fickling", "picklescan", "modelscan")
    assert critical == [(member, "os.system", "mlthreat", agreed),
                        (str(evil), "os.system", "mlthreat", agreed)]
    # engine findings are kept under the member's scan name (not the temp file)
    assert all(f.path in (str(evil), member) for f in full.findings)
    assert full.to_dict()["counts"]["critical"] == 2


def test_exit_code_levels(tmp_path: Path, sklearn_pickle: bytes) -> None:
    benign = tmp_path / "model.pkl"
    benign.write_bytes(sklearn_pickle)
    clean = Scanner(engines=()).run([benign])
    assert [clean.exit_code(level) for level in ("critical", "high", "info")] == [0, 0, 0]
    # engines flag every non-stdlib import; globals the allow-list admits drop to info
    noisy = Scanner(engines=("picklescan",)).run([benign])
    assert noisy.findings and {f.severity for f in noisy.findings} == {"info"}
    assert {(f.details["engine_severity"], f.details["allowed_by_policy"])
            for f in noisy.findings} == {("low", True)}
    assert [noisy.exit_code(level) for level in ("critical", "high", "medium", "low", "info")] \
        == [0, 0, 0, 0, 1]
    assert records(noisy) == {str(benign): ("pickle", "clean")}
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(MALICIOUS)
    bad = Scanner(engines=()).run([evil])
    assert [bad.exit_code(level) for level in ("critical", "high", "info")] == [1, 1, 1]
    with pytest.raises(ValueError):
        bad.exit_code("severe")


def test_report_ordering() -> None:
    def f(path: str, severity: str) -> Finding:
        return Finding(path=path, format="pickle", severity=severity, rule="r", message="m",
                       technique=UNSAFE)

    report = ScanReport(findings=[f("a", "critical"), f("b", "low")],
                        files=[FileRecord("a", "pickle", 1, "00", "findings")])
    assert report.counts() == {"critical": 1, "high": 0, "medium": 0, "low": 1, "info": 0}
    assert report.to_dict()["files"] == [{"path": "a", "format": "pickle", "size": 1,
                                          "sha256": "00", "verdict": "findings", "note": ""}]


def test_compressed_single_streams_and_joblib(tmp_path: Path, sklearn_pickle: bytes) -> None:
    import bz2
    import lzma

    import joblib
    from sklearn.linear_model import LogisticRegression

    (tmp_path / "a.pkl.bz2").write_bytes(bz2.compress(MALICIOUS))
    (tmp_path / "b.pkl.xz").write_bytes(lzma.compress(MALICIOUS))
    (tmp_path / "c.tgz").write_bytes(gzip.compress(tar_bytes({"d.pkl": MALICIOUS})))
    joblib.dump(LogisticRegression(), tmp_path / "model.joblib", compress=("zlib", 3))
    report = Scanner(engines=()).run([tmp_path])
    assert records(report) == {
        f"{tmp_path}/a.pkl.bz2": ("bz2", "findings"),
        f"{tmp_path}/a.pkl.bz2!a.pkl": ("pickle", "findings"),
        f"{tmp_path}/b.pkl.xz": ("xz", "findings"),
        f"{tmp_path}/b.pkl.xz!b.pkl": ("pickle", "findings"),
        f"{tmp_path}/c.tgz": ("gzip", "findings"),
        f"{tmp_path}/c.tgz!c.tar": ("tar", "findings"),
        f"{tmp_path}/c.tgz!c.tar!d.pkl": ("pickle", "findings"),
        f"{tmp_path}/model.joblib": ("zlib", "clean"),
        f"{tmp_path}/model.joblib!model.joblib": ("pickle", "clean"),
    }
    assert {f.symbol for f in report.findings} == {"os.system"}
    assert len(report.findings) == 3


def test_compressed_npz_of_zeros_is_no_bomb(tmp_path: Path) -> None:
    """np.savez_compressed squeezes 360 KB of zeros into 450 bytes (ratio 800): under the
    ratio floor, a model file, not a decompression bomb."""
    import numpy as np

    path = tmp_path / "weights.npz"
    np.savez_compressed(path, a=np.arange(100_000.0), b=np.zeros((300, 300), np.float32))
    report = Scanner(engines=()).run([path])
    assert report.findings == []
    assert records(report) == {str(path): ("npz", "clean")}


@pytest.mark.parametrize("prefix", [
    b"\x80\x01",                     # PROTO 1: the unpickler takes any protocol up to 5
    b"\x80\x00",                     # PROTO 0
    b"\x8c\x01a0",                   # SHORT_BINUNICODE then POP, no PROTO: still loads
    b"K\x010",                       # BININT1 then POP
])
def test_pickles_that_do_not_start_like_pickles_are_still_pickles(tmp_path: Path,
                                                                  prefix: bytes) -> None:
    path = tmp_path / "model.dat"
    path.write_bytes(prefix + MALICIOUS)
    report = Scanner(engines=()).run([path])
    assert records(report) == {str(path): ("pickle", "findings")}
    assert {f.symbol for f in report.findings} == {"os.system"}


def test_a_pickle_cut_before_its_stop_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "cut.dat"  # the call runs before the unpickler misses STOP
    path.write_bytes(b"cos\nsystem\n(S'ls'\ntR")
    report = Scanner(engines=()).run([path])
    assert records(report)[str(path)][0] == "pickle"
    assert "os.system" in {f.symbol for f in report.findings}


def test_framed_pickle_without_proto(tmp_path: Path) -> None:
    path = tmp_path / "framed"
    path.write_bytes(b"\x95" + struct.pack("<Q", len(MALICIOUS)) + MALICIOUS)
    report = Scanner(engines=()).run([path])
    assert {f.symbol for f in report.findings} == {"os.system"}


@pytest.mark.parametrize("text", [b"# model card\nhello\n", b"cat\ndog and more\n",
                                  b'{"a": 1}\n', b"a,b\n1,2\n", b"NOTICE\n",
                                  # whole files that parse as opcodes but import nothing:
                                  # BINGET, LIST, LIST, OBJ; two INTs
                                  b"hello", b"I1\nI2\n"])
def test_text_files_are_not_pickles(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(text)
    assert records(Scanner(engines=()).run([path])) == {str(path): (None, "skipped")}


def test_file_named_like_a_model_with_unknown_bytes_is_a_finding(tmp_path: Path) -> None:
    junk = tmp_path / "weights.pt"
    junk.write_bytes(bytes(range(256)) * 16)
    empty = tmp_path / "model.onnx"
    empty.write_bytes(b"")
    report = Scanner(engines=()).run([tmp_path])
    assert sorted((Path(f.path).name, f.rule, f.severity) for f in report.findings) == [
        ("model.onnx", "scan.unrecognised", "medium"),
        ("weights.pt", "scan.unrecognised", "medium")]
    assert set(records(report).values()) == {(None, "error")}


def test_hostile_file_names_are_reported_printable(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    for raw in (b"bad\xffbyte.pkl", b"\x1b[31mred.pkl"):
        with open(os.path.join(folder, raw), "wb") as fh:
            fh.write(MALICIOUS)
    report = Scanner(engines=()).run([tmp_path])
    names = sorted(Path(f.path).name for f in report.findings)
    assert names == ["\\x1b[31mred.pkl", "bad\\xffbyte.pkl"]
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # no lone surrogates


# ---- symbolic links ----------------------------------------------------------------------


def _link_tree(tmp_path: Path) -> Path:
    """models/ with a link out to an evil pickle, a dangling link, a two-link loop, a link
    to the parent folder and one back to its own folder (inside, harmless unless followed)."""
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.pkl").write_bytes(MALICIOUS)
    (root / "pytorch_model.bin").symlink_to("../outside/evil.pkl")
    (root / "dangling.bin").symlink_to("nowhere.bin")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "up").symlink_to("..")
    (root / "sub" / "back").symlink_to("..")
    return root


def test_links_not_followed_are_findings_when_they_hide_files(tmp_path: Path) -> None:
    root = _link_tree(tmp_path)
    report = Scanner(engines=()).run([root])
    got = {(Path(f.path).relative_to(root).as_posix(), f.rule, f.severity, f.location)
           for f in report.findings}
    assert got == {
        ("pytorch_model.bin", "scan.symlink-outside", "high", "-> ../outside/evil.pkl"),
        ("dangling.bin", "scan.symlink-dangling", "high", "-> nowhere.bin"),
        ("loop-a", "scan.symlink-loop", "high", "-> loop-b"),
        ("loop-b", "scan.symlink-loop", "high", "-> loop-a"),
        ("up", "scan.symlink-outside", "high", "-> .."),
    }
    assert all(f.technique == UNSAFE and f.format == "symlink" for f in report.findings)
    assert records(report)[str(root / "sub" / "back")] == (None, "skipped")
    assert report.exit_code("high") == 1
    evil = next(f for f in report.findings if f.path.endswith("pytorch_model.bin"))
    assert f"resolves to {tmp_path / 'outside' / 'evil.pkl'}" in evil.message
    assert evil.details == {"target": "../outside/evil.pkl"}


def test_follow_symlinks_scans_targets_once_and_reports_loops(tmp_path: Path) -> None:
    root = _link_tree(tmp_path)
    t0 = time.monotonic()
    report = Scanner(engines=(), follow_symlinks=True).run([root])
    assert time.monotonic() - t0 < 5
    got = sorted((Path(f.path).relative_to(root).as_posix(), f.rule) for f in report.findings)
    assert got == [
        ("dangling.bin", "scan.symlink-dangling"),
        ("loop-a", "scan.symlink-loop"),
        ("loop-b", "scan.symlink-loop"),
        ("pytorch_model.bin", "pickle.dangerous-global"),   # the target, under the link
        ("sub/back", "scan.symlink-loop"),                  # back into a folder being walked
        ("up/models", "scan.symlink-loop"),                 # up/ holds models/ again
        ("up/outside/evil.pkl", "pickle.dangerous-global"),
    ]
    assert records(report)[str(root / "pytorch_model.bin")] == ("pickle", "findings")


def test_follow_symlinks_must_be_bool() -> None:
    with pytest.raises(UsageError, match="follow_symlinks"):
        Scanner(follow_symlinks="yes").validate()  # type: ignore[arg-type]
