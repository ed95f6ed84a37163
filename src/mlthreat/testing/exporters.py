"""The conformance check for knowledge-base exporters (``mlthreat.kb.export`` modules)."""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import pathlib
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import ModuleType
from typing import Any, NoReturn
from unittest import mock

import mlthreat
from mlthreat.kb.model import KnowledgeBase

__all__ = ["HOSTILE_NAME", "check_exporter"]

#: A technique name that breaks naive HTML, Markdown tables, CSV, JSON strings and line-based
#: formats alike.
HOSTILE_NAME = "<script>x</script>|\"'\n,"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class _IOAttempt(BaseException):
    """Raised by the guarded I/O entry points. A BaseException, so an exporter's
    ``except Exception`` fallback cannot hide it (attempts are recorded as well)."""


def _fail(module: ModuleType, prop: str, detail: str) -> NoReturn:
    raise AssertionError(f"exporter {module.__name__}: {prop}: {detail}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _package_dirs(module: ModuleType) -> tuple[str, ...]:
    """mlthreat's own directory and that of the package the exporter belongs to, if any."""
    dirs = [os.path.dirname(os.path.realpath(mlthreat.__file__))]
    top = sys.modules.get(module.__name__.partition(".")[0])
    top_file = getattr(top, "__file__", None)
    if top is not None and hasattr(top, "__path__") and top_file:
        dirs.append(os.path.dirname(os.path.realpath(top_file)))
    return tuple(dirs)


class _Guard:
    """Refuses file writes and network connections, and file reads unless ``allow_reads`` is
    set and the file lies in one of ``roots`` (the package's own templates and data)."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = roots
        self.allow_reads = False
        self.attempts: list[str] = []

    def _readable(self, path: Any) -> bool:
        if not self.allow_reads or isinstance(path, int):
            return False
        try:
            real = os.path.realpath(os.fspath(path))
        except (TypeError, ValueError):
            return False
        return any(os.path.commonpath([real, root]) == root for root in self.roots)

    def _refuse(self, what: str, *args: Any) -> NoReturn:
        call = f"{what}({', '.join(_short(a) for a in args)})"
        self.attempts.append(call)
        raise _IOAttempt(call)

    def _open(self, label: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> Any:
            if isinstance(mode, str) and not set(mode) & set("wax+") and self._readable(file):
                return orig(file, mode, *args, **kwargs)
            self._refuse(label, file, mode)

        return guarded

    def _os_open(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(path: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
            if not flags & _WRITE_FLAGS and self._readable(path):
                return orig(path, flags, *args, **kwargs)
            self._refuse("os.open", path, flags)

        return guarded

    def _read(self, label: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            if self._readable(path):
                return orig(path, *args, **kwargs)
            self._refuse(label, path)

        return guarded

    def _deny(self, label: str) -> Callable[..., NoReturn]:
        def guarded(*args: Any, **kwargs: Any) -> NoReturn:
            self._refuse(label, *args[:2])

        return guarded

    @contextmanager
    def active(self, *, allow_reads: bool) -> Iterator[None]:
        self.allow_reads = allow_reads
        self.attempts = []
        replacements: list[tuple[Any, str, Callable[..., Any]]] = [
            (builtins, "open", self._open("open", builtins.open)),
            (io, "open", self._open("io.open", io.open)),
            (os, "open", self._os_open(os.open)),
            (pathlib.Path, "open", self._open("Path.open", pathlib.Path.open)),
            (pathlib.Path, "read_text", self._read("Path.read_text", pathlib.Path.read_text)),
            (pathlib.Path, "read_bytes", self._read("Path.read_bytes", pathlib.Path.read_bytes)),
            (pathlib.Path, "write_text", self._deny("Path.write_text")),
            (pathlib.Path, "write_bytes", self._deny("Path.write_bytes")),
            (socket.socket, "connect", self._deny("socket.connect")),
            (socket.socket, "connect_ex", self._deny("socket.connect_ex")),
            (socket, "create_connection", self._deny("socket.create_connection")),
        ]
        with ExitStack() as stack:
            for owner, name, replacement in replacements:
                stack.enter_context(mock.patch.object(owner, name, replacement))
            yield


def _call(module: ModuleType, guard: _Guard, kb: KnowledgeBase, prop: str, *,
          first: bool = False) -> Any:
    """``module.render(kb)`` under ``guard``; any I/O attempt or exception fails ``prop``."""
    out: Any = None
    error: Exception | None = None
    try:
        with guard.active(allow_reads=first):
            out = module.render(kb)
    except _IOAttempt:
        pass
    except Exception as exc:
        error = exc
    if guard.attempts:
        when = ("" if first else " (only the first call may read, and only the package's own "
                "files)")
        _fail(module, "no I/O", f"render(kb) attempted {'; '.join(guard.attempts)}{when}")
    if error is not None:
        _fail(module, prop, f"render(kb) raised {type(error).__name__}: {error}")
    return out


def _hostile(kb: KnowledgeBase) -> KnowledgeBase:
    """``kb`` with the first placed top-level technique, and the first sub-technique, renamed to
    :data:`HOSTILE_NAME`, so the name reaches every export that lists techniques."""
    placed = {t.id for tactic in kb.tactics for t in kb.techniques_of(tactic.id)}
    top = next((t.id for t in kb.techniques if t.id in placed), None)
    sub = next((t.id for t in kb.techniques if t.parent), None)
    targets = {top, sub} - {None}
    if not targets:
        raise ValueError("check_exporter needs a knowledge base with at least one technique")
    techniques = tuple(dataclasses.replace(t, name=HOSTILE_NAME) if t.id in targets else t
                       for t in kb.techniques)
    return dataclasses.replace(kb, techniques=techniques)


def check_exporter(module: ModuleType, kb: KnowledgeBase) -> None:
    """Check that an exporter module keeps the exporter contract of :mod:`mlthreat.kb.export`.

    The properties checked, in order:

    1. ``FORMAT`` is a non-empty str; ``SUFFIX`` is a str starting with ``"."``; ``render`` is
       callable.
    2. ``render(kb)`` (no options) returns a ``str``.
    3. Deterministic: a second call gives byte-identical output.
    4. The output names the ATLAS data version: ``kb.version`` occurs in it.
    5. A technique and a sub-technique whose name is hostile to common formats (markup, table
       and CSV separators, quotes, a newline; see :data:`HOSTILE_NAME`) render without an error.
    6. No I/O, in every call above: opening files for writing, :meth:`pathlib.Path.write_text`
       and ``write_bytes``, and socket connections are refused. Reading files (``open``,
       ``io.open``, ``os.open``, :meth:`pathlib.Path.open`, ``read_text``, ``read_bytes``) is
       refused too, except in the first call and only below the directory of mlthreat or of
       the exporter's own package: an exporter may load its package's templates once, lazily,
       and keep them, but never reads the user's files.

    Parameters
    ----------
    module : module
        The exporter: a module with ``FORMAT``, ``SUFFIX`` and ``render(kb, **options) -> str``.
    kb : KnowledgeBase
        Data to render, with at least one technique; the embedded snapshot is a good choice.

    Raises
    ------
    AssertionError
        At the first property that does not hold, naming the module and the property.
    ValueError
        When ``kb`` holds no technique to give a hostile name.

    Examples
    --------
    >>> from mlthreat.kb.export import exporter
    >>> from mlthreat.kb.sources.snapshot import load_embedded
    >>> check_exporter(exporter("csv"), load_embedded())
    """
    fmt = getattr(module, "FORMAT", None)
    if not isinstance(fmt, str) or not fmt:
        _fail(module, "FORMAT", f"must be a non-empty str, got {fmt!r}")
    suffix = getattr(module, "SUFFIX", None)
    if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
        _fail(module, "SUFFIX", f"must be a str starting with '.', got {suffix!r}")
    if not callable(getattr(module, "render", None)):
        _fail(module, "render", "the module has no callable render(kb)")

    guard = _Guard(_package_dirs(module))
    first = _call(module, guard, kb, "render", first=True)
    if not isinstance(first, str):
        _fail(module, "render returns str", f"render(kb) returned {type(first).__name__}")
    second = _call(module, guard, kb, "deterministic")
    if not isinstance(second, str) or second.encode("utf-8") != first.encode("utf-8"):
        _fail(module, "deterministic",
              f"two render(kb) calls differ{_first_difference(first, second)}")
    if kb.version not in first:
        _fail(module, "names the ATLAS data version",
              f"the output does not contain kb.version {kb.version!r}")
    hostile = _call(module, guard, _hostile(kb), "hostile names")
    if not isinstance(hostile, str):
        _fail(module, "hostile names", f"render(kb) returned {type(hostile).__name__}")


def _first_difference(a: str, b: Any) -> str:
    if not isinstance(b, str):
        return f" (the second returned {type(b).__name__})"
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    return f" at character {at}: {a[at:at + 40]!r} vs {b[at:at + 40]!r}"
