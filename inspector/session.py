"""The desktop app's state and the work it does, as plain Python (no Qt).

The window runs the functions here in worker threads and keeps one :class:`Session`; the
same engine functions back the command line (``inspector info`` / ``analyze``), so the
GUI and the CLI report the same figures.

- :func:`classify_path`: what a dropped or opened path is (a model or calibration data).
- :func:`parse_dims`, :func:`batch_like_dims`, :func:`unbound_dims`: symbolic dimensions.
- :func:`load_model_job`: load a model (a free batch dimension bound to 1), summarise it, cost
  every node and lay the graph out.
- :func:`npu_job`: the NPU report (roofline per node, fusions, timelines) on a profile.
- :func:`analysis_job`: calibration and the per-layer int8 error analysis.
- :func:`layer_rows`: one plain :class:`LayerRow` per node for the layer table.

Every job takes ``progress(done, total)`` and ``cancel() -> bool`` callables; the engine
raises :class:`engine.errors.Cancelled` when ``cancel()`` turns True.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from engine.errors import Cancelled, ModelError
from engine.graph import Graph, Model

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

MODEL_EXTENSIONS = (".onnx",)
ARRAY_EXTENSIONS = (".npz", ".npy")
METHODS = ("minmax", "percentile", "entropy", "mse")
ACTIVATION_DTYPES = ("int8", "uint8")
DEFAULT_PROFILE = "journey5"


def _check(cancel: CancelFn | None, what: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled")


# ----------------------------------------------------------------------- inputs


def classify_path(path: str | os.PathLike[str]) -> str:
    """``"model"`` for an ``.onnx`` file, ``"calib"`` for an ``.npz``/``.npy`` file or a folder
    of arrays or images; ModelError (one line naming the path) for anything else."""
    from engine.calibrate import ARRAY_EXTENSIONS as CAL_ARRAYS
    from engine.calibrate import IMAGE_EXTENSIONS

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such file or folder", path)
    if os.path.isdir(path):
        try:
            names = [n.lower() for n in os.listdir(path)]
        except OSError as e:
            raise ModelError(f"cannot read the folder ({e.strerror or e})", path) from None
        if any(n.endswith(IMAGE_EXTENSIONS + CAL_ARRAYS) for n in names):
            return "calib"
        if any(n.endswith(MODEL_EXTENSIONS) for n in names):
            raise ModelError("is a folder; drop the .onnx file itself to open a model", path)
        raise ModelError("folder holds no images or .npz/.npy arrays to use as calibration data", path)
    lower = path.lower()
    if lower.endswith(MODEL_EXTENSIONS):
        return "model"
    if lower.endswith(ARRAY_EXTENSIONS):
        return "calib"
    raise ModelError(
        "not something the inspector opens: drop an .onnx model, or calibration data "
        "(.npz/.npy, or a folder of images)",
        path,
    )


@dataclass(frozen=True)
class CalibSource:
    """Where calibration (and evaluation) samples come from.

    ``path`` None means seeded synthetic data (the results say so). ``evaluation`` is a
    labelled ``.npz`` (a bundled sample's validation set) to measure on; None measures on the
    calibration data.
    """

    path: str | None
    evaluation: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.path is None

    @property
    def label(self) -> str:
        """Short text for the window: the file or folder name, or "synthetic"."""
        if self.path is None:
            return "synthetic (no calibration data)"
        return os.path.basename(os.path.normpath(self.path)) or self.path


@dataclass(frozen=True)
class QuantSettings:
    """The user's quantization choices: scheme, calibration method, float-kept op types, NPU.

    ``float_ops`` are op types kept in float by the int8 model; the NPU report runs them on
    the float unit (or the host) in addition to the cost model's default float ops.
    """

    activation_dtype: str = "int8"
    symmetric: bool = True
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.99
    float_ops: tuple[str, ...] = ()
    profile: str = DEFAULT_PROFILE

    def scheme(self) -> Any:
        """The engine's QuantScheme (ModelError on an invalid combination)."""
        from engine.quant.qparams import QuantScheme

        return QuantScheme(
            activation_dtype=self.activation_dtype,
            symmetric=self.symmetric,
            weight_per_channel=self.per_channel,
            method=self.method,
            percentile=self.percentile,
        )

    def analysis_config(self) -> Any:
        """The AnalysisConfig of these settings (the CLI's defaults otherwise)."""
        from engine.analysis import AnalysisConfig

        return AnalysisConfig(scheme=self.scheme(), float_ops=list(self.float_ops) or None)

    def npu_float_ops(self) -> frozenset[str]:
        """Op types the NPU report runs in float: the cost model's defaults plus ``float_ops``."""
        from engine.costmodel import DEFAULT_FLOAT_OPS

        return frozenset(DEFAULT_FLOAT_OPS) | frozenset(self.float_ops)

    def describe(self) -> str:
        """One line, e.g. ``int8 sym per-channel, minmax``."""
        parts = [
            self.activation_dtype,
            "sym" if self.symmetric else "asym",
            "per-channel" if self.per_channel else "per-tensor",
        ]
        method = f"percentile {self.percentile:g}" if self.method == "percentile" else self.method
        text = " ".join(parts) + f", {method}"
        if self.float_ops:
            text += f", float: {', '.join(self.float_ops)}"
        return text

    def with_(self, **changes: Any) -> "QuantSettings":
        return replace(self, **changes)


# ------------------------------------------------------------------------ dims

NOT_BATCH = re.compile(r"seq|len|token|time|step|height|width|^h$|^w$|chan|feat|hidden|vocab|head|dim", re.IGNORECASE)
"""Symbolic dimension names that are never taken for a batch dimension."""
_DIM_ITEM = re.compile(r"^\s*([A-Za-z_][\w.:/-]*)\s*[=:]\s*([+-]?\d+)\s*$")


def parse_dims(text: str) -> dict[str, int]:
    """``"seq=128, batch=4"`` (commas or spaces between items) as ``{"seq": 128, "batch": 4}``;
    ModelError (one line) on anything else."""
    items = [t for t in re.split(r"[,;\s]+(?=[A-Za-z_])", text.strip()) if t.strip()]
    dims: dict[str, int] = {}
    for item in items:
        m = _DIM_ITEM.match(item.strip().rstrip(",;"))
        if m is None:
            raise ModelError(f"dimensions: cannot read {item.strip()!r}; write NAME=VALUE, e.g. seq=128")
        value = int(m.group(2))
        if value <= 0:
            raise ModelError(f"dimensions: {m.group(1)} must be a positive integer, got {value}")
        dims[m.group(1)] = value
    return dims


def format_dims(dims: dict[str, int]) -> str:
    """``{"seq": 128}`` as ``seq=128`` (the inverse of :func:`parse_dims`)."""
    return ", ".join(f"{k}={v}" for k, v in dims.items())


def unbound_dims(model: Model) -> list[str]:
    """Symbolic input dimensions of ``model`` that have no value."""
    return [d for d in model.symbolic_dims if d not in model.dims]


def batch_like_dims(model: Model) -> dict[str, int]:
    """Unbound symbolic dimensions that look like a batch, each bound to 1: the first axis of
    an input of rank >= 2, never on another axis of any input, and not named like a sequence
    length or a spatial size (:data:`NOT_BATCH`)."""
    first: set[str] = set()
    elsewhere: set[str] = set()
    for info in model.graph.inputs:
        shape = info.shape or ()
        for axis, d in enumerate(shape):
            if not isinstance(d, str) or d in model.dims:
                continue
            if axis == 0 and len(shape) >= 2:
                first.add(d)
            else:
                elsewhere.add(d)
    unbound = unbound_dims(model)
    return {d: 1 for d in unbound if d in first and d not in elsewhere and not NOT_BATCH.search(d)}


def with_free_dims(bound: Model, free: Model) -> Model:
    """``bound``'s nodes and weights with ``free``'s shapes and dims: the same model with the
    assumed dimensions left symbolic (the analysis then calibrates in batches)."""
    g = bound.graph
    graph = Graph(nodes=g.nodes, inputs=free.graph.inputs, outputs=free.graph.outputs, weights=g.weights,
                  tensors=free.graph.tensors)
    return replace(bound, graph=graph, dims=dict(free.dims), symbolic_dims=list(free.symbolic_dims))


# ------------------------------------------------------------------------ jobs


@dataclass
class LoadedModel:
    """A model ready to show: summary, per-node costs (int8 element sizes) and graph layout.

    ``dims``: the dimensions the user bound; ``assumed``: batch-like dimensions bound to 1 by
    the app (shapes, costs and the NPU report are per sample). ``analysis_model`` is the same
    model with the assumed dimensions left free, for the analysis (None when nothing was
    assumed): a fixed batch of 1 would calibrate one sample per run, several times slower.
    """

    model: Model
    info: Any  # engine.summary.ModelInfo
    costs: list[Any]  # engine.cost.NodeCost per node, in node order
    layout: Any  # engine.layout.GraphLayout
    sample: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    assumed: dict[str, int] = field(default_factory=dict)
    analysis_model: Model | None = None

    @property
    def unbound(self) -> list[str]:
        """Symbolic dimensions still without a value (shapes show ``?``; no analysis)."""
        return unbound_dims(self.model)

    def dims_text(self) -> str:
        """E.g. ``batch=1 assumed, seq=128``; "" for a model without symbolic dimensions."""
        parts = [f"{k}={v} assumed" for k, v in self.assumed.items()]
        parts += [f"{k}={v}" for k, v in self.dims.items() if k not in self.assumed]
        parts += [f"{k}=?" for k in self.unbound]
        return ", ".join(parts)


def load_model_job(
    path: str,
    dims: dict[str, int] | None = None,
    sample: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> LoadedModel:
    """Load ``path`` with ``dims`` bound, summarise it, cost every node (int8) and lay its
    graph out. Unbound batch-like dimensions (:func:`batch_like_dims`) are bound to 1: the
    file is loaded a second time with them, so shape inference resolves every shape.

    ``progress`` counts the layout's steps after two steps of loading and summarising.
    """
    from engine.cost import node_costs
    from engine.layout import layout_graph
    from engine.loader import load_model
    from engine.summary import model_info

    head = 2
    layout_total = [1]

    def layout_progress(done: int, total: int) -> None:
        layout_total[0] = total
        if progress is not None:
            progress(head + done, head + total)

    if progress is not None:
        progress(0, head + 1)
    user = dict(dims or {})
    model = load_model(path, dims=user)
    _check(cancel, "loading")
    assumed = batch_like_dims(model)
    analysis_model = None
    if assumed:
        free = model
        model = load_model(path, dims={**user, **assumed})
        analysis_model = with_free_dims(model, free)
        _check(cancel, "loading")
    if progress is not None:
        progress(1, head + 1)
    info = model_info(model)
    costs = node_costs(model, act_bytes=1, weight_bytes=1)
    _check(cancel, "loading")
    if progress is not None:
        progress(2, head + 1)
    layout = layout_graph(model.graph, progress=layout_progress, cancelled=cancel)
    return LoadedModel(model, info, costs, layout, sample, user, assumed, analysis_model)


def npu_job(
    model: Model,
    settings: QuantSettings,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Any:
    """The NPU report (``engine.timeline.analyze``) of ``model`` on ``settings.profile``,
    int8 activations and weights, with ``settings.npu_float_ops()`` kept in float."""
    from engine.timeline import analyze
    from inspector.profiles import resolve_profile

    if progress is not None:
        progress(0, 2)
    profile = resolve_profile(settings.profile)
    _check(cancel, "NPU report")
    if progress is not None:
        progress(1, 2)
    report = analyze(model, profile, act_bytes=1, weight_bytes=1, float_ops=settings.npu_float_ops())
    if progress is not None:
        progress(2, 2)
    return report


def analysis_job(
    model: Model,
    calib: CalibSource,
    settings: QuantSettings,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Any:
    """Calibrate on ``calib`` and measure the per-layer int8 error (``engine.analysis``).

    A QDQ model uses its own scales. With a labelled ``calib.evaluation`` file the error is
    measured on it (with accuracies), as ``inspector analyze --sample`` does.
    """
    from engine.analysis import has_qdq, run_analysis
    from engine.calibrate import data_spec, evaluation_source

    config = settings.analysis_config()
    spec = None if (has_qdq(model) and calib.path is None) else data_spec(calib.path)
    evaluation, labels = None, None
    if calib.evaluation is not None:
        evaluation, labels = evaluation_source(calib.evaluation, model)
    return run_analysis(
        model,
        spec,
        evaluation,
        labels,
        calib.evaluation or "labels",
        config,
        progress=progress,
        cancel=cancel,
    )


# ------------------------------------------------------------------------ rows


@dataclass
class LayerRow:
    """What the layer table shows for one node. None is "not computed (yet)".

    ``macs`` multiply-accumulates; ``dram_bytes`` bytes the op moves to/from DRAM (from the
    NPU report when there is one, else every input, output and weight at int8);
    ``intensity`` ops per DRAM byte; ``est_ns`` the roofline estimate on the profile (ns);
    ``sqnr_db`` accumulated (whole model int8) and ``sqnr_db_isolated`` (only this node
    quantized) in dB, higher is better; ``cosine`` accumulated; ``clip_fraction`` of the
    output values saturated (0..1); ``path`` how the int8 model runs the node (``·B``/``·G``:
    a member of a MatMul + bias or GELU unit).
    """

    index: int
    name: str
    op_type: str
    output_shape: str
    macs: int | None = None
    dram_bytes: int | None = None
    intensity: float | None = None
    est_ns: float | None = None
    bound: str | None = None
    path: str | None = None
    cosine: float | None = None
    sqnr_db_isolated: float | None = None
    sqnr_db: float | None = None
    clip_fraction: float | None = None
    note: str | None = None
    """Why the node takes its int8 path, or the fused unit it runs in (the path cell's tooltip)."""


def _shape_text(shape: Sequence[Any] | None) -> str:
    """``1×64×8×8``; dimensions ONNX shape inference named itself (``unk__12``) show as ``?``."""
    from engine.layout import shape_text

    if shape is None:
        return shape_text(None)
    return shape_text(tuple("?" if isinstance(d, str) and d.startswith("unk__") else d for d in shape))


def _finite_or_none(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


NO_KERNEL = "no kernel"
"""``LayerRow.path`` of a node whose op type the int8 executor cannot run."""


def layer_rows(
    model: Model,
    costs: Iterable[Any] | None = None,
    npu: Any = None,
    analysis: Any = None,
    unsupported: Iterable[str] = (),
) -> list[LayerRow]:
    """One row per node of ``model`` (node order) with whatever has been computed;
    nodes of the ``unsupported`` op types get the path :data:`NO_KERNEL`."""
    graph = model.graph
    no_kernel = set(unsupported)
    by_cost = {c.name: c for c in costs or ()}
    by_est = {layer.name: layer for layer in npu.layers} if npu is not None else {}
    by_layer = {layer.name: layer for layer in analysis.layers} if analysis is not None else {}
    rows: list[LayerRow] = []
    for i, node in enumerate(graph.nodes):
        first = next((o for o in node.outputs if o), None)
        shape = graph.tensor(first).shape if first else None
        row = LayerRow(i, node.name, node.op_type, _shape_text(shape))
        if node.op_type in no_kernel or node.qualified_op in no_kernel:
            row.path = NO_KERNEL
        cost = by_cost.get(node.name)
        if cost is not None:
            row.macs = int(cost.macs)
            row.dram_bytes = int(cost.dram_bytes)
            row.intensity = float(cost.intensity)
        est = by_est.get(node.name)
        if est is not None:
            row.macs = int(est.macs)
            row.dram_bytes = int(est.dram_bytes)
            row.intensity = None if est.intensity is None else float(est.intensity)
            row.est_ns = float(est.est_ns)
            row.bound = est.bound
        layer = by_layer.get(node.name)
        if layer is not None:
            row.path = layer.path
            row.note = layer.note
            if layer.unit and layer.path:  # a fused unit's member, marked as in the report (·B, ·G)
                from engine.int8.executor import UNIT_MARKS

                row.path = f"{layer.path} {UNIT_MARKS.get(layer.unit_kind or 'gelu', '·')}"
            if layer.accumulated is not None:
                row.cosine = _finite_or_none(layer.accumulated.cosine)
                row.sqnr_db = _finite_or_none(layer.accumulated.sqnr_db)
                row.clip_fraction = _finite_or_none(layer.accumulated.clip_fraction)
            if layer.isolated is not None:
                row.sqnr_db_isolated = _finite_or_none(layer.isolated.sqnr_db)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------- state


@dataclass
class Session:
    """Everything the window shows. Results are kept until new ones replace them, so a
    re-run (or a cancelled one) leaves the previous result on screen."""

    loaded: LoadedModel | None = None
    npu: Any = None  # engine.timeline.NpuReport
    analysis: Any = None  # engine.analysis.AnalysisResult
    analysis_settings: QuantSettings | None = None  # the settings ``analysis`` was made with
    calib: CalibSource | None = None
    settings: QuantSettings = field(default_factory=QuantSettings)
    _rows: list[LayerRow] | None = field(default=None, repr=False)
    _row_index: dict[str, int] | None = field(default=None, repr=False)
    _row_index_of: list[LayerRow] | None = field(default=None, repr=False)

    @property
    def model(self) -> Model | None:
        return None if self.loaded is None else self.loaded.model

    def set_loaded(self, loaded: LoadedModel, calib: CalibSource | None = None) -> None:
        """A new model: its results start empty; float-kept ops the model lacks are dropped."""
        self.loaded = loaded
        self.npu = None
        self.analysis = None
        self.analysis_settings = None
        self.calib = calib
        self._rows = None
        present = {n.op_type for n in loaded.model.graph.nodes}
        kept = tuple(op for op in self.settings.float_ops if op in present)
        if kept != self.settings.float_ops:
            self.settings = self.settings.with_(float_ops=kept)

    def set_npu(self, report: Any) -> None:
        self.npu = report
        self._rows = None

    def set_analysis(self, result: Any, settings: QuantSettings) -> None:
        self.analysis = result
        self.analysis_settings = settings
        self._rows = None

    def rows(self) -> list[LayerRow]:
        """The layer table's rows for what is known now (computed once per change)."""
        if self.loaded is None:
            return []
        if self._rows is None:
            self._rows = layer_rows(self.loaded.model, self.loaded.costs, self.npu, self.analysis,
                                    self.loaded.info.unsupported_ops)
        return self._rows

    def row(self, name: str) -> LayerRow | None:
        """The row of node ``name`` (None for graph inputs/outputs and unknown names)."""
        rows = self.rows()
        if self._row_index is None or len(self._row_index) != len(rows) or self._row_index_of is not rows:
            self._row_index = {r.name: i for i, r in enumerate(rows)}
            self._row_index_of = rows
        i = self._row_index.get(name)
        return None if i is None else rows[i]

    def op_types(self) -> list[str]:
        """Op types of the model, most frequent first (for the float-kept ops menu)."""
        if self.loaded is None:
            return []
        counts = Counter(n.op_type for n in self.loaded.model.graph.nodes)
        return [op for op, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def fusion_of(self, node: str) -> Any:
        """The chosen fusion that covers ``node``, or None."""
        if self.npu is None:
            return None
        for f in self.npu.fusions.fusions:
            if node in f.nodes:
                return f
        return None

    def findings_of(self, node: str) -> list[Any]:
        if self.analysis is None:
            return []
        return [f for f in self.analysis.findings if f.node == node]
