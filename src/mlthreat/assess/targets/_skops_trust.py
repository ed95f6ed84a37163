"""Which types in a skops file mlthreat trusts, without loading anything.

skops refuses every type outside its own small trusted set, which leaves out what ordinary
models hold (``sklearn.tree._tree.Tree`` in every tree ensemble, the predictors of histogram
gradient boosting). The policy here:

* types and functions from scikit-learn, NumPy and SciPy are trusted by default, except the
  ones that read or write files, reach the network or compile code (:data:`_IO_NAMES`), which
  only an explicit ``trust_types`` entry admits;
* a name outside those libraries is trusted only when the user lists it (``--trust-type``), and
  only if the file uses it as a type, never as a callable (a function, method or operator a
  pipeline would call on our inputs);
* builtins, ``operator``, ``os``, ``subprocess`` and the other modules of :data:`_NEVER` are
  never trusted, whatever the user lists.

The kind of each name (type or callable) is read from the file's ``schema.json``, where skops
records the loader of every node (``ObjectNode``, ``TypeNode``, ``FunctionNode``,
``MethodNode``, ``OperatorFuncNode``…); nothing from the file is imported or run.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrustDecision", "callable_names", "decide"]

_LIBRARIES = ("sklearn", "numpy", "scipy")
# Top-level modules whose names are never trusted: they run code or reach the system.
_NEVER = frozenset({
    "builtins", "__builtin__", "operator", "os", "posix", "nt", "subprocess", "sys", "shutil",
    "importlib", "pickle", "_pickle", "marshal", "socket", "runpy", "ctypes", "io", "pathlib",
    "code", "codeop", "pty", "webbrowser", "functools", "types", "inspect", "pdb", "timeit",
    "joblib", "dill", "cloudpickle", "urllib", "http", "requests", "multiprocessing",
    "threading", "asyncio", "tempfile", "glob", "signal",
})
# Names inside the trusted libraries that touch files, the network or a compiler.
_IO_NAMES = (
    "numpy.load", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.fromregex", "numpy.memmap",
    "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.lib.format", "numpy.ctypeslib",
    "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.DataSource", "numpy.lib._datasource",
    "scipy.io", "scipy.datasets", "scipy._lib._testutils", "sklearn.datasets",
    "sklearn.utils._testing", "sklearn.externals", "sklearn.utils._show_versions",
)
_CALLABLE_LOADERS = frozenset({"FunctionNode", "MethodNode", "OperatorFuncNode",
                               "PartialNode"})


@dataclass(frozen=True)
class TrustDecision:
    """What the policy made of a file's untrusted names.

    ``trusted`` goes to ``skops.io.load(trusted=…)``; ``refused`` maps each name that stays
    untrusted to the reason, in words.
    """

    trusted: tuple[str, ...]
    refused: dict[str, str]


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def callable_names(path: Path) -> set[str]:
    """Dotted names the skops file at ``path`` uses as callables (functions, methods,
    operators), read from its ``schema.json``; empty when the schema cannot be read (skops
    itself then refuses the file)."""
    try:
        with zipfile.ZipFile(path) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return set()
    out = set()
    for node in _nodes(schema):
        if node.get("__loader__") in _CALLABLE_LOADERS:
            module, name = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(name, str):
                out.add(f"{module}.{name}")
            content = node.get("content")
            if isinstance(content, dict):  # MethodNode keeps its function's name here
                fn = content.get("func")
                if isinstance(fn, str) and isinstance(module, str):
                    out.add(f"{module}.{name}.{fn}")
    return out


def decide(untrusted: Iterable[str], callables: set[str],
           trust_types: Iterable[str] = ()) -> TrustDecision:
    """Apply the policy of the module docstring to skops' ``untrusted`` names.

    Parameters
    ----------
    untrusted : iterable of str
        What ``skops.io.get_untrusted_types`` listed.
    callables : set of str
        The names the file uses as callables (:func:`callable_names`).
    trust_types : iterable of str
        Names the user trusts on top of the default (``--trust-type``).
    """
    extra = set(trust_types)
    trusted: list[str] = []
    refused: dict[str, str] = {}
    for name in untrusted:
        is_callable = name in callables or any(c.startswith(name + ".") for c in callables)
        if _top(name) in _NEVER:
            refused[name] = f"{_top(name)} is never trusted"
        elif _top(name) in _LIBRARIES:
            if _within(name, _IO_NAMES) and name not in extra:
                refused[name] = "reads or writes files; pass --trust-type to accept it"
            else:
                trusted.append(name)
        elif is_callable:
            refused[name] = ("a callable outside scikit-learn, NumPy and SciPy is never "
                             "trusted")
        elif name in extra:
            trusted.append(name)
        else:
            refused[name] = "outside scikit-learn, NumPy and SciPy; pass --trust-type to accept"
    return TrustDecision(tuple(sorted(trusted)), refused)
