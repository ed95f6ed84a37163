"""Pickle framing (PEP 3154), pickles inside pickles (raw, hex, base64), the critical list of
code-running globals, pure builtins that stay clean, and a real ``torch.save`` state_dict.
Every fixture is written here (``pickle.dumps``, ``torch.save`` or by hand); nothing is
ever unpickled."""

from __future__ import annotations
import __future__

import base64
import io
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pickle_builders as pb
import pytest

from mlthreat.scan.findings import TECHNIQUES, Finding, Limits
from mlthreat.scan.formats import pickle as pkfmt
from mlthreat.scan.formats import torch as tfmt
from mlthreat.scan.policy import Policy

POLICY = Policy.default()
UNSAFE = TECHNIQUES["unsafe"]
EVIL = pb.call_p0("os", "system", "echo pwned")


def scan_bytes(data: bytes, analyzer=pkfmt.analyze, limits: Limits | None = None,
               path: str = "m.pkl") -> list[Finding]:
    return analyzer(io.BytesIO(data), path=path, size=len(data), limits=limits or Limits(),
                    policy=POLICY)


def rules(found: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.rule, f.severity, f.symbol) for f in found}


# ---- frames ---------------------------------------------------------------------------


def test_real_multi_frame_pickle_is_clean() -> None:
    # Several 64 KiB frames and a large bytes argument written outside any frame.
    data = pickle.dumps({"big": b"\1" * 300_000, "l": list(range(40_000))}, protocol=5)
    assert sum(op.name == "FRAME" for op, _, _ in pickletools.genops(data)) > 2
    assert scan_bytes(data) == []
    # the pure-Python pickler frames the same way (Lib/pickle.py _Framer)
    value = {"big": b"\1" * 300_000, "l": list(range(40_000))}
    assert scan_bytes(pickle._dumps(value, protocol=4)) == []  # type: ignore[attr-defined]


def test_frame_straddle_hiding_a_call_is_critical() -> None:
    data = pb.frame_straddle_call()
    found = scan_bytes(data)
    frame = [f for f in found if f.rule == "pickle.frame-mismatch"]
    assert len(frame) == 1
    f = frame[0]
    assert (f.severity, f.technique) == ("critical", UNSAFE)
    straddler = len(pb.proto(4) + pb.frame(0) + pb.ustr("os"))
    assert f.location == f"offset {straddler} (SHORT_BINUNICODE)"
    assert f.details["calls"] == [f"offset {data.index(pb.STACK_GLOBAL)} (STACK_GLOBAL)",
                                  f"offset {data.index(pb.REDUCE)} (REDUCE)"]
    # the linear walk (the C unpickler's view) still names the global itself
    assert ("pickle.dangerous-global", "critical", "os.system") in rules(found)


def test_frame_straddle_without_calls_is_high() -> None:
    data = pb.framed(pb.ustr("abcdefgh") + pb.STOP, 3)
    found = scan_bytes(data)
    assert [(f.rule, f.severity, f.technique) for f in found] == [
        ("pickle.frame-mismatch", "high", TECHNIQUES["tampered"])]


def test_frame_past_end_of_file() -> None:
    body = pb.ustr("abc") + pb.STOP
    found = scan_bytes(pb.framed(body, 1000))
    assert [(f.rule, f.severity, f.location) for f in found] == [
        ("pickle.frame-mismatch", "high", "offset 2 (FRAME)")]
    assert "declares 1000 bytes, only 6 remain" in found[0].message
    # a call after the over-long FRAME: C refuses the frame, Lib/pickle.py runs the call
    body = pb.stack_global("os", "system") + pb.ustr("x") + pb.TUPLE1 + pb.REDUCE + pb.STOP
    found = scan_bytes(pb.framed(body, len(body) + 50))
    assert rules(found) == {("pickle.frame-mismatch", "critical", ""),
                            ("pickle.dangerous-global", "critical", "os.system")}


def test_frame_inside_a_frame() -> None:
    inner = pb.frame(len(pb.ustr("ab")) + 1) + pb.ustr("ab") + pb.STOP
    data = pb.framed(pb.ustr("xy") + pb.POP + inner, 15)  # the outer frame ends at byte 15
    found = scan_bytes(data)
    assert [(f.rule, f.severity) for f in found] == [("pickle.frame-mismatch", "high")]
    assert "inside the previous frame" in found[0].message


# ---- pickles inside pickles -----------------------------------------------------------

ENCODERS = pb.ENCODERS


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_nested_pickle_found_with_its_path(encoding: str, protocol: int) -> None:
    # A plain dict value, no loader global: only the nesting shows the payload.
    data = pb.nested_pickle(EVIL, encoding, protocol)
    found = scan_bytes(data)
    assert rules(found) == {("pickle.dangerous-global", "critical", "os.system")}
    f = found[0]
    assert f.path.startswith("m.pkl#inner[offset ") and f.path.endswith(f", {encoding}]")
    assert f.location == "offset 0 (GLOBAL)"  # an offset in the inner pickle


def test_nested_path_offset_points_at_the_string() -> None:
    text = base64.b64encode(pb.call_p4("os", "system", "x"))
    data = pb.proto(4) + pb.ustr(text.decode()) + pb.STOP
    found = scan_bytes(data)
    assert [f.path for f in found] == ["m.pkl#inner[offset 2, base64]"]


def test_mime_base64_with_line_breaks() -> None:
    inner = pickle.dumps({"pad": "x" * 200}, protocol=4)[:-1] + pb.POP + EVIL
    data = pickle.dumps({"k": base64.encodebytes(inner)}, protocol=4)
    assert rules(scan_bytes(data)) == {("pickle.dangerous-global", "critical", "os.system")}


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_benign_nested_pickle_is_clean(encoding: str) -> None:
    inner = pickle.dumps({"a": list(range(50)), "b": "text"}, protocol=4)
    data = pickle.dumps({"cache": ENCODERS[encoding](inner)}, protocol=4)
    assert scan_bytes(data) == []


def test_text_and_digests_are_not_pickles() -> None:
    data = pickle.dumps({"sha256": "ab" * 32, "doc": "class Foo:\n    pass\n" * 3,
                         "b64": base64.b64encode(b"just some bytes here").decode(),
                         "keys": ["10.running_variance", "(not a pickle)"]}, protocol=4)
    assert scan_bytes(data) == []


def test_nesting_depth_bound() -> None:
    found = scan_bytes(pb.wrap(EVIL, 3))
    assert rules(found) == {("pickle.dangerous-global", "critical", "os.system")}
    assert found[0].path.count("#inner[") == 3
    found = scan_bytes(pb.wrap(EVIL, 4))
    assert [(f.rule, f.severity, f.path.count("#inner[")) for f in found] == [
        ("pickle.nested-unscanned", "medium", 3)]


def test_nesting_size_bound() -> None:
    inner = pickle.dumps(["x" * 2000], protocol=4)[:-1] + pb.POP + EVIL
    found = scan_bytes(pickle.dumps({"x": inner}, protocol=4),
                       limits=Limits(max_header_bytes=1024))
    assert [(f.rule, f.severity) for f in found] == [("pickle.nested-unscanned", "medium")]
    assert found[0].details["bytes"] == len(inner)


# ---- severities -----------------------------------------------------------------------

CRITICAL = [("builtins", "exec"), ("builtins", "compile"), ("builtins", "getattr"),
            ("builtins", "__import__"), ("builtins", "open"), ("builtins", "breakpoint"),
            ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"), ("pty", "spawn"),
            ("runpy", "run_path"), ("pip", "main"), ("pdb", "run"), ("bdb", "Bdb"),
            ("code", "interact"), ("codeop", "compile_command"), ("ctypes", "CDLL"),
            ("importlib", "import_module"), ("marshal", "loads"), ("pickle", "loads"),
            ("dill", "loads"), ("joblib", "load"), ("shutil", "rmtree"),
            ("socket", "create_connection"), ("webbrowser", "open"),
            ("http.client", "HTTPSConnection"), ("urllib.request", "urlopen"),
            ("requests", "get"), ("httpx", "get"),
            ("asyncio.subprocess", "create_subprocess_shell"), ("sys", "modules"),
            ("types", "CodeType"), ("types", "FunctionType"), ("functools", "partial")]


@pytest.mark.parametrize(("module", "name"), CRITICAL)
def test_code_running_globals_are_critical(module: str, name: str) -> None:
    found = scan_bytes(pb.call_p4(module, name, "x"))
    assert [(f.severity, f.symbol, f.engine) for f in found] == [
        ("critical", f"{module}.{name}", "mlthreat")]
    assert found[0].rule in ("pickle.dangerous-global", "pickle.payload-global")


@pytest.mark.parametrize(("module", "name"), [("mypkg", "Thing"), ("builtins", "memoryview"),
                                              ("builtins", "type")])
def test_unknown_global_stays_high(module: str, name: str) -> None:
    assert rules(scan_bytes(pb.call_p4(module, name, "x"))) == {
        ("pickle.global-not-allowed", "high", f"{module}.{name}")}


@pytest.mark.parametrize("value", [len, range(3), slice(1, 5, 2), complex(1, 2),
                                   bytearray(b"ab"), frozenset({1}), {1, 2}, Ellipsis,
                                   __future__.annotations])
def test_pure_builtins_and_future_are_clean(value: object) -> None:
    for protocol in (2, 4):
        assert scan_bytes(pickle.dumps(value, protocol=protocol)) == []


# ---- torch and the command line ---------------------------------------------------------


def small_net() -> Any:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10), nn.LayerNorm(10))


def test_torch_state_dict_is_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    p = tmp_path / "model.pt"
    torch.save(small_net().state_dict(), p)
    with p.open("rb") as fh:
        assert tfmt.analyze(fh, path=str(p), size=p.stat().st_size, limits=Limits(),
                            policy=POLICY) == []
    q = tmp_path / "half.pt"
    torch.save(small_net().half().state_dict(), q, _use_new_zipfile_serialization=False)
    assert scan_bytes(q.read_bytes()) == []


def run_scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlthreat", "scan", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_fail_on_critical(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # an optional extra: skip without it
    good = tmp_path / "model.pt"
    torch.save(small_net().state_dict(), good)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pb.call_p4("os", "system", "echo pwned"))
    nested = tmp_path / "nested.pkl"
    nested.write_bytes(pickle.dumps({"x": base64.b64encode(EVIL).decode()}, protocol=4))
    common = ("--engines", "none", "--fail-on", "critical")
    out = run_scan(str(good), *common)
    assert out.returncode == 0, out.stdout + out.stderr
    for bad in (evil, nested):
        out = run_scan(str(bad), *common)
        assert out.returncode == 1, out.stdout + out.stderr
