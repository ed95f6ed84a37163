"""Pickle, PyTorch zip and NumPy analysers: benign model files are clean, known pickle
attacks and bypasses are found. Every fixture is written here; nothing is ever unpickled."""

from __future__ import annotations

import io
import marshal
import os
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pickle_builders as pb
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import numpy as npfmt
from mlthreat.scan.formats import pickle as pkfmt
from mlthreat.scan.formats import torch as tfmt
from mlthreat.scan.policy import Policy

POLICY = Policy.default()
UNSAFE = TECHNIQUES["unsafe"]
MALWARE = TECHNIQUES["malware"]


def scan_bytes(data: bytes, analyzer=pkfmt.analyze, limits: Limits | None = None,
               path: str = "m.pkl") -> list[Finding]:
    return analyzer(io.BytesIO(data), path=path, size=len(data), limits=limits or Limits(),
                    policy=POLICY)


def scan_file(p: Path, analyzer=pkfmt.analyze) -> list[Finding]:
    with p.open("rb") as fh:
        return analyzer(fh, path=str(p), size=p.stat().st_size, limits=Limits(),
                        policy=POLICY)


def summary(findings: list[Finding]) -> set[tuple[str, str, str, str]]:
    return {(f.rule, f.severity, f.symbol, f.technique) for f in findings}


class Evil:
    """Pickles as a call to os.system (whose module is posix); only ever pickled."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def iris_model() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(x, y)


# ---- benign files ---------------------------------------------------------------------


def test_sklearn_pickle_is_clean(tmp_path: Path, iris_model: LogisticRegression) -> None:
    p = tmp_path / "lr.pkl"
    p.write_bytes(pickle.dumps(iris_model, protocol=5))
    assert scan_file(p) == []


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_sklearn_pickle_old_protocols_clean(iris_model: LogisticRegression,
                                            protocol: int) -> None:
    assert scan_bytes(pickle.dumps(iris_model, protocol=protocol)) == []


def test_sklearn_joblib_is_clean(tmp_path: Path, iris_model: LogisticRegression) -> None:
    p = tmp_path / "lr.joblib"
    joblib.dump(iris_model, p)
    assert b"NumpyArrayWrapper" in p.read_bytes()
    assert scan_file(p) == []


def test_joblib_arrays_various_dtypes_clean(tmp_path: Path) -> None:
    p = tmp_path / "arrays.joblib"
    joblib.dump({"f": np.arange(7.0), "i": np.arange(5, dtype=">i4").reshape(5, 1),
                 "u": np.array(["ab", "cde"]), "fortran": np.asfortranarray(np.ones((3, 4))),
                 "empty": np.zeros((0, 3)), "obj": np.array([1, "x", None], dtype=object),
                 "after": np.arange(3)}, p)
    assert scan_file(p) == []


def test_joblib_object_array_payload_is_found(tmp_path: Path) -> None:
    p = tmp_path / "evil.joblib"
    joblib.dump({"a": np.arange(4.0), "obj": np.array([Evil()], dtype=object)}, p)
    found = scan_file(p)
    assert summary(found) == {("pickle.dangerous-global", "critical", "posix.system", UNSAFE)}


def test_torch_zip_state_dict_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    p = tmp_path / "sd.pt"
    torch.save({"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.int64)}, p)
    assert scan_file(p, tfmt.analyze) == []


def test_torch_legacy_state_dict_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    p = tmp_path / "sd_legacy.pt"
    torch.save({"w": torch.randn(30, 40), "b": torch.zeros(4)}, p,
               _use_new_zipfile_serialization=False)
    assert scan_file(p) == []


def test_npy_float_and_object_ints_clean(tmp_path: Path) -> None:
    f = tmp_path / "f.npy"
    np.save(f, np.linspace(0, 1, 50).reshape(5, 10))
    o = tmp_path / "o.npy"
    np.save(o, np.array([1, 2, 3], dtype=object), allow_pickle=True)
    assert scan_file(f, npfmt.analyze_npy) == []
    assert scan_file(o, npfmt.analyze_npy) == []


def test_npz_clean_and_compressed(tmp_path: Path) -> None:
    for save in (np.savez, np.savez_compressed):
        p = tmp_path / f"{save.__name__}.npz"
        save(p, a=np.arange(10.0), b=np.array([1, None], dtype=object))
        assert scan_file(p, npfmt.analyze_npz) == []


# ---- malicious pickles ----------------------------------------------------------------


def test_os_system_protocol0_global() -> None:
    found = scan_bytes(pb.call_p0("os", "system", "echo pwned"))
    assert len(found) == 1
    f = found[0]
    assert (f.rule, f.severity, f.symbol, f.technique) == (
        "pickle.dangerous-global", "critical", "os.system", UNSAFE)
    assert f.location == "offset 0 (GLOBAL)"
    assert f.format == "pickle" and f.path == "m.pkl" and f.details["count"] == 1


def test_os_system_protocol4_stack_global() -> None:
    data = pb.call_p4("os", "system", "echo pwned")
    found = scan_bytes(data)
    assert summary(found) == {("pickle.dangerous-global", "critical", "os.system", UNSAFE)}
    assert found[0].location == f"offset {data.index(pb.STACK_GLOBAL)} (STACK_GLOBAL)"


def test_builtins_eval_and_py2_name() -> None:
    assert summary(scan_bytes(pb.call_p4("builtins", "eval", "1+1"))) == {
        ("pickle.dangerous-global", "critical", "builtins.eval", UNSAFE)}
    # Protocol < 3 maps Python 2 names like the real unpickler: __builtin__ is builtins.
    found = scan_bytes(pb.call_p0("__builtin__", "eval", "1+1"))
    assert summary(found) == {("pickle.dangerous-global", "critical", "builtins.eval", UNSAFE)}
    assert found[0].details["as_written"] == "__builtin__.eval"


def test_repeated_global_counted_once_per_stream() -> None:
    call = pb.global_op("os", "system") + pb.ustr("a") + pb.TUPLE1 + pb.REDUCE
    data = pb.proto(2) + pb.MARK + call + call + call + pb.TUPLE + pb.STOP
    found = scan_bytes(data)
    assert len(found) == 1 and found[0].details["count"] == 3


def test_memo_confusion_bypass() -> None:
    data = pb.memo_confusion()
    assert pb.naive_memo_globals(data) == ["builtins.set"]  # what a naive reader sees
    found = scan_bytes(data)
    assert summary(found) == {("pickle.dangerous-global", "critical", "os.system", UNSAFE)}


def test_nested_pickle_loads() -> None:
    data = pb.nested_loads(pb.call_p0("os", "system", "echo pwned"))
    found = scan_bytes(data)
    assert summary(found) == {("pickle.payload-global", "critical", "pickle.loads", MALWARE),
                              ("pickle.dangerous-global", "critical", "os.system", UNSAFE)}
    # the inner pickle is scanned too, its findings named by where it sits in the outer one
    inner = next(f for f in found if f.symbol == "os.system")
    assert inner.path == f"m.pkl#inner[offset {data.index(b'C')}, raw]"


def test_import_module_getattr_chain() -> None:
    found = scan_bytes(pb.import_module_getattr("os", "system", "echo pwned"))
    assert summary(found) == {
        ("pickle.dangerous-global", "critical", "builtins.getattr", UNSAFE),
        ("pickle.payload-global", "critical", "importlib.import_module", MALWARE)}


def test_marshal_code_function() -> None:
    code = marshal.dumps(compile("print('pwned')", "<payload>", "exec"))  # never executed
    found = scan_bytes(pb.marshal_function(code))
    assert summary(found) == {
        ("pickle.payload-global", "critical", "marshal.loads", MALWARE),
        ("pickle.payload-global", "critical", "types.FunctionType", MALWARE)}


def test_unknown_global_is_high() -> None:
    found = scan_bytes(pb.call_p4("mypkg", "Thing", "x"))
    assert summary(found) == {("pickle.global-not-allowed", "high", "mypkg.Thing", UNSAFE)}


def test_dotted_name_through_allowed_module() -> None:
    # Protocol 4 resolves "os.system" attribute by attribute from sklearn.base.
    found = scan_bytes(pb.call_p4("sklearn.base", "os.system", "x"))
    assert [(f.rule, f.severity, f.symbol) for f in found] == [
        ("pickle.dangerous-global", "critical", "sklearn.base.os.system")]


def test_unresolved_stack_global() -> None:
    data = (pb.proto(4) + pb.ustr("os") + pb.binbytes(b"system") + pb.STACK_GLOBAL
            + pb.ustr("x") + pb.TUPLE1 + pb.REDUCE + pb.STOP)
    found = scan_bytes(data)
    assert [(f.rule, f.severity, f.technique) for f in found] == [
        ("pickle.unresolved-global", "high", UNSAFE)]
    assert found[0].location == "offset 14 (STACK_GLOBAL)"


def test_hidden_second_pickle_and_trailing_data() -> None:
    benign = pickle.dumps([1, 2], protocol=4)
    found = scan_bytes(benign + pb.call_p4("os", "system", "x"))
    assert summary(found) == {("pickle.dangerous-global", "critical", "os.system", UNSAFE)}
    assert found[0].details["stream"] == 1
    found = scan_bytes(benign + b"\xffjunk")
    assert [(f.rule, f.severity) for f in found] == [("pickle.trailing-data", "low")]


# ---- errors and limits ----------------------------------------------------------------


def test_truncated_pickle_is_format_error() -> None:
    data = pickle.dumps({"a": list(range(100))}, protocol=4)
    with pytest.raises(FormatError) as exc:
        scan_bytes(data[:-20])
    assert "truncated" in str(exc.value)
    assert exc.value.location == f"offset {len(data) - 20}"


def test_garbage_is_format_error() -> None:
    with pytest.raises(FormatError) as exc:
        scan_bytes(b"\x80\x04\xff\xfe")
    assert exc.value.location == "offset 2"


def test_format_error_keeps_earlier_findings() -> None:
    data = pb.call_p4("os", "system", "x")[:-1] + b"\xff"
    with pytest.raises(FormatError) as exc:
        scan_bytes(data)
    assert [f.symbol for f in exc.value.findings] == ["os.system"]  # type: ignore[attr-defined]


def test_opcode_budget() -> None:
    data = pickle.dumps(list(range(20)), protocol=2)
    assert scan_bytes(data, limits=Limits(max_opcodes=1000)) == []
    with pytest.raises(FormatError, match="more than 10 opcodes"):
        scan_bytes(data, limits=Limits(max_opcodes=10))


def test_large_bytes_are_skipped_not_read() -> None:
    big = b"\0" * 3_000_000
    data = pickle.dumps({"blob": big}, protocol=4)
    # A header limit far below the argument size: skipped by seeking, so no error.
    assert scan_bytes(data, limits=Limits(max_header_bytes=1024)) == []


# ---- PyTorch zip ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_zip() -> bytes:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buf)
    return buf.getvalue()


def test_torch_zip_malicious_data_pkl(torch_zip: bytes) -> None:
    data = pb.replace_member(torch_zip, "/data.pkl", pb.call_p0("os", "system", "echo pwnd"))
    found = scan_bytes(data, tfmt.analyze, path="m.pt")
    assert summary(found) == {("pickle.dangerous-global", "critical", "os.system", UNSAFE)}
    assert found[0].path.startswith("m.pt!") and found[0].path.endswith("/data.pkl")
    assert found[0].format == "pytorch-zip"


def test_torch_zip_bad_crc_still_analysed(torch_zip: bytes) -> None:
    data = pb.replace_member(torch_zip, "/data.pkl", pb.call_p0("os", "system", "echo pwnd"))
    bad = pb.corrupt_stored(data, b"echo pwnd", b"echo PWND")
    found = scan_bytes(bad, tfmt.analyze, path="m.pt")
    assert summary(found) == {
        ("zip.bad-crc", "medium", "", TECHNIQUES["tampered"]),
        ("pickle.dangerous-global", "critical", "os.system", UNSAFE)}


def test_torch_zip_without_pkl_is_format_error() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data/0", b"\0" * 16)
    with pytest.raises(FormatError, match=r"without a \.pkl"):
        scan_bytes(buf.getvalue(), tfmt.analyze)


# ---- NumPy ----------------------------------------------------------------------------


def test_npy_object_payload_is_critical() -> None:
    data = pb.npy_with_pickle(pb.call_p4("os", "system", "echo pwned"))
    found = scan_bytes(data, npfmt.analyze_npy, path="a.npy")
    assert summary(found) == {("pickle.dangerous-global", "critical", "os.system", UNSAFE)}
    assert found[0].format == "numpy"
    # file offsets: a 128-byte header, then PROTO (2) and two SHORT_BINUNICODE (4 + 8)
    assert data.index(b"\x80\x04") == 128
    assert found[0].location == "offset 142 (STACK_GLOBAL)"


def test_npz_member_payload() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("evil.npy", pb.npy_with_pickle(pb.call_p0("os", "system", "x")))
    found = scan_bytes(buf.getvalue(), npfmt.analyze_npz, path="a.npz")
    assert [(f.path, f.symbol) for f in found] == [("a.npz!evil.npy", "os.system")]


def test_npy_truncated(tmp_path: Path) -> None:
    p = tmp_path / "f.npy"
    np.save(p, np.arange(100.0))
    data = p.read_bytes()
    with pytest.raises(FormatError, match="truncated"):
        scan_bytes(data[:-8], npfmt.analyze_npy)


@pytest.mark.parametrize(("put", "get"), [(pb.long_binput, pb.long_binget),
                                          (pb.put0, pb.get0), (pb.binput, pb.binget)])
def test_stack_global_operands_from_memo(put, get) -> None:
    data = (pb.proto(4) + pb.ustr("os") + put(7) + pb.ustr("system") + put(300 % 256)
            + pb.POP + pb.POP + get(7) + get(300 % 256) + pb.STACK_GLOBAL
            + pb.ustr("x") + pb.TUPLE1 + pb.REDUCE + pb.STOP)
    assert summary(scan_bytes(data)) == {
        ("pickle.dangerous-global", "critical", "os.system", UNSAFE)}


def test_legacy_torch_malicious_object_and_raw_tail() -> None:
    # The raw tail starts like a pickle opcode stream would not: it must not be parsed.
    data = pb.legacy_torch(pb.call_p0("os", "system", "x"), b"\x08" + b"\xff" * 100)
    found = scan_bytes(data)
    assert [(f.rule, f.symbol, f.details["stream"]) for f in found] == [
        ("pickle.dangerous-global", "os.system", 3)]


def test_joblib_truncated_array_and_bad_padding(tmp_path: Path) -> None:
    p = tmp_path / "a.joblib"
    joblib.dump({"a": np.arange(1000.0)}, p)
    data = p.read_bytes()
    with pytest.raises(FormatError, match="truncated"):
        scan_bytes(data[:len(data) // 2])
    # The padding-length byte follows the wrapper's BUILD; joblib writes 1..16.
    pad_at = data.index(b"K\x10ub") + 4
    assert 1 <= data[pad_at] <= 16
    forged = data[:pad_at] + b"\x63" + data[pad_at + 1:]
    with pytest.raises(FormatError, match="padding length 99"):
        scan_bytes(forged)


def test_npy_structured_object_dtype(tmp_path: Path) -> None:
    p = tmp_path / "s.npy"
    np.save(p, np.zeros(3, dtype=[("a", "f4"), ("b", "O")]), allow_pickle=True)
    assert scan_file(p, npfmt.analyze_npy) == []
