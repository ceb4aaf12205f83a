"""NPU timeline panel: a Gantt chart per lane of the unfused and the fused schedule.

Draws :class:`engine.timeline.Timeline` objects as given (no scheduling here). Each plot has one
row per lane (``dma_in`` at the top, then the compute lanes, ``dma_out`` at the bottom) and
ONE ``BarGraphItem`` per lane, so thousands of events stay cheap to build and to pan. The two
plots are stacked with their time axes linked (same scale: the fused one ends earlier), or
one of them alone (``set_mode``). Time is in ns in the data and shown in ns / µs / ms.

Interaction: hovering a bar shows its op, lane and times (and emits ``node_hovered``); a click
emits ``node_selected`` with the graph node and ``nodes_selected`` with every graph node the
event covers (a fused group's events cover all its members). ``select_node(name)``
highlights every bar of every event that covers that node, in both plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QFontMetricsF
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.costmodel import LANES
from engine.timeline import NpuReport, Timeline
from widgets import style

BAR_HEIGHT = 0.72  # of a lane row (rows are 1 unit apart)
LABEL_MIN_PX = 28.0  # bars at least this wide (pixels) carry their op's name
MAX_LABELS = 200  # per plot
HIT_PX = 4.0  # a click within this many pixels of a bar picks it
MODES = ("both", "fused", "unfused")
NO_REPORT = "No NPU timeline yet: it is computed when a model is open (and again when the NPU profile changes)."


@dataclass
class LaneBars:
    """The events of one lane as arrays (ns), in the timeline's order."""

    lane: str
    row: float  # y of the row centre
    start_ns: np.ndarray
    end_ns: np.ndarray
    labels: list[str]  # event node labels (a node name or a fused group's label)
    codes: np.ndarray  # int index of each label in the panel's label table
    item: pg.BarGraphItem | None = None

    @property
    def count(self) -> int:
        return int(self.start_ns.size)


@dataclass
class _Gantt:
    """One plot of one timeline."""

    key: str  # "unfused" | "fused"
    plot: pg.PlotItem
    timeline: Timeline | None = None
    lanes: dict[str, LaneBars] = field(default_factory=dict)
    highlight: pg.BarGraphItem | None = None
    end_lines: list[pg.InfiniteLine] = field(default_factory=list)
    labels: list[pg.TextItem] = field(default_factory=list)  # pool of bar labels (level of detail)


class TimelinePanel(QWidget):
    """Unfused and fused NPU timelines as Gantt charts (see the module docstring)."""

    node_selected = Signal(str)
    nodes_selected = Signal(list)
    node_hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._unit_name, self._unit_ns = "µs", 1e3
        self._lanes: list[str] = []
        self._selected: str | None = None
        self._hovered: str | None = None
        self._units: dict[str, tuple[str, ...]] = {}
        self._label_ids: dict[str, int] = {}
        self._labels_of_node: dict[str, set[str]] = {}
        self._span_ns = 0.0

        self.summary = QLabel("No timeline")
        self.summary.setFont(style.font())
        self.mode_box = QComboBox()
        self.mode_box.addItems(["Unfused and fused", "Fused only", "Unfused only"])
        self.mode_box.currentIndexChanged.connect(lambda i: self.set_mode(MODES[i]))
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.mode_box)

        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setBackground(style.BACKGROUND)
        self.canvas.setAntialiasing(False)  # axis-aligned bars: crisp edges
        self._plots = {
            "unfused": _Gantt("unfused", self.canvas.addPlot(row=0, col=0)),
            "fused": _Gantt("fused", self.canvas.addPlot(row=1, col=0)),
        }
        self._plots["fused"].plot.setXLink(self._plots["unfused"].plot)
        for g in self._plots.values():
            p = g.plot
            p.setMenuEnabled(False)
            p.hideButtons()
            p.getViewBox().setMouseEnabled(x=True, y=False)
            p.getAxis("left").setWidth(86)
            style.style_plot(p, bottom="time (µs)")
            p.showGrid(x=True, y=False, alpha=style.GRID_ALPHA)
        self.canvas.scene().sigMouseClicked.connect(self._on_click)
        self.canvas.scene().sigMouseMoved.connect(self._on_move)
        for g in self._plots.values():
            vb = g.plot.getViewBox()
            vb.sigXRangeChanged.connect(lambda *_, g=g: self._update_labels(g))
            vb.sigResized.connect(lambda *_, g=g: self._update_labels(g))
        self._metrics = QFontMetricsF(style.font(style.TICK_SIZE))

        self.titles = {k: style.FittedTitle(self.canvas, style.TITLE_SIZE, g.plot) for k, g in self._plots.items()}
        self.empty = style.EmptyState(self.canvas)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty, 1)
        self.mode = "both"
        self.clear()

    def clear(self, message: str = NO_REPORT) -> None:
        """No timelines; ``message`` (rich text) says why in place of the charts."""
        self.set_timelines(None, None)
        self.empty.show_message(message)

    @property
    def message(self) -> str:
        """The explanation shown instead of the charts ("" when timelines are shown)."""
        return self.empty.message

    # ------------------------------------------------------------------ data in

    def set_report(self, report: NpuReport) -> None:
        """Show the report's unfused and fused timelines."""
        self.set_timelines(report.timeline_unfused, report.timeline)

    def set_timelines(self, unfused: Timeline | None, fused: Timeline | None) -> None:
        """Show both schedules (either may be None). Lanes shown: those with events in either."""
        used = {e.lane for t in (unfused, fused) if t is not None for e in t.events}
        self._lanes = [lane for lane in LANES if lane in used] + sorted(used - set(LANES))
        span = max([t.total_ns for t in (unfused, fused) if t is not None] + [0.0])
        self._unit_name, self._unit_ns = style.time_unit(span)
        self._span_ns = span
        self._units = {}
        for t in (unfused, fused):
            if t is not None:
                self._units.update(t.units)
        labels = dict.fromkeys(e.node for t in (unfused, fused) if t is not None for e in t.events)
        self._label_ids = {label: i for i, label in enumerate(labels)}
        self._labels_of_node = {}
        for label in labels:
            for node in self._units.get(label, (label,)):
                self._labels_of_node.setdefault(node, set()).add(label)
        self._fill(self._plots["unfused"], unfused, None)
        self._fill(self._plots["fused"], fused, unfused)
        self._update_summary()
        if unfused is None and fused is None:
            self.empty.show_message(NO_REPORT)
        else:
            self.empty.show_content()
        self.set_mode(self.mode)
        for g in self._plots.values():
            if g.timeline is not None:
                g.plot.setXRange(0.0, max(span, 1.0) / self._unit_ns, padding=0.02)
                break
        if self._selected is not None:
            self.select_node(self._selected)

    def _fill(self, g: _Gantt, timeline: Timeline | None, reference: Timeline | None) -> None:
        p = g.plot
        p.clear()
        g.lanes = {}
        g.highlight = None
        g.end_lines = []
        g.labels = []
        g.timeline = timeline
        n = len(self._lanes)
        rows = {lane: float(n - 1 - i) for i, lane in enumerate(self._lanes)}
        p.getAxis("left").setTicks([[(rows[lane], style.LANE_LABELS.get(lane, lane)) for lane in self._lanes], []])
        style.style_plot(p, bottom=f"time ({self._unit_name})")
        p.showGrid(x=True, y=False, alpha=style.GRID_ALPHA)
        span = max(self._span_ns, 1.0) / self._unit_ns
        # limits first: the range is clamped by the previous limits (an empty timeline's
        # limits would keep a new timeline at a single visible lane)
        p.getViewBox().setLimits(yMin=-1.0, yMax=max(n, 1) + 0.5, xMin=-0.1 * span, xMax=1.2 * span)
        p.setYRange(-0.6, max(n, 1) - 0.4, padding=0.0)
        if timeline is None:
            self.titles[g.key].set_text("")
            return
        events = timeline.events
        lanes = np.array([e.lane for e in events], dtype=object)
        starts = np.array([e.start_ns for e in events], dtype=np.float64)
        ends = np.array([e.end_ns for e in events], dtype=np.float64)
        labels = np.array([e.node for e in events], dtype=object)
        codes = np.array([self._label_ids[e.node] for e in events], dtype=np.int64)
        for lane in self._lanes:
            mask = lanes == lane
            bars = LaneBars(lane, rows[lane], starts[mask], ends[mask], list(labels[mask]), codes[mask])
            g.lanes[lane] = bars
            if bars.count == 0:
                continue
            color = style.lane_color(lane)
            bars.item = pg.BarGraphItem(
                x0=bars.start_ns / self._unit_ns,
                width=(bars.end_ns - bars.start_ns) / self._unit_ns,
                y0=np.full(bars.count, bars.row - BAR_HEIGHT / 2),
                height=np.full(bars.count, BAR_HEIGHT),
                brush=style.qcolor(color),
                pen=pg.mkPen(style.qcolor(color).darker(135), width=1, cosmetic=True),
            )
            p.addItem(bars.item)
        total = timeline.total_ns / self._unit_ns
        end = pg.InfiniteLine(total, angle=90, pen=pg.mkPen(style.FOREGROUND, width=1, style=Qt.PenStyle.DashLine),
                              label=f"end {style.format_ns(timeline.total_ns)}",
                              labelOpts={"position": 0.96, "color": style.FOREGROUND, "anchors": [(1, 0), (1, 0)]})
        p.addItem(end)
        g.end_lines.append(end)
        if reference is not None and reference.total_ns > timeline.total_ns:
            ref = pg.InfiniteLine(reference.total_ns / self._unit_ns, angle=90,
                                  pen=pg.mkPen(style.SERIES["unfused"], width=1, style=Qt.PenStyle.DotLine),
                                  label="unfused end", labelOpts={"position": 0.96, "color": style.MUTED,
                                                                  "anchors": [(1, 0), (1, 0)]})
            p.addItem(ref)
            g.end_lines.append(ref)
        if g.key == "fused":
            saved = timeline.total_ns_unfused - timeline.total_ns
            changed = timeline.total_ns_unfused > 0 and abs(saved) >= 5e-4 * timeline.total_ns_unfused
            pct = f", {-saved / timeline.total_ns_unfused:+.1%} vs unfused" if changed else ""
            title = f"Fused: {style.format_ns(timeline.total_ns)}{pct}, {len(events)} events"
        else:
            title = f"Unfused: {style.format_ns(timeline.total_ns)}, {len(events)} events"
        self.titles[g.key].set_text(title)

    def _update_summary(self) -> None:
        u, f = self._plots["unfused"].timeline, self._plots["fused"].timeline
        parts = []
        if u is not None:
            parts.append(f"unfused {style.format_ns(u.total_ns)}")
        if f is not None:
            parts.append(f"fused {style.format_ns(f.total_ns)}")
        if u is not None and f is not None and u.total_ns > 0:
            parts.append(f"speed-up {u.total_ns / max(f.total_ns, 1e-9):.2f}x")
        profile = (f or u).profile if (f or u) is not None else ""
        self.summary.setText((f"<b>{profile}</b>: " if profile else "") + ", ".join(parts) if parts else "No timeline")

    # ------------------------------------------------------------------ view

    @staticmethod
    def bar_text(label: str) -> str:
        """Text drawn in a bar: a fused group's pattern, else the node name's last component."""
        if ":" in label:
            return label.split(":", 1)[0]
        return label.rstrip("/").rsplit("/", 1)[-1] or label

    def _update_labels(self, g: _Gantt) -> None:
        """Name the bars that are at least LABEL_MIN_PX wide on screen (up to MAX_LABELS)."""
        vb = g.plot.getViewBox()
        if not g.lanes or vb.width() <= 0:
            for t in g.labels:
                t.setVisible(False)
            return
        (x0, x1), _ = vb.viewRange()
        px_per_unit = vb.width() / max(x1 - x0, 1e-300)
        shown = 0
        for bars in g.lanes.values():
            if bars.count == 0 or shown >= MAX_LABELS:
                continue
            s = bars.start_ns / self._unit_ns
            e = bars.end_ns / self._unit_ns
            vis_s, vis_e = np.maximum(s, x0), np.minimum(e, x1)
            wide = np.flatnonzero((vis_e - vis_s) * px_per_unit >= LABEL_MIN_PX)
            for i in wide[: MAX_LABELS - shown]:
                width_px = (vis_e[i] - vis_s[i]) * px_per_unit - 6.0
                text = self._metrics.elidedText(self.bar_text(bars.labels[i]), Qt.TextElideMode.ElideRight, width_px)
                if not text or text == "…":
                    continue
                if shown == len(g.labels):
                    item = pg.TextItem("", color="#ffffff", anchor=(0, 0.5))
                    item.setFont(style.font(style.TICK_SIZE))
                    item.setZValue(12)  # above the selection highlight
                    g.plot.addItem(item)
                    g.labels.append(item)
                item = g.labels[shown]
                dark = bars.lane in ("mac", "float", "host", "vector")
                item.setColor(style.qcolor("#ffffff" if dark else style.FOREGROUND))
                item.setText(text)
                item.setPos(float(vis_s[i]) + 2.0 / px_per_unit, bars.row)
                item.setVisible(True)
                shown += 1
        for t in g.labels[shown:]:
            t.setVisible(False)

    def set_mode(self, mode: str) -> None:
        """``"both"`` (stacked, linked time axes), ``"fused"`` or ``"unfused"``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        if self.mode_box.currentIndex() != MODES.index(mode):
            self.mode_box.setCurrentIndex(MODES.index(mode))
        self._plots["unfused"].plot.setVisible(mode in ("both", "unfused"))
        self._plots["fused"].plot.setVisible(mode in ("both", "fused"))

    # ------------------------------------------------------------------ data out

    @property
    def lanes(self) -> list[str]:
        """Lanes shown, top to bottom."""
        return list(self._lanes)

    def bar_counts(self, which: str = "fused") -> dict[str, int]:
        """Bars drawn per lane of the ``"fused"`` or ``"unfused"`` plot."""
        g = self._plots[which]
        return {lane: len(b.item.opts["x0"]) if b.item is not None else 0 for lane, b in g.lanes.items()}

    def lane_bars(self, which: str, lane: str) -> LaneBars:
        return self._plots[which].lanes[lane]

    def plot_item(self, which: str) -> pg.PlotItem:
        return self._plots[which].plot

    def current_data(self) -> dict[str, object]:
        """What is shown: per plot the timeline's total and bars per lane; the selection."""
        return {
            "mode": self.mode,
            "time_unit": self._unit_name,
            "lanes": self.lanes,
            "plots": {
                k: None if g.timeline is None else {"total_ns": g.timeline.total_ns, "bars": self.bar_counts(k)}
                for k, g in self._plots.items()
            },
            "selected": self._selected,
            "highlighted": {k: self.highlighted_count(k) for k in self._plots},
        }

    # ------------------------------------------------------------------ selection

    def select_node(self, name: str | None) -> int:
        """Highlight every bar of the events covering graph node ``name`` (None clears).
        Returns the number of bars highlighted over both plots."""
        self._selected = name
        total = 0
        for g in self._plots.values():
            if g.highlight is not None:
                g.plot.removeItem(g.highlight)
                g.highlight = None
            wanted = np.array(sorted(self._label_ids[lb] for lb in self._labels_of_node.get(name or "", ())), dtype=np.int64)
            if name is None or not g.lanes or wanted.size == 0:
                continue
            x0: list[np.ndarray] = []
            w: list[np.ndarray] = []
            y0: list[np.ndarray] = []
            for bars in g.lanes.values():
                if bars.count == 0:
                    continue
                hit = np.isin(bars.codes, wanted)
                if not hit.any():
                    continue
                x0.append(bars.start_ns[hit] / self._unit_ns)
                w.append((bars.end_ns[hit] - bars.start_ns[hit]) / self._unit_ns)
                y0.append(np.full(int(hit.sum()), bars.row - BAR_HEIGHT / 2 - 0.06))
            if not x0:
                continue
            xs, ws, ys = np.concatenate(x0), np.concatenate(w), np.concatenate(y0)
            g.highlight = pg.BarGraphItem(
                x0=xs, width=ws, y0=ys, height=np.full(xs.size, BAR_HEIGHT + 0.12),
                brush=style.qcolor(style.HIGHLIGHT, 0.85), pen=pg.mkPen(style.FOREGROUND, width=2, cosmetic=True),
            )
            g.highlight.setZValue(10)
            g.plot.addItem(g.highlight)
            total += int(xs.size)
        return total

    def clear_selection(self) -> None:
        self.select_node(None)

    @property
    def selected_node(self) -> str | None:
        return self._selected

    def highlighted_count(self, which: str) -> int:
        h = self._plots[which].highlight
        return 0 if h is None else len(h.opts["x0"])

    # ------------------------------------------------------------------ picking

    def event_at(self, which: str, x_ns: float, y: float, tol_ns: float = 0.0) -> tuple[str, str, float, float] | None:
        """(label, lane, start_ns, end_ns) of the bar at time ``x_ns`` in row ``y`` (view units),
        the nearest within ``tol_ns`` when none contains the time; None when there is none."""
        g = self._plots[which]
        for bars in g.lanes.values():
            if bars.count == 0 or abs(y - bars.row) > BAR_HEIGHT / 2 + 0.05:
                continue
            dist = np.maximum(bars.start_ns - x_ns, 0.0) + np.maximum(x_ns - bars.end_ns, 0.0)
            i = int(np.argmin(dist))
            if dist[i] <= tol_ns:
                return bars.labels[i], bars.lane, float(bars.start_ns[i]), float(bars.end_ns[i])
        return None

    def nodes_of(self, label: str) -> tuple[str, ...]:
        """Graph nodes an event label covers (a fused group's members, else the node itself)."""
        return tuple(self._units.get(label, (label,)))

    def _pick(self, scene_pos: QPointF) -> tuple[str, tuple[str, str, float, float]] | None:
        for key, g in self._plots.items():
            if not g.plot.isVisible() or g.timeline is None:
                continue
            vb = g.plot.getViewBox()
            if not vb.sceneBoundingRect().contains(scene_pos):
                continue
            p = vb.mapSceneToView(scene_pos)
            tol = vb.viewPixelSize()[0] * HIT_PX * self._unit_ns
            hit = self.event_at(key, p.x() * self._unit_ns, p.y(), tol)
            if hit is not None:
                return key, hit
        return None

    def click_event(self, which: str, label: str) -> None:
        """Act as if the bar of ``label`` in plot ``which`` was clicked (emits the signals)."""
        nodes = self.nodes_of(label)
        self.select_node(nodes[0])
        self.node_selected.emit(nodes[0])
        self.nodes_selected.emit(list(nodes))

    def _on_click(self, ev: object) -> None:
        picked = self._pick(ev.scenePos())  # type: ignore[attr-defined]
        if picked is not None:
            key, (label, _, _, _) = picked
            self.click_event(key, label)

    def _on_move(self, scene_pos: QPointF) -> None:
        picked = self._pick(scene_pos)
        if picked is None:
            if self._hovered is not None:
                self._hovered = None
                QToolTip.hideText()
            return
        _key, (label, lane, start, end) = picked
        nodes = self.nodes_of(label)
        text = (
            f"<b>{label}</b><br>{style.LANE_LABELS.get(lane, lane)}: {style.format_ns(start)} to "
            f"{style.format_ns(end)} ({style.format_ns(end - start)})"
        )
        if len(nodes) > 1 or nodes[0] != label:
            text += "<br>nodes: " + ", ".join(nodes)
        view = self.canvas.mapFromScene(scene_pos)
        QToolTip.showText(self.canvas.mapToGlobal(view), text, self.canvas)
        if label != self._hovered:
            self._hovered = label
            self.node_hovered.emit(nodes[0])
