"""The main window: graph, layer table and detail panels over one :class:`Session`.

Layout: a toolbar with the quantization settings and the NPU profile; under it a banner for
messages (never a modal dialog); a welcome page until a model is open, then the workspace:
the graph on the left, two tab groups of detail panels (per layer, per model) on the right
above the layer table. The status bar holds the calibration data in use, a progress bar and
a Cancel button.

Everything slow (loading + layout, the NPU report, calibration + analysis) runs in worker
threads (:mod:`inspector.workers`); results replace what is shown only when they arrive, so
a re-run or a cancelled job leaves the previous state on screen. Showing a result is split
into steps, one panel per event-loop turn (and the graph scene is built in slices), so the UI
thread never stays busy for long (the window repaints and answers input between steps). Selection is shared: a node
picked in the graph, the table or any panel is selected everywhere else without feedback
loops (each target is told without emitting).

Opening things: drop files anywhere on the window (an ``.onnx`` opens, an ``.npz``/``.npy``
or a folder of images becomes the calibration data), File > Open, the recent-files list
(kept in QSettings) or the welcome page's samples.

Symbolic dimensions: a batch-like one (first axis of the inputs) is bound to 1 when the model
opens (the status bar says "batch=1 assumed"); others (e.g. a sequence length) are bound in
the toolbar's Dims box (``seq=128, ...``), which reloads the model with them.
"""

from __future__ import annotations

import functools
import html
import math
import os
import re
from collections import deque
from typing import Any, Callable, Iterable, Sequence, TypeVar

from PySide6.QtCore import QEvent, QSettings, QSize, Qt, QThreadPool, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTextBrowser,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ModelError
from engine.samples import SAMPLES, get_sample
from inspector.session import (
    ACTIVATION_DTYPES,
    DEFAULT_PROFILE,
    METHODS,
    CalibSource,
    LoadedModel,
    QuantSettings,
    Session,
    analysis_job,
    classify_path,
    format_dims,
    load_model_job,
    npu_job,
    parse_dims,
)
from inspector.workers import JobRunner, MainThreadGC, error_message
from widgets.distribution import DistributionData, DistributionPanel
from widgets.error_panel import ErrorPanel
from widgets.findings import FindingsPanel
from widgets.fusion_panel import FusionPanel
from widgets.graph_view import SYNC_BUILD_NODES, GraphView
from widgets.layer_table import LayerTable
from widgets.roofline import RooflinePanel
from widgets.timeline import TimelinePanel
from widgets.welcome import WelcomeView

MAX_RECENT = 8
RUN_TIP = "Calibrate and measure the int8 error of every layer (F5)"
SMALL_MODEL_NODES = SYNC_BUILD_NODES
"""Results of models with at most this many nodes are shown at once, bigger ones in steps."""
PROGRESS_STEPS = 1000
GRAPH_SHARE = 0.25
PANELS_SHARE = 0.56
LAYER_TABS_SHARE = 0.52
WEIGHT_HIST_BINS = 128
"""Bins of a weight's value histogram in the distribution panel."""
WEIGHT_HIST_MAX = 1 << 20
"""Weights with more elements are histogrammed on an evenly strided subset of this size."""
ORGANIZATION = "deployment-inspector"
APPLICATION = "inspector"

JOB_TEXT = {"load": "Loading model", "npu": "NPU report", "analysis": "Quantization analysis"}

SQNR_COLOR_RANGE_DB = (15.0, 45.0)
"""Fixed colour scale of the SQNR metrics (dB): red at 15 dB and below, blue from 45 dB; the
layer table tints under 20 dB red and under 30 dB amber, which fall at the warm end."""
# colour-by choices: (label, row attribute or "" for op type, higher_is_better)
COLOR_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("op type", "", True),
    ("SQNR isolated (dB)", "sqnr_db_isolated", True),
    ("SQNR accumulated (dB)", "sqnr_db", True),
    ("clip %", "clip_fraction", False),
    ("est. time (µs)", "est_ns", False),
    ("bound", "bound", True),
    ("int8 path", "path", True),
)

_BANNER_STYLES = {
    "error": "background:#fdecea; color:#8a1c12; border:1px solid #e8a39b;",
    "warning": "background:#fff6e0; color:#7a5200; border:1px solid #e3c27a;",
    "info": "background:#e8f1fb; color:#1c4a7a; border:1px solid #9fc0e6;",
}

F = TypeVar("F", bound=Callable[..., Any])


def export_report_job(path: str, model: Any, result: Any, npu_report: Any, page_size: str,
                      json_path: str | None, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """Worker job: the deployment document of what the window shows, written as the report.
    Runs off the UI thread (the report draws with QPainter/QPdfWriter only, never a QWidget)."""
    from engine.deployment import deployment_document
    from inspector.report import write_report

    doc = deployment_document(model, result, npu_report)
    return write_report(path, model, result, npu_report, doc, page_size, progress, json_path=json_path, cancel=cancel)


def guarded(method: F) -> F:
    """Run a UI-thread callback; an unexpected exception becomes a banner message, never a crash."""

    @functools.wraps(method)
    def wrapper(self: "MainWindow", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (last resort for UI callbacks)
            if os.environ.get("INSPECTOR_DEBUG"):
                import traceback

                traceback.print_exc()
            self.show_message(error_message(exc), "error")
            return None

    return wrapper  # type: ignore[return-value]


PRELOADED_MODULES = (
    "engine.cost", "engine.summary", "engine.layout", "engine.timeline", "engine.calibrate", "engine.analysis",
    "engine.findings", "engine.int8.executor", "engine.int8.qdq", "engine.int8.qtensor", "inspector.profiles",
    "numpy.random",  # synthetic calibration data
)


def preload_engine() -> None:
    """Import the engine modules the workers use, once, on the UI thread: importing them
    inside a worker holds the GIL (and the import lock) for long stretches while the window
    is up. A module that fails to import is left for the worker, which reports the error."""
    import importlib

    for name in PRELOADED_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (reported when a job needs the module)
            continue


def _fmt_count(n: float) -> str:
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= limit:
            return f"{n / limit:.2f}{suffix}"
    return f"{int(n)}"


def _fmt_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _fmt_db(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v) or v >= 300:
        return "exact"
    return f"{v:.1f} dB"


def _fmt_shape(shape: Sequence[Any] | None) -> str:
    """``1×64×8×8``; dimensions ONNX shape inference named itself (``unk__12``) show as ``?``."""
    if shape is None:
        return "?"
    if not shape:
        return "scalar"
    return "×".join("?" if isinstance(d, str) and d.startswith("unk__") else str(d) for d in shape)


def _e(text: Any) -> str:
    return html.escape(str(text))


_HTML_STYLE = """
<style>
 body { font-size: 9.5pt; }
 h3 { margin: 0 0 4px 0; }
 table { border-collapse: collapse; }
 td { padding: 1px 10px 1px 0; vertical-align: top; }
 td.k { color: #6b7280; white-space: nowrap; }
 .muted { color: #6b7280; }
 .bad { color: #b42318; font-weight: bold; }
 .warn { color: #9a6700; }
</style>
"""


def _rows_html(rows: Iterable[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><td class='k'>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


class SummaryPanel(QTextBrowser):
    """The model at a glance: file facts, the analysis' outputs (accuracy), the NPU totals."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.text_facts: dict[str, str] = {}

    def clear(self) -> None:
        """No model."""
        self.setHtml(_HTML_STYLE + "<p class='muted'>No model open.</p>")

    def show_session(self, s: Session) -> None:
        if s.loaded is None:
            self.clear()
            return
        info = s.loaded.info
        facts: list[tuple[str, str]] = [
            ("file", _e(info.path)),
            ("nodes", f"{info.nodes:,}"),
            ("opset", f"{info.opset} (IR {info.ir_version})"),
            ("producer", _e(info.producer or "–")),
            ("parameters", f"{info.params:,} ({_fmt_bytes(info.param_bytes)})"),
            ("MACs", f"{_fmt_count(info.macs)} per sample" if s.loaded.assumed else _fmt_count(info.macs)),
        ]
        dims = s.loaded.dims_text()
        if dims:
            unbound = s.loaded.unbound
            note = (f" <span class='warn'>(set {', '.join(unbound)} in the Dims box to analyse)</span>"
                    if unbound else "")
            facts.append(("dimensions", _e(dims) + note))
        for t in info.inputs:
            facts.append(("input", f"{_e(t.name)} {_fmt_shape(t.shape)} {_e(t.dtype)}"))
        for t in info.outputs:
            facts.append(("output", f"{_e(t.name)} {_fmt_shape(t.shape)} {_e(t.dtype)}"))
        if info.unsupported_ops:
            facts.append(("unsupported", f"<span class='bad'>{_e(', '.join(sorted(info.unsupported_ops)))}</span>"))
        parts = [_HTML_STYLE, f"<h3>{_e(os.path.basename(info.path))}</h3>", _rows_html(facts)]

        a = s.analysis
        if a is not None:
            cal = a.calibration
            settings = s.analysis_settings.describe() if s.analysis_settings else ""
            if cal.get("method") == "qdq":
                cal_text = "scales read from the model's QuantizeLinear/DequantizeLinear nodes"
            elif cal.get("synthetic"):
                cal_text = f"<span class='warn'>SYNTHETIC random data</span>, {cal.get('samples')} samples"
            else:
                cal_text = f"{_e(cal.get('data'))}, {cal.get('samples')} samples"
            ev = a.evaluation
            ev_text = ("<span class='warn'>synthetic data</span>" if ev.get("synthetic") else _e(ev.get("data")))
            rows = [("scheme", _e(settings)), ("calibration", cal_text), ("evaluation", f"{ev_text}, {ev.get('samples')} samples")]
            for o in a.outputs:
                line = f"SQNR {_fmt_db(o.error.sqnr_db)}, cosine {o.error.cosine:.5f}"
                if o.top1_agreement is not None:
                    line += f", top-1 agreement {100 * o.top1_agreement:.2f}%"
                if o.accuracy_float is not None and o.accuracy_int8 is not None:
                    line += (f"<br>accuracy float {100 * o.accuracy_float:.2f}% → int8 "
                             f"<b>{100 * o.accuracy_int8:.2f}%</b> ({o.labelled} labelled)")
                rows.append((f"output {o.name}", line))
            high = sum(1 for f in a.findings if f.severity == "high")
            rows.append(("findings", f"{len(a.findings)}" + (f" (<span class='bad'>{high} high</span>)" if high else "")))
            parts += ["<h3 style='margin-top:10px'>int8 analysis</h3>", _rows_html(rows)]
        if s.npu is not None:
            r = s.npu
            unfused, fused = r.timeline_unfused.total_ns, r.timeline.total_ns
            saved = 100.0 * (1 - fused / unfused) if unfused > 0 else 0.0
            rows = [
                ("profile", _e(r.profile.name)),
                ("timeline", f"{unfused / 1e3:,.1f} µs unfused → <b>{fused / 1e3:,.1f} µs</b> fused ({saved:.0f}% less)"),
                ("fusions", f"{len(r.fusions.fusions)} chosen, {len(r.fusions.rejected)} rejected"),
            ]
            bounds = [layer.bound for layer in r.layers]
            rows.append(("bound", f"{bounds.count('memory')} memory-bound, {bounds.count('compute')} compute-bound ops"))
            parts += ["<h3 style='margin-top:10px'>NPU</h3>", _rows_html(rows)]
        self.setHtml("".join(parts))


class NodePanel(QTextBrowser):
    """Everything known about the selected node (inputs, cost, NPU estimate, int8 error, findings)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.node: str | None = None
        self.clear()

    def clear(self) -> None:
        """No node selected."""
        self.node = None
        self.setHtml(_HTML_STYLE + "<p class='muted'>Select a node in the graph or the table.</p>")

    def show_node(self, s: Session, name: str | None) -> None:
        self.node = name
        model = s.model
        if model is None or name is None:
            self.setHtml(_HTML_STYLE + "<p class='muted'>Select a node in the graph or the table.</p>")
            return
        node = next((n for n in model.graph.nodes if n.name == name), None)
        if node is None:  # a graph input/output terminal
            self.setHtml(_HTML_STYLE + f"<h3>{_e(name)}</h3><p class='muted'>graph input or output</p>")
            return
        g = model.graph
        rows: list[tuple[str, str]] = [("op type", _e(node.qualified_op))]
        for i in node.inputs:
            if not i:
                continue
            t = g.tensor(i)
            kind = "weight" if i in g.weights else "input"
            rows.append((kind, f"{_e(i)} <span class='muted'>{_fmt_shape(t.shape)} {_e(t.dtype or '')}</span>"))
        for o in node.outputs:
            if o:
                t = g.tensor(o)
                rows.append(("output", f"{_e(o)} <span class='muted'>{_fmt_shape(t.shape)} {_e(t.dtype or '')}</span>"))
        if node.attrs:
            attrs = ", ".join(f"{k}={_e(_short_attr(v))}" for k, v in sorted(node.attrs.items()))
            rows.append(("attributes", attrs))
        row = s.row(name)
        if row is not None:
            if row.macs is not None:
                rows.append(("MACs", _fmt_count(row.macs)))
            if row.dram_bytes is not None:
                where = "on the NPU (int8)" if s.npu is not None else "at int8"
                rows.append(("DRAM traffic", f"{_fmt_bytes(row.dram_bytes)} {where}"))
            if row.est_ns is not None:
                rows.append(("est. time", f"{row.est_ns / 1e3:,.3f} µs, {row.bound}-bound"))
        if s.npu is not None:
            est = next((e for e in s.npu.layers if e.name == name), None)
            if est is not None:
                rows.append(("NPU unit", f"{_e(est.unit)} (lane {_e(est.lane)})"))
            fusion = s.fusion_of(name)
            if fusion is not None:
                rows.append(("fusion", f"{_e(fusion.pattern)}: {len(fusion.nodes)} nodes, saves "
                                       f"{fusion.est_ns_saved / 1e3:,.3f} µs, {_fmt_bytes(fusion.dram_bytes_saved)}"))
        parts = [_HTML_STYLE, f"<h3>{_e(name)}</h3>", _rows_html(rows)]
        a = s.analysis
        if a is not None:
            layer = next((layer for layer in a.layers if layer.name == name), None)
            if layer is not None:
                q: list[tuple[str, str]] = [("int8 path", _e(layer.path or "–"))]
                if layer.note:  # why it took that path, or the fused unit it runs in
                    q.append(("note", _e(layer.note)))
                inner = bool(layer.unit) and layer.isolated is None and layer.accumulated is None
                for label, summary in (("isolated", layer.isolated), ("accumulated", layer.accumulated)):
                    if summary is None:
                        continue
                    cls = "bad" if summary.sqnr_db < 20 else ("warn" if summary.sqnr_db < 30 else "")
                    q.append((label, f"<span class='{cls}'>SQNR {_fmt_db(summary.sqnr_db)}</span>, cosine "
                                     f"{summary.cosine:.5f}, max |err| {summary.max_abs_err:.4g}, clipped "
                                     f"{100 * summary.clip_fraction:.3f}%"))
                for o in layer.outputs if not inner else []:  # a unit's inner output is never quantized
                    qp = a.plan.activations.get(o)
                    if qp is not None and not qp.per_channel:
                        q.append(("output scale", f"{float(qp.scale):.6g}, zero point {int(qp.zero_point)} "
                                                  f"({_e(qp.dtype)})"))
                parts += ["<h3 style='margin-top:10px'>int8 error</h3>", _rows_html(q)]
            found = s.findings_of(name)
            if found:
                items = "".join(f"<li><b>[{_e(f.severity)}]</b> {_e(f.text)}</li>" for f in found)
                parts.append(f"<h3 style='margin-top:10px'>findings</h3><ul style='margin-left:-20px'>{items}</ul>")
        self.setHtml("".join(parts))


def _short_attr(value: Any) -> str:
    text = str(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 60 else text[:57] + "..."


class Banner(QFrame):
    """A message over the bottom of the window's content (error, warning or info), with a
    close button. It floats above the workspace instead of taking layout space, so showing it
    never re-lays out (and repaints) the graph and the plots; at the bottom it covers table
    rows that scroll, never the toolbar or the tab bars."""

    MAX_WIDTH = 980

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = self.close_button = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 7, 6, 7)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        # no QGraphicsDropShadowEffect: rendering through an effect lays out every hidden tab
        # page of the window the first time, a long stall of the UI thread
        self.kind = ""
        self.hide()
        parent.installEventFilter(self)

    def show_message(self, text: str, kind: str = "error") -> None:
        if kind != self.kind:
            self.kind = kind
            self.setStyleSheet(f"QFrame#banner {{{_BANNER_STYLES.get(kind, _BANNER_STYLES['info'])} "
                               f"border-radius: 6px;}} QLabel {{ background: transparent; border: none; }}")
        self.label.setText(text)
        self._place()
        self.show()
        self.raise_()

    def _place(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        width = min(self.MAX_WIDTH, parent.width() - 24)
        m = self.layout().contentsMargins()
        label_width = width - m.left() - m.right() - self.close_button.sizeHint().width() - self.layout().spacing()
        height = max(self.label.heightForWidth(label_width), self.close_button.sizeHint().height())
        total = height + m.top() + m.bottom()
        self.setGeometry((parent.width() - width) // 2, max(8, parent.height() - total - 10), width, total)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        if obj is self.parentWidget() and event.type() == QEvent.Type.Resize and self.isVisible():
            self._place()
        return False


def _collect_soon() -> None:
    """Ask the UI-thread garbage collector for a full pass at its next tick (no-op without it)."""
    collector = MainThreadGC.installed()
    if collector is not None:
        collector.request_full()


class MainWindow(QMainWindow):
    """The inspector's window. ``selection_changed(name)`` after every selection change."""

    selection_changed = Signal(str)
    model_loaded = Signal(str)
    analysis_finished = Signal()
    npu_finished = Signal()

    def __init__(self, settings: QSettings | None = None, pool: QThreadPool | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Deployment Inspector")
        self.setAcceptDrops(True)
        # closing deletes the window: its panels' slots are lambdas that hold it, connected
        # from C++ (invisible to Python's collector), so a closed window would otherwise
        # live, with its model and results, as long as the process
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        preload_engine()
        self.settings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)
        self.session = Session(settings=QuantSettings(profile=self._initial_profile()))
        self.jobs = JobRunner(pool, self)
        self.jobs.progress.connect(self._on_progress)
        self.jobs.busy_changed.connect(self._on_busy)
        self._pending_calib: CalibSource | None = None
        self._selected: str | None = None
        self._auto_color = True
        self._settings_dirty = False
        # results are shown in steps, one per event-loop turn: (model the step belongs to, step)
        self._steps: deque[tuple[Any, Callable[[], None]]] = deque()
        self._step_timer = QTimer(self)
        self._step_timer.setInterval(0)
        self._step_timer.timeout.connect(self._run_step)
        self._after_graph: Callable[[], None] | None = None  # runs once the graph scene is built

        self._build_panels()
        self._build_workspace()
        self._build_toolbar()
        self._build_menus()
        self._build_statusbar()

        self.welcome = WelcomeView([(s.name, s.description) for s in SAMPLES.values()])
        self.welcome.open_requested.connect(self.open_dialog)
        self.welcome.sample_requested.connect(self.open_sample)
        self.welcome.recent_requested.connect(self.open_path)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.workspace)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 4, 6, 0)
        lay.setSpacing(4)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.banner = Banner(central)
        self._refresh_recent()
        self._update_actions()
        self.resize(1500, 940)
        for w in (self.progress_label, self.progress, self.cancel_button):
            # paint each once now: the first paint of a widget made in Python asks for the
            # GIL many times (PySide looks up Python overrides once per method), which costs
            # tens of ms when it happens beside a running worker (they show when one starts)
            w.grab()

    # ================================================================== construction
    def _build_panels(self) -> None:
        self.graph = GraphView()
        self.graph.node_selected.connect(lambda n: self.select_node(n, "graph"))
        self.graph.build_finished.connect(self._on_graph_built)
        self.graph.viewport().setAcceptDrops(False)  # file drops go to the window
        self.table = LayerTable()
        self.table.node_selected.connect(lambda n: self.select_node(n, "table"))
        self.table.filter_edit.setAcceptDrops(False)
        self.node_panel = NodePanel()
        self.summary_panel = SummaryPanel()

        # detail panels: each takes analysis or NPU data, has select_node(name) (no signal) and
        # emits node_selected(name) (the fusion panel: fusion_selected(nodes)) on a user click
        self.panels: dict[str, QWidget] = {
            "distribution": DistributionPanel(),
            "error": ErrorPanel(),
            "findings": FindingsPanel(),
            "fusions": FusionPanel(),
            "timeline": TimelinePanel(),
            "roofline": RooflinePanel(),
        }
        for key in ("error", "findings", "timeline", "roofline"):
            self.panels[key].node_selected.connect(lambda n, k=key: self.select_node(n, k))  # type: ignore[attr-defined]
        self.panels["fusions"].fusion_selected.connect(lambda nodes: self._on_group_selected(list(nodes), "fusions"))

    def _build_workspace(self) -> None:
        self.layer_tabs = QTabWidget()
        self.layer_tabs.setDocumentMode(True)
        self.tensor_box = QComboBox()
        self.tensor_box.setToolTip("Which tensor of the selected node to show: an output activation or a weight")
        self.tensor_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.tensor_box.currentIndexChanged.connect(self._on_tensor_chosen)
        holder = QWidget()
        hl = QVBoxLayout(holder)
        hl.setContentsMargins(0, 4, 0, 0)
        hl.setSpacing(0)
        self.tensor_row = QWidget()
        row = QHBoxLayout(self.tensor_row)
        row.setContentsMargins(6, 0, 6, 0)
        row.addWidget(QLabel("Tensor"))
        row.addWidget(self.tensor_box)
        row.addStretch(1)
        hl.addWidget(self.tensor_row)
        hl.addWidget(self.panels["distribution"], 1)
        self.layer_tabs.addTab(holder, "Distribution")
        self.layer_tabs.addTab(self.node_panel, "Node")

        self.model_tabs = QTabWidget()
        self.model_tabs.setDocumentMode(True)
        for key, title in (("error", "Error"), ("findings", "Findings"), ("timeline", "Timeline"),
                           ("roofline", "Roofline"), ("fusions", "Fusions")):
            self.model_tabs.addTab(self.panels[key], title)
        self.model_tabs.addTab(self.summary_panel, "Model")

        self.panel_split = QSplitter(Qt.Orientation.Horizontal)
        self.panel_split.addWidget(self.layer_tabs)
        self.panel_split.addWidget(self.model_tabs)
        self.panel_split.setChildrenCollapsible(False)

        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.addWidget(self.panel_split)
        self.right_split.addWidget(self.table)
        self.right_split.setChildrenCollapsible(False)

        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(self.graph)
        self.main_split.addWidget(self.right_split)
        self.main_split.setChildrenCollapsible(False)
        self.workspace = self.main_split
        self._sized = False

    def _apply_default_sizes(self) -> None:
        """Splitter sizes as fractions of the window (GRAPH_SHARE of the width, PANELS_SHARE of
        the right side's height above the table)."""
        w = max(800, self.main_split.width())
        h = max(500, self.right_split.height())
        gw = int(w * GRAPH_SHARE)
        self.main_split.setSizes([gw, w - gw])
        ph = int(h * PANELS_SHARE)
        self.right_split.setSizes([ph, h - ph])
        rw = w - gw
        lw = int(rw * LAYER_TABS_SHARE)
        self.panel_split.setSizes([lw, rw - lw])
        self._sized = True

    def _build_toolbar(self) -> None:
        tb = QToolBar("Settings")
        tb.setObjectName("settings-toolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(16, 16))
        self.addToolBar(tb)
        self.toolbar = tb

        self.open_action = QAction("Open…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.setToolTip("Open an ONNX model (or drop one on the window)")
        self.open_action.triggered.connect(self.open_dialog)
        tb.addAction(self.open_action)
        self.calib_action = QAction("Calibration data…", self)
        self.calib_action.setToolTip("Choose calibration data: .npz/.npy (one array per model input)")
        self.calib_action.triggered.connect(self.calibration_dialog)
        tb.addAction(self.calib_action)
        tb.addSeparator()

        def label(text: str) -> QLabel:
            lab = QLabel(text)
            lab.setContentsMargins(6, 0, 3, 0)
            return lab

        s = self.session.settings
        tb.addWidget(label("Scheme"))
        self.dtype_box = QComboBox()
        self.dtype_box.addItems(list(ACTIVATION_DTYPES))
        self.dtype_box.setToolTip("Activation type (weights are int8)")
        self.dtype_box.setCurrentText(s.activation_dtype)
        tb.addWidget(self.dtype_box)
        self.symmetric_box = QCheckBox("symmetric")
        self.symmetric_box.setChecked(s.symmetric)
        self.symmetric_box.setToolTip("Symmetric activation ranges (zero point 0, or 128 for uint8)")
        tb.addWidget(self.symmetric_box)
        self.per_channel_box = QCheckBox("per-channel")
        self.per_channel_box.setChecked(s.per_channel)
        self.per_channel_box.setToolTip("Weight scales per output channel (else one per tensor)")
        tb.addWidget(self.per_channel_box)
        tb.addWidget(label("Method"))
        self.method_box = QComboBox()
        self.method_box.addItems(list(METHODS))
        self.method_box.setCurrentText(s.method)
        self.method_box.setToolTip("How activation ranges are chosen from the calibration histograms")
        tb.addWidget(self.method_box)
        self.float_ops_button = QToolButton()
        self.float_ops_button.setText("Float ops")
        self.float_ops_button.setToolTip("Op types kept in float by the int8 model (and run on the NPU's float unit or host)")
        self.float_ops_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.float_ops_menu = QMenu(self.float_ops_button)
        self.float_ops_button.setMenu(self.float_ops_menu)
        tb.addWidget(self.float_ops_button)
        self.run_button = QPushButton("Run analysis")
        self.run_button.setToolTip(RUN_TIP)
        self.run_button.clicked.connect(self.run_analysis)
        tb.addWidget(self.run_button)
        tb.addSeparator()
        tb.addWidget(label("NPU"))
        self.profile_box = QComboBox()
        self.profile_box.setToolTip("NPU profile of the roofline, fusions and timeline ('host' measures this machine)")
        self.profile_box.addItems(self._profile_names())
        self.profile_box.setCurrentText(s.profile)
        tb.addWidget(self.profile_box)
        tb.addWidget(label("Dims"))
        self.dims_edit = QLineEdit()
        self.dims_edit.setPlaceholderText("no symbolic dims")
        self.dims_edit.setToolTip(
            "Symbolic dimensions of the model's inputs, e.g. seq=128, batch=4 (Enter reloads the model with "
            "them). A batch dimension left empty is taken as 1.")
        self.dims_edit.setAcceptDrops(False)
        self.dims_edit.setMaximumWidth(210)
        self.dims_edit.setEnabled(False)
        self.dims_edit.returnPressed.connect(self._on_dims_entered)
        tb.addWidget(self.dims_edit)
        tb.addSeparator()
        tb.addWidget(label("Colour"))
        self.color_box = QComboBox()
        self.color_box.addItems([m[0] for m in COLOR_METRICS])
        self.color_box.setToolTip("What the graph's node colours show")
        tb.addWidget(self.color_box)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Find node (Ctrl+F)")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setAcceptDrops(False)
        self.search_edit.setMaximumWidth(220)
        self.search_edit.returnPressed.connect(self._on_search)
        spacer = QWidget()
        spacer.setMinimumWidth(8)
        tb.addWidget(spacer)
        tb.addWidget(self.search_edit)

        self.dtype_box.currentTextChanged.connect(self._on_settings_changed)
        self.symmetric_box.toggled.connect(self._on_settings_changed)
        self.per_channel_box.toggled.connect(self._on_settings_changed)
        self.method_box.currentTextChanged.connect(self._on_settings_changed)
        self.profile_box.currentTextChanged.connect(self.set_profile)
        self.color_box.currentTextChanged.connect(self._on_color_chosen)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        samples_menu = file_menu.addMenu("Open &Sample")
        for name in SAMPLES:
            act = samples_menu.addAction(name)
            act.triggered.connect(lambda _=False, n=name: self.open_sample(n))
        file_menu.addSeparator()
        file_menu.addAction(self.calib_action)
        folder = file_menu.addAction("Calibration Image &Folder…")
        folder.triggered.connect(self.calibration_folder_dialog)
        file_menu.addSeparator()
        self.export_action = file_menu.addAction("&Export Report…")
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.triggered.connect(self.export_report_dialog)
        shot = file_menu.addAction("Save &Screenshot…")
        shot.triggered.connect(self._screenshot_dialog)
        file_menu.addSeparator()
        quit_action = file_menu.addAction("&Quit")
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)

        analysis_menu = bar.addMenu("&Analysis")
        self.run_action = analysis_menu.addAction("&Run Analysis")
        self.run_action.setShortcuts([QKeySequence("F5"), QKeySequence("Ctrl+R")])
        self.run_action.triggered.connect(self.run_analysis)
        self.cancel_action = analysis_menu.addAction("&Cancel")
        self.cancel_action.setShortcut(QKeySequence("Esc"))
        self.cancel_action.triggered.connect(self.cancel_jobs)
        self.addAction(self.run_action)
        self.addAction(self.cancel_action)

        view_menu = bar.addMenu("&View")
        fit = view_menu.addAction("&Fit Graph")
        fit.setShortcut(QKeySequence("Ctrl+0"))
        fit.triggered.connect(self.graph.fit)
        find = view_menu.addAction("&Find Node")
        find.setShortcut(QKeySequence.StandardKey.Find)
        find.triggered.connect(lambda: (self.search_edit.setFocus(), self.search_edit.selectAll()))
        self.addAction(find)
        filt = view_menu.addAction("Filter &Layers")
        filt.setShortcut(QKeySequence("Ctrl+L"))
        filt.triggered.connect(lambda: self.table.filter_edit.setFocus())
        view_menu.addSeparator()
        home = view_menu.addAction("&Welcome Page")
        home.triggered.connect(lambda: self.stack.setCurrentWidget(self.welcome))
        back = view_menu.addAction("&Workspace")
        back.triggered.connect(self._show_workspace)

        help_menu = bar.addMenu("&Help")
        about = help_menu.addAction("&About")
        about.triggered.connect(self._about)

    def _build_statusbar(self) -> None:
        sb = self.statusBar()
        self.calib_label = QLabel()
        self.calib_label.setToolTip("Calibration data of the next analysis")
        self.progress_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, PROGRESS_STEPS)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running jobs; what is shown stays (Esc)")
        self.cancel_button.clicked.connect(self.cancel_jobs)
        sb.addPermanentWidget(self.progress_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        self.dims_label = QLabel()
        self.dims_label.setToolTip("Symbolic dimensions of the open model and the values in use "
                                   "(\"assumed\": bound by the inspector; change them in the toolbar's Dims box)")
        sb.addPermanentWidget(self.dims_label)
        sb.addPermanentWidget(self.calib_label)
        for w in (self.progress_label, self.progress, self.cancel_button):
            # hidden widgets keep their place: showing them must not resize the status bar,
            # which would re-lay out (and repaint) every plot above it
            policy = w.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            w.setSizePolicy(policy)
        self.progress_label.setMinimumWidth(260)
        self.progress_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.progress.hide()
        self.progress_label.hide()
        self.cancel_button.hide()
        self._update_calib_label()

    # ================================================================== settings helpers
    def _profile_names(self) -> list[str]:
        from engine.npu import HOST, shipped_profiles

        try:
            names = list(shipped_profiles())
        except ModelError:
            names = []
        return names + [HOST]

    def _initial_profile(self) -> str:
        saved = self.settings.value("profile", DEFAULT_PROFILE)
        names = self._profile_names()
        if saved in names:
            return str(saved)
        return DEFAULT_PROFILE if DEFAULT_PROFILE in names else (names[0] if names else DEFAULT_PROFILE)

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        items = [p for p in self.recent_files() if p != path]
        items.insert(0, path)
        self.settings.setValue("recent", items[:MAX_RECENT])
        self.settings.sync()
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        items = self.recent_files()
        self.welcome.set_recent(items)
        self.recent_menu.clear()
        for p in items:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: self.open_path(path))
        self.recent_menu.setEnabled(bool(items))

    def _read_settings(self) -> QuantSettings:
        checked = tuple(a.text() for a in self.float_ops_menu.actions() if a.isCheckable() and a.isChecked())
        return self.session.settings.with_(
            activation_dtype=self.dtype_box.currentText(),
            symmetric=self.symmetric_box.isChecked(),
            per_channel=self.per_channel_box.isChecked(),
            method=self.method_box.currentText(),
            float_ops=checked,
            profile=self.profile_box.currentText() or self.session.settings.profile,
        )

    def _fill_float_ops_menu(self) -> None:
        self.float_ops_menu.clear()
        kept = set(self.session.settings.float_ops)
        for op in sorted(self.session.op_types()):
            act = self.float_ops_menu.addAction(op)
            act.setCheckable(True)
            act.setChecked(op in kept)
            act.toggled.connect(self._on_float_ops_changed)
        self._update_float_ops_text()

    def _update_float_ops_text(self) -> None:
        n = len(self.session.settings.float_ops)
        self.float_ops_button.setText(f"Float ops ({n})" if n else "Float ops")

    def _update_calib_label(self) -> None:
        calib = self.session.calib or self._pending_calib
        if self.session.loaded is None and calib is None:
            self.calib_label.setText("")
            return
        text = calib.label if calib is not None else "synthetic (no calibration data)"
        self.calib_label.setText(f"Calibration: {text}")
        self.calib_label.setStyleSheet("" if calib is not None and not calib.synthetic else "color:#9a6700;")

    def _update_dims(self) -> None:
        """The Dims box and the status bar's dimensions for the open model."""
        loaded = self.session.loaded
        if loaded is None or not loaded.model.symbolic_dims:
            self.dims_edit.setText("")
            self.dims_edit.setPlaceholderText("no symbolic dims")
            self.dims_edit.setEnabled(False)
            self.dims_label.setText("")
            return
        self.dims_edit.setEnabled(True)
        self.dims_edit.setText(format_dims(loaded.dims))
        hints = [f"{d}=…" for d in loaded.unbound] + [f"{d}={v} assumed" for d, v in loaded.assumed.items()]
        self.dims_edit.setPlaceholderText(", ".join(hints) or "e.g. batch=4")
        text = loaded.dims_text()
        self.dims_label.setText(f"Dims: {text}")
        self.dims_label.setStyleSheet("color:#9a6700;" if loaded.unbound else "")

    @guarded
    def _on_dims_entered(self) -> None:
        self.apply_dims(self.dims_edit.text())

    @guarded
    def apply_dims(self, text: str) -> bool:
        """Reload the open model with the symbolic dimensions in ``text`` (``seq=128, ...``);
        False (and a one-line message) when ``text`` does not parse or names no dimension
        of the model. The analysis follows when there was one (or calibration data)."""
        loaded = self.session.loaded
        if loaded is None:
            return False
        try:
            dims = parse_dims(text)
        except ModelError as e:
            self.show_message(str(e), "error")
            return False
        known = loaded.model.symbolic_dims
        unknown = [d for d in dims if d not in known]
        if unknown:
            self.show_message(f"dimensions: the model has no symbolic dimension {', '.join(unknown)} "
                              f"(it has: {', '.join(known) or 'none'})", "error")
            return False
        analyse = self.session.analysis is not None or self.session.calib is not None
        self.open_model(loaded.model.path, sample=loaded.sample, calib=self.session.calib, analyse=analyse,
                        dims=dims)
        return True

    def _update_actions(self) -> None:
        has_model = self.session.loaded is not None
        blocker = self._analysis_blocker() if has_model else None
        self.run_button.setEnabled(has_model and blocker is None)
        self.run_action.setEnabled(has_model and blocker is None)
        self.run_button.setToolTip(blocker or RUN_TIP)
        busy = self.jobs.busy
        self.cancel_action.setEnabled(busy)
        analysing = self.jobs.is_running("analysis")
        if analysing:
            self.run_button.setText("Analysing…")
        elif self.session.analysis is not None and self._settings_dirty:
            self.run_button.setText("Re-run analysis ⟳")
        elif self.session.analysis is not None:
            self.run_button.setText("Re-run analysis")
        else:
            self.run_button.setText("Run analysis")

    # ================================================================== messages
    def show_message(self, text: str, kind: str = "error") -> None:
        """Show ``text`` in the banner (``kind``: error, warning, info) and the status bar."""
        self.banner.show_message(text, kind)
        self._status(text.splitlines()[0] if text else "", 15000)

    def clear_message(self) -> None:
        self.banner.hide()

    @property
    def message(self) -> str:
        """The banner's text ("" when hidden)."""
        return "" if self.banner.isHidden() else self.banner.label.text()

    @property
    def message_kind(self) -> str:
        return "" if self.banner.isHidden() else self.banner.kind

    # ================================================================== opening
    @guarded
    def open_dialog(self) -> None:
        start = os.path.dirname(self.recent_files()[0]) if self.recent_files() else os.getcwd()
        path, _ = QFileDialog.getOpenFileName(self, "Open ONNX model", start, "ONNX models (*.onnx);;All files (*)")
        if path:
            self.open_path(path)

    @guarded
    def calibration_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Calibration data", os.getcwd(), "Arrays (*.npz *.npy);;All files (*)")
        if path:
            self.set_calibration(path)

    @guarded
    def calibration_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of calibration images or arrays", os.getcwd())
        if path:
            self.set_calibration(path)

    @guarded
    def open_path(self, path: str) -> bool:
        """Open a model or use calibration data, by what ``path`` is; False (and a message)
        when it is neither."""
        try:
            kind = classify_path(path)
        except ModelError as e:
            self.show_message(str(e), "error")
            return False
        if kind == "model":
            self.open_model(path)
        else:
            self.set_calibration(path)
        return True

    @guarded
    def open_paths(self, paths: Sequence[str]) -> None:
        """Open several dropped paths: a model first, then calibration data for it."""
        kinds: list[tuple[str, str]] = []
        for p in paths:
            try:
                kinds.append((classify_path(p), p))
            except ModelError as e:
                self.show_message(str(e), "error")
                return
        models = [p for k, p in kinds if k == "model"]
        calibs = [p for k, p in kinds if k == "calib"]
        if len(models) > 1:
            self.show_message(f"dropped {len(models)} models; drop one .onnx file at a time", "error")
            return
        if models:
            calib = CalibSource(os.path.abspath(calibs[0])) if calibs else None
            self.open_model(models[0], calib=calib)  # analyses when there is calibration data
        elif calibs:
            self.set_calibration(calibs[0])

    @guarded
    def open_sample(self, name: str, calib_path: str | None = None) -> None:
        """Open a bundled sample with its calibration set (or ``calib_path``) and its labelled
        validation set; the analysis starts once it is loaded."""
        sample = get_sample(name)
        calib = CalibSource(os.path.abspath(calib_path) if calib_path else str(sample.calib), evaluation=str(sample.val))
        self.open_model(str(sample.model), sample=name, calib=calib, analyse=True)

    @guarded
    def open_model(
        self,
        path: str,
        sample: str | None = None,
        calib: CalibSource | None = None,
        analyse: bool | None = None,
        dims: dict[str, int] | None = None,
    ) -> None:
        """Load ``path`` in the background; what is shown stays until it has loaded.

        ``calib`` (default: calibration data dropped before any model) is used for the
        analysis, which starts by itself when ``analyse`` (default: when there is ``calib``).
        """
        if calib is None and self._pending_calib is not None:
            calib = self._pending_calib
        if analyse is None:
            analyse = calib is not None
        self.clear_message()
        self._status(f"Loading {os.path.basename(path)}…")
        self.jobs.start(
            "load",
            load_model_job,
            path,
            dims,
            sample,
            label=f"Loading {os.path.basename(path)}",
            on_result=lambda loaded: self._on_loaded(loaded, calib, analyse),
            on_error=lambda msg: self._on_job_error("load", msg),
            on_cancel=lambda: self._on_job_cancelled("load"),
        )
        self._update_actions()

    @guarded
    def set_calibration(self, path: str) -> None:
        """Use ``path`` (.npz/.npy or a folder) as calibration data; with a model open, the
        analysis runs at once (the previous result stays until it is done)."""
        from engine.calibrate import data_spec

        data_spec(path)  # ModelError for a missing path, before anything changes
        calib = CalibSource(os.path.abspath(path))
        if self.jobs.is_running("load"):  # meant for the model being opened: used when it is in
            self._pending_calib = calib
            self._update_calib_label()
            self.show_message(f"Calibration data {calib.label} set; the analysis starts when "
                              f"{self.jobs.label('load').removeprefix('Loading ')} has loaded.", "info")
            return
        if self.session.loaded is None:
            self._pending_calib = calib
            self._update_calib_label()
            self.show_message(f"Calibration data {calib.label} set; now open a model.", "info")
            return
        self.session.calib = calib
        self._update_calib_label()
        self._status(f"Calibration data: {calib.label}", 8000)
        self.run_analysis()

    # ================================================================== jobs
    def _analysis_blocker(self) -> str | None:
        """Why the open model cannot be analysed now (one line), or None."""
        loaded = self.session.loaded
        if loaded is None:
            return "Open a model first (drop an .onnx file on the window)."
        name = os.path.basename(loaded.model.path)
        unsupported = loaded.info.unsupported_ops
        if unsupported:
            return (f"{name}: no int8 kernel for {', '.join(sorted(unsupported))}, so the analysis cannot run "
                    "this model; the graph, costs and NPU estimates are shown.")
        if loaded.unbound:
            dims = ", ".join(f"{d}=N" for d in loaded.unbound)
            return (f"{name}: symbolic dimension{'s' if len(loaded.unbound) > 1 else ''} "
                    f"{', '.join(loaded.unbound)} not bound: enter e.g. {dims} in the toolbar's Dims box "
                    "and press Enter to analyse.")
        return None

    @guarded
    def run_analysis(self) -> None:
        """Start (or restart) the quantization analysis with the current settings."""
        model = self.session.model
        blocker = self._analysis_blocker()
        if model is None or blocker is not None:
            self.show_message(blocker or "", "info" if model is None else "warning")
            return
        loaded = self.session.loaded
        assert loaded is not None
        settings = self._read_settings()
        self.session.settings = settings
        calib = self.session.calib or CalibSource(None)
        from engine.analysis import has_qdq

        if calib.synthetic and has_qdq(model):
            self._status("QDQ model: using the scales in its QuantizeLinear/DequantizeLinear nodes", 8000)
        elif calib.synthetic:
            self.show_message(
                "No calibration data: calibrating on SYNTHETIC random data (ranges are not representative). "
                "Drop an .npz or a folder of images on the window to use real data.", "warning")
        self.jobs.start(
            "analysis",
            analysis_job,
            loaded.analysis_model or model,  # assumed batch left free: calibration runs in batches
            calib,
            settings,
            label="Quantization analysis",
            on_result=lambda result: self._on_analysis(result, model, settings),
            on_error=lambda msg: self._on_job_error("analysis", msg),
            on_cancel=lambda: self._on_job_cancelled("analysis"),
        )
        self._update_actions()

    @guarded
    def run_npu(self) -> None:
        """(Re)compute the NPU report on the selected profile; the old one stays until then."""
        model = self.session.model
        if model is None:
            return
        settings = self._read_settings()
        self.session.settings = settings
        self.jobs.start(
            "npu",
            npu_job,
            model,
            settings,
            label=f"NPU report ({settings.profile})",
            on_result=lambda report: self._on_npu(report, model),
            on_error=lambda msg: self._on_job_error("npu", msg),
            on_cancel=lambda: self._on_job_cancelled("npu"),
        )

    def cancel_jobs(self) -> None:
        """Cancel every running job; what is shown stays as it is."""
        if self.jobs.busy:
            self._status("Cancelling…", 3000)
            self.jobs.cancel()

    @guarded
    def set_profile(self, name: str) -> None:
        """Use NPU profile ``name``; the report is recomputed in the background."""
        if not name:
            return
        if self.profile_box.currentText() != name:
            self.profile_box.blockSignals(True)
            self.profile_box.setCurrentText(name)
            self.profile_box.blockSignals(False)
        self.session.settings = self.session.settings.with_(profile=name)
        self.settings.setValue("profile", name)
        self.run_npu()

    # ------------------------------------------------------------------ steps (UI thread)
    def _queue(self, model: Any, *steps: Callable[[], None]) -> None:
        """Run ``steps`` one per event-loop turn, in order after the steps already queued,
        each only while ``model`` is still the open one. For a small model (at most
        SMALL_MODEL_NODES nodes) they all run now: each takes a few ms."""
        self._steps.extend((model, step) for step in steps)
        if model is not None and len(model.graph.nodes) <= SMALL_MODEL_NODES:
            while self._steps:
                self._run_step()
        elif not self._step_timer.isActive():
            self._step_timer.start()

    def _run_step(self) -> None:
        if not self._steps:
            self._step_timer.stop()
            return
        model, step = self._steps.popleft()
        if not self._steps:
            self._step_timer.stop()
        if model is self.session.model:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 (a failed step is a message, not a crash)
                if os.environ.get("INSPECTOR_DEBUG"):
                    import traceback

                    traceback.print_exc()
                self.show_message(error_message(exc), "error")

    @property
    def ui_busy(self) -> bool:
        """True while results are still being put on screen (queued steps, graph building)."""
        return bool(self._steps) or self.graph.is_building or self._after_graph is not None

    def _on_graph_built(self) -> None:
        """The graph scene is complete: run what waited for it (on the next turn)."""
        if self._after_graph is not None:
            QTimer.singleShot(0, self, self._run_after_graph)

    def _run_after_graph(self) -> None:
        callback, self._after_graph = self._after_graph, None
        if callback is not None:
            callback()

    def _status(self, text: str, timeout_ms: int = 0) -> None:
        """A status bar message, shown on the next turn: QStatusBar repaints at once, which
        inside a long callback would paint the whole window in the middle of it."""
        QTimer.singleShot(0, self, lambda: self.statusBar().showMessage(text, timeout_ms))

    # ------------------------------------------------------------------ job results
    @guarded
    def _on_loaded(self, loaded: LoadedModel, calib: CalibSource | None, analyse: bool) -> None:
        """Show a loaded model: the state and the panels' "what comes next" now; the graph,
        the table and then the NPU report / analysis jobs in the next turns."""
        self.jobs.cancel("npu")
        self.jobs.cancel("analysis")
        if calib is None and self._pending_calib is not None:  # dropped while this model was loading
            calib, analyse = self._pending_calib, True
        self._pending_calib = None
        self.session.set_loaded(loaded, calib)
        _collect_soon()  # the model this one replaced may sit in cycles (panels, closures)
        model = loaded.model
        self._selected = None
        self._auto_color = True
        self._settings_dirty = False
        self.color_box.blockSignals(True)
        self.color_box.setCurrentIndex(0)
        self.color_box.blockSignals(False)
        self._fill_float_ops_menu()
        self._update_dims()
        self._clear_panels()
        self.summary_panel.show_session(self.session)
        self._update_calib_label()
        self._show_workspace()
        name = os.path.basename(model.path)
        self.setWindowTitle(f"{name} — Deployment Inspector")
        if loaded.sample is None:
            self._add_recent(model.path)
        blocker = self._analysis_blocker()
        if blocker is not None:
            self.show_message(blocker, "warning")
        assumed = f"; {format_dims(loaded.assumed)} assumed" if loaded.assumed else ""
        self._status(f"Loaded {name}: {loaded.info.nodes} nodes{assumed}", 8000)
        self._update_actions()

        def fill_table() -> None:
            self.table.set_rows(self.session.rows())
            self.model_loaded.emit(model.path)

        def start_jobs() -> None:
            if self.session.model is not model:
                return
            self.run_npu()
            if analyse and blocker is None:
                self.run_analysis()

        def after_graph() -> None:
            # the jobs start once the graph is drawn and indexed (one more turn after the
            # last slice): with a worker running, each new scene item's first calls from Qt
            # (bounding rect, paint: PySide looks for Python overrides) wait for the GIL
            self._after_graph = start_jobs
            if not self.graph.is_building:
                if len(model.graph.nodes) <= SMALL_MODEL_NODES:
                    self._run_after_graph()  # a small model: everything at once
                else:
                    self._on_graph_built()

        def draw_graph() -> None:
            self.graph.set_layout(loaded.layout)
            reasons = loaded.info.unsupported_ops
            self.graph.set_flagged({n.name: "no int8 kernel" for n in model.graph.nodes if n.op_type in reasons})

        self._queue(model, draw_graph, fill_table, after_graph)

    @guarded
    def _on_npu(self, report: Any, model: Any) -> None:
        if model is not self.session.model:
            return

        def rows() -> None:
            self.session.set_npu(report)
            self.table.set_rows(self.session.rows())

        def finish() -> None:
            self.summary_panel.show_session(self.session)
            self._recolor()
            self._reselect()
            self._status(f"NPU report on {report.profile.name}: {report.timeline.total_ns / 1e3:,.1f} µs fused", 8000)
            self.npu_finished.emit()

        p = self.panels
        self._queue(
            model,
            rows,
            lambda: self.graph.set_fusion_groups([(f.nodes, f.pattern) for f in report.fusions.fusions]),
            lambda: p["timeline"].set_report(report),  # type: ignore[attr-defined]
            lambda: p["roofline"].set_report(report),  # type: ignore[attr-defined]
            lambda: p["fusions"].set_npu_report(report),  # type: ignore[attr-defined]
            finish,
        )

    @guarded
    def _on_analysis(self, result: Any, model: Any, settings: QuantSettings) -> None:
        if model is not self.session.model:
            return

        def rows() -> None:
            self.session.set_analysis(result, settings)
            self._settings_dirty = settings != self._read_settings()
            self.table.set_rows(self.session.rows())

        def findings() -> None:
            self.panels["findings"].set_findings(result.findings)  # type: ignore[attr-defined]
            i = self.model_tabs.indexOf(self.panels["findings"])
            self.model_tabs.setTabText(i, f"Findings ({len(result.findings)})")
            self.summary_panel.show_session(self.session)

        def finish() -> None:
            if self._auto_color and self.color_box.currentIndex() == 0:
                self.color_box.setCurrentText("SQNR isolated (dB)")  # recolours via the signal
            else:
                self._recolor()
            if self._selected is None:
                worst = result.worst_isolated(1)
                if worst:
                    self.select_node(worst[0].name)
            self._reselect()
            if self.message_kind == "warning" and "SYNTHETIC" in self.message and not result.calibration.get("synthetic"):
                self.clear_message()
            out = result.outputs[0] if result.outputs else None
            text = "Analysis done"
            if out is not None and out.accuracy_int8 is not None and out.accuracy_float is not None:
                text += f": accuracy float {100 * out.accuracy_float:.2f}% → int8 {100 * out.accuracy_int8:.2f}%"
            elif out is not None:
                text += f": output SQNR {_fmt_db(out.error.sqnr_db)}"
            self._status(text, 15000)
            self._update_actions()
            self.analysis_finished.emit()

        self._queue(
            model,
            rows,
            lambda: self.panels["error"].set_result(result),  # type: ignore[attr-defined]
            findings,
            finish,
        )

    def _clear_panels(self) -> None:
        """Empty every panel that shows results of the previous model (new ones follow),
        each saying what will fill it."""
        from widgets.error_panel import NO_ANALYSIS

        blocker = self._analysis_blocker()
        no_analysis = html.escape(blocker) if blocker is not None else NO_ANALYSIS
        p = self.panels
        p["distribution"].clear(  # type: ignore[attr-defined]
            "Run the analysis (F5) to see the value distributions of the selected node's tensors."
            if blocker is None else no_analysis)
        p["error"].clear(no_analysis)  # type: ignore[attr-defined]
        p["findings"].clear(no_analysis if blocker is not None else  # type: ignore[attr-defined]
                            "No analysis yet. <b>Run analysis</b> (F5): the findings name the layers whose "
                            "int8 error stands out and say why.")
        for key in ("timeline", "roofline", "fusions"):
            p[key].clear("Computing the NPU report…")  # type: ignore[attr-defined]
        self.node_panel.clear()
        self.summary_panel.clear()
        self.tensor_box.clear()
        self.tensor_box.setEnabled(False)
        self.tensor_row.setVisible(False)
        self.model_tabs.setTabText(self.model_tabs.indexOf(p["findings"]), "Findings")

    _DIM_HINT = re.compile(r"bind it with --dim (\S+)=N")

    def _on_job_error(self, kind: str, message: str) -> None:
        # the engine's hints name the command line's option; here the Dims box does it
        message = self._DIM_HINT.sub(r"enter \1=N in the toolbar's Dims box", message)
        if kind == "npu":
            for key in ("timeline", "roofline", "fusions"):
                if self.panels[key].message:  # type: ignore[attr-defined]
                    self.panels[key].clear("No NPU report: " + html.escape(message))  # type: ignore[attr-defined]
        self.show_message(message, "error")
        self._update_actions()

    def _on_job_cancelled(self, kind: str) -> None:
        self._status(f"{JOB_TEXT.get(kind, kind)} cancelled; the previous results are still shown", 8000)
        self._update_actions()

    def _on_progress(self, kind: str, done: int, total: int) -> None:
        # a fixed range: changing it (or Qt's indeterminate mode) makes the style lay out
        # every hidden tab page at once the first time, blocking the UI thread
        self.progress.setValue(round(PROGRESS_STEPS * min(done, total) / max(1, total)))
        running = self.jobs.running()
        extra = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        self.progress_label.setText(f"{self.jobs.label(kind)} {done}/{total}{extra}")

    def _on_busy(self, busy: bool) -> None:
        if busy:
            # reset while hidden: QProgressBar.setValue repaints a visible bar at once, which
            # paints every dirty widget of the window inside the caller (e.g. a job's result)
            self.progress.setValue(0)
            running = self.jobs.running()
            self.progress_label.setText(self.jobs.label(running[0]) if running else "")
        self.progress.setVisible(busy)
        self.progress_label.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()

    # ================================================================== settings
    @guarded
    def _on_settings_changed(self, *args: Any) -> None:
        self.session.settings = self._read_settings()
        if self.session.analysis is not None:
            self._settings_dirty = self.session.analysis_settings != self.session.settings
            if self._settings_dirty:
                self._status("Settings changed: Run analysis (F5) to update the results", 10000)
        self._update_actions()

    @guarded
    def _on_float_ops_changed(self, *args: Any) -> None:
        self._on_settings_changed()
        self._update_float_ops_text()
        self.run_npu()

    def set_quant_settings(self, settings: QuantSettings) -> None:
        """Put ``settings`` in the toolbar (the analysis is not re-run)."""
        for w in (self.dtype_box, self.symmetric_box, self.per_channel_box, self.method_box):
            w.blockSignals(True)
        self.dtype_box.setCurrentText(settings.activation_dtype)
        self.symmetric_box.setChecked(settings.symmetric)
        self.per_channel_box.setChecked(settings.per_channel)
        self.method_box.setCurrentText(settings.method)
        for w in (self.dtype_box, self.symmetric_box, self.per_channel_box, self.method_box):
            w.blockSignals(False)
        for act in self.float_ops_menu.actions():
            act.blockSignals(True)
            act.setChecked(act.text() in settings.float_ops)
            act.blockSignals(False)
        self.session.settings = settings.with_(profile=self.session.settings.profile)
        self._update_float_ops_text()
        self._on_settings_changed()

    # ================================================================== colour, search
    @guarded
    def _on_color_chosen(self, label: str) -> None:
        self._auto_color = False
        self._recolor()

    def _recolor(self) -> None:
        if self.session.loaded is None:
            return
        label = self.color_box.currentText()
        spec = next((m for m in COLOR_METRICS if m[0] == label), COLOR_METRICS[0])
        _, key, higher_is_better = spec
        if not key:
            self.graph.color_by_op_type()
            return
        values: dict[str, Any] = {}
        for row in self.session.rows():
            v = getattr(row, key)
            if v is None:
                continue
            if key == "est_ns":
                v = v / 1e3
            elif key == "clip_fraction":
                v = 100.0 * v
            values[row.name] = v
        fixed = SQNR_COLOR_RANGE_DB if key in ("sqnr_db", "sqnr_db_isolated") else None
        self.graph.set_color_metric(label, values, higher_is_better, fixed)

    @guarded
    def _on_search(self) -> None:
        text = self.search_edit.text()
        if not text.strip():
            return
        same = getattr(self, "_last_search", None) == text and self.graph.match_count > 0
        name = self.graph.find_next() if same else self.graph.find(text)
        self._last_search = text
        if name is None:
            self._status(f"No node matches {text!r}", 5000)
        else:
            self._status(f"{self.graph.match_count} nodes match {text!r} (Enter: next)", 5000)

    # ================================================================== selection
    @guarded
    def select_node(self, name: str | None, origin: str | None = None) -> None:
        """Select ``name`` everywhere except in ``origin`` (the widget the user clicked)."""
        if self.session.loaded is None:
            return
        self._selected = name
        if origin != "graph":
            if name is None:
                self.graph.clear_selection()
            else:
                self.graph.select_node(name)
        if origin != "table":
            self.table.select_node(name)
        for key, panel in self.panels.items():
            if key != origin and hasattr(panel, "select_node"):
                panel.select_node(name)  # type: ignore[attr-defined]
        self._show_distribution(name)
        self.node_panel.show_node(self.session, name)
        self.selection_changed.emit(name or "")

    def _on_group_selected(self, nodes: list[str], origin: str) -> None:
        if nodes:
            self.select_node(nodes[0], origin)

    def _reselect(self) -> None:
        """Re-apply the selection after a panel got new data."""
        if self._selected is not None:
            self.select_node(self._selected)

    @property
    def selected_node(self) -> str | None:
        return self._selected

    # ================================================================== distribution
    def _tensor_choices(self, name: str | None) -> list[tuple[str, str, str]]:
        """(label, kind, tensor) of the selected node's observed outputs and quantized weights."""
        a, model = self.session.analysis, self.session.model
        if a is None or model is None or name is None:
            return []
        node = next((n for n in model.graph.nodes if n.name == name), None)
        if node is None:
            return [("input " + name.split(":", 1)[-1], "activation", name.split(":", 1)[-1])] \
                if name.split(":", 1)[-1] in a.activations else []
        choices = [(f"output {o}", "activation", o) for o in node.outputs if o and o in a.activations]
        choices += [(f"weight {w}", "weight", w) for w in node.inputs if w and w in a.weights]
        if not choices:  # e.g. a node kept in float: show what feeds it
            choices = [(f"input {i}", "activation", i) for i in node.inputs if i and i in a.activations]
        return choices

    def _show_distribution(self, name: str | None) -> None:
        panel = self.panels["distribution"]
        choices = self._tensor_choices(name)
        self.tensor_box.blockSignals(True)
        self.tensor_box.clear()
        for label, kind, tensor in choices:
            self.tensor_box.addItem(label, (kind, tensor))
        self.tensor_box.blockSignals(False)
        self.tensor_box.setEnabled(len(choices) > 1)
        self.tensor_row.setVisible(bool(choices))
        if not choices:
            blocker = self._analysis_blocker()
            if self.session.analysis is None:
                message = html.escape(blocker) if blocker else (
                    "Run the analysis (F5) to see the value distributions of the selected node's tensors.")
            elif name is None:
                message = "Select a node in the graph or the layer table to see its tensors' value distributions."
            else:
                message = (f"<b>{html.escape(name)}</b> has no quantized tensor: the int8 model keeps it in "
                           "float or it only moves data.")
            panel.clear(message)  # type: ignore[attr-defined]
            return
        self._draw_tensor(*choices[0][1:])

    @guarded
    def _on_tensor_chosen(self, index: int) -> None:
        data = self.tensor_box.itemData(index)
        if data:
            self._draw_tensor(*data)

    def _draw_tensor(self, kind: str, tensor: str) -> None:
        """Show one tensor in the distribution panel (activation: histogram, clipping range,
        int8 grid and its producer's error; weight: per-channel ranges and value histogram)."""
        import numpy as np

        panel = self.panels["distribution"]
        a, model = self.session.analysis, self.session.model
        assert a is not None and model is not None
        if kind == "weight":
            view = a.weights[tensor]
            values = np.asarray(model.graph.weights[tensor]).reshape(-1)
            if values.size > WEIGHT_HIST_MAX:
                values = values[:: -(-values.size // WEIGHT_HIST_MAX)]
            counts, edges = np.histogram(values.astype(np.float64), bins=WEIGHT_HIST_BINS)
            data = DistributionData.from_weight(view, counts, edges)
        else:
            view = a.activations[tensor]
            producer = next((n.name for n in model.graph.nodes if tensor in n.outputs), None)
            layer = next((l for l in a.layers if l.name == producer), None) if producer else None
            method = self.session.analysis_settings.method if self.session.analysis_settings else None
            data = DistributionData.from_activation(view, layer, method=method)
        panel.set_data(data)  # type: ignore[attr-defined]

    # ================================================================== drag and drop
    @staticmethod
    def _local_paths(mime: Any) -> list[str]:
        if mime is None or not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if isinstance(u, QUrl) and u.isLocalFile() and u.toLocalFile()]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt name)
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = self._local_paths(event.mimeData())
        if not paths:
            event.ignore()
            self.show_message("Only local files can be dropped here (an .onnx model, or .npz/.npy or an image folder).")
            return
        event.acceptProposedAction()
        self.open_paths(paths)

    # ================================================================== misc
    def _show_workspace(self) -> None:
        if self.session.loaded is None:
            return
        self.stack.setCurrentWidget(self.workspace)
        if not self._sized:
            QTimer.singleShot(0, self._apply_default_sizes)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        if not self._sized and self.stack.currentWidget() is self.workspace:
            self._apply_default_sizes()

    @guarded
    @guarded
    def export_report_dialog(self) -> None:
        """File > Export Report: the same PDF (and JSON beside it) as ``inspector report``."""
        model = self.session.model
        if model is None:
            self.show_message("Open a model first: the report describes the model that is open.", "warning")
            return
        default = os.path.join(os.getcwd(), f"{model.name}-report.pdf")
        path, _ = QFileDialog.getSaveFileName(self, "Export deployment report", default, "PDF documents (*.pdf)")
        if path:
            self.export_report(path, os.path.splitext(path)[0] + ".json")

    def export_report(self, path: str, json_path: str | None = None, page_size: str = "A4") -> None:
        """Write the deployment report of what is shown (analysis, NPU report) in a worker."""
        model = self.session.model
        if model is None:
            self.show_message("Open a model first: the report describes the model that is open.", "warning")
            return
        self.jobs.start(
            "export",
            export_report_job,
            path,
            model,
            self.session.analysis,
            self.session.npu,
            page_size,
            json_path,
            label=f"Exporting {os.path.basename(path)}",
            on_result=lambda facts: self.show_message(
                f"Report written: {path} ({facts.get('pages', '?')} pages)"
                + (f" and {json_path}" if json_path else ""), "info"),
            on_error=lambda msg: self.show_message(msg, "error"),
            on_cancel=lambda: self.show_message("Export cancelled: nothing was written.", "info"),
        )

    def _screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "inspector.png", "PNG images (*.png)")
        if path:
            if not self.grab().save(path, "PNG"):
                self.show_message(f"{path}: could not write the image", "error")

    def _about(self) -> None:
        from inspector import __version__

        self.show_message(
            f"Deployment Inspector {__version__}: int8 NPU deployment analysis of ONNX models. "
            "Drop a model on the window; drop calibration data to analyse it.", "info")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.jobs.cancel()
        self.settings.sync()
        super().closeEvent(event)
        _collect_soon()  # a closed window is a cycle (its slots are closures) holding its session
