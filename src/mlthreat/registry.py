"""One registry shape for every extension axis: an ordered ``name -> "module:attr"`` table.

mlthreat has six: technique runs (:data:`mlthreat.assess.techniques.RUNS`), target adapters
(:data:`mlthreat.assess.targets.ADAPTERS`), detectors
(:data:`mlthreat.detect.detectors.DETECTORS`), scan analysers
(:data:`mlthreat.scan.formats.ANALYZERS`), knowledge-base exporters
(:data:`mlthreat.kb.export.EXPORTERS`) and alert formats (:data:`mlthreat.detect.formats.FORMATS`).
Each is a :class:`Registry`; adding an implementation is one module and one line in its table.

An entry's value is a string, so listing a registry imports nothing: ``mlthreat kb`` does not
import the detectors, and a command's help lists :meth:`Registry.names` without loading torch.
``"package.module:attr"`` names an attribute of a module, ``"package.module"`` the module itself.
:meth:`Registry.load` imports on demand.

A registry is a mutable mapping of names to those strings, so ``name in registry``,
``list(registry)``, ``registry[name]`` (the string) and ``", ".join(registry)`` read as with a
dict, and a plug-in (or a test) registers its own entry with ``registry[name] = "pkg.mod:Cls"``.

Examples
--------
>>> from mlthreat.registry import Registry
>>> codecs = Registry("codec", {"json": "json:dumps", "pickle": "pickle"})
>>> codecs.names()
('json', 'pickle')
>>> codecs.load("json")({"a": 1})
'{"a": 1}'
>>> codecs.load("yaml")
Traceback (most recent call last):
...
mlthreat.errors.UsageError: unknown codec yaml; choose one of json, pickle
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from importlib import import_module
from typing import Any, Generic, TypeVar

from mlthreat.errors import UsageError

__all__ = ["Registry", "load_spec"]

T = TypeVar("T", covariant=True)  # only ever returned


def load_spec(spec: str) -> Any:
    """The object ``spec`` names: ``"module:attr"`` (an attribute, dotted for a nested one) or
    ``"module"`` (the module). Imports the module; raises what the import or lookup raises."""
    module, _, attr = spec.partition(":")
    obj: Any = import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(MutableMapping[str, str], Generic[T]):
    """Ordered ``name -> "module:attr"`` entries of one kind, loaded on demand.

    Parameters
    ----------
    kind : str
        What one entry is, for messages: ``"detector"`` gives "unknown detector x; choose one
        of …".
    entries : Mapping[str, str]
        The names, in the order :meth:`names` lists them, and where each implementation lives.
    """

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self._entries: dict[str, str] = {}
        for name, spec in entries.items():
            self[name] = spec

    # -- the mapping: names to specs, nothing imported ---------------------------------------
    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __setitem__(self, name: str, spec: str) -> None:
        if not isinstance(spec, str) or not spec.partition(":")[0]:
            raise ValueError(f"{self.kind} {name!r}: expected 'module:attr' or 'module', "
                             f"got {spec!r}")
        self._entries[name] = spec

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"

    # -- names, for help texts and messages --------------------------------------------------
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (imports nothing)."""
        return tuple(self._entries)

    def choices(self, last: str = ", ") -> str:
        """The names as one phrase for a help text: ``choices(" or ")`` gives ``"a, b or c"``."""
        names = self.names()
        return ", ".join(names[:-1]) + last + names[-1] if len(names) > 1 else "".join(names)

    def check(self, names: Iterable[str]) -> None:
        """Raise :class:`~mlthreat.errors.UsageError` naming every one of ``names`` that is not
        registered, and the ones that are; return quietly when all are."""
        unknown = [n for n in names if n not in self._entries]
        if unknown:
            raise UsageError(f"unknown {self.kind} {', '.join(unknown)}; choose one of "
                             f"{', '.join(self._entries)}")

    # -- loading ------------------------------------------------------------------------------
    def load(self, name: str) -> T:
        """The implementation registered as ``name``, imported now.

        Raises
        ------
        UsageError
            When ``name`` is not registered (the message lists the names that are).
        """
        self.check((name,))
        loaded: T = load_spec(self._entries[name])
        return loaded

    def load_all(self) -> list[T]:
        """Every implementation, in :meth:`names` order."""
        return [self.load(name) for name in self._entries]
