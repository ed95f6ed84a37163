"""Target adapters, one module per kind of model, chosen by the ``--target`` spec's scheme.

``sklearn:PATH``, ``onnx:PATH``, ``torch:PATH``, ``http://…``/``https://…`` and
``python:module:function``. Each module exposes ``SCHEME`` and ``load(spec_rest, **options) ->
Target``; :data:`ADAPTERS` maps schemes to modules, so a new adapter is one module and one
line there. Listing the schemes imports no adapter (nor torch or onnxruntime).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from mlthreat.assess.errors import TargetError
from mlthreat.assess.target import Target
from mlthreat.registry import Registry

__all__ = ["ADAPTERS", "load_target"]

ADAPTERS: Registry[ModuleType] = Registry("target scheme", {
    "sklearn": "mlthreat.assess.targets.sklearn",
    "onnx": "mlthreat.assess.targets.onnx",
    "torch": "mlthreat.assess.targets.torch",
    "http": "mlthreat.assess.targets.http",
    "https": "mlthreat.assess.targets.http",
    "python": "mlthreat.assess.targets.python",
})
"""Target adapter modules by ``--target`` scheme."""


def load_target(spec: str, **options: Any) -> Target:
    """Load the target named by ``spec`` (see the module docstring).

    ``options`` go to the adapter (``trust_pickle``, ``clip_values``, ``n_classes``, HTTP
    settings…); adapters ignore what they do not use.

    Raises
    ------
    TargetError
        For an unknown scheme or a model the adapter cannot load, naming the cause.
    """
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ADAPTERS:
        raise TargetError(f"unknown target {spec!r}: use sklearn:PATH, onnx:PATH, torch:PATH, "
                          "http(s)://URL or python:module:function")
    target: Target = ADAPTERS.load(scheme).load(
        spec if scheme in ("http", "https") else rest, **options)
    return target
