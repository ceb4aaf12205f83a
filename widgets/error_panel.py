"""Error panel: per-layer SQNR of the int8 model along the graph, and a per-output summary.

Draws :class:`engine.analysis.LayerResult` / :class:`engine.analysis.OutputResult` as given:

- the plot: one x position per layer with a measured SQNR, in the order given (the analysis
  lists layers in the graph's topological order), two curves with points: ``isolated`` (only
  this layer quantized, on float inputs) and ``accumulated`` (the whole graph quantized).
  SQNR is ``10 log10(signal energy / error energy)`` in dB: HIGHER IS BETTER (about 6 dB per
  bit). A layer whose int8 output is exact (infinite SQNR) is drawn as a triangle just above
  the highest finite value; layers without a float output or with NaN are left out.
- the table: per model output the cosine similarity, SQNR, top-1 agreement of int8 with
  float, and the float and int8 accuracies when labels were given.

Click a point: ``node_selected(name)``. ``select_node(name)`` marks that layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.analysis import AnalysisResult, ErrorSummary, LayerResult, OutputResult
from widgets import style

VIEWS = ("isolated", "accumulated")
VIEW_LABELS = {"isolated": "isolated (this layer only)", "accumulated": "accumulated (whole graph int8)"}
EXACT_MARGIN_DB = 6.0  # exact layers are drawn this far above the highest finite SQNR
OP_ABBREVIATIONS = {
    "BatchNormalization": "BatchNorm",
    "LayerNormalization": "LayerNorm",
    "InstanceNormalization": "InstNorm",
    "GroupNormalization": "GroupNorm",
    "GlobalAveragePool": "GlobalAvgPool",
    "ConvTranspose": "ConvT",
}
OUTPUT_COLUMNS = ("Output", "Cosine", "SQNR (dB)", "Top-1 agreement", "Accuracy float", "Accuracy int8")
# header text: two short lines, so that no header is clipped in a narrow panel
OUTPUT_HEADERS = ("Output", "Cosine\nsimilarity", "SQNR\n(dB)", "Top-1\nagreement", "Accuracy\nfloat", "Accuracy\nint8")
OUTPUT_TIPS = (
    "Model output",
    "Cosine similarity of the int8 and float outputs (1 is best)",
    "Signal-to-quantization-noise ratio of the output, dB (higher is better)",
    "Share of samples whose top-1 class is the same in int8 and float",
    "Top-1 accuracy of the float model on the labelled samples",
    "Top-1 accuracy of the int8 model on the labelled samples",
)
NO_ANALYSIS = ("No analysis yet. <b>Run analysis</b> (F5) calibrates the model and measures the int8 error "
               "of every layer.")


def _sqnr(summary: ErrorSummary | None) -> float:
    return math.nan if summary is None else float(summary.sqnr_db)


def _fmt(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "db":
        return "exact (∞)" if math.isinf(value) and value > 0 else f"{value:.1f}"
    if kind == "pct":
        return f"{value:.2%}"
    return f"{value:.5f}"


class ErrorPanel(QWidget):
    """Per-layer SQNR curves and the per-output table (see the module docstring)."""

    node_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.names: list[str] = []
        self.op_types: list[str] = []
        self.sqnr: dict[str, np.ndarray] = {v: np.empty(0) for v in VIEWS}  # dB, inf = exact
        self.outputs: list[OutputResult] = []
        self._selected: str | None = None
        self._scatter: dict[str, pg.ScatterPlotItem] = {}
        self._marker: list[pg.GraphicsObject] = []

        self.summary = QLabel("No analysis")
        self.summary.setFont(style.font())
        self.summary.setWordWrap(True)
        self.axis = style.CategoryAxis("bottom")
        self.plot_widget = pg.PlotWidget(background=style.BACKGROUND, axisItems={"bottom": self.axis})
        self.plot_widget.setAntialiasing(True)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        style.style_plot(self.plot, left="SQNR (dB), higher is better", bottom="layer (graph order)")
        self.plot.getAxis("left").setWidth(60)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.legend = self.plot.addLegend(offset=(-10, 4), colCount=2, labelTextColor=style.FOREGROUND,
                                          brush=style.qcolor(style.BACKGROUND, 0.85), pen=pg.mkPen("#c8ccd2"))

        self.table = QTableWidget(0, len(OUTPUT_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(OUTPUT_HEADERS))
        for col, tip in enumerate(OUTPUT_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFont(style.font())
        self.table.horizontalHeader().setFont(style.font(bold=True))
        # figures hug their (two-line) headers; the output name takes the rest of the width
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self._row_h = QFontMetrics(style.font()).height() + 8
        self.table.verticalHeader().setDefaultSectionSize(self._row_h)
        self.table_title = QLabel("<b>Model outputs</b>: int8 vs float")
        self.table_title.setFont(style.font())

        body = QWidget()
        bl = QVBoxLayout(body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.plot_widget, 1)
        bl.addWidget(self.table_title)
        bl.addWidget(self.table)
        self.empty = style.EmptyState(body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.empty, 1)
        self._fit_table()
        self.clear()

    def clear(self, message: str = NO_ANALYSIS) -> None:
        """No layers and no outputs; ``message`` (rich text) says why in place of the plot."""
        self.set_layers([], [])
        self.summary.setText("")
        self.summary.setVisible(False)
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the plot ("" when results are shown)."""
        return self.empty.message

    # ------------------------------------------------------------------ data in

    def set_result(self, result: AnalysisResult) -> None:
        """Show an analysis' layers and outputs."""
        self.set_layers(result.layers, result.outputs)

    def set_layers(self, layers: Sequence[LayerResult], outputs: Sequence[OutputResult] = ()) -> None:
        """Plot the layers that have an SQNR (in the order given) and tabulate ``outputs``."""
        kept = [
            layer for layer in layers
            if not (math.isnan(_sqnr(layer.isolated)) and math.isnan(_sqnr(layer.accumulated)))
        ]
        self.names = [layer.name for layer in kept]
        self.op_types = [layer.op_type for layer in kept]
        self.sqnr = {
            "isolated": np.array([_sqnr(layer.isolated) for layer in kept], dtype=np.float64),
            "accumulated": np.array([_sqnr(layer.accumulated) for layer in kept], dtype=np.float64),
        }
        self.outputs = list(outputs)
        self._draw()
        self._fill_table()
        self._update_summary()
        self.summary.setVisible(True)
        if self.names or self.outputs:
            self.empty.show_content()
        else:
            self.empty.show_message("The analysis measured no layer: no node has a float output to compare "
                                    "(the model may be kept in float, or have no quantizable op).")
        if self._selected is not None:
            self.select_node(self._selected)

    def _draw(self) -> None:
        self.plot.clear()
        self.legend.clear()
        self._scatter = {}
        self._marker = []
        self.axis.set_labels([OP_ABBREVIATIONS.get(t, t) for t in self.op_types])
        n = len(self.names)
        self.legend.setVisible(n > 0)
        if n == 0:
            return
        both = np.concatenate([self.sqnr[v] for v in VIEWS])
        finite = both[np.isfinite(both)]
        hi = float(finite.max()) if finite.size else 0.0
        lo = float(finite.min()) if finite.size else 0.0
        self._exact_y = hi + EXACT_MARGIN_DB
        top = self._exact_y if np.isposinf(both).any() else hi
        x = np.arange(n, dtype=np.float64)
        symbols = {"isolated": "o", "accumulated": "s"}
        for view in VIEWS:
            y = self.sqnr[view]
            shown = np.where(np.isposinf(y), self._exact_y, y)
            color = style.SERIES[view]
            curve = pg.PlotCurveItem(x, np.where(np.isfinite(shown), shown, np.nan), pen=pg.mkPen(color, width=2),
                                     connect="finite")
            self.plot.addItem(curve)
            ok = np.isfinite(shown)
            idx = np.flatnonzero(ok)
            sym = np.where(np.isposinf(y[idx]), "t1", symbols[view]).tolist()
            scatter = pg.ScatterPlotItem(
                x=x[idx], y=shown[idx], data=idx, symbol=sym, size=8,
                brush=style.qcolor(color), pen=pg.mkPen(style.qcolor(color).darker(130), width=1),
                hoverable=True, hoverSize=11, hoverPen=pg.mkPen(style.FOREGROUND, width=1.5),
                tip=self._tip,
            )
            sample = pg.PlotDataItem([], [], pen=pg.mkPen(color, width=2), symbol=symbols[view], symbolSize=8,
                                     symbolBrush=style.qcolor(color), symbolPen=pg.mkPen(style.qcolor(color).darker(130)))
            self.legend.addItem(sample, VIEW_LABELS[view])
            scatter.setZValue(5)
            scatter.sigClicked.connect(self._on_clicked)
            self.plot.addItem(scatter)
            self._scatter[view] = scatter
        if np.isposinf(both).any():
            exact = pg.InfiniteLine(self._exact_y, angle=0, pen=pg.mkPen(style.MUTED, width=1, style=Qt.PenStyle.DotLine),
                                    label="exact (∞ dB)", labelOpts={"position": 0.02, "color": style.MUTED,
                                                                     "anchors": [(0, 1), (0, 1)]})
            self.plot.addItem(exact)
        # limits before the range: the previous result's limits would clamp this one's range
        self.plot.getViewBox().setLimits(xMin=-1.0, xMax=n)
        self.plot.setXRange(-0.5, n - 0.5, padding=0.02)
        span = max(top - lo, 6.0)
        self.plot.setYRange(lo - 0.08 * span, top + 0.2 * span, padding=0.0)  # headroom for the legend

    def _fill_table(self) -> None:
        t = self.table
        t.setRowCount(len(self.outputs))
        for row, o in enumerate(self.outputs):
            cells = (
                o.name,
                _fmt(o.error.cosine, "cos"),
                _fmt(o.error.sqnr_db, "db"),
                _fmt(o.top1_agreement, "pct"),
                _fmt(o.accuracy_float, "pct"),
                _fmt(o.accuracy_int8, "pct"),
            )
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 3 and o.top1_agreement is not None:
                    item.setToolTip("positions where the argmax over the last axis is the same in int8 and float: "
                                    "meaningful when the output holds class scores")
                if col >= 4:
                    item.setToolTip(f"on {o.labelled} labelled samples" if o.labelled else
                                    "no labels: give a labelled .npz (a 'labels' array) to measure accuracy")
                t.setItem(row, col, item)
        self._fit_table()

    def _fit_table(self) -> None:
        rows = max(1, self.table.rowCount())
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(header + rows * self._row_h + 4)
        # every column at least as wide as its header's longest line: nothing is clipped
        fm = QFontMetrics(self.table.horizontalHeader().font())
        self._header_text_widths = [max(fm.horizontalAdvance(line) for line in text.split("\n"))
                                    for text in OUTPUT_HEADERS]
        self.table.setMinimumWidth(sum(w + 18 for w in self._header_text_widths) + 4)

    def header_clipped(self) -> list[str]:
        """Columns narrower than their header's longest line (should be none)."""
        h = self.table.horizontalHeader()
        return [OUTPUT_COLUMNS[c] for c, w in enumerate(self._header_text_widths) if h.sectionSize(c) < w]

    def _update_summary(self) -> None:
        if not self.names:
            self.summary.setText("No layer with a measured SQNR")
            return
        parts = []
        for view in VIEWS:
            y = self.sqnr[view]
            ok = np.flatnonzero(~np.isnan(y))
            if ok.size:
                worst = int(ok[np.argmin(y[ok])])
                parts.append(f"worst {view}: <b>{_fmt(float(y[worst]), 'db')} dB</b> at {self.names[worst]}")
        self.summary.setText(f"{len(self.names)} layers; " + "; ".join(parts))

    # ------------------------------------------------------------------ data out

    def current_data(self) -> dict[str, object]:
        """Layer names in plot order, both SQNR arrays (dB, inf = exact), the output rows."""
        return {
            "names": list(self.names),
            "isolated": self.sqnr["isolated"].copy(),
            "accumulated": self.sqnr["accumulated"].copy(),
            "outputs": [[self.table.item(r, c).text() for c in range(self.table.columnCount())]
                        for r in range(self.table.rowCount())],
            "selected": self._selected,
        }

    def point_count(self, view: str) -> int:
        s = self._scatter.get(view)
        return 0 if s is None else len(s.data)

    # ------------------------------------------------------------------ selection

    def _tip(self, x: float, y: float, data: object) -> str:
        i = int(data)  # type: ignore[call-overload]
        iso, acc = self.sqnr["isolated"][i], self.sqnr["accumulated"][i]
        return (
            f"{self.names[i]} ({self.op_types[i]})\n"
            f"isolated SQNR {_fmt(float(iso), 'db')} dB\naccumulated SQNR {_fmt(float(acc), 'db')} dB"
        )

    def _on_clicked(self, item: pg.ScatterPlotItem, points: Sequence[object], ev: object = None) -> None:
        if len(points):
            self.click_layer(int(points[0].data()))  # type: ignore[attr-defined]

    def click_layer(self, index: int) -> None:
        """Act as if the point of layer ``index`` (plot order) was clicked."""
        self.select_node(self.names[index])
        self.node_selected.emit(self.names[index])

    def select_node(self, name: str | None) -> bool:
        """Mark layer ``name`` (a vertical band and rings); None clears. Returns whether it is plotted."""
        self._selected = name
        for item in self._marker:
            self.plot.removeItem(item)
        self._marker = []
        if name is None or name not in self.names:
            return False
        i = self.names.index(name)
        band = pg.InfiniteLine(i, angle=90, pen=pg.mkPen(style.qcolor(style.HIGHLIGHT, 0.6), width=6))
        band.setZValue(-5)
        self.plot.addItem(band)
        self._marker.append(band)
        ys = [self.sqnr[v][i] for v in VIEWS]
        ys = [self._exact_y if math.isinf(y) and y > 0 else y for y in ys if not math.isnan(y)]
        ring = pg.ScatterPlotItem(x=[i] * len(ys), y=ys, size=16, symbol="o", brush=None,
                                  pen=pg.mkPen(style.HIGHLIGHT, width=2.5))
        ring.setZValue(10)
        self.plot.addItem(ring)
        self._marker.append(ring)
        return True

    @property
    def selected_node(self) -> str | None:
        return self._selected
