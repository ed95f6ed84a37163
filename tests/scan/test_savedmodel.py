"""The SavedModel and keras_metadata.pb analysers, on protobufs written here by a few lines of
wire-format encoding (no TensorFlow): field numbers from tensorflow/core/protobuf and
tensorflow/core/framework (saved_model, meta_graph, graph, node_def, function, attr_value) and
keras/protobuf/saved_metadata.proto."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from format_builders import keras_sequential, onnx_model

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import savedmodel
from mlthreat.scan.policy import Policy
from mlthreat.scan.scanner import Scanner
from mlthreat.scan.sniff import sniff

UNSAFE = TECHNIQUES["unsafe"]


# --- a minimal protobuf writer -------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def msg(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return msg(number, value.encode())


def num(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def node(name: str, op: str, **attrs: bytes) -> bytes:
    """NodeDef: name 1, op 2, input 3, device 4, attr 5 (entries: key 1, AttrValue 2)."""
    out = text(1, name) + text(2, op) + text(3, "x:0") + text(4, "/device:CPU:0")
    for key, value in attrs.items():
        out += msg(5, text(1, key) + msg(2, value))
    return out


def const(name: str, nbytes: int) -> bytes:
    """A Const node whose tensor (AttrValue.tensor 8, TensorProto.tensor_content 4) holds
    ``nbytes`` of weights: the reader must skip them."""
    return node(name, "Const", dtype=num(6, 1), value=msg(8, num(1, 1) + msg(4, b"\0" * nbytes)))


def function(name: str, nodes: list[bytes], signature_last: bool = False) -> bytes:
    """FunctionDef: signature 1 (OpDef.name 1), node_def 3, ret 4."""
    sig = msg(1, text(1, name))
    body = b"".join(msg(3, n) for n in nodes) + msg(4, text(1, "out") + text(2, "y:0"))
    return body + sig if signature_last else sig + body


def saved_model(nodes: list[bytes], functions: tuple[bytes, ...] = (),
                graphs: int = 1) -> bytes:
    """SavedModel (version 1, meta_graphs 2) of MetaGraphDefs (meta_info_def 1 with tags 4,
    graph_def 2, signature_def 5) around one GraphDef (node 1, library 2, versions 4)."""
    graph = b"".join(msg(1, n) for n in nodes)
    if functions:
        graph += msg(2, b"".join(msg(1, f) for f in functions))
    graph += msg(4, num(1, 1286))
    meta = msg(1, text(4, "serve") + text(5, "2.16.1")) + msg(2, graph) \
        + msg(5, text(1, "serving_default") + msg(2, b""))
    return num(1, 1) + b"".join(msg(2, meta) for _ in range(graphs))


def saver_nodes() -> list[bytes]:
    """What every SavedModel holds: weights and the saver's own file operations."""
    return [const("dense/kernel", 4096), node("dense/MatMul", "MatMul"),
            node("saver/SaveV2", "SaveV2"), node("saver/RestoreV2", "RestoreV2"),
            node("print", "PrintV2", output_stream=text(2, "stderr"))]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.default()


def analyse(data: bytes, policy: Policy, keras: bool = False) -> list[Finding]:
    fn = savedmodel.analyze_keras_metadata if keras else savedmodel.analyze
    return fn(io.BytesIO(data), path="saved_model.pb", size=len(data), limits=Limits(),
              policy=policy)


def summary(findings: list[Finding]) -> list[tuple[str, str, str, str, str]]:
    return sorted((f.rule, f.severity, f.symbol, f.technique, f.location) for f in findings)


# --- SavedModel ----------------------------------------------------------------------------

def test_benign_saved_model_is_clean(policy: Policy) -> None:
    data = saved_model(saver_nodes(), (function("__inference_call_7",
                                                [node("mul", "Mul")]),), graphs=2)
    assert sniff(io.BytesIO(data)) == "savedmodel"
    assert analyse(data, policy) == []


def test_pyfunc_in_graph_is_critical(policy: Policy) -> None:
    data = saved_model([*saver_nodes(), node("py", "PyFunc", token=text(2, "pyfunc_0"))])
    assert summary(analyse(data, policy)) == [
        ("savedmodel.python-op", "critical", "PyFunc", UNSAFE, "meta graph 0, node 'py'")]


def test_pyfunc_in_function_library_is_critical(policy: Policy) -> None:
    # the signature (the function's name) written after its nodes: still reported by name
    fn = function("__inference_f_12", [node("id", "Identity"), node("eager", "EagerPyFunc"),
                                       node("eager2", "EagerPyFunc")], signature_last=True)
    found = analyse(saved_model(saver_nodes(), (fn,)), policy)
    assert summary(found) == [("savedmodel.python-op", "critical", "EagerPyFunc", UNSAFE,
                               "function '__inference_f_12', node 'eager'")]
    assert found[0].details == {"op": "EagerPyFunc", "nodes": 2}
    assert found[0].format == "savedmodel" and found[0].path == "saved_model.pb"


def test_file_ops_are_high(policy: Policy) -> None:
    nodes = [*saver_nodes(), node("read", "ReadFile"), node("read_1", "ReadFile"),
             node("log", "PrintV2", output_stream=text(2, "file:///tmp/exfil.txt"))]
    fn = function("writer", [node("w", "WriteFile"), node("ls", "MatchingFiles")])
    found = analyse(saved_model(nodes, (fn,)), policy)
    assert summary(found) == [
        ("savedmodel.file-op", "high", "MatchingFiles", UNSAFE, "function 'writer', node 'ls'"),
        ("savedmodel.file-op", "high", "ReadFile", UNSAFE, "meta graph 0, node 'read'"),
        ("savedmodel.file-op", "high", "WriteFile", UNSAFE, "function 'writer', node 'w'"),
        ("savedmodel.print-to-file", "high", "PrintV2", UNSAFE, "meta graph 0, node 'log'")]
    assert [f.details["nodes"] for f in found if f.symbol == "ReadFile"] == [2]


def test_truncated_saved_model_is_unparseable(tmp_path: Path, policy: Policy) -> None:
    data = saved_model([*saver_nodes(), node("py", "PyFunc")])
    cut = data[:-7]
    assert sniff(io.BytesIO(cut)) == "savedmodel"  # recognised, so not skipped
    with pytest.raises(FormatError):
        analyse(cut, policy)
    (tmp_path / "saved_model.pb").write_bytes(cut)
    report = Scanner(engines=()).run([tmp_path])
    assert [(f.rule, f.format, Path(f.path).name) for f in report.findings] == [
        ("scan.unparseable", "savedmodel", "saved_model.pb")]


def test_folder_scan_reports_the_pb(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"\x00" * 64)
    (tmp_path / "saved_model.pb").write_bytes(saved_model([node("py", "PyFuncStateless")]))
    report = Scanner(engines=()).run([tmp_path])
    assert [(f.rule, f.severity, Path(f.path).name) for f in report.findings] == [
        ("savedmodel.python-op", "critical", "saved_model.pb")]
    assert report.exit_code("critical") == 1


def test_onnx_is_not_taken_for_a_saved_model(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    path = onnx_model(tmp_path, custom_domain="x.y")
    with open(path, "rb") as fh:
        assert sniff(fh) == "onnx"
    # ONNX-shaped bytes: ir_version 1, producer_name, graph (7) -> not a SavedModel
    assert sniff(io.BytesIO(num(1, 1) + text(2, "pytorch") + msg(7, b""))) == "onnx"


# --- keras_metadata.pb ---------------------------------------------------------------------

def keras_metadata(with_lambda: bool) -> bytes:
    """SavedMetadata (nodes 1) of SavedObjects (node_id 2, node_path 3, identifier 4,
    metadata 5): the model, whose metadata repeats its layers' configs, then each layer."""
    config = keras_sequential(with_lambda=with_lambda)
    model = {"name": "sequential", "class_name": "Sequential", "config": config["config"]}
    objects = [(0, "root", "_tf_keras_sequential", model)]
    for i, layer in enumerate(config["config"]["layers"], 1):
        objects.append((i, f"root.layer-{i}", "_tf_keras_layer",
                        {"name": layer["config"]["name"], **layer}))
    return b"".join(msg(1, num(2, i) + text(3, path) + text(4, ident)
                        + text(5, json.dumps(meta)) + msg(6, num(1, 1)))
                    for i, path, ident, meta in objects)


def test_keras_metadata_lambda_is_critical(policy: Policy) -> None:
    data = keras_metadata(with_lambda=True)
    assert sniff(io.BytesIO(data)) == "keras-metadata"
    found = analyse(data, policy, keras=True)
    # reported once, though both the model's and the layer's metadata hold it
    assert summary(found) == [("keras.lambda-layer", "critical", "Lambda", UNSAFE,
                               "layer 'lambda_1'")]
    assert found[0].format == "keras-metadata"


def test_keras_metadata_benign_and_bad_json(policy: Policy) -> None:
    assert analyse(keras_metadata(with_lambda=False), policy, keras=True) == []
    bad = msg(1, num(2, 0) + text(3, "root") + text(4, "_tf_keras_model") + text(5, "{oops"))
    assert sniff(io.BytesIO(bad)) == "keras-metadata"
    with pytest.raises(FormatError):
        analyse(bad, policy, keras=True)
