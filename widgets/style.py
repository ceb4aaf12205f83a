"""One small palette for every panel (and the graph view): colours per NPU lane / unit, per op
category, per severity and per data series, fonts, and the common look of a pyqtgraph plot.

Colours are hex strings (``"#rrggbb"``); :func:`qcolor` turns one into a ``QColor`` with an
optional alpha. Plots are drawn dark-on-white (readable in screenshots and reports).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QLabel, QStackedWidget, QWidget

from engine.timeline import time_unit  # noqa: F401 (the timeline panel's axis unit)

FONT_FAMILY = "DejaVu Sans"
FONT_SIZE = 9  # points, labels and tables
TITLE_SIZE = 10  # points, plot titles
TICK_SIZE = 8  # points, axis tick labels

BACKGROUND = "#ffffff"
FOREGROUND = "#2b2f36"  # axis lines, text
GRID_ALPHA = 0.18  # 0..1 opacity of pyqtgraph's background grid
MUTED = "#6b7280"  # secondary text
HIGHLIGHT = "#ff8c00"  # the selected node, everywhere (matches the graph view)

# NPU timeline lanes (engine.costmodel.LANES) and the compute units of the cost model
LANE_COLORS: dict[str, str] = {
    "dma_in": "#8cb4d9",  # light blue: DRAM -> SRAM
    "mac": "#3b6fb6",  # blue: the int8 MAC array
    "vector": "#3fa266",  # green: vector unit
    "float": "#8e5bb8",  # violet: float unit
    "host": "#d1495b",  # red: host CPU fallback
    "dma_out": "#e6a04b",  # amber: SRAM -> DRAM
}
LANE_LABELS: dict[str, str] = {
    "dma_in": "DMA in",
    "mac": "MAC array",
    "vector": "vector unit",
    "float": "float unit",
    "host": "host CPU",
    "dma_out": "DMA out",
}
UNIT_COLORS: dict[str, str] = {k: LANE_COLORS[k] for k in ("mac", "vector", "float", "host")}
UNIT_LABELS: dict[str, str] = {k: LANE_LABELS[k] for k in UNIT_COLORS}

# op categories (the graph view's, close to Netron's palette)
CATEGORY_COLORS: dict[str, str] = {
    "layer": "#335588",
    "activation": "#702921",
    "pool": "#335533",
    "normalization": "#335544",
    "shape": "#6c4f47",
    "tensor": "#59423b",
    "quantization": "#5b4a86",
    "control": "#6b3a5e",
    "constant": "#6b7280",
    "math": "#3a3f47",
}
_CATEGORY_OPS: dict[str, tuple[str, ...]] = {
    "layer": ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "QLinearMatMul",
              "Gemm", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention"),
    "activation": ("Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "Tanh", "Softmax", "LogSoftmax",
                   "Gelu", "FastGelu", "Erf", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "HardSwish",
                   "Clip", "ThresholdedRelu", "Hardmax"),
    "pool": ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
             "MaxRoiPool", "RoiAlign"),
    "normalization": ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
                      "LpNormalization", "LRN", "MeanVarianceNormalization", "Dropout", "SkipLayerNormalization"),
    "shape": ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Size", "Expand"),
    "tensor": ("Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Scatter",
               "ScatterElements", "ScatterND", "Pad", "Tile", "Where", "Identity", "DepthToSpace", "SpaceToDepth",
               "Resize", "Upsample", "Cast", "TopK", "NonZero", "Compress", "OneHot", "Trilu"),
    "quantization": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),
    "control": ("If", "Loop", "Scan"),
    "constant": ("Constant", "ConstantOfShape", "Range", "RandomNormal", "RandomUniform", "RandomNormalLike",
                 "RandomUniformLike", "EyeLike"),
}
OP_CATEGORY: dict[str, str] = {op: cat for cat, ops in _CATEGORY_OPS.items() for op in ops}

# findings
SEVERITY_COLORS: dict[str, str] = {"high": "#d62728", "medium": "#f0a202", "low": "#4e79a7"}
SEVERITY_LABELS: dict[str, str] = {"high": "High", "medium": "Medium", "low": "Low"}

# data series
SERIES: dict[str, str] = {
    "isolated": "#3b6fb6",  # only this layer quantized
    "accumulated": "#d1495b",  # whole graph quantized
    "float_hist": "#7f9cc0",  # float values
    "quant_hist": "#3fa266",  # int8 codes
    "clip": "#d62728",  # clipping range lines and clipped tails
    "grid": "#1f7a45",  # int8 grid lines / code ticks (dark green, the quantized colour)
    "roof": "#2b2f36",  # roofline ceilings
    "channel": "#7f9cc0",  # per-channel min/max bars
    "outlier": "#d62728",  # outlier channels
    "fused": "#3fa266",  # fused timeline / savings
    "unfused": "#8a93a0",
}
# Tableau 10, for other categorical series
QUALITATIVE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
               "#9c755f", "#bab0ac")


def qcolor(hex_color: str, alpha: float = 1.0) -> QColor:
    """A QColor from ``"#rrggbb"`` with opacity ``alpha`` in [0, 1]."""
    c = QColor(hex_color)
    c.setAlphaF(max(0.0, min(1.0, alpha)))
    return c


def op_category(op_type: str) -> str:
    """Category of an op type ("math" for element-wise and unknown ops)."""
    return OP_CATEGORY.get(op_type, "math")


def op_color(op_type: str) -> str:
    """Fill colour of an op type (its category's)."""
    return CATEGORY_COLORS[op_category(op_type)]


def lane_color(lane: str) -> str:
    return LANE_COLORS.get(lane, MUTED)


def font(size: int = FONT_SIZE, bold: bool = False) -> QFont:
    """The panels' font at ``size`` points."""
    f = QFont(FONT_FAMILY, size)
    f.setBold(bold)
    return f


def severity_icon(severity: str, size: int = 14) -> QIcon:
    """A filled circle in the severity's colour (``size`` px), with a white "!" for high."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(qcolor(SEVERITY_COLORS.get(severity, MUTED)))
    p.drawEllipse(1, 1, size - 2, size - 2)
    p.setPen(QColor("#ffffff"))
    p.setFont(font(max(6, size * 2 // 3), bold=True))
    mark = {"high": "!", "medium": "!", "low": "i"}.get(severity, "?")
    p.drawText(pix.rect(), int(Qt.AlignmentFlag.AlignCenter), mark)
    p.end()
    return QIcon(pix)


def _sig3(x: float) -> str:
    """Three significant digits, trailing zeros kept (2.00, 13.0, 415)."""
    return f"{x:#.3g}".rstrip(".") if abs(x) < 1000 else f"{x:.0f}"


def format_ns(ns: float) -> str:
    """A duration in ns with a readable unit (ns, µs, ms, s), three significant digits; the
    unit is chosen after rounding, so 999.7 ns reads ``1.00 µs``, never ``1000 ns``."""
    a = abs(ns)
    if round(a) < 1000:
        return f"{ns:.0f} ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6)):
        if float(f"{a / scale:.3g}") < 1000:
            return f"{_sig3(ns / scale)} {unit}"
    return f"{_sig3(ns / 1e9)} s"


def format_bytes(n: float) -> str:
    """Bytes with binary prefixes (B, KiB, MiB, GiB), three significant digits; the prefix is
    chosen after rounding (1023.8 B reads ``1 KiB``)."""
    a = abs(n)
    if round(a) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024.0
        a /= 1024.0
        if round(a) < 1024 or unit == "GiB":
            return f"{n:.3g} {unit}" if a < 100 else f"{n:.0f} {unit}"
    return f"{n:.0f} GiB"


def style_plot(plot: Any, title: str | None = None, left: str | None = None, bottom: str | None = None,
               grid: bool = True) -> None:
    """Common look of a pyqtgraph ``PlotItem``: dark axes and fonts, labels with units, light grid.

    ``left`` / ``bottom``: axis labels (state the unit in them, e.g. ``"time (µs)"``).
    """
    for name in ("left", "bottom", "right", "top"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(FOREGROUND, width=1))
        axis.setTextPen(pg.mkPen(FOREGROUND))
        axis.setStyle(tickFont=font(TICK_SIZE), tickTextOffset=4)
        axis.enableAutoSIPrefix(False)  # no "(x0.001)" rescaling: the label states the unit
    label_style = {"color": FOREGROUND, "font-size": f"{FONT_SIZE}pt", "font-family": FONT_FAMILY}
    if left is not None:
        plot.setLabel("left", left, **label_style)
    if bottom is not None:
        plot.setLabel("bottom", bottom, **label_style)
    if title is not None:
        plot.setTitle(title, color=FOREGROUND, size=f"{TITLE_SIZE}pt")
    if grid:
        plot.showGrid(x=True, y=True, alpha=GRID_ALPHA)


def new_plot_widget() -> Any:
    """A ``pyqtgraph.PlotWidget`` on the panels' white background with antialiasing."""
    w = pg.PlotWidget(background=BACKGROUND)
    w.setAntialiasing(True)
    return w


def si_label(value: float) -> str:
    """A tick label with an SI suffix: 0.01, 0.1, 1, 10, 100, 1k, 10k, 1M, 1G, 1T."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


class LogAxis(pg.AxisItem):
    """An axis whose view coordinate is ``log10`` of the value (items are given log10 data):
    decade ticks labelled with SI suffixes (1, 10, 100, 1k, ...), minor ticks unlabelled."""

    def __init__(self, orientation: str, **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self.logMode = True

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        v = np.asarray(values, dtype=np.float64)
        whole = np.abs(v - np.round(v)) < 1e-6
        return [si_label(float(10.0 ** round(x))) if w else "" for x, w in zip(v, whole)]


class CategoryAxis(pg.AxisItem):
    """A horizontal axis labelling integer positions 0..n-1 with given strings; when they do
    not fit, every k-th is labelled (k chosen from the labels' pixel widths)."""

    def __init__(self, orientation: str = "bottom", **kwargs: Any) -> None:
        super().__init__(orientation, **kwargs)
        self.labels: list[str] = []
        self._widest = 0.0

    def set_labels(self, labels: list[str]) -> None:
        from PySide6.QtGui import QFontMetricsF

        self.labels = list(labels)
        metrics = QFontMetricsF(font(TICK_SIZE))
        self._widest = max([metrics.horizontalAdvance(s) for s in self.labels] + [1.0])
        self.picture = None
        self.update()

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, list[float]]]:
        if not self.labels or size <= 0:
            return super().tickValues(minVal, maxVal, size)
        lo = max(0, math.ceil(minVal))
        hi = min(len(self.labels) - 1, math.floor(maxVal))
        if hi < lo:
            return [(1.0, [])]
        px_per_item = size / max(maxVal - minVal, 1e-9)
        stride = max(1, math.ceil((self._widest + 10.0) / px_per_item))
        start = (lo + stride - 1) // stride * stride
        return [(float(stride), [float(v) for v in range(start, hi + 1, stride)])]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if not self.labels:
            return super().tickStrings(values, scale, spacing)
        return [self.labels[round(v)] if 0 <= round(v) < len(self.labels) else "" for v in values]


class FittedTitle(QObject):
    """A plot title kept on one line inside its plot: elided with "…" when the plot is
    narrower than the text (the full text becomes the title's tooltip), re-fitted on resize.

    pyqtgraph's own title makes the text's width the plot's minimum width, so a long title
    pushes the right part of the plot (axis, data, marker lines) out of the widget.
    """

    MARGIN_PX = 28

    def __init__(self, widget: QWidget, size: int = TICK_SIZE + 1, plot: Any = None) -> None:
        """``widget``: the PlotWidget (or the GraphicsLayoutWidget holding ``plot``)."""
        super().__init__(widget)
        self.widget = widget
        self.plot = plot if plot is not None else widget.getPlotItem()  # type: ignore[attr-defined]
        self.size = size
        self.text = ""
        self.shown = ""
        self._font = font(size)
        widget.installEventFilter(self)

    def set_text(self, text: str) -> None:
        """Show plain ``text`` (no markup) as the title; "" removes the title."""
        self.text = text
        self._fit()

    def _fit(self) -> None:
        if not self.text:
            self.shown = ""
            self.plot.setTitle(None)
            return
        # the title sits above the view box only: the left axis and the text item's own
        # document margins (4 px a side) take the rest of the width
        axis = self.plot.getAxis("left")
        axis_w = float(axis.width()) if axis.isVisible() else 0.0
        room = max(40.0, float(self.widget.width()) - axis_w - self.MARGIN_PX)
        shown = QFontMetricsF(self._font).elidedText(self.text, Qt.TextElideMode.ElideRight, room)
        if shown == self.shown and self.plot.titleLabel.isVisible():
            return
        self.shown = shown
        self.plot.setTitle(html.escape(shown), color=FOREGROUND, size=f"{self.size}pt", family=FONT_FAMILY)
        self.plot.titleLabel.setToolTip(self.text if shown != self.text else "")

    @property
    def elided(self) -> bool:
        return bool(self.text) and self.shown != self.text

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if obj is self.widget and event.type() == QEvent.Type.Resize and self.text:
            self._fit()
        return False


class EmptyState(QStackedWidget):
    """A panel's content, or in its place a centred explanation of why there is nothing to
    show yet (and what to do about it)."""

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = content
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        self.label.setFont(font(FONT_SIZE + 1))
        # colours by palette, not a style sheet: style-sheet widgets are polished (CSS parsed)
        # on their first show, which lands in the first paint of a newly opened model
        pal = self.label.palette()
        pal.setColor(QPalette.ColorRole.WindowText, qcolor(MUTED))
        pal.setColor(QPalette.ColorRole.Window, qcolor(BACKGROUND))
        self.label.setPalette(pal)
        self.label.setAutoFillBackground(True)
        self.label.setMargin(24)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.addWidget(content)
        self.addWidget(self.label)

    def show_message(self, text: str) -> None:
        """Hide the content and show ``text`` (rich text allowed)."""
        self.label.setText(text)
        self.setCurrentWidget(self.label)

    def show_content(self) -> None:
        self.setCurrentWidget(self.content)

    @property
    def message(self) -> str:
        """The explanation shown, "" when the content is shown."""
        return self.label.text() if self.currentWidget() is self.label else ""
