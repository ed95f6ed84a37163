"""One vocabulary for checking parameters, and one error message for all of them.

Technique runs, detectors, the scanner and the mitigations declare what each parameter
accepts as a table, name → constraint, and call :func:`validate` when they start (their
constructors only store what they are given). The model is scikit-learn's
``sklearn.utils._param_validation``: a parameter is valid when it satisfies at least one
of the constraints listed for it.

A constraint is one of

- an :class:`Interval` of integers or of finite reals, ``Interval(Integral, 1, None)``;
- :class:`Options`, a closed set of values, ``Options("l2", "linf")``;
- :class:`Boolean` (``"boolean"``), ``True`` or ``False`` (a NumPy bool too);
- :class:`InstanceOf` a class, and :class:`IsCallable` (``"callable"``);
- :class:`ListOf`, a list or tuple whose items all satisfy one constraint;
- ``None`` (or :class:`Null` with a meaning, ``Null("scaled")``): the value ``None``;
- the shorthands ``"integer"`` (a Python or NumPy integer, never a bool) and ``"real"``
  (a finite Python or NumPy number, never a bool).

:class:`Configurable` is the base of whatever is built from keyword parameters this way
(technique runs, detectors): it stores them over its ``defaults`` and validates them on demand.

A :class:`Rule` states what one parameter must satisfy given the others (``init_eval`` at
most ``max_eval``); rules are checked once every parameter is valid on its own.

Every failure raises :class:`~mlthreat.errors.UsageError` with one message format::

    {owner}: parameter {name}={value!r}: must be {what it accepts}

Examples
--------
>>> from numbers import Integral, Real
>>> table = {"max_iter": Interval(Integral, 1, None),
...          "norm": Options("l2", "linf"),
...          "eps": Interval(Real, 0, None, closed="neither", note="relative to the range")}
>>> validate("demo", {"max_iter": 10, "norm": "l2", "eps": 0.5}, table)
>>> validate("demo", {"max_iter": True, "norm": "l2", "eps": 0.5}, table)
Traceback (most recent call last):
...
mlthreat.errors.UsageError: demo: parameter max_iter=True: must be a positive integer
>>> rules = [Rule("init_eval", lambda p: p["init_eval"] <= p["max_eval"],
...               "at most max_eval ({max_eval!r})")]
>>> validate("demo", {"init_eval": 300, "max_eval": 100}, {}, rules)
Traceback (most recent call last):
...
mlthreat.errors.UsageError: demo: parameter init_eval=300: must be at most max_eval (100)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

from mlthreat.errors import UsageError

__all__ = ["Boolean", "Configurable", "Constraint", "InstanceOf", "Interval", "IsCallable",
           "ListOf", "Null", "Options", "Rule", "Spec", "is_integer", "is_real", "message",
           "unknown", "validate"]


def is_integer(value: object) -> bool:
    """A Python or NumPy integer, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite Python or NumPy number (integers included), never a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_numpy_bool(value: object) -> bool:
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def _choice(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class Constraint:
    """What a parameter may be: ``accepts(value)``, and a noun phrase saying so.

    ``note`` is added in brackets to the description ("a number > 0 (relative to the feature
    range)")."""

    note: str = ""

    def accepts(self, value: object) -> bool:
        raise NotImplementedError

    def _noun(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """What the constraint accepts, as the end of "must be …"."""
        return f"{self._noun()} ({self.note})" if self.note else self._noun()

    def detail(self, value: object) -> str:
        """Why ``value`` fails, when more can be said than :meth:`describe` ("" otherwise)."""
        return ""


class Interval(Constraint):
    """Integers (``numbers.Integral``) or finite reals (``numbers.Real``) between ``low`` and
    ``high`` (``None``: unbounded on that side); ``closed`` says which bounds belong to it.

    NumPy scalars satisfy it; bools never do."""

    def __init__(self, kind: type, low: float | None, high: float | None, *,
                 closed: Literal["left", "right", "both", "neither"] = "both",
                 note: str = "") -> None:
        if kind not in (numbers.Integral, numbers.Real):
            raise TypeError("Interval kind must be numbers.Integral or numbers.Real")
        self.integral = kind is numbers.Integral
        self.low, self.high, self.closed, self.note = low, high, closed, note

    def accepts(self, value: object) -> bool:
        if not (is_integer(value) if self.integral else is_real(value)):
            return False
        v: float = value  # type: ignore[assignment]
        if self.low is not None and (v < self.low or
                                     (v == self.low and self.closed in ("right", "neither"))):
            return False
        return self.high is None or not (
            v > self.high or (v == self.high and self.closed in ("left", "neither")))

    def _bounds(self) -> tuple[float | None, float | None, bool, bool]:
        """low, high and whether each is included; an integer's open bound made closed."""
        low, high = self.low, self.high
        low_in = self.closed in ("left", "both")
        high_in = self.closed in ("right", "both")
        if self.integral:
            if low is not None and not low_in:
                low, low_in = math.floor(low) + 1, True
            if high is not None and not high_in:
                high, high_in = math.ceil(high) - 1, True
        return low, high, low_in, high_in

    def _noun(self) -> str:
        low, high, low_in, high_in = self._bounds()
        noun = "integer" if self.integral else "number"
        if low is None and high is None:
            return "an integer" if self.integral else "a finite number"
        if high is None:
            if self.integral and low == 1:
                return "a positive integer"
            return f"{'an' if self.integral else 'a'} {noun} {'≥' if low_in else '>'} {low:g}"
        if low is None:
            return f"{'an' if self.integral else 'a'} {noun} {'≤' if high_in else '<'} {high:g}"
        if not self.integral and low == 0 and high == 1:
            noun = "fraction"
        article = "an" if self.integral else "a"
        return (f"{article} {noun} in {'[' if low_in else '('}{low:g}, {high:g}"
                f"{']' if high_in else ')'}")


class Options(Constraint):
    """One of a closed set of values (compared with ``==``; a bool matches only a bool)."""

    def __init__(self, *options: Any, note: str = "") -> None:
        self.options, self.note = options, note

    def accepts(self, value: object) -> bool:
        for option in self.options:
            if isinstance(value, bool) != isinstance(option, bool):
                continue
            try:
                if bool(value == option):
                    return True
            except (TypeError, ValueError):  # an array compared elementwise
                return False
        return False

    def _noun(self) -> str:
        words = [repr(o) for o in self.options]
        return _choice(words) if len(words) <= 2 else f"one of {', '.join(words)}"


class Boolean(Constraint):
    """``True`` or ``False`` (a NumPy bool too); never 0 or 1."""

    def __init__(self, note: str = "") -> None:
        self.note = note

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool) or _is_numpy_bool(value)

    def _noun(self) -> str:
        return "true or false"


class InstanceOf(Constraint):
    """An instance of ``kind`` (described as ``what``, by default "a <class name>")."""

    def __init__(self, kind: type, what: str = "", note: str = "") -> None:
        self.kind, self.note = kind, note
        self.what = what or f"a {kind.__name__}"

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.kind)

    def _noun(self) -> str:
        return self.what

    def detail(self, value: object) -> str:
        return f"got {type(value).__name__}"


class IsCallable(Constraint):
    """Anything callable."""

    def __init__(self, note: str = "") -> None:
        self.note = note

    def accepts(self, value: object) -> bool:
        return callable(value)

    def _noun(self) -> str:
        return "a callable"


class Null(Constraint):
    """The value ``None``; ``meaning`` says what None stands for ("None (scaled)")."""

    def __init__(self, meaning: str = "") -> None:
        self.note = meaning

    def accepts(self, value: object) -> bool:
        return value is None

    def _noun(self) -> str:
        return "None"


class ListOf(Constraint):
    """A list or tuple (not a string) whose items each satisfy ``item``.

    ``lengths`` lists the lengths allowed (``None``: any length, at least one item unless
    ``empty``)."""

    def __init__(self, item: Constraint, lengths: Collection[int] | None = None, *,
                 empty: bool = False, note: str = "") -> None:
        self.item, self.empty, self.note = item, empty, note
        self.lengths = tuple(sorted(lengths)) if lengths is not None else None

    def accepts(self, value: object) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        if self.lengths is not None:
            if len(value) not in self.lengths:
                return False
        elif not value and not self.empty:
            return False
        return all(self.item.accepts(v) for v in value)

    def _noun(self) -> str:
        if self.lengths is not None:
            size = _choice([str(n) for n in self.lengths])
            return f"a list of {size} items, each {self.item.describe()}"
        return f"a {'' if self.empty else 'non-empty '}list, each item {self.item.describe()}"


ConstraintLike: TypeAlias = Constraint | Literal["boolean", "integer", "real", "callable"] | None
"""A constraint, a shorthand name for one, or ``None``."""
Spec: TypeAlias = ConstraintLike | list[ConstraintLike] | tuple[ConstraintLike, ...]
"""What a parameter accepts: one constraint, or a list (or tuple) of them, any one will do."""

_SHORTHANDS: dict[str, Constraint] = {
    "boolean": Boolean(), "integer": Interval(numbers.Integral, None, None),
    "real": Interval(numbers.Real, None, None), "callable": IsCallable()}


def _constraint(c: ConstraintLike) -> Constraint:
    if c is None:
        return Null()
    if isinstance(c, str):
        return _SHORTHANDS[c]
    return c


@dataclass(frozen=True)
class Rule:
    """A cross-parameter rule: parameter ``name`` must satisfy ``check(params)``.

    ``text`` ends "must be …" and may name the other parameters' values in ``str.format``
    style: ``Rule("init_eval", lambda p: p["init_eval"] <= p["max_eval"],
    "at most max_eval ({max_eval!r})")``."""

    name: str
    check: Callable[[Mapping[str, Any]], bool]
    text: str


def unknown(what: str, names: Iterable[object], known: Iterable[str]) -> str | None:
    """``unknown {what}(s) a, b; known: …`` for the ``names`` not in ``known`` (None: none).

    The message for names looked up in a table (parameters, engines), rather than values
    checked against a constraint."""
    table = list(known)
    missing = [str(n) for n in names if n not in table]
    if not missing:
        return None
    return f"unknown {what}(s) {', '.join(missing)}; known: {', '.join(table)}"


def message(owner: str, name: str, value: object, text: str) -> str:
    """The one parameter error message: ``{owner}: parameter {name}={value!r}: must be …``."""
    return f"{owner}: parameter {name}={value!r}: must be {text}"


def validate(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Spec],
             rules: Iterable[Rule] = (), known: Collection[str] | None = None) -> None:
    """Check ``params`` against ``constraints``, then against ``rules``.

    Parameters
    ----------
    owner : str
        Who the parameters belong to (a run's or detector's name, "Scanner"); starts the
        message.
    params : mapping
        Parameter name → value. Names without a constraint are not checked.
    constraints : mapping
        Parameter name → :data:`Spec`; a value is valid when one constraint accepts it.
    rules : iterable of Rule
        Checked in order once every parameter is valid on its own.
    known : collection of str, optional
        The parameter names ``owner`` has; any other name in ``params`` is an error.

    Raises
    ------
    UsageError
        Naming the first parameter that fails, its value and what it must be.
    """
    missing = unknown("parameter", sorted(params), sorted(known)) if known is not None else None
    if missing:
        raise UsageError(f"{owner}: {missing}")
    for name, spec in constraints.items():
        if name not in params:
            continue
        value = params[name]
        options = [_constraint(c) for c in (spec if isinstance(spec, (list, tuple)) else [spec])]
        if any(c.accepts(value) for c in options):
            continue
        text = _choice([c.describe() for c in options])
        details = [d for d in (c.detail(value) for c in options) if d]
        if len(details) == 1:
            text += f"; {details[0]}"
        raise UsageError(message(owner, name, value, text))
    for rule in rules:
        if not rule.check(params):
            raise UsageError(message(owner, rule.name, params.get(rule.name),
                                     rule.text.format(**params)))


class Configurable:
    """Built from keyword parameters, checked when it starts (scikit-learn's manners).

    A subclass declares ``name`` (the owner in messages), ``defaults`` (every parameter it
    has, with its default), ``_constraints`` (parameter name → :data:`Spec`) and ``_rules``
    (cross-parameter :class:`Rule` s). The constructor only stores ``params``, the defaults
    updated with what was given; :meth:`validate` checks them.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    _constraints: ClassVar[dict[str, Spec]] = {}
    _rules: ClassVar[tuple[Rule, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params = {**self.defaults, **params}

    def validate(self) -> None:
        """Check ``params`` against ``_constraints`` and ``_rules``.

        Raises
        ------
        UsageError
            Naming an unknown parameter, or the first one that fails, in the one format.
        """
        validate(self.name, self.params, self._constraints, self._rules, known=self.defaults)
