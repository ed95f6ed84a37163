"""Builders for the model-file fixtures of test_other_formats: each writes a small file into a
folder and returns its path. Nothing here needs a deep-learning framework."""

from __future__ import annotations

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
