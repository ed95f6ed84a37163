"""The SavedModel and keras_metadata.pb analysers, on protobufs written by a few lines of
wire-format encoding (no TensorFlow, see ``format_builders``): field numbers from
tensorflow/core/protobuf and tensorflow/core/framework (saved_model, meta_graph, graph,
node_def, function, attr_value) and keras/protobuf/saved_metadata.proto."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from format_builders import (
    function,
    keras_metadata,
    msg,
    node,
    num,
    onnx_model,
    saved_model,
    saver_nodes,
    text,
)

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats import savedmodel
from mlthreat.scan.policy import Policy
from mlthreat.scan.scanner import Scanner
from mlthreat.scan.sniff import sniff

UNSAFE = TECHNIQUES["unsafe"]


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
