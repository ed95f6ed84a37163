"""TensorFlow SavedModel: graph operations that call Python or touch files, and Keras layers
that carry Python code, read from the protobufs without TensorFlow.

``saved_model.pb`` is a ``SavedModel`` message; the messages on the path to operations, with
their field numbers (``tensorflow/core/protobuf/saved_model.proto``, ``meta_graph.proto``,
``tensorflow/core/framework/graph.proto``, ``node_def.proto``, ``function.proto``,
``op_def.proto``, ``attr_value.proto``):

* ``SavedModel``: ``saved_model_schema_version`` 1 (varint), ``meta_graphs`` 2;
* ``MetaGraphDef``: ``graph_def`` 2 (others, 1 and 3 to 7, are metadata);
* ``GraphDef``: ``node`` 1, ``library`` 2 (``FunctionDefLibrary``);
* ``FunctionDefLibrary``: ``function`` 1; ``FunctionDef``: ``signature`` 1 (an ``OpDef``,
  whose ``name`` is 1), ``node_def`` 3;
* ``NodeDef``: ``name`` 1, ``op`` 2, ``attr`` 5 (map entries: ``key`` 1, ``value`` 2, an
  ``AttrValue`` whose string ``s`` is 2).

Operations reported: ``PyFunc``, ``PyFuncStateless`` and ``EagerPyFunc`` (the graph calls
back into Python when it runs: a model that holds one expects code from outside the graph),
and operations that read, write or list files by a path the graph supplies (``ReadFile``,
``WriteFile``, ``MatchingFiles``, the whole-file readers, ``ImmutableConst``'s memory-mapped
region, summary writers, ``PrintV2`` with a ``file://`` output stream). ``Save``/``SaveV2``/
``Restore*`` are not reported: every SavedModel's saver graph holds them, and the path they
use is a tensor (normally fed by the loader), which a static read cannot tell apart from a
hostile one.

``keras_metadata.pb`` (tf.keras SavedModel, ``keras/protobuf/saved_metadata.proto``) is a
``SavedMetadata``: ``nodes`` 1, each a ``SavedObject`` with ``node_path`` 3, ``identifier`` 4
(``_tf_keras_layer``, ``_tf_keras_model`` …) and ``metadata`` 5, a layer's JSON (its class
and config). ``keras.models.load_model`` rebuilds layers from those configs, so a ``Lambda``
layer's marshalled function or a custom object's module runs on load; the configs are checked
by :func:`mlthreat.scan.formats.keras.analyze_config`.

The protobuf stream reader is the ONNX analyser's: fields are decoded only on the path to
operations, everything else (weights in ``Const`` nodes) is seeked over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats.keras import analyze_config
from mlthreat.scan.formats.onnx import _fields, _Stream, _text
from mlthreat.scan.policy import Policy

__all__ = ["FILE_OPS", "PYTHON_OPS", "analyze", "analyze_keras_metadata"]

FORMAT = "savedmodel"
KERAS_FORMAT = "keras-metadata"

# Operations whose kernel calls a Python function registered in the loading process.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Operations that open, write or list files named by the graph.
FILE_OPS = frozenset({"ReadFile", "WriteFile", "MatchingFiles", "WholeFileReader",
                      "WholeFileReaderV2", "ImmutableConst", "CreateSummaryFileWriter",
                      "CreateSummaryDbWriter"})

_SM_META_GRAPHS = 2
_MG_GRAPH_DEF = 2
_GRAPH_NODE, _GRAPH_LIBRARY = 1, 2
_LIB_FUNCTION = 1
_FN_SIGNATURE, _FN_NODE_DEF = 1, 3
_OPDEF_NAME = 1
_NODE_NAME, _NODE_OP, _NODE_ATTR = 1, 2, 5
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_ATTR_S = 2
_SO_NODE_PATH, _SO_METADATA = 3, 5


@dataclass
class _Walk:
    s: _Stream
    limits: Limits
    # (scope, op) -> (first node's name, count); scope is "meta graph N" or "function 'f'"
    ops: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    # (scope, node name, stream) of PrintV2 nodes writing to a file
    prints: list[tuple[str, str, str]] = field(default_factory=list)

    def meta_graph(self, end: int, index: int) -> None:
        for number, wire, start, n in _fields(self.s, end):
            if number == _MG_GRAPH_DEF and wire == 2:
                self.graph(start + n, f"meta graph {index}")

    def graph(self, end: int, scope: str) -> None:
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _GRAPH_NODE:
                self.node(start + n, scope)
            elif number == _GRAPH_LIBRARY:
                for num, w, st, ln in _fields(self.s, start + n):
                    if num == _LIB_FUNCTION and w == 2:
                        self.function(st + ln)

    def function(self, end: int) -> None:
        name, nodes = "", []
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _FN_SIGNATURE:
                for num, w, _st, ln in _fields(self.s, start + n):
                    if num == _OPDEF_NAME and w == 2:
                        name = _text(self.s, ln, self.limits)
            elif number == _FN_NODE_DEF:
                nodes.append((start, n))
        # a second pass, since the signature (and so the name each node is reported under)
        # may follow the nodes: field order on the wire is the writer's choice
        for start, n in nodes:
            self.s.pos = start
            self.node(start + n, f"function '{name}'")
        self.s.pos = end

    def node(self, end: int, scope: str) -> None:
        name = op = stream = ""
        for number, wire, start, n in _fields(self.s, end):
            if wire != 2:
                continue
            if number == _NODE_NAME:
                name = _text(self.s, n, self.limits)
            elif number == _NODE_OP:
                op = _text(self.s, n, self.limits)
            elif number == _NODE_ATTR:
                stream = self.output_stream(start + n) or stream
        if op == "PrintV2" and stream.startswith("file://"):
            self.prints.append((scope, name, stream))
        first, count = self.ops.get((scope, op), (name, 0))
        self.ops[(scope, op)] = (first, count + 1)

    def output_stream(self, end: int) -> str:
        """The string value of an ``output_stream`` attribute entry, else ``""`` (other
        attributes, ``Const`` tensors among them, are skipped unread)."""
        key = ""
        for number, wire, start, n in _fields(self.s, end):
            if number == _ENTRY_KEY and wire == 2:
                key = _text(self.s, n, self.limits)
            elif number == _ENTRY_VALUE and wire == 2 and key == "output_stream":
                for num, w, _st, ln in _fields(self.s, start + n):
                    if num == _ATTR_S and w == 2:
                        return _text(self.s, ln, self.limits)
        return ""


def analyze(fh: BinaryIO, *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Findings for a ``saved_model.pb`` read as a protobuf stream (see the module docstring).

    Reports ``savedmodel.python-op`` (critical) once per Python-calling operation and scope
    (a meta graph's graph, or one library function), ``savedmodel.file-op`` (high) likewise
    for file operations, and ``savedmodel.print-to-file`` (high) for each ``PrintV2`` node
    whose output stream is a file. Location ``meta graph N, node 'x'`` or
    ``function 'f', node 'x'`` names the first such node; ``details["nodes"]`` counts them.

    Raises
    ------
    FormatError
        Malformed or truncated protobuf, or a string above ``limits.max_header_bytes``.
    """
    del policy  # operations, not Python globals
    walk = _Walk(_Stream(fh, size), limits)
    graphs = 0
    for number, wire, start, n in _fields(walk.s, size):
        if number == _SM_META_GRAPHS and wire == 2:
            walk.meta_graph(start + n, graphs)
            graphs += 1
    if not graphs:
        raise FormatError("no meta graph in the SavedModel", "offset 0")
    findings: list[Finding] = []
    for (scope, op), (first, count) in walk.ops.items():
        if op in PYTHON_OPS:
            severity, rule = "critical", "savedmodel.python-op"
            why = "running the graph calls a Python function from outside the model"
        elif op in FILE_OPS:
            severity, rule = "high", "savedmodel.file-op"
            why = "running the graph reads, writes or lists files by a path it chooses"
        else:
            continue
        findings.append(Finding(
            path=path, format=FORMAT, severity=severity, rule=rule,
            message=f"operation {op!r} in {scope}: {why}", technique=TECHNIQUES["unsafe"],
            location=f"{scope}, node '{first}'", symbol=op,
            details={"op": op, "nodes": count}))
    for scope, name, stream in walk.prints:
        findings.append(Finding(
            path=path, format=FORMAT, severity="high", rule="savedmodel.print-to-file",
            message=f"PrintV2 in {scope} writes to {stream!r}: running the graph writes that "
                    "file",
            technique=TECHNIQUES["unsafe"], location=f"{scope}, node '{name}'",
            symbol="PrintV2", details={"op": "PrintV2", "output_stream": stream}))
    return findings


def analyze_keras_metadata(fh: BinaryIO, *, path: str, size: int, limits: Limits,
                           policy: Policy) -> list[Finding]:
    """Findings for a tf.keras ``keras_metadata.pb``: each object's JSON metadata is checked
    as a Keras config (``keras.lambda-layer``, ``keras.custom-object``, see
    :func:`mlthreat.scan.formats.keras.analyze_config`), with format ``keras-metadata`` and
    the object's ``node_path`` in the location.

    Raises
    ------
    FormatError
        Malformed or truncated protobuf, a string above ``limits.max_header_bytes``, or
        metadata that is not JSON.
    """
    s = _Stream(fh, size)
    findings: list[Finding] = []
    for number, wire, start, n in _fields(s, size):
        if number != 1 or wire != 2:
            continue
        node_path = metadata = ""
        for num, w, _st, ln in _fields(s, start + n):
            if num == _SO_NODE_PATH and w == 2:
                node_path = _text(s, ln, limits)
            elif num == _SO_METADATA and w == 2:
                metadata = _text(s, ln, limits)
        if not metadata:
            continue
        try:
            config = json.loads(metadata)
        except ValueError as exc:
            raise FormatError(f"metadata of {node_path!r} is not JSON: {exc}",
                              f"node '{node_path}'") from None
        source = f"node '{node_path}'"
        findings.extend(analyze_config(config, path=path, fmt=KERAS_FORMAT, policy=policy,
                                       source=source))
    # a model's metadata repeats its layers' configs, which have their own nodes too
    unique: dict[tuple[str, str, str], Finding] = {}
    for f in findings:
        unique.setdefault((f.rule, f.location, f.symbol), f)
    return list(unique.values())
