"""Which types in a skops file mlthreat trusts, without loading anything.

skops refuses every type outside its own small trusted set, which leaves out what ordinary
models hold (``sklearn.tree._tree.Tree`` in every tree ensemble, the predictors of histogram
gradient boosting). The policy here:

* types and functions from scikit-learn, NumPy and SciPy are trusted by default, except the
  ones that read or write files, reach the network or compile code (:data:`_IO_NAMES`), which
  only an explicit ``trust_types`` entry admits;
* a name inside those libraries is judged by what it is, not how the file spells it: it is
  looked up in the installed library (only after the spelling passed the check, so no file
  reader's module is ever imported) and refused when it is one of :data:`_IO_NAMES` under
  another path (``numpy._core.multiarray.fromfile`` is ``numpy.fromfile``), or not there at all;
* a name outside those libraries is trusted only when the user lists it (``--trust-type``), and
  only if every node of the file that names it is an ``ObjectNode`` (built with
  ``cls.__new__(cls)``, which a function cannot pass): a ``TypeNode``,
  ``ConstructorFromReduceNode``, ``FunctionNode`` (in any protocol), ``MethodNode``… hands out
  or calls what it names, so the name is a callable there, whatever it is;
* builtins, ``operator``, ``os``, ``subprocess`` and the other modules of :data:`_NEVER` are
  never trusted, whatever the user lists.

The kind of each name (type or callable) is read from the file's ``schema.json``, where skops
records the loader of every node (``ObjectNode``, ``TypeNode``, ``FunctionNode``,
``MethodNode``, ``OperatorFuncNode``…); nothing from the file is imported or run, and a
``schema.json`` larger than :data:`MAX_SCHEMA_BYTES` is refused before skops reads it.
"""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_SCHEMA_BYTES", "SchemaError", "TrustDecision", "callable_names", "decide",
           "name_uses", "read_schema"]

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
    "numpy.lib._format_impl", "numpy.rec.fromfile", "numpy._core.records.fromfile",
    "numpy.ndarray.tofile", "numpy.ndarray.dump", "numpy._core._methods._dump",
    "numpy._core._internal", "scipy.sparse.load_npz", "scipy.sparse.save_npz",
    "scipy.sparse._matrix_io", "scipy.LowLevelCallable", "scipy._lib._ccallback",
)
# The only loader that cannot hand out or call a function it names (see the module docstring).
_TYPE_ONLY_LOADERS = frozenset({"ObjectNode"})
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
"""Largest ``schema.json`` read (uncompressed): a model's schema is kilobytes to megabytes."""


class SchemaError(ValueError):
    """The file's ``schema.json`` is missing, too large or not a JSON object."""

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


def read_schema(path: Path) -> dict[str, Any]:
    """The parsed ``schema.json`` of the skops file at ``path``.

    Raises
    ------
    SchemaError
        Not a zip, no ``schema.json``, one over :data:`MAX_SCHEMA_BYTES` (checked on the size
        the archive declares, which :mod:`zipfile` also enforces while reading), not JSON, or
        not a JSON object.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo("schema.json")
            except KeyError:
                raise SchemaError("no schema.json in the archive") from None
            if info.file_size > MAX_SCHEMA_BYTES:
                raise SchemaError(f"schema.json is {info.file_size} bytes uncompressed, over "
                                  f"the {MAX_SCHEMA_BYTES // 2**20} MiB a model's schema needs")
            raw = zf.read(info)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise SchemaError(f"not a readable zip archive ({exc})") from None
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"schema.json is not JSON ({type(exc).__name__})") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"schema.json holds a JSON {type(schema).__name__}, not an object")
    return schema


def name_uses(schema: dict[str, Any]) -> dict[str, set[str]]:
    """Each dotted name the schema mentions, with the loaders of the nodes that mention it.

    Covers the ``__module__``/``__class__`` of every node, a ``MethodNode``'s bound function
    (``module.Class.func``) and a protocol-0 ``FunctionNode``'s ``content`` (``module_path``
    and ``function``), so every name skops may list as untrusted is found with how it is used.
    """
    uses: dict[str, set[str]] = {}
    for node in _nodes(schema):
        loader = node.get("__loader__")
        loader = loader if isinstance(loader, str) else repr(loader)
        module, name = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(name, str):
            uses.setdefault(f"{module}.{name}", set()).add(loader)
        content = node.get("content")
        if isinstance(content, dict):
            fn = content.get("func")  # MethodNode keeps its function's name here
            if isinstance(fn, str) and isinstance(module, str) and isinstance(name, str):
                uses.setdefault(f"{module}.{name}.{fn}", set()).add(loader)
            path, fn = content.get("module_path"), content.get("function")  # protocol 0
            if isinstance(path, str) and isinstance(fn, str):
                uses.setdefault(f"{path}.{fn}", set()).add(loader)
    return uses


def callable_names(path: Path) -> set[str]:
    """Dotted names the skops file at ``path`` uses as callables (any loader but
    ``ObjectNode``); empty when the schema cannot be read (skops itself then refuses the
    file)."""
    try:
        uses = name_uses(read_schema(path))
    except SchemaError:
        return set()
    return {name for name, loaders in uses.items() if loaders - _TYPE_ONLY_LOADERS}


def _resolve(name: str) -> tuple[bool, Any]:
    """Look ``name`` up in the installed library (its longest importable module, then
    attributes); ``(False, None)`` when it is not there."""
    parts = name.split(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(parts), 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(parts[:i]))
            except Exception:  # ImportError, or a library module failing on import
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except Exception:
                return False, None
            return True, obj
    return False, None


_IO_OBJECTS: list[Any] | None = None


def _io_objects() -> list[Any]:
    global _IO_OBJECTS
    if _IO_OBJECTS is None:
        found = (_resolve(n) for n in _IO_NAMES if not _within(n, ("numpy.f2py", "numpy.distutils",
                                                                    "numpy.testing",
                                                                    "sklearn.utils._testing",
                                                                    "scipy._lib._testutils")))
        _IO_OBJECTS = [obj for ok, obj in found if ok]
    return _IO_OBJECTS


def _is_test_code(name: str) -> bool:
    """Whether ``name`` lies in a library's tests or pytest configuration (never imported to
    judge it: importing them configures pytest and hypothesis)."""
    return any(part in ("tests", "conftest", "testing") or part.startswith("test_")
               for part in name.split(".")[1:])


def _reads_files(name: str) -> bool:
    """Whether the library name is, under any spelling, one of :data:`_IO_NAMES`."""
    if _within(name, _IO_NAMES):
        return True
    ok, obj = _resolve(name)
    if not ok:
        return False
    if any(obj is io for io in _io_objects()):
        return True
    real = getattr(obj, "__name__", "") if isinstance(obj, type(json)) else \
        f"{getattr(obj, '__module__', None) or ''}.{getattr(obj, '__qualname__', '')}"
    return _within(real, _IO_NAMES)


def decide(untrusted: Iterable[str], uses: dict[str, set[str]] | set[str],
           trust_types: Iterable[str] = ()) -> TrustDecision:
    """Apply the policy of the module docstring to skops' ``untrusted`` names.

    Parameters
    ----------
    untrusted : iterable of str
        What ``skops.io.get_untrusted_types`` listed.
    uses : dict of str to set of str
        The loaders of the nodes naming each name (:func:`name_uses`); a set of names is read
        as names used as callables (:func:`callable_names`).
    trust_types : iterable of str
        Names the user trusts on top of the default (``--trust-type``).
    """
    extra = set(trust_types)
    trusted: list[str] = []
    refused: dict[str, str] = {}
    if isinstance(uses, set):
        uses = {name: {"FunctionNode"} for name in uses}
    for name in untrusted:
        loaders = uses.get(name, set())
        is_callable = bool(loaders - _TYPE_ONLY_LOADERS) or any(
            c.startswith(name + ".") and uses[c] - _TYPE_ONLY_LOADERS for c in uses)
        if _top(name) in _NEVER:
            refused[name] = f"{_top(name)} is never trusted"
        elif _top(name) in _LIBRARIES:
            if name in extra:
                trusted.append(name)
            elif _is_test_code(name):
                refused[name] = "test code of the library, not part of a model"
            elif _within(name, _IO_NAMES) or _reads_files(name):
                refused[name] = "reads or writes files; pass --trust-type to accept it"
            elif not _resolve(name)[0]:
                refused[name] = "not found in the installed library"
            else:
                trusted.append(name)
        elif is_callable:
            refused[name] = ("a callable outside scikit-learn, NumPy and SciPy is never "
                             "trusted")
        elif name in extra and not loaders:
            refused[name] = ("not named by any object in schema.json, so how the file uses it "
                             "cannot be checked")
        elif name in extra:
            trusted.append(name)
        else:
            refused[name] = "outside scikit-learn, NumPy and SciPy; pass --trust-type to accept"
    return TrustDecision(tuple(sorted(trusted)), refused)
