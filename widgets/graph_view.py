"""Graph view: a laid-out model drawn top to bottom, Netron style.

:class:`GraphView` draws an :class:`engine.layout.GraphLayout` (it does no layout and no
file I/O): nodes as rounded boxes coloured by a chosen metric (op type category by default),
edges as curves through the layout's bend points, fusion groups outlined. Zoom with the
wheel or ``+``/``-`` (``0`` fits), pan by dragging, click a node to select it.

Speed: every shape is a plain Qt item painted in C++ (no Python ``paint``), the edges of one
tensor are one path item, arrow heads are batched per band of layers, and labels live in two
container items that are hidden as a whole when zoomed out (level of detail), so a
5,000-node scene pans without painting 10,000 unreadable labels. :meth:`GraphView.set_layout`
adds the items in slices of at most :data:`BUILD_CHUNK` (and :data:`BUILD_BUDGET_S`) per
event-loop turn, driven by a zero-interval timer, so building a big scene never blocks the UI
thread for long; the view pans, zooms, selects and searches meanwhile (``build_finished``
is emitted at the end; :meth:`GraphView.finish_build` completes it at once).

Scene units are the layout's (1 unit = 1 px at zoom 1).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QLinearGradient,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QWidget,
)

from engine.layout import GraphLayout, NodeBox
from widgets.style import OP_CATEGORY  # one op -> category table for every widget

ROLE_NAME = 0  # item data: node name (node boxes only)
ROLE_KIND = 1  # item data: "node", "edge", "arrows", "fusion", "highlight"
ROLE_VALUE = 2  # item data: the node's value of the current colour metric (None when absent)

OP_LABEL_MIN_SCALE = 0.38  # op type labels shown from this zoom up (12 px -> 4.5 px)
DETAIL_MIN_SCALE = 0.62  # name lines shown from this zoom up (10 px -> 6 px)
MIN_SCALE = 0.002
MAX_SCALE = 4.0
ARROW_BAND = 24  # layers per batched arrow-head item
BUILD_CHUNK = 200  # scene elements (a node with its labels, a tensor's edges, a band of arrows) per turn
BUILD_BUDGET_S = 0.012  # a build turn also ends after this long (s), whatever it has done
SYNC_BUILD_NODES = 150  # layouts with at most this many nodes are built at once (a few ms)
LEGEND_GAP = 12.0  # px between the legend's bottom and the graph's top when the view is framed

FONT_FAMILY = "DejaVu Sans"
BACKGROUND = QColor("#fbfbfc")
EDGE_COLOR = QColor("#8f959e")
NO_VALUE_COLOR = QColor("#d5d8dd")
HIGHLIGHT_COLOR = QColor("#1c1f24")  # selection ring: neutral, never a metric colour
FUSION_COLOR = QColor("#7048e8")
FLAG_COLOR = QColor("#c92a2a")  # nodes the app cannot run (e.g. no int8 kernel)
TERMINAL_FILL = QColor("#eef1f5")
TERMINAL_BORDER = QColor("#98a2b0")

# op categories and their fills (Netron's categories; hues kept apart so neighbours differ)
CATEGORY_COLORS: dict[str, str] = {
    "layer": "#335588",
    "activation": "#7a2e26",
    "pool": "#3d6b35",
    "normalization": "#2b6c73",
    "shape": "#6c4f47",
    "tensor": "#8a6a2f",
    "quantization": "#5b4a86",
    "control": "#7a3a6a",
    "constant": "#6b7280",
    "math": "#3a3f47",
}
BOUND_COLORS: dict[str, str] = {"memory": "#e07b39", "compute": "#3b73b9"}
# Tableau 10, for other categorical metrics
QUALITATIVE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
               "#9c755f", "#bab0ac")
# numeric colour map from bad to good (ColorBrewer RdYlBu, 7 classes)
BAD_TO_GOOD = ("#d73027", "#f46d43", "#fdae61", "#fee090", "#e0f3f8", "#abd9e9", "#74add1", "#4575b4")
LEGEND_MAX_ENTRIES = 12


def op_color(op_type: str) -> QColor:
    """Fill of an op type: its category's colour ("math" for element-wise and unknown ops)."""
    return QColor(CATEGORY_COLORS[OP_CATEGORY.get(op_type, "math")])


def ramp_color(t: float) -> QColor:
    """Colour at ``t`` in [0, 1] on the bad (0, red) to good (1, blue) ramp."""
    stops = BAD_TO_GOOD
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = QColor(stops[i]), QColor(stops[i + 1])
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * f,
        a.greenF() + (b.greenF() - a.greenF()) * f,
        a.blueF() + (b.blueF() - a.blueF()) * f,
    )


def _text_color(fill: QColor) -> QColor:
    """Dark text on light fills, white on dark ones (relative luminance, sRGB weights)."""
    lum = 0.2126 * fill.redF() + 0.7152 * fill.greenF() + 0.0722 * fill.blueF()
    return QColor("#1f2328") if lum > 0.55 else QColor("#ffffff")


def _format_value(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


class _Legend(QWidget):
    """The colour key, drawn over the view's top-left corner (a child of the view, not of the
    scrolled viewport, so panning does not move it)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.title = ""
        self.entries: list[tuple[QColor, str]] = []  # categorical
        self.ramp: tuple[str, str, bool] | None = None  # (low text, high text, higher_is_better)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._font = QFont(FONT_FAMILY)
        self._font.setPixelSize(11)
        self._bold = QFont(self._font)
        self._bold.setBold(True)

    def show_categories(self, title: str, entries: list[tuple[QColor, str]]) -> None:
        self.title, self.entries, self.ramp = title, entries, None
        self._resize()

    def show_ramp(self, title: str, low: str, high: str, higher_is_better: bool, missing: bool) -> None:
        self.title, self.ramp = title, (low, high, higher_is_better)
        self.entries = [(NO_VALUE_COLOR, "no value")] if missing else []
        self._resize()

    def _resize(self) -> None:
        fm = QFontMetricsF(self._font)
        width = QFontMetricsF(self._bold).horizontalAdvance(self.title) + 20
        rows = 1 + len(self.entries)
        if self.ramp is not None:
            low, high, _ = self.ramp
            width = max(width, 180.0, fm.horizontalAdvance(low) + fm.horizontalAdvance(high) + 40)
            rows += 3
        for _, text in self.entries:
            width = max(width, fm.horizontalAdvance(text) + 52)
        self.resize(math.ceil(width), int(rows * 18 + 14))
        self.setVisible(bool(self.title))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(QColor("#d0d4da"), 1))
        p.setBrush(QColor(255, 255, 255, 235))
        p.drawRoundedRect(QRectF(0.5, 0.5, self.width() - 1, self.height() - 1), 6, 6)
        p.setPen(QColor("#1f2328"))
        p.setFont(self._bold)
        p.drawText(QPointF(10, 19), self.title)
        p.setFont(self._font)
        y = 28.0
        if self.ramp is not None:
            low, high, higher_is_better = self.ramp
            bar = QRectF(10, y, self.width() - 20, 12)
            grad = QLinearGradient(bar.topLeft(), bar.topRight())
            for i in range(len(BAD_TO_GOOD)):
                t = i / (len(BAD_TO_GOOD) - 1)
                grad.setColorAt(t, ramp_color(t if higher_is_better else 1 - t))
            p.setPen(QPen(QColor("#9aa1ab"), 0.8))
            p.setBrush(QBrush(grad))
            p.drawRect(bar)
            p.setPen(QColor("#3d434b"))
            p.drawText(QPointF(10, y + 28), low)
            fm = QFontMetricsF(self._font)
            p.drawText(QPointF(self.width() - 10 - fm.horizontalAdvance(high), y + 28), high)
            p.setPen(QColor("#6a737d"))
            p.drawText(QPointF(10, y + 46), "higher is better" if higher_is_better else "lower is better")
            y += 54
        for color, text in self.entries:
            p.setPen(QPen(color.darker(130), 1))
            p.setBrush(color)
            p.drawRoundedRect(QRectF(10, y + 2, 22, 12), 3, 3)
            p.setPen(QColor("#3d434b"))
            p.drawText(QPointF(40, y + 12.5), text)
            y += 18
        p.end()


class GraphView(QGraphicsView):
    """A read-only, zoomable drawing of a :class:`GraphLayout`.

    ``node_selected(name)`` is emitted when the user clicks a node and when :meth:`find` /
    :meth:`find_next` select one; :meth:`select_node` (the slot for the rest of the app)
    selects and centres without emitting. ``build_finished`` is emitted once every item of
    the layout given to :meth:`set_layout` is in the scene.
    """

    node_selected = Signal(str)
    build_finished = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setBackgroundBrush(BACKGROUND)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._legend = _Legend(self)
        self._legend.move(10, 10)
        self._legend.hide()

        self._op_font = QFont(FONT_FAMILY)
        self._op_font.setPixelSize(12)
        self._op_font.setBold(True)
        self._detail_font = QFont(FONT_FAMILY)
        self._detail_font.setPixelSize(10)
        self._terminal_font = QFont(FONT_FAMILY)
        self._terminal_font.setPixelSize(11)
        self._group_font = QFont(FONT_FAMILY)
        self._group_font.setPixelSize(11)
        self._group_font.setBold(True)

        self._layout: GraphLayout | None = None
        self._nodes: dict[str, QGraphicsPathItem] = {}
        self._texts: dict[str, list[QGraphicsSimpleTextItem]] = {}
        self._edges: list[QGraphicsPathItem] = []
        self._fusions: list[QGraphicsPathItem] = []
        self._flags: list[QGraphicsItem] = []  # outlines and labels of flagged nodes
        self._flag_names: list[str] = []
        self._fusion_labels: list[QGraphicsSimpleTextItem] = []
        self._labels: QGraphicsPathItem | None = None  # container of op-type and terminal labels
        self._details: QGraphicsPathItem | None = None  # container of name lines and group labels
        self._highlight: QGraphicsPathItem | None = None
        self._selected: str | None = None
        self._matches: list[str] = []
        self._match_index = -1
        self._metric: str = ""
        self._auto_view = False  # re-run reset_view on resize until the user zooms
        self._node_press = False  # the left button went down on a node
        self._base_rect = QRectF()  # the layout's extent plus padding (scene units)
        # current colouring (see set_color_metric): fill and value per op node
        self._fills: dict[str, QColor] = {}
        self._values: dict[str, object] = {}
        self._numeric = False
        # incremental build: a generator adding one element per step, run by a 0 ms timer
        self._build: Iterator[bool] | None = None
        self._build_timer = QTimer(self)
        self._build_timer.setInterval(0)
        self._build_timer.timeout.connect(self._build_tick)

    # ------------------------------------------------------------------ building
    def set_layout(self, layout: GraphLayout, incremental: bool = True) -> None:
        """Draw ``layout`` (replacing what was shown), coloured by op type, view reset.

        With ``incremental`` a layout of more than SYNC_BUILD_NODES nodes is added over the
        next event-loop turns (a smaller one is complete on return); ``build_finished``
        follows in either case.
        """
        self._stop_build()
        scene = self.scene()
        scene.clear()
        self._layout = layout
        self._nodes, self._texts, self._edges = {}, {}, []
        self._fusions, self._fusion_labels = [], []
        self._flags, self._flag_names = [], []
        self._selected, self._matches, self._match_index = None, [], -1
        pad = 40.0
        self._base_rect = QRectF(-pad, -pad, layout.width + 2 * pad, layout.height + 2 * pad)
        scene.setSceneRect(self._base_rect)

        self._labels = self._container(5.0)
        self._details = self._container(5.0)
        self._highlight = QGraphicsPathItem()
        self._highlight.setPen(QPen(HIGHLIGHT_COLOR, 2.5))
        self._highlight.setBrush(Qt.BrushStyle.NoBrush)
        self._highlight.setZValue(4.0)
        self._highlight.setData(ROLE_KIND, "highlight")
        self._highlight.hide()
        scene.addItem(self._highlight)
        self.color_by_op_type()  # the fills and the legend; nodes take their fill as they are added
        self.reset_view()
        self._auto_view = True
        self._build = self._build_steps(layout)
        if incremental and len(layout.nodes) > SYNC_BUILD_NODES:
            self._build_timer.start()
        else:
            self.finish_build()

    @property
    def is_building(self) -> bool:
        """True while items of the current layout are still being added."""
        return self._build is not None

    def finish_build(self) -> None:
        """Add every item not added yet, now (e.g. before grabbing an image)."""
        if self._build is None:
            return
        for _ in self._build:
            pass
        self._end_build()

    def _stop_build(self) -> None:
        self._build_timer.stop()
        if self._build is not None:
            self._build.close()
            self._build = None

    def _build_tick(self) -> None:
        """One slice of the build: up to BUILD_CHUNK elements or BUILD_BUDGET_S seconds."""
        if self._build is None:
            self._build_timer.stop()
            return
        deadline = time.perf_counter() + BUILD_BUDGET_S
        for _ in range(BUILD_CHUNK):
            if next(self._build, None) is None:
                self._end_build()
                return
            if time.perf_counter() > deadline:
                return

    def _end_build(self) -> None:
        self._build_timer.stop()
        self._build = None
        self.build_finished.emit()

    def _container(self, z: float) -> QGraphicsPathItem:
        item = QGraphicsPathItem()
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemHasNoContents, True)
        item.setZValue(z)
        self.scene().addItem(item)
        return item

    def _build_steps(self, layout: GraphLayout) -> Iterator[bool]:
        """Add the scene's items top to bottom, yielding after each element: every node in
        reading order followed by the edges leaving it, and a band's arrow heads once its
        nodes are in. The area in view is complete after the first slices; later slices add
        items out of view, which cost no repaint."""
        pen = QPen(EDGE_COLOR, 1.3)
        pen.setCosmetic(True)  # 1.3 px at any zoom: edges stay visible in the overview
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        groups: dict[str, dict[str, list[list[tuple[float, float]]]]] = {}
        heads: dict[int, list[tuple[float, float]]] = {}
        for e in layout.edges:
            groups.setdefault(e.src, {}).setdefault(e.tensor, []).append(e.points)
            heads.setdefault(layout.nodes[e.dst].layer // ARROW_BAND, []).append(e.points[-1])
        bands = sorted(heads)
        for name, box in zip(self._node_names(layout), self._build_nodes(layout)):
            yield True
            while bands and bands[0] < box.layer // ARROW_BAND:
                self._add_arrows(heads.pop(bands.pop(0)))
                yield True
            for tensor, routes in groups.pop(name, {}).items():
                self._add_edges(name, tensor, routes, pen)
                yield True
        for src, by_tensor in groups.items():  # sources that are not boxes (none in a valid layout)
            for tensor, routes in by_tensor.items():
                self._add_edges(src, tensor, routes, pen)
                yield True
        for band in bands:
            self._add_arrows(heads[band])
            yield True

    @staticmethod
    def _node_names(layout: GraphLayout) -> list[str]:
        """Every node name in reading order (boxes missing from ``node_order`` last)."""
        ordered = set(layout.node_order)
        return list(layout.node_order) + [n for n in layout.nodes if n not in ordered]

    def _add_edges(self, src: str, tensor: str, routes: list[list[tuple[float, float]]], pen: QPen) -> None:
        """One path item for every route of one tensor (shared trunk drawn once)."""
        routes.sort(key=len, reverse=True)
        trunk = routes[0]
        path = QPainterPath()
        _add_curve(path, trunk, 0)
        for pts in routes[1:]:
            shared = 0
            limit = min(len(pts), len(trunk)) - 1
            while shared < limit and pts[shared] == trunk[shared]:
                shared += 1
            _add_curve(path, pts, max(0, shared - 1))
        item = QGraphicsPathItem(path)
        item.setPen(pen)
        item.setZValue(-0.5)  # under the nodes (z 0) and over fusion outlines (z -1)
        item.setData(ROLE_KIND, "edge")
        item.setToolTip(f"{tensor}\n{src} \u2192 {len(routes)} reader{'s' if len(routes) > 1 else ''}")
        self.scene().addItem(item)
        self._edges.append(item)

    def _add_arrows(self, tips: list[tuple[float, float]]) -> None:
        """Arrow heads at ``tips`` (edge ends), one filled path item."""
        path = QPainterPath()
        for x, y in tips:
            path.moveTo(x, y)
            path.lineTo(x - 4.5, y - 8.0)
            path.lineTo(x + 4.5, y - 8.0)
            path.closeSubpath()
        item = QGraphicsPathItem(path)
        item.setPen(Qt.PenStyle.NoPen)
        item.setBrush(EDGE_COLOR)
        item.setZValue(-0.4)
        item.setData(ROLE_KIND, "arrows")
        self.scene().addItem(item)

    def _build_nodes(self, layout: GraphLayout) -> Iterator[NodeBox]:
        scene = self.scene()
        op_fm = QFontMetricsF(self._op_font)
        detail_fm = QFontMetricsF(self._detail_font)
        term_fm = QFontMetricsF(self._terminal_font)
        shapes: dict[tuple[float, float, bool], QPainterPath] = {}
        for name in self._node_names(layout):
            box = layout.nodes[name]
            terminal = box.kind != "op"
            key = (box.w, box.h, terminal)
            shape = shapes.get(key)
            if shape is None:
                shape = QPainterPath()
                radius = box.h / 2 if terminal else 5.0
                shape.addRoundedRect(QRectF(0, 0, box.w, box.h), radius, radius)
                shapes[key] = shape
            item = QGraphicsPathItem(shape)
            item.setPos(box.x, box.y)  # z stays 0: above edges, below labels and selection
            item.setData(ROLE_NAME, name)
            item.setData(ROLE_KIND, "node")
            scene.addItem(item)
            self._nodes[name] = item
            texts: list[QGraphicsSimpleTextItem] = []
            if terminal:
                # one line: tensor name, then its shape in a lighter tone
                label = term_fm.elidedText(box.label, Qt.TextElideMode.ElideMiddle, box.w - 16)
                shape_text = f"  {box.detail}"
                room = box.w - 16 - term_fm.horizontalAdvance(label)
                shape_text = term_fm.elidedText(shape_text, Qt.TextElideMode.ElideRight, max(0.0, room))
                total = term_fm.horizontalAdvance(label) + term_fm.horizontalAdvance(shape_text)
                left = box.x + (box.w - total) / 2
                base = box.y + (box.h - term_fm.height()) / 2
                texts.append(self._text(label, self._terminal_font, left, base, self._labels))
                if shape_text.strip():
                    texts.append(self._text(shape_text, self._terminal_font,
                                            left + term_fm.horizontalAdvance(label), base, self._labels))
                item.setPen(QPen(TERMINAL_BORDER, 1.2))
                item.setBrush(TERMINAL_FILL)
                texts[0].setBrush(QColor("#1f2328"))
                if len(texts) > 1:
                    texts[1].setBrush(QColor("#6a737d"))
                item.setToolTip(f"graph {box.kind}: {box.label}\nshape {box.detail}")
                self._texts[name] = texts
            else:
                label = op_fm.elidedText(box.label, Qt.TextElideMode.ElideRight, box.w - 10)
                width = op_fm.horizontalAdvance(label)
                texts.append(self._text(label, self._op_font, box.x + (box.w - width) / 2, box.y + 5, self._labels))
                detail = f"{box.detail}  \u00b7  W {box.badge}" if box.badge else box.detail
                detail = detail_fm.elidedText(detail, Qt.TextElideMode.ElideLeft, box.w - 10)
                width = detail_fm.horizontalAdvance(detail)
                texts.append(self._text(detail, self._detail_font, box.x + (box.w - width) / 2,
                                        box.y + box.h - 6 - detail_fm.height(), self._details))
                self._texts[name] = texts
                self._apply_fill(name)
            yield box

    def _text(self, text: str, font: QFont, x: float, y: float, parent: QGraphicsItem) -> QGraphicsSimpleTextItem:
        item = QGraphicsSimpleTextItem(text, parent)
        item.setFont(font)
        item.setPos(x, y)
        return item

    # ------------------------------------------------------------------ colouring
    def color_by_op_type(self) -> None:
        """Colour op nodes by their op type's category (the default)."""
        if self._layout is None:
            return
        values = {name: box.op_type for name, box in self._layout.nodes.items() if box.kind == "op"}
        self.set_color_metric("op type", values)

    def set_color_metric(
        self,
        name: str,
        values: Mapping[str, float] | Mapping[str, str],
        higher_is_better: bool = True,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        """Colour op nodes by ``values`` (node name -> number or category); shows the legend.

        Numbers go on a red (bad) to blue (good) ramp between their 2nd and 98th percentiles,
        or over ``value_range`` (low, high) when given: a fixed scale makes a colour mean the
        same in every model (e.g. SQNR in dB, where the spread alone would paint a fine 32 dB
        layer red); ``higher_is_better`` says which end is good (True for SQNR, False for est_ns).
        Strings are categories: op types take their category colour, ``"memory"`` /
        ``"compute"`` fixed colours, anything else a qualitative palette. Nodes without a
        value are grey.
        """
        if self._layout is None:
            return
        self._metric = name
        ops = [n for n, box in self._layout.nodes.items() if box.kind == "op"]
        present = {n: values[n] for n in ops if n in values and values[n] is not None}
        numeric = bool(present) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present.values()
        )
        fills: dict[str, QColor] = {}
        if numeric:
            nums = {n: float(v) for n, v in present.items() if math.isfinite(float(v))}
            arr = np.fromiter(nums.values(), dtype=np.float64, count=len(nums))
            if value_range is not None:
                lo, hi = float(value_range[0]), float(value_range[1])
            else:
                lo, hi = (np.percentile(arr, [2.0, 98.0]) if arr.size else (0.0, 0.0))
            span = hi - lo
            for n, v in nums.items():
                t = 0.5 if span <= 0 else (min(hi, max(lo, v)) - lo) / span
                fills[n] = ramp_color(t if higher_is_better else 1.0 - t)
            for n, v in present.items():
                if n not in fills:  # inf / nan: the good or bad end
                    fv = float(v)
                    good = (fv > 0) == higher_is_better if math.isinf(fv) else False
                    fills[n] = ramp_color(1.0 if good else 0.0)
            low_text, high_text = (_format_value(float(lo)), _format_value(float(hi))) if arr.size else ("", "")
            if value_range is not None and arr.size:
                low_text, high_text = f"≤ {low_text}", f"≥ {high_text}"
            self._legend.show_ramp(name, low_text, high_text, higher_is_better, len(present) < len(ops))
        else:
            counts = Counter(str(v) for v in present.values())
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            palette: dict[str, QColor] = {}
            others = 0
            for cat, _ in ranked:
                if cat in BOUND_COLORS:
                    palette[cat] = QColor(BOUND_COLORS[cat])
                elif cat in OP_CATEGORY or name == "op type":
                    palette[cat] = op_color(cat)
                else:
                    palette[cat] = QColor(QUALITATIVE[others % len(QUALITATIVE)])
                    others += 1
            for n, v in present.items():
                fills[n] = palette[str(v)]
            if all(c in OP_CATEGORY or name == "op type" for c in counts):
                # op types: one legend row per category, naming its op types
                by_cat: dict[str, list[str]] = {}
                for cat, _ in ranked:
                    by_cat.setdefault(OP_CATEGORY.get(cat, "math"), []).append(cat)
                entries = []
                for category, members in sorted(by_cat.items(), key=lambda kv: -sum(counts[m] for m in kv[1])):
                    listed = ", ".join(members[:4]) + (f" +{len(members) - 4}" if len(members) > 4 else "")
                    entries.append((QColor(CATEGORY_COLORS[category]), f"{category}: {listed}"))
            else:
                entries = [(palette[c], f"{c}  ({k})") for c, k in ranked[:LEGEND_MAX_ENTRIES]]
                if len(counts) > LEGEND_MAX_ENTRIES:
                    entries.append((QColor("#ffffff"), f"+{len(counts) - LEGEND_MAX_ENTRIES} more"))
            if len(present) < len(ops):
                entries.append((NO_VALUE_COLOR, "no value"))
            self._legend.show_categories(name, entries)
        self._fills, self._values, self._numeric = fills, present, numeric
        for n in ops:
            if n in self._nodes:  # nodes not added yet take their fill when they are
                self._apply_fill(n)

    def _apply_fill(self, n: str) -> None:
        """Paint op node ``n`` with the current metric's fill, text colour and tooltip."""
        assert self._layout is not None
        fill = self._fills.get(n, NO_VALUE_COLOR)
        item = self._nodes[n]
        item.setBrush(fill)
        item.setPen(QPen(fill.darker(135), 1.0))
        value = self._values.get(n)
        item.setData(ROLE_VALUE, value)
        text = _text_color(fill)
        texts = self._texts[n]
        texts[0].setBrush(text)
        if len(texts) > 1:
            faded = QColor(text)
            faded.setAlphaF(0.78)
            texts[1].setBrush(faded)
        box = self._layout.nodes[n]
        shown = "no value" if value is None else (
            _format_value(float(value)) if self._numeric else str(value))  # type: ignore[arg-type]
        weights = f"\n{box.weights} weight tensor{'s' if box.weights > 1 else ''}, {box.params:,} elements" \
            if box.weights else ""
        item.setToolTip(f"{n}\n{box.op_type}{weights}\n{self._metric}: {shown}")

    @property
    def color_metric(self) -> str:
        """Name of the metric the nodes are coloured by."""
        return self._metric

    # ------------------------------------------------------------------ fusion groups
    def set_fusion_groups(self, groups: Sequence[tuple[Sequence[str], str]]) -> None:
        """Outline each group of node names (e.g. one fused kernel) with its label above it.

        ``groups``: ``(node names, label)`` pairs, e.g. ``[(f.nodes, f.pattern) for f in
        report.fusions]``; an empty list removes the outlines. Names not in the layout are
        skipped; a group with no known node is not drawn.
        """
        scene = self.scene()
        for item in self._fusions:
            scene.removeItem(item)
        for item in self._fusion_labels:
            scene.removeItem(item)
        self._fusions, self._fusion_labels = [], []
        if self._layout is None:
            return
        pen = QPen(FUSION_COLOR, 1.6, Qt.PenStyle.DashLine)
        fill = QColor(FUSION_COLOR)
        fill.setAlpha(22)
        text_color = QColor(FUSION_COLOR).darker(115)
        margin = 9.0
        for members, label in groups:
            boxes = [self._layout.nodes[m] for m in members if m in self._layout.nodes]
            if not boxes:
                continue
            left = min(b.x for b in boxes) - margin
            top = min(b.y for b in boxes) - margin
            right = max(b.x + b.w for b in boxes) + margin
            bottom = max(b.y + b.h for b in boxes) + margin
            path = QPainterPath()
            path.addRoundedRect(QRectF(left, top, right - left, bottom - top), 10, 10)
            item = QGraphicsPathItem(path)
            item.setPen(pen)
            item.setBrush(fill)
            item.setZValue(-1.0)
            item.setData(ROLE_KIND, "fusion")
            item.setToolTip(f"{label}\n" + "\n".join(b.name for b in boxes))
            scene.addItem(item)
            self._fusions.append(item)
            text = self._text(label, self._group_font, left + 8, top - 16, self._details)
            text.setBrush(text_color)
            self._fusion_labels.append(text)

    @property
    def fusion_items(self) -> list[QGraphicsPathItem]:
        """The outline items of the current fusion groups."""
        return list(self._fusions)

    def set_flagged(self, flags: Mapping[str, str]) -> None:
        """Outline nodes in red with a short label above each (node name -> label, e.g.
        ``"no int8 kernel"``); an empty mapping removes the outlines. Unknown names are
        skipped. Labels show with the other detail text (when zoomed in)."""
        scene = self.scene()
        for item in self._flags:
            scene.removeItem(item)
        self._flags, self._flag_names = [], []
        if self._layout is None:
            return
        pen = QPen(FLAG_COLOR, 2.0, Qt.PenStyle.DashLine)
        grow = 5.0
        for name, label in flags.items():
            box = self._layout.nodes.get(name)
            if box is None:
                continue
            path = QPainterPath()
            path.addRoundedRect(QRectF(box.x - grow, box.y - grow, box.w + 2 * grow, box.h + 2 * grow), 8, 8)
            item = QGraphicsPathItem(path)
            item.setPen(pen)
            item.setBrush(Qt.BrushStyle.NoBrush)
            item.setZValue(3.0)
            item.setData(ROLE_KIND, "flag")
            item.setToolTip(f"{name}: {label}")
            scene.addItem(item)
            self._flags.append(item)
            text = self._text(label, self._group_font, box.x - grow, box.y - grow - 16, self._details)
            text.setBrush(FLAG_COLOR)
            self._flags.append(text)
            self._flag_names.append(name)

    @property
    def flagged(self) -> list[str]:
        """Names of the nodes outlined by :meth:`set_flagged`."""
        return list(self._flag_names)

    # ------------------------------------------------------------------ selection, search
    def node_item(self, name: str) -> QGraphicsPathItem | None:
        """The box item of a node (its brush is the current fill), or None."""
        return self._nodes.get(name)

    @property
    def selected_node(self) -> str | None:
        return self._selected

    def select_node(self, name: str) -> bool:
        """Select and centre ``name`` without emitting ``node_selected``; False if unknown."""
        if self._layout is None or name not in self._layout.nodes:
            return False
        self._auto_view = False
        self._show_selection(name)
        box = self._layout.nodes[name]
        self.centerOn(box.x + box.w / 2, box.y + box.h / 2)
        return True

    def clear_selection(self) -> None:
        self._selected = None
        if self._highlight is not None:
            self._highlight.hide()

    def _show_selection(self, name: str) -> None:
        assert self._layout is not None and self._highlight is not None
        box = self._layout.nodes[name]
        path = QPainterPath()
        grow = 3.0
        radius = box.h / 2 + grow if box.kind != "op" else 7.0
        path.addRoundedRect(QRectF(box.x - grow, box.y - grow, box.w + 2 * grow, box.h + 2 * grow), radius, radius)
        self._highlight.setPath(path)
        self._highlight.show()
        self._selected = name

    def find(self, text: str) -> str | None:
        """Select and centre the first node whose op type equals ``text`` or whose name (or
        terminal tensor name) contains it, case-insensitively, in reading order (top to
        bottom); emits ``node_selected``. Returns the name, or None when nothing matches."""
        self._matches, self._match_index = [], -1
        query = text.strip().lower()
        if self._layout is None or not query:
            return None
        nodes = self._layout.nodes
        self._matches = [
            n for n in self._layout.node_order
            if nodes[n].op_type.lower() == query or query in n.lower() or query in nodes[n].label.lower()
        ]
        return self.find_next()

    def find_next(self) -> str | None:
        """The next match of the last :meth:`find` (wrapping around), selected and centred."""
        if not self._matches:
            return None
        self._match_index = (self._match_index + 1) % len(self._matches)
        name = self._matches[self._match_index]
        self.select_node(name)
        self.node_selected.emit(name)
        return name

    @property
    def match_count(self) -> int:
        return len(self._matches)

    def node_at(self, view_pos: QPointF) -> str | None:
        """The node under a viewport position, or None."""
        for item in self.items(view_pos.toPoint()):
            if item.data(ROLE_KIND) == "node":
                return str(item.data(ROLE_NAME))
        return None

    # ------------------------------------------------------------------ zoom, pan, fit
    def fit(self) -> None:
        """Show the whole graph (below the legend when the legend would cover it)."""
        self._auto_view = False
        if self._layout is None:
            return
        rect = QRectF(self._base_rect)
        for _ in range(3):  # the room the legend needs depends on the zoom it gives
            self.scene().setSceneRect(rect)
            self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
            wanted = self._base_rect.adjusted(0, -self._legend_room(), 0, 0)
            if abs(wanted.top() - rect.top()) < 1.0:
                break
            rect = wanted
        self._after_zoom()

    def _legend_room(self) -> float:
        """Scene units to add above the graph so that the legend (drawn over the view's
        top-left corner) does not cover the graph's top at the current zoom; 0 when the
        graph is clear of it horizontally."""
        if self._layout is None or self._legend.isHidden():
            return 0.0
        z = max(self.zoom, 1e-9)
        left = self.mapFromScene(QPointF(0.0, 0.0)).x()
        if left >= self._legend.x() + self._legend.width() + LEGEND_GAP:
            return 0.0
        return (self._legend.y() + self._legend.height() + LEGEND_GAP) / z

    def reset_view(self) -> None:
        """Fit when the whole graph stays readable; otherwise zoom 1 at the top of the graph."""
        if self._layout is None:
            return
        self.fit()
        self._auto_view = True
        if self.zoom >= DETAIL_MIN_SCALE or not self._layout.node_order:
            return
        vw = max(1, self.viewport().width())
        scale = min(1.0, max(DETAIL_MIN_SCALE, vw / self._base_rect.width()))
        self.resetTransform()
        self.scale(scale, scale)
        self._after_zoom()
        first = self._layout.nodes[self._layout.node_order[0]]
        self.centerOn(first.x + first.w / 2, first.y)
        rect = self._base_rect.adjusted(0, -self._legend_room(), 0, 0)
        self.scene().setSceneRect(rect)
        self.centerOn(first.x + first.w / 2, rect.top() + self.viewport().height() / (2 * scale))

    @property
    def zoom(self) -> float:
        """Current scale: view pixels per scene unit."""
        return float(self.transform().m11())

    def zoom_by(self, factor: float) -> None:
        """Multiply the zoom by ``factor`` (clamped), keeping the point under the mouse."""
        self._auto_view = False
        target = min(MAX_SCALE, max(MIN_SCALE, self.zoom * factor))
        factor = target / self.zoom
        if abs(factor - 1.0) > 1e-9:
            self.scale(factor, factor)
            self._after_zoom()

    def _after_zoom(self) -> None:
        """Level of detail: labels only where they can be read."""
        z = self.zoom
        if self._labels is not None:
            self._labels.setVisible(z >= OP_LABEL_MIN_SCALE)
        if self._details is not None:
            self._details.setVisible(z >= DETAIL_MIN_SCALE)

    @property
    def labels_visible(self) -> bool:
        return self._labels is not None and self._labels.isVisible()

    # ------------------------------------------------------------------ events
    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta == 0:
            super().wheelEvent(event)
            return
        self.zoom_by(1.0015 ** delta)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.25)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(0.8)
        elif key == Qt.Key.Key_0:
            self.fit()
        elif key == Qt.Key.Key_F3:
            self.find_next()
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            name = self.node_at(event.position())
            if name is not None:
                self._show_selection(name)
                self._node_press = True
                self.node_selected.emit(name)
                event.accept()
                return
        self._node_press = False
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._node_press and event.button() == Qt.MouseButton.LeftButton:
            self._node_press = False  # the press selected a node: no drag to finish
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._legend.move(10, 10)
        if self._auto_view:  # laid out before the window had its size: frame it again
            self.reset_view()


def _add_curve(path: QPainterPath, pts: list[tuple[float, float]], start: int) -> None:
    """Append ``pts[start:]`` to ``path``: vertical runs straight, bends as S-curves whose
    tangents are vertical at both ends (what an edge leaving a box downward looks like)."""
    x0, y0 = pts[start]
    path.moveTo(x0, y0)
    for x1, y1 in pts[start + 1:]:
        if x1 == x0:
            path.lineTo(x1, y1)
        else:
            ym = (y0 + y1) / 2
            path.cubicTo(x0, ym, x1, ym, x1, y1)
        x0, y0 = x1, y1
