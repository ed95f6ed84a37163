"""The allow-list policy: which globals (pickle), types (skops) and layers a model file may
name. Anything not allowed is a finding, so a new gadget is caught without a new rule; a short
list of known-dangerous names raises the severity to critical.

The default policy is package data (``scan/data/allowlist.yaml``); ``--policy FILE`` adds to it
(or replaces it with ``replace: true``). Entries are ``module.name`` or ``module.*`` (any name
in the module and its submodules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mlthreat.errors import UsageError

__all__ = ["Policy"]


def _split(patterns: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact, prefixes = set(), []
    for p in patterns:
        if p.endswith(".*"):
            prefixes.append(p[:-2])
        else:
            exact.add(p)
    return frozenset(exact), tuple(sorted(set(prefixes)))


def _matches(full: str, module: str, exact: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    if full in exact:
        return True
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class Policy:
    """Allowed and known-dangerous globals.

    Parameters
    ----------
    allowed : iterable of str
        ``module.name`` or ``module.*`` patterns a file may name.
    dangerous : iterable of str
        Patterns that run code (``os.system``, ``builtins.eval`` …): critical when named.
    payload : iterable of str
        Patterns that unpack hidden code (``marshal.loads``, ``pickle.loads`` …): critical and
        reported as embedded malware (AML.T0018.002) rather than unsafe artifact.
    """

    allowed: tuple[str, ...]
    dangerous: tuple[str, ...] = ()
    payload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", _split(self.allowed))
        object.__setattr__(self, "_dangerous", _split(self.dangerous))
        object.__setattr__(self, "_payload", _split(self.payload))

    def verdict(self, module: str, name: str) -> tuple[str, str] | None:
        """``None`` when ``module.name`` is allowed, else ``(severity, kind)`` with kind
        ``payload`` (hidden code), ``dangerous`` (runs code) or ``unknown`` (not on the
        allow-list; severity ``high``)."""
        full = f"{module}.{name}"
        if _matches(full, module, *self._payload):  # type: ignore[attr-defined]
            return ("critical", "payload")
        if _matches(full, module, *self._dangerous):  # type: ignore[attr-defined]
            return ("critical", "dangerous")
        if _matches(full, module, *self._allowed):  # type: ignore[attr-defined]
            return None
        return ("high", "unknown")

    @classmethod
    def default(cls) -> Policy:
        """The policy shipped with mlthreat."""
        text = resources.files("mlthreat.scan").joinpath("data/allowlist.yaml").read_text("utf-8")
        return cls._from_text(text, "allowlist.yaml (package data)")

    @classmethod
    def from_file(cls, path: str | Path, base: Policy | None = None) -> Policy:
        """A user's policy file added to ``base`` (default: :meth:`default`), or replacing it
        when the file says ``replace: true``.

        Raises
        ------
        UsageError
            Naming the file and field, for an unreadable file or a malformed entry.
        """
        from mlthreat.safeload import SafeLoadError, read_text

        try:
            text = read_text(path)  # size-capped, a regular file, UTF-8
        except SafeLoadError as exc:
            raise UsageError(f"cannot read policy: {exc}") from None
        mine = cls._from_text(text, str(path))
        data = _load(text, str(path))
        if data.get("replace") is True:
            return mine
        base = base or cls.default()
        return cls(allowed=base.allowed + mine.allowed, dangerous=base.dangerous + mine.dangerous,
                   payload=base.payload + mine.payload)

    @classmethod
    def _from_text(cls, text: str, source: str) -> Policy:
        data = _load(text, source)
        unknown = set(data) - {"allowed", "dangerous", "payload", "replace"}
        if unknown:
            raise UsageError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
        if not isinstance(data.get("replace", False), bool):
            raise UsageError(f"{source}: field 'replace' must be true or false")
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("allowed", "dangerous", "payload"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(
                    isinstance(v, str) and "." in v and not v.startswith(".") for v in value):
                raise UsageError(f"{source}: field '{key}' must be a list of 'module.name' or "
                                 "'module.*' strings")
            lists[key] = tuple(value)
        return cls(**lists)


def _load(text: str, source: str) -> dict[str, Any]:
    from mlthreat.safeload import SafeLoadError, parse_yaml

    try:  # nesting and aliases bounded, duplicate keys refused naming both lines
        data = parse_yaml(text, source)
    except SafeLoadError as exc:
        raise UsageError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a policy is a mapping with 'allowed', 'dangerous', "
                         "'payload'")
    return data
