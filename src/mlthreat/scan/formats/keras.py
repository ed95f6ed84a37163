"""Keras models: Lambda layers and custom objects, read from the saved configuration.

* ``.h5`` (Keras 2 / tf.keras HDF5, ``keras/src/legacy/saving/legacy_h5_format.py``): the
  root attributes ``model_config`` and ``training_config`` hold the model's JSON config.
* ``.keras`` (Keras 3 zip, ``keras/src/saving/saving_lib.py``): member ``config.json``.

Both configs are trees of ``{"class_name", "config", "module"?, "registered_name"?}``
objects. A ``Lambda`` layer stores a Python function (marshalled bytecode in Keras 2,
``{"class_name": "__lambda__", "config": {"code": ...}}`` in Keras 3) that runs when the
model is built, and an object from a ``module`` outside Keras is imported (its code runs) on
load. Reading the HDF5 attributes and the zip member executes nothing.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats._zipmeta import read_member
from mlthreat.scan.policy import Policy

__all__ = ["KERAS_MODULES", "analyze_config", "analyze_h5", "analyze_zip"]

# Modules whose objects Keras deserialises from its own code.
KERAS_MODULES = ("keras", "tf_keras", "tensorflow")
_ATTRS = ("model_config", "training_config")
_MAX_DEPTH = 200


def _keras_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in KERAS_MODULES)


def _decode(value: Any, what: str, limits: Limits) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
        value = value.tolist()  # a numpy scalar or 0-d array from h5py
    if isinstance(value, bytes):
        if len(value) > limits.max_header_bytes:
            raise FormatError(f"{what} of {len(value)} bytes exceeds the header limit", what)
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8", what) from None
    if not isinstance(value, str):
        raise FormatError(f"{what} is not a JSON string", what)
    if len(value) > limits.max_header_bytes:
        raise FormatError(f"{what} of {len(value)} characters exceeds the header limit", what)
    try:
        return json.loads(value)
    except ValueError as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}", what) from None


def analyze_config(config: Any, *, path: str, fmt: str, policy: Policy,
                   source: str = "model_config") -> list[Finding]:
    """Findings for a parsed Keras config (any nesting of models, layers and objects).

    Rules: ``keras.lambda-layer`` (critical) for each ``Lambda`` layer and each Keras 3
    ``__lambda__`` function outside one; ``keras.custom-object`` (high; critical when the
    policy lists ``module.class_name`` as dangerous or payload) for each object whose
    ``module`` is outside :data:`KERAS_MODULES`, or whose ``registered_name`` is
    ``package>name`` with a non-Keras package.
    """
    findings: list[Finding] = []

    def add(severity: str, rule: str, message: str, layer: str, symbol: str,
            technique: str, **details: Any) -> None:
        where = f"layer '{layer}'" if layer else source
        findings.append(Finding(path=path, format=fmt, severity=severity, rule=rule,
                                message=message, technique=technique, location=where,
                                symbol=symbol, details=details))

    def visit(node: Any, layer: str, in_lambda: bool, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise FormatError(f"{source} nests deeper than {_MAX_DEPTH} levels", source)
        if isinstance(node, list):
            for item in node:
                visit(item, layer, in_lambda, depth + 1)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        if isinstance(class_name, str):
            cfg = node.get("config")
            name = node.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
            # objects that are layers carry a name; initializers etc. stay in their layer
            if isinstance(name, str) and name:
                layer = name
            if class_name == "Lambda":
                in_lambda = True
                add("critical", "keras.lambda-layer",
                    f"Lambda layer {layer!r} holds a Python function that runs when the model "
                    "is loaded", layer, "Lambda", TECHNIQUES["unsafe"],
                    function_type=(cfg.get("function_type") if isinstance(cfg, dict)
                                   else None))
            elif class_name == "__lambda__" and not in_lambda:
                add("critical", "keras.lambda-layer",
                    "a serialised Python lambda runs when the model is loaded", layer,
                    "__lambda__", TECHNIQUES["unsafe"])
            module = node.get("module")
            registered = node.get("registered_name")
            culprit = None
            if isinstance(module, str) and module and not _keras_module(module):
                culprit = f"{module}.{class_name}"
            elif isinstance(registered, str) and ">" in registered \
                    and not _keras_module(registered.split(">", 1)[0]):
                culprit = registered
            if culprit is not None:
                mod = module if isinstance(module, str) and module else culprit.split(">")[0]
                verdict = policy.verdict(mod, class_name)
                severity, technique = "high", TECHNIQUES["unsafe"]
                if verdict is not None and verdict[0] == "critical":
                    severity = "critical"
                    if verdict[1] == "payload":
                        technique = TECHNIQUES["malware"]
                add(severity, "keras.custom-object",
                    f"{class_name!r} comes from {culprit!r}, outside Keras: its code is "
                    "imported and run on load", layer, culprit, technique,
                    class_name=class_name, module=module, registered_name=registered)
        for value in node.values():
            if isinstance(value, (dict, list)):
                visit(value, layer, in_lambda, depth + 1)

    visit(config, "", False, 0)
    return findings


def analyze_h5(fh: BinaryIO, *, path: str, size: int, limits: Limits,
               policy: Policy) -> list[Finding]:
    """Findings for a Keras HDF5 model: its ``model_config`` and ``training_config`` root
    attributes (see :func:`analyze_config`). A weights-only file (no config) has none.

    Raises
    ------
    FormatError
        Not an HDF5 file, an attribute larger than ``limits.max_header_bytes``, a config that
        is not UTF-8 JSON.
    """
    import h5py

    try:
        h5 = h5py.File(fh, "r")
    except (OSError, ValueError) as exc:
        raise FormatError(f"not a readable HDF5 file: {exc}", "offset 0") from None
    findings: list[Finding] = []
    with h5:
        for attr in _ATTRS:
            if attr not in h5.attrs:
                continue
            # the stored size, checked before h5py reads the value into memory
            stored = h5.attrs.get_id(attr).get_storage_size()
            if stored > limits.max_header_bytes:
                raise FormatError(f"attribute {attr} of {stored} bytes exceeds the header "
                                  "limit", f"attribute {attr}")
            try:
                raw = h5.attrs[attr]
            except (OSError, TypeError, ValueError) as exc:
                raise FormatError(f"attribute {attr} cannot be read: {exc}",
                                  f"attribute {attr}") from None
            config = _decode(raw, f"attribute {attr}", limits)
            findings += analyze_config(config, path=path, fmt="keras-h5", policy=policy,
                                       source=f"attribute {attr}")
    return findings


def analyze_zip(fh: BinaryIO, *, path: str, size: int, limits: Limits,
                policy: Policy) -> list[Finding]:
    """Findings for a Keras 3 ``.keras`` zip: its ``config.json`` (see
    :func:`analyze_config`).

    Raises
    ------
    FormatError
        Not a zip, no ``config.json``, a member larger than ``limits.max_header_bytes`` (by its
        declared or its actual size), a config that is not UTF-8 JSON.
    """
    data = read_member(fh, "config.json", limits, ".keras")
    config = _decode(data, "config.json", limits)
    return analyze_config(config, path=path, fmt="keras-zip", policy=policy,
                          source="config.json")
