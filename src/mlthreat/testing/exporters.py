"""The conformance check for knowledge-base exporters (``mlthreat.kb.export`` modules)."""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import pathlib
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import ModuleType
from typing import Any, NoReturn
from unittest import mock

from mlthreat.kb.model import KnowledgeBase

__all__ = ["HOSTILE_NAME", "check_exporter"]

#: A technique name that breaks naive HTML, Markdown tables, CSV, JSON strings and line-based
#: formats alike.
HOSTILE_NAME = "<script>x</script>|\"'\n,"


class _IOAttempt(BaseException):
    """Raised by the patched I/O entry points while ``render`` runs. A BaseException, so that an
    exporter's ``except Exception`` fallback cannot hide it (attempts are also recorded)."""


def _fail(module: ModuleType, prop: str, detail: str) -> NoReturn:
    raise AssertionError(f"exporter {module.__name__}: {prop}: {detail}")


def _render(module: ModuleType, kb: KnowledgeBase, prop: str) -> Any:
    try:
        return module.render(kb)
    except Exception as exc:
        _fail(module, prop, f"render(kb) raised {type(exc).__name__}: {exc}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@contextmanager
def _no_io(attempts: list[str]) -> Iterator[None]:
    """Make the usual file and network entry points record the call and raise
    :class:`_IOAttempt`."""

    def refuse(what: str) -> Callable[..., NoReturn]:
        def deny(*args: Any, **kwargs: Any) -> NoReturn:
            call = f"{what}({', '.join(_short(a) for a in args[:2])})"
            attempts.append(call)
            raise _IOAttempt(call)

        return deny

    patches: list[tuple[Any, str]] = [
        (builtins, "open"),
        (io, "open"),
        (os, "open"),
        (pathlib.Path, "open"),
        (pathlib.Path, "read_text"),
        (pathlib.Path, "read_bytes"),
        (pathlib.Path, "write_text"),
        (pathlib.Path, "write_bytes"),
        (socket.socket, "connect"),
        (socket, "create_connection"),
    ]
    with ExitStack() as stack:
        for owner, name in patches:
            label = f"{owner.__name__}.{name}"
            stack.enter_context(mock.patch.object(owner, name, refuse(label)))
        yield


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
    3. Deterministic: two calls give byte-identical output.
    4. The output names the ATLAS data version: ``kb.version`` occurs in it.
    5. No I/O: ``render(kb)`` still works, with the same output, while ``open`` (builtin, ``io``
       and ``os``), the reading and writing methods of :class:`pathlib.Path` and socket
       connections raise. The earlier calls have run by then, so the package's own templates and
       lazy imports, which an exporter may load once on first use, are already loaded.
    6. A technique and a sub-technique whose name is hostile to common formats (markup, table
       and CSV separators, quotes, a newline; see :data:`HOSTILE_NAME`) render without an error.

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

    first = _render(module, kb, "render")
    if not isinstance(first, str):
        _fail(module, "render returns str", f"render(kb) returned {type(first).__name__}")
    second = _render(module, kb, "deterministic")
    if not isinstance(second, str) or second.encode("utf-8") != first.encode("utf-8"):
        _fail(module, "deterministic",
              f"two render(kb) calls differ{_first_difference(first, second)}")
    if kb.version not in first:
        _fail(module, "names the ATLAS data version",
              f"the output does not contain kb.version {kb.version!r}")

    attempts: list[str] = []
    quiet: Any = None
    try:
        with _no_io(attempts):
            quiet = _render(module, kb, "no I/O")
    except _IOAttempt:
        pass
    if attempts:
        _fail(module, "no I/O", f"render(kb) attempted {'; '.join(attempts)}")
    if quiet != first:
        _fail(module, "no I/O", "the output changed when I/O was blocked")

    hostile = _render(module, _hostile(kb), "hostile names")
    if not isinstance(hostile, str):
        _fail(module, "hostile names", f"render(kb) returned {type(hostile).__name__}")


def _first_difference(a: str, b: Any) -> str:
    if not isinstance(b, str):
        return f" (second call returned {type(b).__name__})"
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    return f" at character {at}: {a[at:at + 40]!r} vs {b[at:at + 40]!r}"
