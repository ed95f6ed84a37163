"""Feature domains: which values each input column may take, inferred from data or declared.

An adversarial row is only a real threat if the model's owner could receive it: a one-hot
group with two categories set, an age of 37.4, a constant column that moved, are rows no form
or pipeline produces. :class:`FeatureDomain` records, per column, its bounds and kind:

* ``constant`` — one value in all the data (the digits' corner pixels); it never moves;
* ``binary`` — only 0 and 1;
* ``integer`` — whole numbers only;
* ``continuous`` — anything in ``[low, high]``;

and the one-hot groups (columns of which exactly one is 1 in every row). Evasion runs report
raw success and *feasible* success: adversarial rows projected onto the domain
(:meth:`FeatureDomain.project`) and sent to the target again; and the domain-violation rate.
Following the constraint-aware evasion literature (Tian et al., "Adversarial examples for
tabular data", and Simonetto et al. 2022, "A unified framework for adversarial attack and
defense in constrained feature space").

A feature spec (``--feature-spec FILE``, YAML or JSON) declares what inference cannot know::

    features:                       # by column name (CSV/Parquet header) or index
      - {name: age, kind: integer, min: 0, max: 120}
      - {index: 7, kind: binary}
    one_hot:
      - [colour_red, colour_green, colour_blue]

Columns not listed keep what was inferred from the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.assess.errors import DataError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["KINDS", "FeatureDomain", "infer_domain", "read_feature_spec"]

KINDS = ("continuous", "integer", "binary", "constant")
MAX_SPEC_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class FeatureDomain:
    """Per-column bounds ``low``/``high`` (float64 [d]), ``kinds`` (one of :data:`KINDS` per
    column), ``one_hot`` groups (tuples of column indices) and where it came from."""

    low: np.ndarray
    high: np.ndarray
    kinds: tuple[str, ...]
    one_hot: tuple[tuple[int, ...], ...] = ()
    source: str = "inferred from the data"

    @property
    def n_features(self) -> int:
        return len(self.kinds)

    @property
    def is_box(self) -> bool:
        """True when every column is continuous (no projection but clipping is needed)."""
        return all(k == "continuous" for k in self.kinds) and not self.one_hot

    def project(self, x: Any) -> np.ndarray:
        """The nearest rows the domain admits: ``x`` [n, d] clipped to the bounds, integers and
        binaries rounded, constants reset, each one-hot group set to its largest column.
        Returns float64 [n, d]."""
        import numpy as np

        z: np.ndarray = np.clip(np.asarray(x, dtype="float64").reshape(len(x), -1), self.low,
                                self.high)
        # the group's winner is read before rounding: (0.2, 0.5, 0.4) is the second category
        winners = [np.asarray(g)[z[:, list(g)].argmax(axis=1)] for g in self.one_hot]
        kinds = np.asarray(self.kinds)
        rounded = np.isin(kinds, ("integer", "binary"))
        z[:, rounded] = np.clip(np.round(z[:, rounded]), self.low[rounded], self.high[rounded])
        const = kinds == "constant"
        z[:, const] = self.low[const]
        for group, winner in zip(self.one_hot, winners, strict=True):
            z[:, list(group)] = 0.0
            z[np.arange(len(z)), winner] = 1.0
        return z

    def violations(self, x: Any) -> np.ndarray:
        """Per row [n] (bool): does ``x`` [n, d] leave the domain (beyond float32 rounding)?"""
        import numpy as np

        z = np.asarray(x, dtype="float64").reshape(len(x), -1)
        tol = 1e-5 * np.maximum(1.0, np.abs(self.high - self.low))
        out: np.ndarray = np.any(np.abs(z - self.project(z)) > tol, axis=1)
        return out

    def describe(self) -> dict[str, Any]:
        """Counts of columns by kind, the one-hot groups, and the source, for reports."""
        counts = {k: self.kinds.count(k) for k in KINDS if k in self.kinds}
        return {"source": self.source, "kinds": counts,
                "one_hot": [list(g) for g in self.one_hot]}


def infer_domain(x: Any, source: str = "inferred from the data") -> FeatureDomain:
    """A :class:`FeatureDomain` from rows ``x`` [n, d]: bounds are the observed range; a column
    with one value is constant, with only 0 and 1 binary, with whole numbers integer; runs of
    adjacent binary columns whose values sum to exactly 1 in every row are one-hot groups (the
    layout scikit-learn's OneHotEncoder and pandas' get_dummies write)."""
    import numpy as np

    z = np.asarray(x, dtype="float64").reshape(len(x), -1)
    low, high = z.min(axis=0), z.max(axis=0)
    kinds = []
    for j in range(z.shape[1]):
        col = z[:, j]
        if low[j] == high[j]:
            kinds.append("constant")
        elif np.all((col == 0) | (col == 1)):
            kinds.append("binary")
        elif np.all(col == np.round(col)):
            kinds.append("integer")
        else:
            kinds.append("continuous")
    groups: list[tuple[int, ...]] = []
    j = 0
    while j < len(kinds):
        if kinds[j] != "binary":
            j += 1
            continue
        total = z[:, j].copy()
        end = j + 1
        found = None
        while end < len(kinds) and kinds[end] == "binary" and total.max() <= 1:
            total += z[:, end]
            end += 1
            if total.max() > 1:
                break
            if np.all(total == 1):
                found = end
        if found is not None:
            groups.append(tuple(range(j, found)))
            j = found
        else:
            j += 1
    return FeatureDomain(low, high, tuple(kinds), tuple(groups), source)


def read_feature_spec(path: str | Path, base: FeatureDomain,
                      feature_names: list[str] | None = None) -> FeatureDomain:
    """``base`` with the declarations of the spec file at ``path`` (see the module docstring).

    Raises
    ------
    DataError
        For a missing, unreadable or oversized file, an unknown key or kind, ``features`` or
        ``one_hot`` that is not a list, a column that does not exist or is declared twice,
        ``min``/``max`` that are not finite numbers or ``min`` not below ``max``, a one-hot
        group of fewer than two distinct columns, or one sharing a column with another group
        of the spec; the message names the file and the entry.
    """
    import numpy as np

    from mlthreat.safeload import SafeLoadError, load

    p = Path(path)
    try:  # bounded: size, nesting, alias expansion; duplicate keys refused with both lines
        spec = load(p, max_bytes=MAX_SPEC_BYTES)
    except SafeLoadError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(spec, dict) or set(spec) - {"features", "one_hot"}:
        raise DataError(f"{p}: a feature spec is a mapping with 'features' and/or 'one_hot'")
    for key in ("features", "one_hot"):
        if spec.get(key) is not None and not isinstance(spec[key], list):
            raise DataError(f"{p}: {key}: expected a list, got {type(spec[key]).__name__}")
    names = {n: i for i, n in enumerate(feature_names or [])}
    d = base.n_features

    def column(ref: Any, where: str) -> int:
        if isinstance(ref, bool):
            raise DataError(f"{p}: {where}: {ref!r} is not a column")
        if isinstance(ref, int):
            if not 0 <= ref < d:
                raise DataError(f"{p}: {where}: column {ref} does not exist (the data has {d})")
            return ref
        if isinstance(ref, str) and ref in names:
            return names[ref]
        raise DataError(f"{p}: {where}: no column named {ref!r}"
                        + ("" if names else " (the data has no header: use index)"))

    def bound(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{p}: {where}: min and max must be numbers, got {value!r}")
        if not math.isfinite(value):
            raise DataError(f"{p}: {where}: min and max must be finite, got {value!r}")
        return float(value)

    low, high, kinds = base.low.copy(), base.high.copy(), list(base.kinds)
    declared: dict[int, str] = {}
    for k, entry in enumerate(spec.get("features") or []):
        where = f"features[{k}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "index", "kind", "min", "max"}:
            raise DataError(f"{p}: {where}: expected keys name or index, kind, min, max")
        if "name" in entry and "index" in entry:
            raise DataError(f"{p}: {where}: give name or index, not both")
        j = column(entry.get("index", entry.get("name")), where)
        if j in declared:
            raise DataError(f"{p}: {where}: column {j} is already declared in {declared[j]}")
        declared[j] = where
        kind = entry.get("kind", kinds[j])
        if kind not in KINDS:
            raise DataError(f"{p}: {where}: kind {kind!r}, expected one of {', '.join(KINDS)}")
        lo = bound(entry["min"], where) if "min" in entry else \
            (0.0 if kind == "binary" else float(low[j]))
        hi = bound(entry["max"], where) if "max" in entry else \
            (1.0 if kind == "binary" else float(high[j]))
        if lo > hi or (lo == hi and kind != "constant"):
            raise DataError(f"{p}: {where}: min {lo:g} must be below max {hi:g}")
        if kind == "binary" and (lo, hi) != (0.0, 1.0):
            raise DataError(f"{p}: {where}: a binary column takes 0 and 1, not min {lo:g} and "
                            f"max {hi:g} (use kind integer)")
        if kind == "constant" and lo != hi:
            raise DataError(f"{p}: {where}: a constant column has min equal to max, not "
                            f"{lo:g} and {hi:g}")
        low[j], high[j], kinds[j] = lo, hi, kind
    groups = list(base.one_hot)
    grouped: dict[int, str] = {}
    for k, group in enumerate(spec.get("one_hot") or []):
        where = f"one_hot[{k}]"
        if not isinstance(group, list) or len(group) < 2:
            raise DataError(f"{p}: {where}: a one-hot group lists two or more columns")
        cols = tuple(column(c, where) for c in group)
        if len(set(cols)) != len(cols):
            raise DataError(f"{p}: {where}: a column is listed twice in the group")
        for c in cols:
            if c in grouped:
                raise DataError(f"{p}: {where}: column {c} is already in {grouped[c]}")
            grouped[c] = where
        groups = [g for g in groups if not set(g) & set(cols)] + [cols]
        for c in cols:
            low[c], high[c], kinds[c] = 0.0, 1.0, "binary"
    return FeatureDomain(np.asarray(low), np.asarray(high), tuple(kinds), tuple(groups),
                         f"{p} over the data")
