"""What to quantize and how: the plan the int8 executor runs and the analysis reports.

A plan comes from calibration (observed ranges + a scheme) or from a QDQ model's own
QuantizeLinear/DequantizeLinear parameters. Tensor names are the float model's names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from engine.graph import Graph, Model, Node
from engine.quant.qparams import QParams, QuantScheme

# How one node is executed in the int8 model:
#   "integer"        integer math on codes, then requantize to the output's QParams (for Softmax,
#                    GELU, LayerNorm, Sigmoid/SiLU this means the I-BERT integer-only approximations)
#   "float_fallback" dequantize inputs, float math, requantize the output (what a chip with a float
#                    unit, or a host round trip, does)
#   "float"          kept in float: inputs dequantized, output left float (not quantized at all)
NodePath = Literal["integer", "float_fallback", "float"]
Rounding = Literal["half_even_float", "fixed_point_half_up"]


@dataclass
class QuantPlan:
    """Quantization parameters per tensor and an execution path per node.

    ``activations``: QParams of every quantized activation (graph inputs and node outputs of
    float type) -- int8/uint8 per the scheme, or int16 for tensors the user sent to int16.
    ``weights``: QParams of quantized float initializers (MatMul/Gemm/Conv weights; per
    channel along the output-channel axis when the scheme says so). Biases are not listed:
    they are quantized to int32 with scale = input scale x weight scale, as integer NPUs do.
    ``paths``: node name -> NodePath; a node missing here runs "integer" when it has an
    integer kernel and "float_fallback" otherwise.
    ``fuse_gelu``: run a recognised erf-GELU subgraph (Div-Erf-Add-Mul-Mul) as one GELU unit
    on the path of its Erf node (its inner tensors are then never quantized nor produced);
    False runs every node of it on its own (a QDQ import does this: its Q/DQ pairs sit
    between those nodes).
    ``fuse_bias``: run a MatMul whose output only feeds ``+ bias`` (one constant per output
    column) with that Add as one unit: the bias added in int32 to the product, one
    requantization (an NPU's fully connected layer); the MatMul's output is then never
    quantized nor produced. Only when both nodes take the integer path. False: each node
    on its own, its output requantized (a QDQ import does this).
    """

    scheme: QuantScheme
    activations: dict[str, QParams] = field(default_factory=dict)
    weights: dict[str, QParams] = field(default_factory=dict)
    paths: dict[str, NodePath] = field(default_factory=dict)
    rounding: Rounding = "half_even_float"
    source: Literal["calibration", "qdq"] = "calibration"
    calibration: dict[str, Any] = field(default_factory=dict)
    fuse_gelu: bool = True
    fuse_bias: bool = True

    def path(self, node_name: str, default: NodePath = "integer") -> NodePath:
        return self.paths.get(node_name, default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (per-tensor parameters included)."""
        return {
            "scheme": self.scheme.to_dict(),
            "rounding": self.rounding,
            "source": self.source,
            "calibration": dict(self.calibration),
            "activations": {k: v.to_dict() for k, v in self.activations.items()},
            "weights": {k: v.to_dict() for k, v in self.weights.items()},
            "paths": dict(self.paths),
            "fuse_gelu": self.fuse_gelu,
            "fuse_bias": self.fuse_bias,
        }


# ------------------------------------------------------------------ consistency helpers

PASSTHROUGH_OPS: frozenset[str] = frozenset(
    {
        "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split",
        "Expand", "Identity", "Dropout", "MaxPool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Tile",
    }
)
"""Ops that move or select codes without arithmetic: their data outputs carry the QParams of
their data input (input 0), so the int8 executor passes the codes through unchanged."""

PERMUTATION_OPS: frozenset[str] = frozenset(
    {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "DepthToSpace", "SpaceToDepth"}
)
"""Pass-through ops whose output (0) holds exactly the values of their data input, each
once, only rearranged: every statistic that ignores order (a histogram, min/max, sums of
powers, a quantization error's moments) is the input's."""



def permutation_input(node: Node) -> str | None:
    """The data input whose values output 0 of ``node`` holds, rearranged (a default-domain
    :data:`PERMUTATION_OPS` node), or None."""
    if node.op_type not in PERMUTATION_OPS or node.domain not in ("", "ai.onnx"):
        return None
    if not node.inputs or not node.outputs or not node.inputs[0] or not node.outputs[0]:
        return None
    return node.inputs[0]


AXIS_KEEPING_OPS: frozenset[str] = frozenset({"Identity", "Dropout"})
"""Pass-through ops that keep every axis in place, so per-channel QParams pass through too."""


def same_params(a: QParams | None, b: QParams | None) -> bool:
    """True when two QParams quantize identically (same scale(s), zero point(s), dtype, axis, range)."""
    if a is None or b is None:
        return a is b
    if a is b:
        return True
    return (
        a.dtype == b.dtype
        and a.axis == b.axis
        and a.qmin == b.qmin
        and a.qmax == b.qmax
        and np.array_equal(np.asarray(a.scale, dtype=np.float64), np.asarray(b.scale, dtype=np.float64))
        and np.array_equal(np.asarray(a.zero_point), np.asarray(b.zero_point))
    )


def propagate_passthrough(model: Model, plan: QuantPlan) -> QuantPlan:
    """A copy of ``plan`` in which every pass-through node (:data:`PASSTHROUGH_OPS`) gives its
    float data outputs the QParams of its data input, in topological order (chains follow).

    The data input's QParams come from ``activations`` or, for an initializer, ``weights``.
    An initializer data input without QParams (an embedding table read by Gather, a
    constant read by Expand) gets the QParams of the node's first output instead, so the
    node is a pure pass-through either way. Per-channel QParams pass only through
    :data:`AXIS_KEEPING_OPS`. Outputs of nodes on the ``"float"`` path are left alone.
    """
    activations = dict(plan.activations)
    weights = dict(plan.weights)
    graph = model.graph
    for node in graph.nodes:
        if node.op_type not in PASSTHROUGH_OPS or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        if plan.path(node.name) == "float":
            continue
        data = node.inputs[0]
        outputs = node.outputs if node.op_type == "Split" else node.outputs[:1]
        outputs = [o for o in outputs if o]
        if not data or not outputs:
            continue
        source = activations.get(data, weights.get(data) if data in graph.weights else None)
        if source is None and data in graph.weights and outputs[0] in activations:
            w = graph.weights.info[data]
            if w.dtype is not None and np.dtype(w.dtype).kind == "f":
                weights[data] = activations[outputs[0]]
            continue
        if source is None:
            continue
        if source.per_channel and node.op_type not in AXIS_KEEPING_OPS:
            continue
        for out in outputs:
            if out in activations or _is_float_tensor(graph, out):
                activations[out] = source
    return replace(plan, activations=activations, weights=weights, paths=dict(plan.paths))


def _is_float_tensor(graph: Graph, name: str) -> bool:
    """Whether a pass-through output is float: its inferred dtype when known, else assumed (the
    data input is quantized, so the output is data of the same type)."""
    dtype = graph.tensor(name).dtype
    return dtype is None or np.dtype(dtype).kind == "f"
