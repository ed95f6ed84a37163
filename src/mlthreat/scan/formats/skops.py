"""skops files: every type the schema names, checked against the allow-list.

A skops file (https://skops.readthedocs.io/en/stable/persistence.html) is a zip holding
``schema.json`` and the arrays it refers to. Each node of the schema is a JSON object with
``__module__``, ``__class__`` and ``__loader__`` (``ObjectNode``, ``FunctionNode``,
``TypeNode``, ``MethodNode`` …); ``skops.io.load`` imports ``__module__`` and calls or
rebuilds ``__class__`` from it, so every named type is code the file can make run.

``skops.io.get_untrusted_types`` is not used: it builds skops' node tree, which reads every
array member into memory, and it applies skops' trust list rather than ours. The schema is
walked here as plain JSON instead.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from mlthreat.scan.findings import TECHNIQUES, Finding, FormatError, Limits
from mlthreat.scan.formats._zipmeta import read_member
from mlthreat.scan.policy import Policy

__all__ = ["analyze", "schema_types"]

FORMAT = "skops"
RULE = "skops.untrusted-type"
_MAX_DEPTH = 500


def schema_types(schema: Any) -> dict[tuple[str, str], tuple[str, int]]:
    """``(module, name) -> (first JSON path, count)`` for every type a skops schema names.

    Besides each node's ``__module__.__class__``, a ``MethodNode`` names the method it binds
    (``module.Class`` + ``func``), which skops also treats as a type to trust.

    Raises
    ------
    FormatError
        A schema nested deeper than 500 levels.
    """
    found: dict[tuple[str, str], tuple[str, int]] = {}

    def note(module: str, name: str, where: str) -> None:
        first, count = found.get((module, name), (where, 0))
        found[(module, name)] = (first, count + 1)

    def visit(node: Any, where: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise FormatError(f"schema nests deeper than {_MAX_DEPTH} levels",
                              f"entry schema.json at {where}")
        if isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{where}[{i}]", depth + 1)
            return
        if not isinstance(node, dict):
            return
        module, cls = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(cls, str):
            note(module, cls, where)
            content = node.get("content")
            if node.get("__loader__") == "MethodNode" and isinstance(content, dict) \
                    and isinstance(content.get("func"), str):
                note(f"{module}.{cls}", content["func"], where)
        elif "__module__" in node or "__class__" in node:
            raise FormatError("schema node with a non-string __module__ or __class__",
                              f"entry schema.json at {where}")
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                visit(value, f"{where}.{key}", depth + 1)

    visit(schema, "$", 0)
    return found


def analyze(fh: BinaryIO, *, path: str, size: int, limits: Limits,
            policy: Policy) -> list[Finding]:
    """Findings for a skops zip: one ``skops.untrusted-type`` per distinct type its
    ``schema.json`` names that ``policy`` does not allow (see :func:`schema_types`).

    Severity and technique follow :meth:`Policy.verdict`: ``payload`` → critical,
    ``TECHNIQUES["malware"]``; ``dangerous`` → critical, ``TECHNIQUES["unsafe"]``;
    ``unknown`` → high, ``TECHNIQUES["unsafe"]``. Symbol is ``module.name``.

    Raises
    ------
    FormatError
        Not a zip, no ``schema.json``, a schema larger than ``limits.max_header_bytes``, not
        UTF-8 JSON, or with a malformed node.
    """
    data = read_member(fh, "schema.json", limits, "skops")
    try:
        schema = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"schema.json is not UTF-8 JSON: {exc}", "entry schema.json") \
            from None
    findings = []
    for (module, name), (where, count) in schema_types(schema).items():
        verdict = policy.verdict(module, name)
        if verdict is None:
            continue
        severity, kind = verdict
        technique = TECHNIQUES["malware"] if kind == "payload" else TECHNIQUES["unsafe"]
        what = {"payload": "unpacks hidden code", "dangerous": "runs code",
                "unknown": "is not on the allow-list"}.get(kind, kind)
        findings.append(Finding(
            path=path, format=FORMAT, severity=severity, rule=RULE,
            message=f"schema names {module}.{name}, which {what}: skops.io.load imports it",
            technique=technique, location=f"entry schema.json at {where}",
            symbol=f"{module}.{name}", details={"kind": kind, "count": count}))
    return findings
