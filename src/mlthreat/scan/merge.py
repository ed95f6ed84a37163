"""One finding per problem: the engines' findings merged with ours.

Four scanners looking at one malicious pickle each report ``os.system``, and fickling reports
it twice (the import and the call). A report that lists the same global five times reads as
five problems, so the scan merges them:

* Findings that name a global (``symbol``) merge on ``(path, symbol)``: every third-party
  engine's findings on that global join one finding. When our own analyser reported the
  global, its first (most severe) finding is the one kept (its rule, message and location:
  ours say where in the file); otherwise the most severe engine finding is.
* Findings without a global merge only with identical ones: same path, rule and location.
* Our own analyser's findings never merge with each other: two of them on one global are two
  places in the file.

The kept finding takes the most severe severity of those merged (an engine that calls a
global critical is never hidden behind our lower rating), lists every scanner that agreed in
``engines`` (``mlthreat`` first, then the third-party engines in
:data:`~mlthreat.scan.engines.ENGINES` order), and keeps each merged engine finding's rule,
severity, location and message in ``details["engine_findings"]`` so no evidence is lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from mlthreat.scan.findings import Finding, severity_rank

__all__ = ["merge_findings"]

_OURS = "mlthreat"
_ORDER = (_OURS, "fickling", "picklescan", "modelscan")


def _key(f: Finding) -> tuple[str, ...]:
    if f.symbol:
        return ("symbol", f.path, f.symbol)
    return ("rule", f.path, f.rule, f.location)


def _engine_order(name: str) -> tuple[int, str]:
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def _evidence(f: Finding) -> dict[str, Any]:
    return {"engine": f.engine, "rule": f.rule, "severity": f.severity,
            "location": f.location, "message": f.message}


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """``findings`` with the third-party engines' duplicates merged (module docstring).

    Order is kept: a merged finding stands where its kept finding stood.

    Examples
    --------
    >>> a = Finding("m.pkl", "pickle", "critical", "pickle.dangerous-global", "os.system",
    ...             "AML.T0011.000", symbol="os.system")
    >>> b = dataclasses.replace(a, rule="picklescan.unsafe-global", engine="picklescan")
    >>> [(f.rule, f.engines) for f in merge_findings([a, b])]
    [('pickle.dangerous-global', ('mlthreat', 'picklescan'))]
    """
    items = list(findings)
    groups: dict[tuple[str, ...], list[Finding]] = {}
    for f in items:
        if f.engine != _OURS:
            groups.setdefault(_key(f), []).append(f)
    kept: dict[tuple[str, ...], int] = {}  # key -> index in items of the finding kept
    for i, f in enumerate(items):
        if f.engine == _OURS and f.symbol and _key(f) not in kept:
            kept[_key(f)] = i
    for key, group in groups.items():
        if key not in kept:
            best = min(group, key=lambda g: severity_rank(g.severity))
            kept[key] = next(i for i, f in enumerate(items) if f is best)
    out: list[Finding] = []
    for i, f in enumerate(items):
        if f.engine != _OURS and kept.get(_key(f)) != i:
            continue  # merged into the finding kept for its key
        key = _key(f)
        group = groups.get(key, []) if kept.get(key) == i else []
        others = [g for g in group if g is not f]
        if not others and f.engine == _OURS:
            out.append(f)
            continue
        members = [f, *others]
        worst = min((g.severity for g in members), key=severity_rank)
        engines = tuple(sorted({g.engine for g in members}, key=_engine_order))
        details = dict(f.details)
        if others:
            details["engine_findings"] = [_evidence(g) for g in members if g.engine != _OURS]
        out.append(dataclasses.replace(f, severity=worst, engines=engines, details=details))
    return out
