"""Roofline panel: every launched op as a point, arithmetic intensity vs attained throughput.

Draws :class:`engine.costmodel.LayerEstimate` objects and the roofs of an
:class:`engine.npu.NpuProfile` as given (no cost model here):

- x: arithmetic intensity, ``LayerEstimate.intensity`` in ops per DRAM byte (log scale);
- y: attained throughput ``ops / est_ns`` in GOP/s (1 op/ns = 1 GOP/s; log scale);
  ``est_ns`` includes the fixed per-op overhead, so small ops sit far below the roofs;
- roofs: the DRAM slope ``dram_gbps x intensity`` (GB/s x op/B = GOP/s) and one ceiling per
  compute unit: MAC array ``int8_tops`` (x 1000 GOP/s), vector unit ``vector_gops``, float
  unit ``float_gflops`` when the chip has one, host CPU when an op runs there;
- points coloured by the lane they run on (MAC array, vector unit, float unit, host CPU).

Ops that move no DRAM bytes (everything stays in SRAM: intensity None) or do no ops have no
place on log axes: they are listed under the plot (``unplotted``). Click a point:
``node_selected`` (the op's first graph node) and ``nodes_selected`` (all of a fused group's
nodes). ``select_node(name)`` rings the op that covers graph node ``name``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.costmodel import LayerEstimate
from engine.npu import NpuProfile
from engine.timeline import NpuReport
from widgets import style

UNIT_ORDER = ("mac", "vector", "float", "host")
NO_REPORT = "No roofline yet: it is computed when a model is open (and again when the NPU profile changes)."


@dataclass(frozen=True)
class Roof:
    """One roof line: a compute ceiling (``peak_gops``, flat from ``ridge`` on) or the DRAM
    slope (``kind == "memory"``: ``peak_gops`` is the GB/s, the line is ``GB/s x intensity``)."""

    key: str  # "dram", "mac", "vector", "float", "host"
    kind: str  # "memory" | "compute"
    label: str
    peak_gops: float  # GOP/s for ceilings, GB/s for the DRAM slope
    ridge: float  # ops per byte where the ceiling meets the DRAM slope (0 for the slope)


def _rate(gops: float, unit: str = "OP/s") -> str:
    if gops >= 1e3:
        return f"{gops / 1e3:g} T{unit}"
    return f"{gops:g} G{unit}"


def profile_roofs(profile: NpuProfile, lanes: Sequence[str] = ()) -> list[Roof]:
    """The profile's roofs: DRAM slope, MAC, vector, float (if any) and host (if ``lanes`` use it)."""
    bw = profile.dram_bytes_per_ns
    roofs = [Roof("dram", "memory", f"DRAM {profile.dram_gbps:g} GB/s", bw, 0.0)]
    ceilings = [
        ("mac", f"MAC array {_rate(profile.mac_ops_per_ns(1))} int8", profile.mac_ops_per_ns(1)),
        ("vector", f"vector unit {_rate(profile.vector_ops_per_ns)}", profile.vector_ops_per_ns),
    ]
    if profile.has_float_unit:
        ceilings.append(("float", f"float unit {_rate(profile.float_flops_per_ns, 'FLOP/s')}", profile.float_flops_per_ns))
    if "host" in lanes:
        ceilings.append(("host", f"host CPU {_rate(profile.host_flops_per_ns, 'FLOP/s')}", profile.host_flops_per_ns))
    roofs += [Roof(k, "compute", label, peak, peak / bw) for k, label, peak in ceilings]
    return roofs


@dataclass
class _Series:
    lane: str
    indices: np.ndarray  # into the panel's layer list
    x: np.ndarray  # intensity, ops/byte
    y: np.ndarray  # attained, GOP/s
    item: pg.ScatterPlotItem


class RooflinePanel(QWidget):
    """Roofline chart of one profile (see the module docstring)."""

    node_selected = Signal(str)
    nodes_selected = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers: list[LayerEstimate] = []
        self.profile: NpuProfile | None = None
        self.roofs: list[Roof] = []
        self.series: dict[str, _Series] = {}
        self.unplotted: list[str] = []
        self._report: NpuReport | None = None
        self._selected: str | None = None
        self._roof_items: dict[str, pg.PlotCurveItem] = {}
        self._highlight: pg.ScatterPlotItem | None = None
        self._highlight_label: pg.TextItem | None = None
        self._layer_of_node: dict[str, int] = {}

        self.title = QLabel("No model")
        self.title.setFont(style.font())
        self.fused_box = QCheckBox("Fused ops")
        self.fused_box.setToolTip("Show the launched ops after fusion instead of one point per node")
        self.fused_box.toggled.connect(self._on_fused_toggled)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.fused_box)

        self.plot_widget = pg.PlotWidget(
            background=style.BACKGROUND,
            axisItems={"bottom": style.LogAxis("bottom"), "left": style.LogAxis("left")},
        )
        self.plot_widget.setAntialiasing(True)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        style.style_plot(self.plot, left="attained throughput (GOP/s)", bottom="arithmetic intensity (ops / DRAM byte)")
        self.plot.getAxis("left").setWidth(64)
        self.legend = self.plot.addLegend(offset=(-10, -10), labelTextColor=style.FOREGROUND,
                                          brush=style.qcolor(style.BACKGROUND, 0.85), pen=pg.mkPen("#c8ccd2"))
        self.footnote = QLabel("")
        self.footnote.setFont(style.font(style.TICK_SIZE))
        self.footnote.setStyleSheet(f"color: {style.MUTED}")
        self.footnote.setWordWrap(True)

        self.empty = style.EmptyState(self.plot_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty, 1)
        layout.addWidget(self.footnote)
        self.clear()

    def clear(self, message: str = NO_REPORT) -> None:
        """No points and no roofs; ``message`` (rich text) says why in place of the chart."""
        self._report = None
        self.layers = []
        self.profile = None
        self.roofs = []
        self.series = {}
        self.unplotted = []
        self._layer_of_node = {}
        self._roof_items = {}
        self._highlight = None
        self._highlight_label = None
        self.plot.clear()
        self.legend.clear()
        self.title.setText("")
        self.footnote.setText("")
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the chart ("" when a report is shown)."""
        return self.empty.message

    # ------------------------------------------------------------------ data in

    def set_report(self, report: NpuReport, fused: bool | None = None) -> None:
        """Show a report's per-node estimates (or its fused ops with ``fused=True``)."""
        self._report = report
        if fused is not None and fused != self.fused_box.isChecked():
            self.fused_box.blockSignals(True)
            self.fused_box.setChecked(fused)
            self.fused_box.blockSignals(False)
        layers = report.fused_layers if self.fused_box.isChecked() else report.layers
        self.set_data(layers, report.profile)

    def _on_fused_toggled(self, checked: bool) -> None:
        if self._report is not None:
            self.set_report(self._report, checked)

    def set_data(self, layers: Sequence[LayerEstimate], profile: NpuProfile) -> None:
        """Draw ``layers`` (one point each) under ``profile``'s roofs."""
        self.layers = list(layers)
        self.profile = profile
        lanes = [layer.lane for layer in self.layers]
        self.roofs = profile_roofs(profile, lanes)
        self.plot.clear()
        self.legend.clear()
        self.series = {}
        self._layer_of_node = {}
        for i, layer in enumerate(self.layers):
            for node in (layer.name, *layer.nodes):
                self._layer_of_node.setdefault(node, i)
        self._roof_items = {}
        self._highlight = None
        self._highlight_label = None

        ops = np.array([layer.ops for layer in self.layers], dtype=np.float64)
        est = np.array([layer.est_ns for layer in self.layers], dtype=np.float64)
        x = np.array([np.nan if layer.intensity is None else layer.intensity for layer in self.layers], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(est > 0, ops / est, np.nan)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        self.unplotted = [layer.name for layer, good in zip(self.layers, ok) if not good]

        # extent: points and ridges, a decade of margin
        ceilings = [r for r in self.roofs if r.kind == "compute"]
        top = max(r.peak_gops for r in ceilings)
        xs = np.concatenate((x[ok], [r.ridge for r in ceilings]))
        ys = np.concatenate((y[ok], [top]))
        x_lo = 10.0 ** math.floor(math.log10(max(xs.min(), 1e-6)) - 0.3)
        x_hi = 10.0 ** math.ceil(math.log10(xs.max()) + 0.3)
        y_lo = 10.0 ** math.floor(math.log10(max(ys.min(), 1e-9)) - 0.3)
        y_hi = 10.0 ** (math.log10(top) + 0.6)
        self._draw_roofs(x_lo, x_hi)

        for lane in UNIT_ORDER + tuple(sorted(set(lanes) - set(UNIT_ORDER))):
            idx = np.flatnonzero(ok & (np.array(lanes, dtype=object) == lane))
            if idx.size == 0:
                continue
            color = style.qcolor(style.lane_color(lane))
            item = pg.ScatterPlotItem(
                x=np.log10(x[idx]), y=np.log10(y[idx]), data=idx, size=9, symbol="o",
                brush=style.qcolor(style.lane_color(lane), 0.85), pen=pg.mkPen(color.darker(140), width=1),
                hoverable=True, hoverSize=12, hoverPen=pg.mkPen(style.FOREGROUND, width=1.5),
                tip=self._tip, name=style.UNIT_LABELS.get(lane, lane),
            )
            item.setZValue(5)
            item.sigClicked.connect(self._on_points_clicked)
            self.plot.addItem(item)
            self.series[lane] = _Series(lane, idx, x[idx], y[idx], item)
        self.plot.setXRange(math.log10(x_lo), math.log10(x_hi), padding=0.0)
        self.plot.setYRange(math.log10(y_lo), math.log10(y_hi), padding=0.0)

        self.empty.show_content()
        kind = "fused ops" if self._report is not None and self.fused_box.isChecked() else "nodes"
        self.title.setText(f"<b>{profile.name}</b>: roofline of {len(self.layers)} {kind}")
        if self.unplotted:
            shown = ", ".join(self.unplotted[:6]) + (f" and {len(self.unplotted) - 6} more" if len(self.unplotted) > 6 else "")
            self.footnote.setText(f"Not plotted (no DRAM traffic or no ops: intensity undefined): {shown}")
        else:
            self.footnote.setText("")
        if self._selected is not None:
            self.select_node(self._selected)

    def _draw_roofs(self, x_lo: float, x_hi: float) -> None:
        dram = next(r for r in self.roofs if r.kind == "memory")
        ceilings = sorted((r for r in self.roofs if r.kind == "compute"), key=lambda r: -r.peak_gops)
        top = ceilings[0]
        lx0, lx1 = math.log10(x_lo), math.log10(x_hi)
        pen_slope = pg.mkPen(style.SERIES["roof"], width=2)
        slope_x = np.array([lx0, math.log10(top.ridge)])
        slope = pg.PlotCurveItem(slope_x, slope_x + math.log10(dram.peak_gops), pen=pen_slope)
        self.plot.addItem(slope)
        self._roof_items["dram"] = slope
        # along the slope (slope 1 in log-log data coordinates), near its lower-left end
        t = pg.TextItem(dram.label, color=style.FOREGROUND, anchor=(0, 1), rotateAxis=(1, 1), angle=0)
        t.setFont(style.font(style.TICK_SIZE))
        tx = lx0 + 0.1 * (math.log10(top.ridge) - lx0)
        t.setPos(tx, tx + math.log10(dram.peak_gops))
        self.plot.addItem(t)
        for r in ceilings:
            color = style.lane_color(r.key) if r.key != "mac" else style.SERIES["roof"]
            pen = pg.mkPen(color, width=2 if r is top else 1.5,
                           style=Qt.PenStyle.SolidLine if r is top else Qt.PenStyle.DashLine)
            lr = math.log10(r.ridge)
            ly = math.log10(r.peak_gops)
            item = pg.PlotCurveItem(np.array([lr, lx1]), np.array([ly, ly]), pen=pen)
            self.plot.addItem(item)
            self._roof_items[r.key] = item
            label = pg.TextItem(r.label, color=color, anchor=(1, 1))
            label.setFont(style.font(style.TICK_SIZE))
            label.setPos(lx1, ly)
            self.plot.addItem(label)

    # ------------------------------------------------------------------ data out

    def roof_keys(self) -> list[str]:
        """Roofs drawn: ``"dram"`` and the compute units' keys."""
        return list(self._roof_items)

    def point_counts(self) -> dict[str, int]:
        return {lane: int(s.indices.size) for lane, s in self.series.items()}

    def current_data(self) -> dict[str, object]:
        """Roofs (label, GOP/s or GB/s, ridge ops/B) and per lane the points (name, ops/B, GOP/s)."""
        return {
            "profile": None if self.profile is None else self.profile.name,
            "roofs": {r.key: {"label": r.label, "kind": r.kind, "peak": r.peak_gops, "ridge": r.ridge} for r in self.roofs},
            "points": {
                lane: [(self.layers[i].name, float(x), float(y)) for i, x, y in zip(s.indices, s.x, s.y)]
                for lane, s in self.series.items()
            },
            "unplotted": list(self.unplotted),
            "selected": self._selected,
        }

    # ------------------------------------------------------------------ selection

    def _tip(self, x: float, y: float, data: object) -> str:
        layer = self.layers[int(data)]  # type: ignore[call-overload]
        lines = [
            layer.name,
            f"{layer.op_type} on {style.LANE_LABELS.get(layer.lane, layer.lane)}, {layer.bound}-bound",
            f"intensity {10 ** x:.3g} ops/B, attained {10 ** y:.3g} GOP/s",
            f"{layer.ops:.3g} ops, {style.format_bytes(layer.dram_bytes)} DRAM, {style.format_ns(layer.est_ns)}",
        ]
        if len(layer.nodes) > 1:
            lines.append("nodes: " + ", ".join(layer.nodes))
        return "\n".join(lines)

    def _on_points_clicked(self, item: pg.ScatterPlotItem, points: Sequence[object], ev: object = None) -> None:
        if len(points):
            self.click_layer(int(points[0].data()))  # type: ignore[attr-defined]

    def click_layer(self, index: int) -> None:
        """Act as if the point of ``layers[index]`` was clicked (emits the signals)."""
        layer = self.layers[index]
        nodes = list(layer.nodes) or [layer.name]
        self.select_node(nodes[0])
        self.node_selected.emit(nodes[0])
        self.nodes_selected.emit(nodes)

    def select_node(self, name: str | None) -> bool:
        """Ring the op covering graph node ``name`` (or named ``name``); None clears.
        Returns whether such an op is plotted."""
        self._selected = name
        for item in (self._highlight, self._highlight_label):
            if item is not None:
                self.plot.removeItem(item)
        self._highlight = self._highlight_label = None
        if name is None:
            return False
        i = self._layer_of_node.get(name)
        if i is None:
            return False
        layer = self.layers[i]
        s = self.series.get(layer.lane)
        where = np.flatnonzero(s.indices == i) if s is not None else np.empty(0, dtype=np.int64)
        if where.size == 0:  # not plotted (no DRAM traffic)
            return False
        k = int(where[0])
        lx, ly = math.log10(s.x[k]), math.log10(s.y[k])  # type: ignore[union-attr]
        self._highlight = pg.ScatterPlotItem(x=[lx], y=[ly], size=20, symbol="o", brush=None,
                                             pen=pg.mkPen(style.HIGHLIGHT, width=3))
        self._highlight.setZValue(10)
        self.plot.addItem(self._highlight)
        short = "/".join(layer.name.strip("/").split("/")[-2:])
        (x0, x1), _ = self.plot.getViewBox().viewRange()
        right_half = lx > (x0 + x1) / 2  # label on the side with room: never cut at the plot's edge
        self._highlight_label = pg.TextItem(short, color=style.FOREGROUND,
                                            anchor=(1.05, 1.2) if right_half else (-0.05, 1.2))
        self._highlight_label.setFont(style.font(style.TICK_SIZE, bold=True))
        self._highlight_label.setPos(lx, ly)
        self.plot.addItem(self._highlight_label)
        return True

    @property
    def selected_node(self) -> str | None:
        return self._selected

    def highlighted(self) -> tuple[float, float] | None:
        """(intensity ops/B, GOP/s) of the ringed point, None when nothing is ringed."""
        if self._highlight is None:
            return None
        x, y = self._highlight.getData()
        return float(10 ** x[0]), float(10 ** y[0])
