"""Builders for the model-file fixtures of the scan tests (and of benchmarks/bench_scan.py):
each writes a small file into a folder and returns its path, or returns the file's bytes.
Nothing here needs a deep-learning framework, and nothing is ever loaded or rendered."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# --- Keras ---------------------------------------------------------------------------------

LAMBDA_CODE = "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMEAAAAfABTACkBTqkAKQHaAXhyAgAAAHICAAAA"


def keras_sequential(with_lambda: bool = True, custom_module: str | None = None) -> dict:
    """A Keras 2 style Sequential config: Dense, optionally a Lambda and a custom layer."""
    layers: list[dict[str, Any]] = [
        {"class_name": "InputLayer", "config": {"name": "input_1",
                                                "batch_input_shape": [None, 4]}},
        {"class_name": "Dense", "config": {
            "name": "dense", "units": 3, "activation": "relu",
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}}},
    ]
    if with_lambda:
        layers.append({"class_name": "Lambda", "config": {
            "name": "lambda_1", "function": [LAMBDA_CODE, None, None],
            "function_type": "lambda", "output_shape": None}})
    if custom_module:
        layers.append({"module": custom_module, "class_name": "Evil",
                       "registered_name": "Custom>Evil", "config": {"name": "evil_1"}})
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def keras3_functional(nested_lambda: bool = True) -> dict:
    """A Keras 3 style Functional config nesting a Sequential that holds a Lambda."""
    inner: list[dict[str, Any]] = [
        {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
         "config": {"name": "inner_dense", "units": 2,
                    "kernel_initializer": {"module": "keras.initializers",
                                           "class_name": "GlorotUniform",
                                           "registered_name": None, "config": {}}}}]
    if nested_lambda:
        inner.append({"module": "keras.layers", "class_name": "Lambda",
                      "registered_name": None, "config": {
                          "name": "inner_lambda",
                          "function": {"class_name": "__lambda__",
                                       "config": {"code": LAMBDA_CODE}}}})
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "registered_name": "Functional", "config": {"name": "outer", "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                 "config": {"name": "in"}},
                {"module": "keras", "class_name": "Sequential", "registered_name": None,
                 "config": {"name": "inner", "layers": inner}}]}}


def keras_h5(folder: Path, config: Any, name: str = "model.h5",
             as_bytes: bool = True) -> Path:
    """An HDF5 file with a ``model_config`` attribute (``None``: weights only) and a dataset."""
    import h5py

    path = folder / name
    with h5py.File(path, "w") as f:
        if config is not None:
            text = config if isinstance(config, str) else json.dumps(config)
            f.attrs["model_config"] = text.encode() if as_bytes else text
        f.create_dataset("model_weights/dense/kernel", data=np.zeros((4, 3), np.float32))
    return path


def keras_zip(folder: Path, config: Any, name: str = "model.keras") -> Path:
    """A Keras 3 ``.keras`` zip: metadata.json, config.json, an empty weights file."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        z.writestr("model.weights.h5", b"")
    return path


# --- ONNX ----------------------------------------------------------------------------------

def onnx_model(folder: Path, name: str = "model.onnx", external: tuple[str, ...] = (),
               custom_domain: str | None = None, in_subgraph: str | None = None) -> Path:
    """A one-Add ONNX graph with a raw-data initializer, external-data initializers at
    ``external`` locations, optionally a node in ``custom_domain`` and an If node whose
    branch holds a Constant with external data at ``in_subgraph``."""
    from onnx import TensorProto, helper

    def ext(tname: str, location: str) -> Any:
        t = helper.make_tensor(tname, TensorProto.FLOAT, [2], [0.0, 0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "8")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    w = helper.make_tensor("w", TensorProto.FLOAT, [2],
                           np.ones(2, np.float32).tobytes(), raw=True)
    inits = [w] + [ext(f"ext{i}", loc) for i, loc in enumerate(external)]
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    out = "y"
    if custom_domain:
        nodes.append(helper.make_node("Decrypt", ["y"], ["z"], name="decrypt",
                                      domain=custom_domain))
        out = "z"
    if in_subgraph:
        const = helper.make_node("Constant", [], ["c"], name="const",
                                 value=ext("sub_const", in_subgraph))
        branch = helper.make_graph([const], "branch", [],
                                   [helper.make_tensor_value_info("c", TensorProto.FLOAT,
                                                                  [2])])
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        inits.append(cond)
        nodes.append(helper.make_node("If", ["cond"], ["branch_out"], name="if",
                                      then_branch=branch, else_branch=branch))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])], initializer=inits)
    opsets = [helper.make_opsetid("", 17)]
    if custom_domain:
        opsets.append(helper.make_opsetid(custom_domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


# --- safetensors ---------------------------------------------------------------------------

_ST_DTYPES = {np.float32: "F32", np.int64: "I64", np.float16: "F16", np.uint8: "U8"}


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    """A well-formed safetensors file for ``arrays`` (C order, little-endian)."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data, offset = b"", 0
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    return safetensors_raw(json.dumps(header).encode(), data)


def safetensors_raw(header: bytes, data: bytes, declared: int | None = None) -> bytes:
    """Header length (``declared`` or the true one), header padded to 8 bytes, data."""
    header += b" " * (-len(header) % 8)
    n = len(header) if declared is None else declared
    return struct.pack("<Q", n) + header + data


# --- GGUF ----------------------------------------------------------------------------------

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SSTI = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"


def _gstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(template: str | None, extra_templates: dict[str, str] | None = None,
               version: int = 3) -> bytes:
    """A GGUF v3 header with typical metadata (ints, a float, a string array, a nested
    array) and ``tokenizer.chat_template`` (plus ``tokenizer.chat_template.<name>`` keys)."""
    kvs: list[bytes] = [
        _gstr("general.architecture") + struct.pack("<I", 8) + _gstr("llama"),
        _gstr("llama.context_length") + struct.pack("<IQ", 10, 4096),
        _gstr("llama.rope.freq_base") + struct.pack("<If", 6, 10000.0),
        _gstr("general.flag") + struct.pack("<IB", 7, 1),
        _gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)
        + _gstr("<s>") + _gstr("</s>") + _gstr("hello"),
        _gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 3)
        + struct.pack("<3f", 0.0, -1.0, -2.0),
        _gstr("test.nested") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 5, 2)
        + struct.pack("<2i", 1, 2),
    ]
    if template is not None:
        kvs.append(_gstr("tokenizer.chat_template") + struct.pack("<I", 8) + _gstr(template))
    for name, text in (extra_templates or {}).items():
        kvs.append(_gstr(f"tokenizer.chat_template.{name}") + struct.pack("<I", 8)
                   + _gstr(text))
    head = b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs))
    return head + b"".join(kvs)


# --- skops ---------------------------------------------------------------------------------

def skops_model(folder: Path, name: str = "model.skops") -> Path:
    """A LogisticRegression fitted on iris, saved with ``skops.io.dump``."""
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = folder / name
    sio.dump(model, path)
    return path


def skops_edit(src: Path, dst: Path, edit: Any) -> Path:
    """Copy a skops zip, replacing schema.json by ``edit(schema)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "schema.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)
    return dst


# --- chat templates outside GGUF -----------------------------------------------------------

TOOL_SSTI = "{{ joiner.__init__.__globals__.os.system('id') }}"
# A ChatML template in the shape Qwen-style tokenizer_config.json files ship: a default system
# turn, tools rendered with ``tojson``, tool calls and tool responses, a generation prompt.
CHATML_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls | default([]) %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}"
    "{%- endif %}{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}"
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def tokenizer_config(template: object) -> str:
    """A Hugging Face ``tokenizer_config.json`` whose ``chat_template`` is ``template`` (a
    string, or a list of ``{"name", "template"}`` entries)."""
    return json.dumps({"add_bos_token": True, "bos_token": "<s>", "chat_template": template,
                       "model_max_length": 4096, "tokenizer_class": "LlamaTokenizer",
                       "added_tokens_decoder": {"0": {"content": "<unk>", "special": True}}},
                      indent=2)


def serving_yaml(template: str) -> str:
    """A serving config whose ``serving.chat_template`` is ``template`` (a YAML block)."""
    return ("base_model: meta-llama/Llama-3-8B\nserving:\n  port: 8000\n"
            f"  chat_template: |\n    {template}\n")


def write(folder: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` to ``folder/name`` (parents made), text as UTF-8."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def hf_model_folder(folder: Path, template: object,
                    arrays: dict[str, np.ndarray] | None = None) -> Path:
    """A Hugging Face style model folder: model.safetensors (``arrays``, default one 2x2),
    config.json, a README that mentions ``{{ messages }}``, tokenizer_config.json whose chat
    template is ``template``."""
    write(folder, "model.safetensors",
          safetensors_bytes(arrays or {"w": np.zeros((2, 2), np.float32)}))
    write(folder, "config.json", json.dumps({"architectures": ["LlamaForCausalLM"]}))
    write(folder, "README.md", "Chat with {{ messages }}\n")
    write(folder, "tokenizer_config.json", tokenizer_config(template))
    return folder


# --- TensorFlow SavedModel and keras_metadata.pb (protobuf wire format, no TensorFlow) -------
# Field numbers from tensorflow/core/protobuf and tensorflow/core/framework (saved_model,
# meta_graph, graph, node_def, function, attr_value) and keras/protobuf/saved_metadata.proto.

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def msg(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return msg(number, value.encode())


def num(number: int, value: int) -> bytes:
    """A varint field."""
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


# --- archives: 7z and encrypted zip members ------------------------------------------------

# GLOBAL os.system; MARK; STRING 'id'; TUPLE; REDUCE; STOP  (protocol 0, never loaded)
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."


def seven_zip(path: Path, members: dict[str, bytes], password: str | None = None,
              header_encryption: bool = False) -> Path:
    """A 7z archive (py7zr) of ``members``, optionally encrypted (and its file list too)."""
    import py7zr

    with py7zr.SevenZipFile(path, "w", password=password,
                            header_encryption=header_encryption) as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return path


def encrypted_zip(members: dict[str, bytes] | None = None,
                  encrypted: tuple[str, ...] = ("secret.pkl",)) -> bytes:
    """A stored zip of ``members`` (default: ``secret.pkl`` and ``plain.pkl``, both
    :data:`MALICIOUS`) whose ``encrypted`` members have the encrypted flag (bit 0) set in their
    local and central headers (the bytes stay plain: the flag is what a reader goes by)."""
    if members is None:
        members = {"secret.pkl": MALICIOUS, "plain.pkl": MALICIOUS}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        locals_ = {i.filename: i.header_offset for i in zf.infolist()}
        pos = zf.start_dir  # type: ignore[attr-defined]
    offsets = [locals_[name] + 6 for name in encrypted]  # local header: flag at +6
    while data[pos:pos + 4] == b"PK\x01\x02":  # central headers: flag at +8
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + n].decode() in encrypted:
            offsets.append(pos + 8)
        pos += 46 + n + m + k
    for offset in offsets:
        (flags,) = struct.unpack_from("<H", data, offset)
        struct.pack_into("<H", data, offset, flags | 0x1)
    return bytes(data)
