"""Plots for the pages, as inline SVG: this module computes the geometry, the ``plot.html.j2``
macro writes the elements.

No plotting library and no script: :func:`line_plot` and :func:`histogram` turn plain series into
plain data (coordinates as fixed-precision strings, round tick values, labels) and a template
draws it with ``{% from "plot.html.j2" import plot %}{{ plot(p) }}``, so every label is escaped
like any other text and the same series always give the same page. Non-finite values are left
out.

>>> p = line_plot([0, 0.5, 1], [0, 0.8, 1], plot_id="roc", title="ROC curve",
...               x_label="false-positive rate", y_label="true-positive rate", unit_box=True)
>>> p["count"], len(p["points"].split()), [t["label"] for t in p["xticks"]][:3]
(3, 3, ['0.0', '0.2', '0.4'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["HEIGHT", "WIDTH", "histogram", "line_plot"]

Data = dict[str, Any]

#: Size of every plot, in SVG user units (CSS pixels at 100 %).
WIDTH, HEIGHT = 480, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 18, 30, 50
_CHAR = 6.8  # mean advance of a 12 px label character; longer labels are squeezed to fit
_MARKERS_UP_TO = 30  # points; longer series are drawn as a bare line
_MAX_BINS = 20


def line_plot(x: Sequence[Any], y: Sequence[Any], *, plot_id: str, title: str, x_label: str,
              y_label: str, unit_box: bool = False) -> Data:
    """A line through the points ``(x[i], y[i])``, in the order given.

    Parameters
    ----------
    x, y : sequences of numbers
        The series; pairs where either value is not a finite number are left out.
    plot_id : str
        Unique on the page (the SVG title's ``id`` derives from it).
    title, x_label, y_label : str
        Shown as given (escaped by the template).
    unit_box : bool
        Draw both axes from 0 to 1 with the chance diagonal (a ROC curve). Otherwise an axis
        runs between round values around the data, and the y axis from 0 to 1 when every
        value is a fraction.

    Returns
    -------
    dict
        Plain data for the ``plot`` macro: ``kind`` (``line``, or ``empty`` with a caption when
        no point is left), ``points`` (``"x,y x,y …"``), ``markers`` (for short series),
        ``diagonal``, ``xticks`` and ``yticks`` (``pos``, ``label``), ``count``.
    """
    plot = _frame(plot_id, title, x_label, y_label, "line")
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=False)
             if _finite(a) and _finite(b)]
    if not pairs:
        plot.update(kind="empty", caption="No points to plot.")
        return plot
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    x_axis = _Axis(0.0, 1.0) if unit_box else _Axis.around(min(xs), max(xs))
    y_axis = (_Axis(0.0, 1.0) if unit_box or (min(ys) >= 0 and max(ys) <= 1)
              else _Axis.around(min(0.0, min(ys)), max(ys)))
    coords = [(_px(x_axis, a), _py(y_axis, b)) for a, b in pairs]
    plot.update(
        points=" ".join(f"{a:.2f},{b:.2f}" for a, b in coords),
        markers=[{"x": f"{a:.2f}", "y": f"{b:.2f}", "label": f"{_num(u)}, {_num(v)}"}
                 for (a, b), (u, v) in zip(coords, pairs, strict=True)]
        if len(coords) <= _MARKERS_UP_TO else [],
        xticks=_ticks(x_axis, _px), yticks=_ticks(y_axis, _py), count=len(pairs),
        caption=f"{len(pairs)} points" + ("; dashed: chance" if unit_box else ""),
    )
    if unit_box:
        plot["diagonal"] = {"x1": f"{_px(x_axis, 0):.2f}", "y1": f"{_py(y_axis, 0):.2f}",
                            "x2": f"{_px(x_axis, 1):.2f}", "y2": f"{_py(y_axis, 1):.2f}"}
    return plot


def histogram(values: Sequence[Any], *, plot_id: str, title: str, x_label: str,
              y_label: str = "count") -> Data:
    """A histogram of ``values`` in ⌈√n⌉ equal bins (at most 20) from the lowest to the highest.

    Returns the same plain data as :func:`line_plot`, with ``bars`` (``x``, ``y``, ``width``,
    ``height``, ``count``, ``label``) instead of points; ``kind`` is ``histogram`` (or
    ``empty``). Values that are not finite numbers are left out.
    """
    plot = _frame(plot_id, title, x_label, y_label, "histogram")
    data = [float(v) for v in values if _finite(v)]
    if not data:
        plot.update(kind="empty", caption="No samples to plot.")
        return plot
    lo, hi = min(data), max(data)
    if hi <= lo:
        pad = abs(lo) / 2 or 0.5
        lo, hi = lo - pad, hi + pad
    bins = max(1, min(_MAX_BINS, math.ceil(math.sqrt(len(data)))))
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in data:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    x_axis = _Axis.around(lo, hi)
    y_axis = _Axis.around(0.0, float(max(counts)), integer=True)
    bars = []
    for k, count in enumerate(counts):
        left, right = lo + k * width, lo + (k + 1) * width
        x0, x1 = _px(x_axis, left), _px(x_axis, right)
        top, base = _py(y_axis, count), _py(y_axis, 0)
        bars.append({"x": f"{x0:.2f}", "width": f"{max(x1 - x0 - 1, 0.5):.2f}",
                     "y": f"{top:.2f}", "height": f"{base - top:.2f}", "count": count,
                     "label": f"{_num(left)} to {_num(right)}: {count}"})
    plot.update(bars=bars, xticks=_ticks(x_axis, _px), yticks=_ticks(y_axis, _py),
                count=len(data),
                caption=f"{len(data)} samples in {bins} bins; median {_num(_median(data))}")
    return plot


def _frame(plot_id: str, title: str, x_label: str, y_label: str, kind: str) -> Data:
    return {
        "id": plot_id, "kind": kind, "title": title, "x_label": x_label, "y_label": y_label,
        "width": WIDTH, "height": HEIGHT, "left": _LEFT, "right": WIDTH - _RIGHT, "top": _TOP,
        "bottom": HEIGHT - _BOTTOM, "x_mid": _LEFT + (WIDTH - _LEFT - _RIGHT) / 2,
        "x_fit": _fit(x_label, WIDTH - _LEFT - _RIGHT), "y_fit": _fit(y_label, WIDTH - 8),
        "points": "", "markers": [], "bars": [], "diagonal": None, "xticks": [], "yticks": [],
        "count": 0, "caption": "",
    }


def _fit(label: str, room: float) -> int | None:
    """The length to squeeze ``label`` to (SVG ``textLength``) when it would not fit ``room``."""
    return int(room) if len(label) * _CHAR > room else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


class _Axis:
    """A linear axis from ``lo`` to ``hi`` with round tick values (steps of 1, 2, 2.5 or 5
    times a power of ten; whole steps when ``integer``)."""

    def __init__(self, lo: float, hi: float, ticks: int = 5, integer: bool = False) -> None:
        self.lo, self.hi = lo, hi
        raw = (hi - lo) / ticks
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
        self.step = max(step, 1.0) if integer else step
        first = math.ceil(lo / self.step - 1e-9)
        last = math.floor(hi / self.step + 1e-9)
        self.ticks = [round(k * self.step, 12) for k in range(first, last + 1)]

    @classmethod
    def around(cls, lo: float, hi: float, integer: bool = False) -> _Axis:
        """An axis widened to round values that covers ``lo`` to ``hi``."""
        if hi <= lo:
            pad = abs(lo) / 2 or 0.5
            lo, hi = lo - pad, hi + pad
        step = cls(lo, hi, integer=integer).step
        return cls(math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step,
                   integer=integer)

    def label(self, value: float) -> str:
        decimals = max(0, -math.floor(math.log10(self.step) + 1e-9))
        if abs(self.step * 10**decimals - round(self.step * 10**decimals)) > 1e-6:
            decimals += 1
        text = f"{value:,.{decimals}f}"
        return text[1:] if text.startswith("-") and float(value) == 0 else text


def _px(axis: _Axis, x: float) -> float:
    return _LEFT + (x - axis.lo) / (axis.hi - axis.lo) * (WIDTH - _LEFT - _RIGHT)


def _py(axis: _Axis, y: float) -> float:
    return HEIGHT - _BOTTOM - (y - axis.lo) / (axis.hi - axis.lo) * (HEIGHT - _TOP - _BOTTOM)


def _ticks(axis: _Axis, place: Any) -> list[Data]:
    return [{"pos": f"{place(axis, t):.2f}", "label": axis.label(t)} for t in axis.ticks]
