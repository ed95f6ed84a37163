"""One analyser per format, found by name. Each is ``analyze(fh, *, path, size, limits,
policy) -> list[Finding]`` over a seekable binary file object at offset 0; it never loads the
model and raises :class:`~mlthreat.scan.findings.FormatError` for a file it cannot parse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlthreat.registry import Registry

__all__ = ["ANALYZERS"]

ANALYZERS: Registry[Callable[..., Any]] = Registry("scan format", {
    "pickle": "mlthreat.scan.formats.pickle:analyze",
    "pytorch-zip": "mlthreat.scan.formats.torch:analyze",
    "numpy": "mlthreat.scan.formats.numpy:analyze_npy",
    "npz": "mlthreat.scan.formats.numpy:analyze_npz",
    "keras-h5": "mlthreat.scan.formats.keras:analyze_h5",
    "keras-zip": "mlthreat.scan.formats.keras:analyze_zip",
    "skops": "mlthreat.scan.formats.skops:analyze",
    "onnx": "mlthreat.scan.formats.onnx:analyze",
    "safetensors": "mlthreat.scan.formats.safetensors:analyze",
    "gguf": "mlthreat.scan.formats.gguf:analyze",
    "savedmodel": "mlthreat.scan.formats.savedmodel:analyze",
    "keras-metadata": "mlthreat.scan.formats.savedmodel:analyze_keras_metadata",
    "template-config": "mlthreat.scan.formats.templates:analyze_config",
    "jinja": "mlthreat.scan.formats.templates:analyze_jinja",
})
"""Analysers by format, as :func:`mlthreat.scan.sniff.sniff` names it (imports none of them)."""
