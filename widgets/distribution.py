"""Distribution panel: one tensor's float values against its int8 grid, and its quantization error.

Draws plain data (:class:`DistributionData`, built from the analysis' views by the
``from_activation`` / ``from_weight`` constructors, which only repackage):

- float histogram (counts over ``edges``, in the tensor's units; linear or log count axis)
  with the clipping range of the chosen calibration method as two red lines (``lo``/``hi``),
  the clipped tails shaded, and the int8 grid drawn on: one faint line per code level when
  levels are at least ``GRID_MIN_PX`` pixels apart (zoom in), else a tick mark at every k-th
  level (k a power of two, counted from the zero point) along the bottom;
- the quantized histogram beside it: the expected count per integer code, computed from the
  float histogram (values uniform inside a bin, rounded to the nearest level, saturated at the
  ends), so it sums to the float count;
- the error histogram of the node writing the tensor, ``(int8 - float) / scale`` in
  quantization steps, isolated and accumulated, with the +-1/2 step bound of pure rounding;
- per-channel min/max bars (weights, or activations when per-channel statistics are given):
  channels whose max |x| exceeds ``OUTLIER_RATIO`` x the median channel's are drawn red.

``ranges`` maps a calibration method to the REPRESENTED range ``[lo, hi]`` of its quantization
parameters (``(qmin - zero_point) * scale`` to ``(qmax - zero_point) * scale``), so the grid is
``lo + k (hi - lo) / (qmax - qmin)``, ``k = 0 .. qmax - qmin``. The method box switches between
them (``method_changed`` is emitted); the plan's own range is what ``from_activation`` puts under
the plan's method.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from engine.analysis import ActivationView, ErrorSummary, LayerResult, WeightView
from engine.findings import OUTLIER_RATIO
from engine.quant.ranges import METHODS
from widgets import style

GRID_MIN_PX = 6.0  # code levels closer than this (pixels) are drawn as every k-th tick instead
TICK_HEIGHT = 0.06  # of the view height, tick marks of the coarse grid
LOG_FLOOR = -0.3  # log10 count drawn for empty bins on the log axis (below 1)
NO_TENSOR = "Select a node in the graph or the layer table to see its tensors' value distributions."


@dataclass
class ErrorHistogram:
    """Counts of the error in quantization steps over ``[lo, hi]`` (equal bins) plus the
    counts below and above."""

    counts: np.ndarray
    lo: float
    hi: float
    under: int = 0
    over: int = 0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.counts.size + 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.under + self.over

    @classmethod
    def from_summary(cls, summary: ErrorSummary | None) -> ErrorHistogram | None:
        """The step histogram of an analysis' error summary (None when it has none)."""
        if summary is None or summary.hist_counts is None:
            return None
        from engine.analysis import ERR_HIST_STEPS

        return cls(np.asarray(summary.hist_counts, dtype=np.int64), -ERR_HIST_STEPS, ERR_HIST_STEPS,
                   int(summary.hist_under), int(summary.hist_over))


@dataclass
class DistributionData:
    """Everything the panel shows about one tensor (see the module docstring for units)."""

    name: str
    kind: str = "activation"  # "activation" | "weight"
    counts: np.ndarray | None = None  # float histogram counts
    edges: np.ndarray | None = None  # len(counts) + 1 bin edges, tensor units
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> represented [lo, hi]
    method: str | None = None  # the method shown first
    qmin: int = -127
    qmax: int = 127
    dtype: str = "int8"
    error_isolated: ErrorHistogram | None = None
    error_accumulated: ErrorHistogram | None = None
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    channel_axis: int | None = None
    channel_range: tuple[float, float] | None = None  # per-tensor represented range drawn on the bars
    channel_grid: tuple[np.ndarray, np.ndarray] | None = None  # per-channel represented [lo, hi]
    node: str | None = None  # the node writing (activation) or reading (weight) the tensor

    @classmethod
    def from_activation(
        cls,
        view: ActivationView,
        layer: LayerResult | None = None,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        method: str | None = None,
        channel_min: np.ndarray | None = None,
        channel_max: np.ndarray | None = None,
        channel_axis: int | None = None,
    ) -> DistributionData:
        """An activation's view, the error of ``layer`` (its producer) and the represented range
        of each method in ``ranges`` (default: only the plan's, under ``method``)."""
        qp = view.qparams or {}
        rng = {k: (float(v[0]), float(v[1])) for k, v in (ranges or {}).items()}
        if not rng and view.lo is not None and view.hi is not None:
            rng[method or "plan"] = (float(view.lo), float(view.hi))
        return cls(
            name=view.name,
            kind="activation",
            counts=np.asarray(view.counts, dtype=np.float64),
            edges=tightened_edges(view.edges, view.min, view.max),
            ranges=rng,
            method=method if method in rng else (next(iter(rng)) if rng else None),
            qmin=int(qp.get("qmin", -127)),
            qmax=int(qp.get("qmax", 127)),
            dtype=str(qp.get("dtype", "int8")),
            error_isolated=ErrorHistogram.from_summary(layer.isolated) if layer is not None else None,
            error_accumulated=ErrorHistogram.from_summary(layer.accumulated) if layer is not None else None,
            channel_min=None if channel_min is None else np.asarray(channel_min, dtype=np.float64),
            channel_max=None if channel_max is None else np.asarray(channel_max, dtype=np.float64),
            channel_axis=channel_axis,
            node=layer.name if layer is not None else None,
        )

    @classmethod
    def from_weight(cls, view: WeightView, counts: np.ndarray | None = None, edges: np.ndarray | None = None) -> DistributionData:
        """A weight's per-channel min/max (and its value histogram when given). A per-tensor
        scale's represented range is drawn over the channel bars."""
        qp = view.qparams or {}
        channel_range = None
        channel_grid = None
        scale = qp.get("scale")
        if qp and qp.get("axis") is None and isinstance(scale, (int, float)):
            zp = int(np.asarray(qp.get("zero_point", 0)))
            channel_range = ((int(qp["qmin"]) - zp) * float(scale), (int(qp["qmax"]) - zp) * float(scale))
        elif qp and isinstance(scale, list) and len(scale) == len(view.min):
            s = np.asarray(scale, dtype=np.float64)
            zp_c = np.broadcast_to(np.asarray(qp.get("zero_point", 0), dtype=np.float64), s.shape)
            channel_grid = ((int(qp["qmin"]) - zp_c) * s, (int(qp["qmax"]) - zp_c) * s)
        return cls(
            name=view.name,
            kind="weight",
            counts=None if counts is None else np.asarray(counts, dtype=np.float64),
            edges=None if edges is None else np.asarray(edges, dtype=np.float64),
            ranges={"plan": channel_range} if channel_range is not None else {},
            method="plan" if channel_range is not None else None,
            qmin=int(qp.get("qmin", -127)),
            qmax=int(qp.get("qmax", 127)),
            dtype=str(qp.get("dtype", "int8")),
            channel_min=np.asarray(view.min, dtype=np.float64),
            channel_max=np.asarray(view.max, dtype=np.float64),
            channel_axis=view.axis,
            channel_range=channel_range,
            channel_grid=channel_grid,
            node=view.node or None,
        )


def tightened_edges(edges: Any, vmin: float | None, vmax: float | None) -> np.ndarray:
    """Histogram edges with the outer two moved in to the observed ``vmin`` / ``vmax``: no
    value lies outside them, so mass spread uniformly inside the end bins (how the clipped
    share and the code counts are estimated) must not reach past them. Without this a
    softmax output, whose max 1.0 sits inside the last bin, showed 4% "clipped" under the
    minmax range, which clips nothing."""
    e = np.array(edges, dtype=np.float64)
    if e.size >= 3:
        if vmin is not None and math.isfinite(vmin) and e[0] < vmin < e[1]:
            e[0] = vmin
        if vmax is not None and math.isfinite(vmax) and e[-2] < vmax < e[-1]:
            e[-1] = vmax
    return e


def quantized_counts(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    """Expected count per code level ``k = 0 .. levels - 1`` (value ``lo + k step``): values are
    uniform inside each bin, round to the nearest level and saturate at the ends. Sums to
    ``counts.sum()``."""
    cum = np.concatenate(([0.0], np.cumsum(np.asarray(counts, dtype=np.float64))))
    step = (hi - lo) / (levels - 1)
    bounds = lo + (np.arange(levels - 1) + 0.5) * step  # decision boundaries between levels
    at = np.interp(bounds, edges, cum)  # mass below each boundary
    return np.diff(np.concatenate(([0.0], at, [cum[-1]])))


def outlier_mask(channel_min: np.ndarray, channel_max: np.ndarray) -> np.ndarray:
    """Channels whose max |x| exceeds OUTLIER_RATIO x the median channel's max |x|."""
    amax = np.maximum(np.abs(channel_min), np.abs(channel_max))
    median = float(np.median(amax)) if amax.size else 0.0
    return amax > OUTLIER_RATIO * median if median > 0 else np.zeros(amax.shape, dtype=bool)


def _histogram_plot(parent: QWidget) -> tuple[pg.PlotWidget, pg.PlotItem]:
    axis = style.LogAxis("left")
    axis.logMode = False
    w = pg.PlotWidget(parent, background=style.BACKGROUND, axisItems={"left": axis})
    w.setAntialiasing(True)
    p = w.getPlotItem()
    p.setMenuEnabled(False)
    p.hideButtons()
    p.getAxis("left").setWidth(54)
    return w, p


class DistributionPanel(QWidget):
    """Float vs int8 distributions of one tensor (see the module docstring)."""

    method_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: DistributionData | None = None
        self.method: str | None = None
        self.log_scale = False
        self.quantized: np.ndarray = np.zeros(0)
        self.clip_lines: list[pg.InfiniteLine] = []
        self._tails: list[pg.LinearRegionItem] = []
        self._grid_item: pg.PlotCurveItem | None = None
        self._grid_state: dict[str, Any] = {}
        self.outliers: np.ndarray = np.zeros(0, dtype=bool)

        self.title = QLabel("No tensor selected")
        self.title.setFont(style.font())
        self.title.setWordWrap(True)
        self.method_box = QComboBox()
        self.method_box.setToolTip("Calibration method: its clipping range and int8 grid")
        self.method_box.currentTextChanged.connect(self._on_method)
        self.log_box = QCheckBox("Log counts")
        self.log_box.toggled.connect(self.set_log_scale)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        self.method_label = QLabel("Method:")
        top.addWidget(self.method_label)
        top.addWidget(self.method_box)
        top.addWidget(self.log_box)

        # the plots' container owns them from the start: a plot not in the grid yet (the
        # channel plot of an activation) must not be a parentless, Python-owned widget, which
        # only the garbage collector would destroy, at a moment nobody chose
        plots = QWidget()
        self.float_widget, self.float_plot = _histogram_plot(plots)
        self.quant_widget, self.quant_plot = _histogram_plot(plots)
        self.error_widget, self.error_plot = _histogram_plot(plots)
        self.channel_widget = pg.PlotWidget(plots, background=style.BACKGROUND)
        self.channel_widget.setAntialiasing(True)
        self.channel_plot = self.channel_widget.getPlotItem()
        self.channel_plot.setMenuEnabled(False)
        self.channel_plot.hideButtons()
        self.channel_plot.getAxis("left").setWidth(54)
        style.style_plot(self.float_plot, left="count", bottom="value (tensor units)")
        style.style_plot(self.quant_plot, left="count", bottom="int8 code")
        style.style_plot(self.error_plot, left="count", bottom="error (int8 − float) in quantization steps")
        style.style_plot(self.channel_plot, left="value (tensor units)", bottom="channel")
        self.float_plot.getViewBox().sigXRangeChanged.connect(lambda *_: self._update_grid())
        self.float_plot.getViewBox().sigResized.connect(lambda *_: self._update_grid())
        self.float_plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.error_legend = self.error_plot.addLegend(offset=(-8, 6), labelTextColor=style.FOREGROUND,
                                                      brush=style.qcolor(style.BACKGROUND, 0.85), pen=pg.mkPen("#c8ccd2"))
        # plot titles stay on one line inside their plot (elided when the panel is narrow)
        self.titles = {
            "float": style.FittedTitle(self.float_widget),
            "quantized": style.FittedTitle(self.quant_widget),
            "error": style.FittedTitle(self.error_widget),
            "channels": style.FittedTitle(self.channel_widget),
        }

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        grid.setRowStretch(0, 1)
        plots.setLayout(grid)
        self.empty = style.EmptyState(plots)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty, 1)
        self._grid = grid
        self.clear()

    # ------------------------------------------------------------------ data in

    def clear(self, message: str = NO_TENSOR) -> None:
        """Show nothing, with ``message`` (rich text) saying why in place of the plots."""
        self.data = None
        self.method = None
        for p in (self.float_plot, self.quant_plot, self.error_plot, self.channel_plot):
            p.clear()
        for w in (self.float_widget, self.quant_widget, self.error_widget, self.channel_widget):
            w.setVisible(False)
        for t in self.titles.values():
            t.set_text("")
        self.method_box.blockSignals(True)
        self.method_box.clear()
        self.method_box.blockSignals(False)
        for w in (self.method_label, self.method_box, self.log_box):
            w.setVisible(False)
        self.title.setText("")
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the plots ("" when a tensor is shown)."""
        return self.empty.message

    def set_data(self, data: DistributionData) -> None:
        """Show one tensor; ``data.method`` (or the first of ``data.ranges``) is drawn first."""
        self.data = data
        self.method_box.blockSignals(True)
        self.method_box.clear()
        names = [m for m in METHODS if m in data.ranges] + [m for m in data.ranges if m not in METHODS]
        self.method_box.addItems(names)
        self.method = data.method if data.method in data.ranges else (names[0] if names else None)
        if self.method is not None:
            self.method_box.setCurrentText(self.method)
        self.method_box.setEnabled(len(names) > 1)
        self.method_box.blockSignals(False)

        has_hist = data.counts is not None and data.edges is not None and data.counts.size > 0
        has_error = data.error_isolated is not None or data.error_accumulated is not None
        has_channels = data.channel_min is not None and data.channel_max is not None
        shown = {
            self.float_widget: has_hist,
            self.quant_widget: has_hist and self.method is not None,
            self.error_widget: has_error,
            self.channel_widget: has_channels,
        }
        order = [w for w, on in shown.items() if on]
        if data.kind == "weight" and self.channel_widget in order:
            # a weight's per-channel ranges say most about its quantization: the wide cell
            order.remove(self.channel_widget)
            order.insert(0, self.channel_widget)
        self._relayout(order)
        for w, on in shown.items():
            w.setVisible(on)
        self.method_label.setVisible(bool(names))
        self.method_box.setVisible(bool(names))
        self.log_box.setVisible(has_hist or has_error)
        self.empty.show_content()
        self._redraw()

    def _relayout(self, widgets: list[QWidget]) -> None:
        """Place the plots shown in a grid: 1 alone, 2 side by side, 3 or 4 in two rows."""
        for w in (self.float_widget, self.quant_widget, self.error_widget, self.channel_widget):
            self._grid.removeWidget(w)
        cells = {1: [(0, 0, 1, 2)], 2: [(0, 0, 1, 1), (0, 1, 1, 1)],
                 3: [(0, 0, 1, 1), (0, 1, 1, 1), (1, 0, 1, 2)],
                 4: [(0, 0, 1, 1), (0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 1, 1)]}.get(len(widgets), [])
        for w, (r, c, rs, cs) in zip(widgets, cells):
            self._grid.addWidget(w, r, c, rs, cs)
        self._grid.setRowStretch(1, 1 if len(widgets) > 2 else 0)

    def set_method(self, method: str) -> None:
        """Show ``method``'s clipping range and grid (one of the data's ``ranges``)."""
        if self.data is None or method not in self.data.ranges:
            raise KeyError(f"no range for method {method!r}")
        self.method_box.setCurrentText(method)  # -> _on_method

    def _on_method(self, method: str) -> None:
        if self.data is None or method not in self.data.ranges or method == self.method:
            return
        self.method = method
        self._draw_float()
        self._draw_quantized()
        self._update_title()
        self.method_changed.emit(method)

    def set_log_scale(self, on: bool) -> None:
        """Log (True) or linear count axes of the three histograms."""
        self.log_scale = bool(on)
        if self.log_box.isChecked() != self.log_scale:
            self.log_box.setChecked(self.log_scale)
        self._redraw()

    # ------------------------------------------------------------------ drawing

    def _redraw(self) -> None:
        if self.data is None:
            return
        for p in (self.float_plot, self.quant_plot, self.error_plot):
            axis = p.getAxis("left")
            if axis.logMode != self.log_scale:  # a re-layout and a new axis picture only on a change
                p.setLabel("left", "count (log)" if self.log_scale else "count")  # before the mode: its SI prefix reads the range
                axis.logMode = self.log_scale
                axis.picture = None
        self._draw_float()
        self._draw_quantized()
        self._draw_error()
        self._draw_channels()
        self._update_title()

    def _y(self, counts: np.ndarray) -> np.ndarray:
        """Counts as drawn: log10 (empty bins at LOG_FLOOR) on the log axis."""
        if not self.log_scale:
            return np.asarray(counts, dtype=np.float64)
        c = np.asarray(counts, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(c > 0, np.log10(np.maximum(c, 1e-300)), LOG_FLOOR)

    def _base(self) -> float:
        return LOG_FLOOR if self.log_scale else 0.0

    def current_range(self) -> tuple[float, float] | None:
        if self.data is None or self.method is None:
            return None
        return self.data.ranges[self.method]

    def _draw_float(self) -> None:
        d = self.data
        p = self.float_plot
        p.clear()
        self.clip_lines = []
        self._tails = []
        self._grid_item = None
        if d is None or d.counts is None or d.edges is None or d.counts.size == 0:
            return
        y = self._y(d.counts)
        hist = pg.PlotDataItem(d.edges, y, stepMode="center", fillLevel=self._base(),
                               brush=style.qcolor(style.SERIES["float_hist"], 0.55),
                               pen=pg.mkPen(style.qcolor(style.SERIES["float_hist"]).darker(130), width=1))
        p.addItem(hist)
        x0, x1 = float(d.edges[0]), float(d.edges[-1])
        rng = self.current_range()
        if rng is not None:
            lo, hi = rng
            clip_brush = style.qcolor(style.SERIES["clip"], 0.10)
            for a, b in ((min(x0, lo), lo), (hi, max(x1, hi))):
                if b > a:
                    tail = pg.LinearRegionItem((a, b), movable=False, brush=clip_brush, pen=pg.mkPen(None))
                    tail.setZValue(-10)
                    p.addItem(tail)
                    self._tails.append(tail)
            for value, name, anchor in ((lo, "lo", 0.0), (hi, "hi", 1.0)):  # labels inside the range
                line = pg.InfiniteLine(
                    value, angle=90, movable=False, pen=pg.mkPen(style.SERIES["clip"], width=2),
                    label=f"{name} {value:.4g}",
                    labelOpts={"position": 0.93, "color": style.SERIES["clip"], "anchors": [(anchor, 0), (anchor, 0)],
                               "fill": style.qcolor(style.BACKGROUND, 0.8)},
                )
                line.setZValue(20)
                p.addItem(line)
                self.clip_lines.append(line)
            self._grid_item = pg.PlotCurveItem(pen=pg.mkPen(style.qcolor(style.SERIES["grid"], 0.75), width=1),
                                               connect="pairs")
            self._grid_item.setZValue(15)
            p.addItem(self._grid_item)
            x0, x1 = min(x0, lo), max(x1, hi)
        pad = 0.04 * (x1 - x0 if x1 > x0 else 1.0)
        # limits before the range: the previous tensor's limits would clamp this one's range
        p.getViewBox().setLimits(xMin=x0 - 10 * pad - 1e-12, xMax=x1 + 10 * pad + 1e-12)
        p.setXRange(x0 - pad, x1 + pad, padding=0.0)
        top = float(np.max(y)) if y.size else 1.0
        p.setYRange(self._base(), top + (0.35 if self.log_scale else 0.12 * top), padding=0.0)
        self._update_grid()

    def _update_grid(self) -> None:
        """Int8 levels in view: a line per level when they are GRID_MIN_PX apart, else ticks every k-th."""
        item, rng, d = self._grid_item, self.current_range(), self.data
        if item is None or rng is None or d is None:
            return
        lo, hi = rng
        codes = d.qmax - d.qmin
        if codes <= 0 or not hi > lo:
            item.setData([], [])
            self._grid_state = {}
            return
        step = (hi - lo) / codes
        vb = self.float_plot.getViewBox()
        (vx0, vx1), (vy0, vy1) = vb.viewRange()
        px = vb.width()
        px_per_level = step / max(vx1 - vx0, 1e-300) * px if px > 0 else 0.0
        stride = 1
        if px_per_level < GRID_MIN_PX:
            stride = 2 ** math.ceil(math.log2(GRID_MIN_PX / max(px_per_level, 1e-12)))
        zero_k = -lo / step  # level index of 0.0 (the zero point), an integer for represented ranges
        k0 = max(0, math.ceil((max(vx0, lo) - lo) / step - 1e-9))
        k1 = min(codes, math.floor((min(vx1, hi) - lo) / step + 1e-9))
        ks = np.arange(k0, k1 + 1)
        ks = ks[np.mod(np.round(ks - zero_k).astype(np.int64), stride) == 0]
        xs = lo + ks * step
        if stride == 1:
            y0, y1 = vy0, vy1
            mode = "lines"
        else:
            y0, y1 = vy0, vy0 + TICK_HEIGHT * (vy1 - vy0)
            mode = "ticks"
        x = np.repeat(xs, 2)
        y = np.tile([y0, y1], xs.size)
        item.setData(x, y, connect="pairs")
        self._grid_state = {"mode": mode, "stride": stride, "step": step, "count": int(xs.size),
                            "px_per_level": px_per_level}
        self._update_title()

    def _draw_quantized(self) -> None:
        d = self.data
        p = self.quant_plot
        p.clear()
        self.quantized = np.zeros(0)
        rng = self.current_range()
        if d is None or d.counts is None or d.edges is None or d.counts.size == 0 or rng is None:
            return
        lo, hi = rng
        levels = d.qmax - d.qmin + 1
        self.quantized = quantized_counts(d.counts, d.edges, lo, hi, levels)
        codes = np.arange(d.qmin, d.qmax + 1)
        y = self._y(self.quantized)
        used = self.quantized > 0.5
        bars = pg.BarGraphItem(x=codes, width=1.0, y0=np.full(levels, self._base()), height=y - self._base(),
                               brush=style.qcolor(style.SERIES["quant_hist"], 0.8),
                               pen=pg.mkPen(style.qcolor(style.SERIES["quant_hist"]).darker(130), width=0.5))
        p.addItem(bars)
        for end in (d.qmin, d.qmax):
            line = pg.InfiniteLine(end, angle=90, pen=pg.mkPen(style.SERIES["clip"], width=1.5,
                                                               style=Qt.PenStyle.DashLine))
            p.addItem(line)
        p.setXRange(d.qmin - 4, d.qmax + 4, padding=0.0)
        top = float(np.max(y)) if y.size else 1.0
        p.setYRange(self._base(), top + (0.35 if self.log_scale else 0.12 * top), padding=0.0)
        # (the share saturated at the ends is the header's "clipped")
        self.titles["quantized"].set_text(f"{int(used.sum())} of {levels} codes used")
        p.setLabel("bottom", f"{d.dtype} code")

    def _draw_error(self) -> None:
        d = self.data
        p = self.error_plot
        p.clear()
        self.error_legend.clear()
        if d is None:
            return
        tops = [1.0 if not self.log_scale else 0.0]
        parts = []
        x_lo, x_hi = -4.0, 4.0
        for key, h in (("accumulated", d.error_accumulated), ("isolated", d.error_isolated)):
            if h is None:
                continue
            y = self._y(h.counts)
            tops.append(float(np.max(y)) if y.size else 0.0)
            color = style.SERIES[key]
            curve = pg.PlotDataItem(h.edges, y, stepMode="center", fillLevel=self._base(),
                                    brush=style.qcolor(color, 0.22), pen=pg.mkPen(color, width=1.5))
            p.addItem(curve)
            self.error_legend.addItem(curve, key)
            nz = np.flatnonzero(h.counts)
            if nz.size:
                e = h.edges
                x_lo = min(x_lo, float(e[nz[0]]) - 1.0)
                x_hi = max(x_hi, float(e[nz[-1] + 1]) + 1.0)
            if h.under or h.over:
                parts.append(f"{key}: {h.under + h.over} beyond ±{h.hi:g}")
        for v in (-0.5, 0.5):
            p.addItem(pg.InfiniteLine(v, angle=90, pen=pg.mkPen(style.MUTED, width=1, style=Qt.PenStyle.DotLine)))
        p.setXRange(x_lo, x_hi, padding=0.0)
        top = max(tops)
        p.setYRange(self._base(), top + (0.35 if self.log_scale else 0.15 * top), padding=0.0)
        extra = f"; {'; '.join(parts)}" if parts else ""
        self.titles["error"].set_text(f"output error in steps (dotted: ±½ step, rounding only){extra}")

    def _draw_channels(self) -> None:
        d = self.data
        p = self.channel_plot
        p.clear()
        self.outliers = np.zeros(0, dtype=bool)
        if d is None or d.channel_min is None or d.channel_max is None:
            return
        lo = np.where(np.isfinite(d.channel_min), d.channel_min, 0.0)
        hi = np.where(np.isfinite(d.channel_max), d.channel_max, 0.0)
        n = lo.size
        self.outliers = outlier_mask(lo, hi)
        normal = style.qcolor(style.SERIES["channel"], 0.9)
        red = style.qcolor(style.SERIES["outlier"], 0.95)
        brushes = [red if o else normal for o in self.outliers]
        bars = pg.BarGraphItem(x=np.arange(n), width=0.8 if n < 200 else 1.0, y0=lo, height=hi - lo,
                               brushes=brushes, pen=pg.mkPen(None))
        p.addItem(bars)
        p.addItem(pg.InfiniteLine(0.0, angle=0, pen=pg.mkPen(style.FOREGROUND, width=1)))
        if d.channel_range is not None:
            for v in d.channel_range:
                p.addItem(pg.InfiniteLine(v, angle=0, pen=pg.mkPen(style.FOREGROUND, width=1.5,
                                                                   style=Qt.PenStyle.DashLine)))
        if d.channel_grid is not None:  # each channel's own int8 range (per-channel scales)
            g_lo, g_hi = d.channel_grid
            xs = np.concatenate((np.arange(n), np.arange(n))).astype(np.float64)
            marks = pg.ScatterPlotItem(x=xs, y=np.concatenate((g_lo, g_hi)), symbol="_", size=10 if n < 100 else 5,
                                       pen=pg.mkPen(style.FOREGROUND, width=1.5), brush=None)
            p.addItem(marks)
        p.setXRange(-1, n, padding=0.02)
        axis = "" if d.channel_axis is None else f" (axis {d.channel_axis})"
        k = int(self.outliers.sum())
        outl = f", {k} outlier{'s' if k != 1 else ''} (red)" if k else ""
        marks = f"; black: {d.dtype} range" if d.channel_grid is not None or d.channel_range is not None else ""
        self.titles["channels"].set_text(f"min/max per channel{outl}{marks}")
        p.setLabel("bottom", f"channel{axis}, {n} in all")

    def _update_title(self) -> None:
        d = self.data
        if d is None:
            return
        what = "weight" if d.kind == "weight" else "activation"
        # the node is named only when the tensor's name does not already say it
        of = f", {'of' if d.kind == 'weight' else 'from'} {d.node}" if d.node and not d.name.startswith(d.node) else ""
        parts = [f"<b>{html.escape(d.name)}</b> ({what}{html.escape(of)})"]
        rng = self.current_range()
        if d.counts is not None and d.counts.size:
            parts.append(f"{round(float(d.counts.sum())):,} values")
        if rng is not None:
            lo, hi = rng
            codes = d.qmax - d.qmin
            step = (hi - lo) / codes if codes > 0 else float("nan")
            parts.append(f"{self.method}: [{lo:.4g}, {hi:.4g}], step {step:.3g}")
            if d.counts is not None and d.edges is not None and d.counts.size:
                parts.append(f"{self.clipped_fraction():.3%} clipped")
            g = self._grid_state
            if g.get("mode") == "ticks":
                parts.append(f"grid: 1 tick per {g['stride']} codes (zoom in for all)")
            elif g.get("mode") == "lines":
                parts.append("grid: every code")
        self.title.setText(" · ".join(parts))
        if d.counts is not None and d.counts.size:
            title = f"float values, clip range (red), {d.dtype} grid (green)" if rng is not None else "float values"
            self.titles["float"].set_text(title)

    # ------------------------------------------------------------------ data out

    def clipped_fraction(self) -> float:
        """Share of the float histogram's values outside the current range (bins split linearly)."""
        d, rng = self.data, self.current_range()
        if d is None or rng is None or d.counts is None or d.edges is None or d.counts.size == 0:
            return 0.0
        cum = np.concatenate(([0.0], np.cumsum(d.counts)))
        below, upto = np.interp([rng[0], rng[1]], d.edges, cum)
        return float((below + cum[-1] - upto) / max(cum[-1], 1e-300))

    def grid_state(self) -> dict[str, Any]:
        """How the grid is drawn now: mode ("lines"/"ticks"), stride (codes), step, count in view."""
        return dict(self._grid_state)

    def current_data(self) -> dict[str, Any]:
        """What is drawn: method, clipping line positions, histogram totals, grid, channel bars."""
        d = self.data
        if d is None:
            return {}
        return {
            "name": d.name,
            "method": self.method,
            "methods": [self.method_box.itemText(i) for i in range(self.method_box.count())],
            "range": self.current_range(),
            "clip_lines": [float(line.value()) for line in self.clip_lines],
            "float_total": None if d.counts is None else float(d.counts.sum()),
            "quantized": self.quantized.copy(),
            "quantized_total": float(self.quantized.sum()) if self.quantized.size else None,
            "clipped_fraction": self.clipped_fraction(),
            "grid": self.grid_state(),
            "error_totals": {k: (None if h is None else h.total)
                             for k, h in (("isolated", d.error_isolated), ("accumulated", d.error_accumulated))},
            "channels": 0 if d.channel_min is None else int(d.channel_min.size),
            "outlier_channels": [int(i) for i in np.flatnonzero(self.outliers)],
            "log_scale": self.log_scale,
            "visible": {
                "float": self.float_widget.isVisibleTo(self),
                "quantized": self.quant_widget.isVisibleTo(self),
                "error": self.error_widget.isVisibleTo(self),
                "channels": self.channel_widget.isVisibleTo(self),
            },
        }
