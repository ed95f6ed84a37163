"""Plots for the pages, as inline SVG: this module computes the geometry, the ``plot.html.j2``
macro writes the elements.

No plotting library and no script: :func:`line_plot`, :func:`histogram` and :func:`image_grid`
(small images, such as a model inversion's reconstructions, one rectangle per pixel) turn plain
series into
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

__all__ = ["HEIGHT", "WIDTH", "histogram", "image_grid", "line_plot"]

Data = dict[str, Any]

#: Size of every plot, in SVG user units (CSS pixels at 100 %).
WIDTH, HEIGHT = 480, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 18, 30, 50
_CHAR = 6.8  # mean advance of a 12 px label character; longer labels are squeezed to fit
_MARKERS_UP_TO = 30  # points; longer series are drawn as a bare line
_MAX_BINS = 20
_MAX_SIDE = 32  # pixels per image side drawn; larger images are averaged down in blocks
_MAX_IMAGES = 64
_IMAGE_PX = 96  # CSS pixels per drawn image side


def line_plot(x: Sequence[Any], y: Sequence[Any], *, plot_id: str, title: str, x_label: str,
              y_label: str, unit_box: bool = False,
              baseline: Sequence[Any] | None = None) -> Data:
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
    baseline : sequence of numbers, optional
        A second series over the same ``x`` (what the attack is measured against), drawn
        dashed (``baseline_points``).

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
    base = [(float(a), float(b)) for a, b in zip(x, baseline or (), strict=False)
            if _finite(a) and _finite(b)]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs] + [p[1] for p in base]
    x_axis = _Axis(0.0, 1.0) if unit_box else _Axis.around(min(xs), max(xs))
    y_axis = (_Axis(0.0, 1.0) if unit_box or (min(ys) >= 0 and max(ys) <= 1)
              else _Axis.around(min(0.0, min(ys)), max(ys)))
    coords = [(_px(x_axis, a), _py(y_axis, b)) for a, b in pairs]
    if base:
        plot["baseline_points"] = " ".join(f"{_px(x_axis, a):.2f},{_py(y_axis, b):.2f}"
                                           for a, b in base)
    plot.update(
        points=" ".join(f"{a:.2f},{b:.2f}" for a, b in coords),
        markers=[{"x": f"{a:.2f}", "y": f"{b:.2f}", "label": f"{_num(u)}, {_num(v)}"}
                 for (a, b), (u, v) in zip(coords, pairs, strict=True)]
        if len(coords) <= _MARKERS_UP_TO else [],
        xticks=_ticks(x_axis, _px), yticks=_ticks(y_axis, _py), count=len(pairs),
        caption=f"{len(pairs)} points" + ("; dashed: chance" if unit_box else "")
        + ("; dashed: baseline" if base else ""),
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


def image_grid(images: Sequence[Any], shape: Sequence[Any], *, plot_id: str, title: str,
               labels: Sequence[Any] | None = None,
               value_range: Sequence[Any] | None = None) -> Data:
    """Small grey-scale images side by side, each as a grid of one rectangle per pixel.

    Parameters
    ----------
    images : sequence of sequences of numbers
        Each image's values, flat in row-major order (``prod(shape)`` of them).
    shape : sequence of int
        ``(height, width)``, or ``(channels, height, width)`` / ``(height, width, channels)``:
        channels are averaged (the first axis when it has 1 or 3 entries, else the last).
    labels : sequence, optional
        A caption per image (``"class 3"``).
    value_range : (low, high), optional
        The values drawn black and white (default: the lowest and highest of all images).

    Returns
    -------
    dict
        ``kind`` ``images`` (or ``empty`` with a caption when no image has the right size),
        ``images`` [{``label``, ``side_w``, ``side_h``, ``width``, ``height``, ``pixels``
        [{``x``, ``y``, ``fill``}]}], ``count``. Images larger than 32 pixels a side are averaged
        down in blocks; at most 64 images are drawn.
    """
    plot = _frame(plot_id, title, "", "", "images")
    dims = [int(v) for v in shape if _finite(v) and int(v) == v and v > 0]
    size = math.prod(dims) if dims and len(dims) == len(shape) else 0
    grids = []
    for img in list(images)[:_MAX_IMAGES]:
        if size and len(img) == size and len(dims) in (2, 3) and all(_finite(v) for v in img):
            grids.append(_gray([float(v) for v in img], dims))
    if not grids:
        plot.update(kind="empty", caption="No image of the stated shape to show.")
        return plot
    values = [v for g in grids for row in g for v in row]
    lo, hi = min(values), max(values)
    if value_range is not None and len(value_range) == 2 and all(map(_finite, value_range)):
        lo, hi = float(value_range[0]), float(value_range[1])
    if hi <= lo:  # all one value: drawn mid-grey
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    names = list(labels or [])
    drawn = []
    for k, grid in enumerate(grids):
        h, w = len(grid), len(grid[0])
        scale = _IMAGE_PX / max(h, w)
        pixels = []
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                level = round(255 * min(1.0, max(0.0, (v - lo) / span)))
                pixels.append({"x": c, "y": r, "fill": f"rgb({level},{level},{level})"})
        drawn.append({"label": str(names[k]) if k < len(names) else f"image {k + 1}",
                      "side_w": w, "side_h": h, "width": round(w * scale),
                      "height": round(h * scale), "pixels": pixels})
    plot.update(images=drawn, count=len(drawn),
                caption=f"{len(drawn)} image{'' if len(drawn) == 1 else 's'}, "
                f"black {_num(lo)} to white {_num(hi)}")
    return plot


def _gray(flat: list[float], dims: list[int]) -> list[list[float]]:
    """A flat image as rows of grey values, channels averaged, at most 32 pixels a side."""
    if len(dims) == 2:
        h, w = dims
        grid = [flat[r * w:(r + 1) * w] for r in range(h)]
    elif dims[0] in (1, 3):  # (C, H, W)
        c, h, w = dims
        grid = [[sum(flat[(k * h + r) * w + col] for k in range(c)) / c for col in range(w)]
                for r in range(h)]
    else:  # (H, W, C)
        h, w, c = dims
        grid = [[sum(flat[(r * w + col) * c + k] for k in range(c)) / c for col in range(w)]
                for r in range(h)]
    step = math.ceil(max(h, w) / _MAX_SIDE)
    if step == 1:
        return grid
    return [[_mean([grid[i][j] for i in range(r, min(r + step, h))
                    for j in range(col, min(col + step, w))]) for col in range(0, w, step)]
            for r in range(0, h, step)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _frame(plot_id: str, title: str, x_label: str, y_label: str, kind: str) -> Data:
    return {
        "id": plot_id, "kind": kind, "title": title, "x_label": x_label, "y_label": y_label,
        "width": WIDTH, "height": HEIGHT, "left": _LEFT, "right": WIDTH - _RIGHT, "top": _TOP,
        "bottom": HEIGHT - _BOTTOM, "x_mid": _LEFT + (WIDTH - _LEFT - _RIGHT) / 2,
        "x_fit": _fit(x_label, WIDTH - _LEFT - _RIGHT), "y_fit": _fit(y_label, WIDTH - 8),
        "points": "", "baseline_points": "", "markers": [], "bars": [], "diagonal": None,
        "xticks": [], "yticks": [], "images": [], "count": 0, "caption": "",
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
