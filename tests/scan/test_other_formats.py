"""The Keras, ONNX, safetensors, GGUF and skops analysers, on fixtures built in tmp_path."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from format_builders import (
    CHATML,
    SSTI,
    gguf_bytes,
    keras3_functional,
    keras_h5,
    keras_sequential,
    keras_zip,
    onnx_model,
    safetensors_bytes,
    safetensors_raw,
    skops_edit,
    skops_model,
)

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import gguf, keras, onnx, safetensors, skops
from mlthreat.scan.policy import Policy

UNSAFE, TAMPERED, MALWARE = TECHNIQUES["unsafe"], TECHNIQUES["tampered"], TECHNIQUES["malware"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.default()


def run(analyze: Callable[..., list[Finding]], path: Path, policy: Policy,
        limits: Limits | None = None) -> list[Finding]:
    with open(path, "rb") as fh:
        return analyze(fh, path=str(path), size=path.stat().st_size,
                       limits=limits or Limits(), policy=policy)


def run_bytes(analyze: Callable[..., list[Finding]], data: bytes, policy: Policy,
              limits: Limits | None = None) -> list[Finding]:
    return analyze(io.BytesIO(data), path="mem", size=len(data), limits=limits or Limits(),
                   policy=policy)


def summary(findings: list[Finding]) -> list[tuple[str, str, str, str, str]]:
    return sorted((f.rule, f.severity, f.symbol, f.technique, f.location) for f in findings)


# --- Keras ---------------------------------------------------------------------------------

def test_keras_h5_lambda_is_critical(tmp_path: Path, policy: Policy) -> None:
    found = run(keras.analyze_h5, keras_h5(tmp_path, keras_sequential()), policy)
    assert summary(found) == [("keras.lambda-layer", "critical", "Lambda", UNSAFE,
                               "layer 'lambda_1'")]
    assert found[0].format == "keras-h5"


def test_keras_h5_benign_and_weights_only(tmp_path: Path, policy: Policy) -> None:
    benign = keras_h5(tmp_path, keras_sequential(with_lambda=False), as_bytes=False)
    assert run(keras.analyze_h5, benign, policy) == []
    weights = keras_h5(tmp_path, None, name="weights.h5")
    assert run(keras.analyze_h5, weights, policy) == []


def test_keras_h5_custom_object_and_bad_json(tmp_path: Path, policy: Policy) -> None:
    cfg = keras_sequential(with_lambda=False, custom_module="my_layers.evil")
    found = run(keras.analyze_h5, keras_h5(tmp_path, cfg), policy)
    assert summary(found) == [("keras.custom-object", "high", "my_layers.evil.Evil", UNSAFE,
                               "layer 'evil_1'")]
    with pytest.raises(FormatError):
        run(keras.analyze_h5, keras_h5(tmp_path, "{not json", name="bad.h5"), policy)
    not_h5 = tmp_path / "x.h5"
    not_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(FormatError):
        run(keras.analyze_h5, not_h5, policy)


def test_keras_custom_object_named_dangerous_is_critical(policy: Policy) -> None:
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"module": "builtins", "class_name": "function", "registered_name": "function",
         "config": "x"},
        {"module": "os", "class_name": "system", "config": {"name": "pwn"}}]}}
    found = keras.analyze_config(cfg, path="p", fmt="keras-zip", policy=policy)
    assert summary(found) == [
        ("keras.custom-object", "critical", "os.system", UNSAFE, "layer 'pwn'"),
        ("keras.custom-object", "high", "builtins.function", UNSAFE, "layer 's'"),
    ]


def test_keras_zip_nested_lambda(tmp_path: Path, policy: Policy) -> None:
    found = run(keras.analyze_zip, keras_zip(tmp_path, keras3_functional()), policy)
    assert summary(found) == [("keras.lambda-layer", "critical", "Lambda", UNSAFE,
                               "layer 'inner_lambda'")]
    assert found[0].format == "keras-zip"
    benign = keras_zip(tmp_path, keras3_functional(nested_lambda=False), name="b.keras")
    assert run(keras.analyze_zip, benign, policy) == []


def test_keras_zip_errors(tmp_path: Path, policy: Policy) -> None:
    with pytest.raises(FormatError):
        run(keras.analyze_zip, keras_zip(tmp_path, "[1, 2", name="bad.keras"), policy)
    big = keras_zip(tmp_path, keras3_functional(), name="big.keras")
    with pytest.raises(FormatError, match="header limit"):
        run(keras.analyze_zip, big, policy, Limits(max_header_bytes=100))


# --- ONNX ----------------------------------------------------------------------------------

def test_onnx_external_data_escape(tmp_path: Path, policy: Policy) -> None:
    path = onnx_model(tmp_path, external=("../../etc/passwd", "/etc/passwd", "weights.bin",
                                          "sub/../weights.bin"))
    found = run(onnx.analyze, path, policy)
    assert summary(found) == [
        ("onnx.external-data-escape", "high", "../../etc/passwd", UNSAFE, "initializer 'ext0'"),
        ("onnx.external-data-escape", "high", "/etc/passwd", UNSAFE, "initializer 'ext1'"),
    ]


def test_onnx_benign_and_subgraph_tensor(tmp_path: Path, policy: Policy) -> None:
    assert run(onnx.analyze, onnx_model(tmp_path, external=("weights.bin",)), policy) == []
    path = onnx_model(tmp_path, name="sub.onnx", in_subgraph="C:\\Windows\\win.ini")
    assert summary(run(onnx.analyze, path, policy)) == [
        ("onnx.external-data-escape", "high", "C:\\Windows\\win.ini", UNSAFE,
         "node 'const' attribute 'value'")] * 2  # the same branch is then and else


def test_onnx_custom_domain(tmp_path: Path, policy: Policy) -> None:
    found = run(onnx.analyze, onnx_model(tmp_path, custom_domain="com.evil.ops"), policy)
    assert summary(found) == [("onnx.custom-domain", "medium", "com.evil.ops", UNSAFE,
                               "node 'decrypt'")]
    assert found[0].details["op_type"] == "Decrypt"


def test_onnx_escape_rules() -> None:
    bad = ["/abs", "\\\\server\\share\\x", "D:/x", "~/x", "a/../../x", "..", "a\x00b"]
    assert all(onnx.location_escapes(loc) for loc in bad)
    assert not any(onnx.location_escapes(loc) for loc in ["w.bin", "a/../w.bin", "./d/w"])


def test_onnx_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    assert onnx.location_escapes("link/passwd", str(tmp_path))
    assert onnx.location_escapes("w.bin", str(tmp_path)) is None


def test_onnx_malformed(tmp_path: Path, policy: Policy) -> None:
    data = onnx_model(tmp_path).read_bytes()
    with pytest.raises(FormatError) as err:
        run_bytes(onnx.analyze, data[:-3], policy)
    assert err.value.location.startswith("offset ")
    with pytest.raises(FormatError, match="wire type"):
        run_bytes(onnx.analyze, b"\x0f\x00", policy)
    with pytest.raises(FormatError, match="varint"):
        run_bytes(onnx.analyze, b"\x08" + b"\xff" * 12, policy)


# --- safetensors ---------------------------------------------------------------------------

def _st(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    return path


def test_safetensors_benign(tmp_path: Path, policy: Policy) -> None:
    arrays: dict[str, np.ndarray] = {
        "w": np.ones((3, 4), np.float32), "b": np.arange(5, dtype=np.int64),
        "e": np.zeros((0, 2), np.float16)}
    path = _st(tmp_path, safetensors_bytes(arrays, metadata={"format": "pt"}))
    assert run(safetensors.analyze, path, policy) == []


def test_safetensors_header_longer_than_file(policy: Policy) -> None:
    with pytest.raises(FormatError, match="past the end"):
        run_bytes(safetensors.analyze, safetensors_raw(b"{}", b"", declared=1000), policy)
    with pytest.raises(FormatError, match="limit"):
        run_bytes(safetensors.analyze, safetensors_raw(b"{}", b"" * 64), policy,
                  Limits(max_header_bytes=4))


def test_safetensors_not_json(policy: Policy) -> None:
    with pytest.raises(FormatError, match="JSON"):
        run_bytes(safetensors.analyze, safetensors_raw(b"{not json", b""), policy)
    with pytest.raises(FormatError, match="object"):
        run_bytes(safetensors.analyze, safetensors_raw(b"[1]", b""), policy)


def test_safetensors_overlap(policy: Policy) -> None:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    found = run_bytes(safetensors.analyze, safetensors_raw(json.dumps(header).encode(),
                                                           b"\0" * 12), policy)
    assert summary(found) == [("safetensors.bad-header", "medium", "", TAMPERED,
                               "tensor 'b'")]
    assert "overlaps" in found[0].message


@pytest.mark.parametrize(("entry", "data", "where", "words"), [
    ({"x": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, 4, "tensor 'x'",
     "unknown dtype"),
    ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "tensor 'x'",
     "non-negative"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4, "tensor 'x'",
     "needs"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 40]}}, 4, "tensor 'x'",
     "outside"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "tensor 'x'", "gap"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 12, "data area",
     "trailing"),
    ({"__metadata__": {"k": 1}}, 0, "__metadata__", "strings"),
])
def test_safetensors_bad_header(policy: Policy, entry: dict[str, Any], data: int,
                                where: str, words: str) -> None:
    found = run_bytes(safetensors.analyze,
                      safetensors_raw(json.dumps(entry).encode(), b"\0" * data), policy)
    assert [(f.rule, f.severity, f.technique, f.location) for f in found] == [
        ("safetensors.bad-header", "medium", TAMPERED, where)]
    assert words in found[0].message


def test_safetensors_duplicate_keys(policy: Policy) -> None:
    header = (b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
              b'"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')
    found = run_bytes(safetensors.analyze, safetensors_raw(header, b"\0"), policy)
    assert [f.location for f in found] == ["header"]
    assert "duplicate" in found[0].message


# --- GGUF ----------------------------------------------------------------------------------

def test_gguf_benign_chatml(policy: Policy) -> None:
    assert run_bytes(gguf.analyze, gguf_bytes(CHATML), policy) == []
    assert run_bytes(gguf.analyze, gguf_bytes(None, version=2), policy) == []


def test_gguf_ssti_is_critical(tmp_path: Path, policy: Policy) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(SSTI))
    found = run(gguf.analyze, path, policy)
    assert [(f.rule, f.severity, f.symbol, f.technique) for f in found] == [
        ("gguf.template-code", "critical", "cycler", UNSAFE)]
    assert found[0].location.startswith("metadata 'tokenizer.chat_template'")


@pytest.mark.parametrize(("template", "symbol"), [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
    ("{{ x|attr('__globals__') }}", "__globals__"),
    ("{{ messages['__class__'] }}", "__class__"),
    ("{{ self._TemplateReference__context }}", "self"),
    ("{% set ns = namespace(a=1) %}{{ ns.__init__ }}", "__init__"),
    ("{{ lipsum }}", "lipsum"),
])
def test_gguf_template_payloads(template: str, symbol: str) -> None:
    assert gguf.template_problem(template) == ("code", symbol)


def test_gguf_named_template_and_unparseable(policy: Policy) -> None:
    data = gguf_bytes(CHATML, {"tool_use": "{{ joiner.__init__ }}", "rag": "{% for %}"})
    found = run_bytes(gguf.analyze, data, policy)
    assert sorted((f.rule, f.severity, f.symbol) for f in found) == [
        ("gguf.template-code", "critical", "joiner"),
        ("gguf.template-unparseable", "medium", "")]
    # an unparseable template still containing a payload token is reported as code
    assert gguf.template_problem("{% if %}{{ x.__globals__ }}") == ("code", "__globals__")


def test_gguf_format_errors(policy: Policy) -> None:
    data = gguf_bytes(SSTI)
    with pytest.raises(FormatError, match="truncated"):
        run_bytes(gguf.analyze, data[:-10], policy)
    with pytest.raises(FormatError, match="version"):
        run_bytes(gguf.analyze, b"GGUF" + struct.pack("<IQQ", 7, 0, 0), policy)
    with pytest.raises(FormatError, match="magic"):
        run_bytes(gguf.analyze, b"GGUX" + data[4:], policy)
    with pytest.raises(FormatError, match="limit"):
        run_bytes(gguf.analyze, data, policy, Limits(max_header_bytes=16))
    huge_array = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" \
        + struct.pack("<IIQ", 9, 8, 2**40)
    with pytest.raises(FormatError, match="cannot fit"):
        run_bytes(gguf.analyze, huge_array, policy)


def test_gguf_big_endian(policy: Policy) -> None:
    key, value = b"tokenizer.chat_template", SSTI.encode()
    data = (b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", len(key)) + key
            + struct.pack(">IQ", 8, len(value)) + value)
    assert [f.symbol for f in run_bytes(gguf.analyze, data, policy)] == ["cycler"]


# --- skops ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def skops_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return skops_model(tmp_path_factory.mktemp("skops"))


def test_skops_benign(skops_file: Path, policy: Policy) -> None:
    assert run(skops.analyze, skops_file, policy) == []


def test_skops_os_system_is_critical(skops_file: Path, tmp_path: Path, policy: Policy) -> None:
    def edit(schema: dict[str, Any]) -> dict[str, Any]:
        schema["content"]["content"]["pwn"] = {
            "__class__": "system", "__module__": "os", "__loader__": "FunctionNode",
            "__id__": 1}
        return schema

    found = run(skops.analyze, skops_edit(skops_file, tmp_path / "os.skops", edit), policy)
    assert summary(found) == [("skops.untrusted-type", "critical", "os.system", UNSAFE,
                               "entry schema.json at $.content.content.pwn")]


def test_skops_unknown_and_payload(skops_file: Path, tmp_path: Path, policy: Policy) -> None:
    def edit(schema: dict[str, Any]) -> dict[str, Any]:
        schema["__module__"], schema["__class__"] = "mypkg.models", "Custom"
        schema["content"]["content"]["x"] = {
            "__class__": "loads", "__module__": "marshal", "__loader__": "FunctionNode"}
        return schema

    found = run(skops.analyze, skops_edit(skops_file, tmp_path / "u.skops", edit), policy)
    assert summary(found) == [
        ("skops.untrusted-type", "critical", "marshal.loads", MALWARE,
         "entry schema.json at $.content.content.x"),
        ("skops.untrusted-type", "high", "mypkg.models.Custom", UNSAFE,
         "entry schema.json at $"),
    ]


def test_skops_format_errors(skops_file: Path, tmp_path: Path, policy: Policy) -> None:
    bad = tmp_path / "bad.skops"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(FormatError):
        run(skops.analyze, bad, policy)
    with pytest.raises(FormatError, match="header limit"):
        run(skops.analyze, skops_file, policy, Limits(max_header_bytes=64))
