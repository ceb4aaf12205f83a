"""A minimal min/max quantization plan for the int8 tests and benchmark (not the calibration
module): run the float executor on a few inputs, take each float activation's min/max,
``qparams_from_range``; MatMul/Gemm/Conv weights by ``qparams_for_weight`` along their
output-channel axis; then ``propagate_passthrough``."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

import engine
from engine.graph import Model
from engine.int8.plan import NodePath, QuantPlan, Rounding, propagate_passthrough
from engine.quant.qparams import QuantScheme, qparams_for_weight, qparams_from_range


def weight_axis(op_type: str, attrs: Mapping[str, object], index: int, ndim: int) -> int | None:
    """Output-channel axis of a weight input, or None when the input is not a weight."""
    if op_type == "MatMul" and index == 1 and ndim >= 2:
        return ndim - 1
    if op_type == "Gemm" and index == 1 and ndim == 2:
        return 0 if int(attrs.get("transB", 0) or 0) else 1
    if op_type == "Conv" and index == 1:
        return 0
    return None


def minmax_plan(
    model: Model,
    feeds: Iterable[Mapping[str, np.ndarray]],
    scheme: QuantScheme | None = None,
    rounding: Rounding = "half_even_float",
    paths: Mapping[str, NodePath] | None = None,
    fuse_gelu: bool = True,
) -> QuantPlan:
    """Min/max plan over ``feeds`` (a few input dicts)."""
    scheme = scheme or QuantScheme()
    graph = model.graph
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for feed in feeds:
        values = engine.run(model, feed, intermediate=True)
        for name, value in values.items():
            if name in graph.weights or not isinstance(value, np.ndarray) or value.dtype.kind != "f" or not value.size:
                continue
            finite = value[np.isfinite(value)]
            if not finite.size:
                continue
            lo[name] = min(lo.get(name, np.inf), float(finite.min()))
            hi[name] = max(hi.get(name, -np.inf), float(finite.max()))
    activations = {
        name: qparams_from_range(lo[name], hi[name], scheme.activation_dtype, scheme.symmetric, scheme.power_of_two)
        for name in lo
    }
    weights = {}
    for node in graph.nodes:
        for index, name in enumerate(node.inputs[:2]):
            if not name or name not in graph.weights or name in weights:
                continue
            w = np.asarray(graph.weights[name])
            if w.dtype.kind != "f":
                continue
            axis = weight_axis(node.op_type, node.attrs, index, w.ndim)
            if axis is not None:
                weights[name] = qparams_for_weight(w, scheme, axis)
    plan = QuantPlan(scheme, activations, weights, dict(paths or {}), rounding, fuse_gelu=fuse_gelu)
    return propagate_passthrough(model, plan)
