"""Per-layer cost accounting: MACs, FLOPs and bytes moved, from shapes alone.

Conventions
-----------
- ``macs`` counts multiply-accumulates of the contraction ops (MatMul, Gemm, Conv with
  groups, ConvTranspose, Einsum, their integer/quantized forms, RNN cells and attention
  ops, which are MatMuls inside); every other op has 0 MACs. A bias add is folded into
  the accumulator (it is the accumulator's initial value on an NPU), so MAC ops have
  ``flops == 2 * macs`` (attention ops add their softmax, see ``ATTENTION_FLOPS_PER_SCORE``).
- Other ops have ``flops`` from :data:`FLOPS_PER_ELEMENT`: a per-element count times the
  element count of the output (elementwise ops) or of the first input (reductions,
  normalizations, global pools). Pools, Resize, variadic Sum/Max/Min/Mean and LRN depend
  on attributes or arity and are computed by rule (see :func:`_special_flops`).
  Data-movement ops (Reshape, Transpose, Gather, Concat, ...) count 0.
- Bytes: ``param_bytes`` are the initializer inputs of a node, ``input_bytes`` and
  ``output_bytes`` its activations (every other input/output); each distinct tensor counts
  once per node. Float tensors count at the requested element size (``weight_bytes`` for
  initializers, ``act_bytes`` for activations: 1 for int8, 4 for fp32), since float
  tensors are what quantization changes; integer and bool tensors (token ids, shapes,
  indices, already-quantized data) count at their stored element size.
- ``dram_bytes = param_bytes + input_bytes + output_bytes``: everything moved when nothing
  stays on chip. ``intensity = flops / dram_bytes`` (flops per byte; 0 with no bytes).
- Unknown shapes: a symbolic or unknown dimension counts as 1 and a tensor of unknown
  rank as 0 elements, so every count of a node with ``shape_known == False`` is a lower
  bound from what is known.

Only shapes are used: weight bytes are never read (``WeightStore.info``, not ``store[name]``),
so a model whose external data is larger than memory is costed cheaply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.graph import Graph, Model, Node, TensorInfo

IntShape = tuple[int, ...]

# ------------------------------------------------------------------ per-element FLOP table

ELEMENTWISE = "output"  # count per element of the (first) output
PER_INPUT = "input"  # count per element of the first input

# op_type -> (flops per element, which element count). One FLOP per arithmetic primitive;
# exp, log, sqrt, reciprocal, tanh and sigmoid count as one primitive each (NPUs evaluate
# them with a lookup table or a special-function unit); Erf has no such unit on most
# targets and is a polynomial, ~8.
FLOPS_PER_ELEMENT: dict[str, tuple[int, str]] = {
    # arithmetic, comparison, logic, casts: one primitive
    **{op: (1, ELEMENTWISE) for op in (
        "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Sign", "Ceil", "Floor", "Round",
        "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Sin", "Cos", "Tan", "Asin", "Acos",
        "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Relu", "ThresholdedRelu",
        "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor",
        "Where", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
        "IsNaN", "IsInf", "Cast", "CastLike", "Hardmax", "Range",
    )},
    # activations: their arithmetic spelled out
    "LeakyRelu": (2, ELEMENTWISE),  # compare, multiply
    "PRelu": (2, ELEMENTWISE),  # compare, multiply
    "Clip": (2, ELEMENTWISE),  # max, min
    "Shrink": (2, ELEMENTWISE),  # compare, subtract/add
    "Pow": (3, ELEMENTWISE),  # exp(y * log x)
    "Softplus": (2, ELEMENTWISE),  # exp, log(1 + .)
    "Softsign": (3, ELEMENTWISE),  # abs, add, divide
    "Elu": (3, ELEMENTWISE),  # exp, subtract, multiply (+ select)
    "Celu": (4, ELEMENTWISE),  # divide, exp, subtract, multiply
    "Selu": (4, ELEMENTWISE),  # exp, subtract, two multiplies
    "HardSigmoid": (4, ELEMENTWISE),  # multiply, add, max, min
    "HardSwish": (5, ELEMENTWISE),  # HardSigmoid + multiply
    "Mish": (4, ELEMENTWISE),  # softplus (2), tanh, multiply
    "Erf": (8, ELEMENTWISE),  # polynomial approximation
    "Gelu": (12, ELEMENTWISE),  # 0.5*x*(1+erf(x/sqrt2)): the Div-Erf-Add-Mul-Mul of exports
    "FastGelu": (8, ELEMENTWISE),  # tanh form: cube (2), 4 arithmetic, tanh, multiply
    "BiasGelu": (13, ELEMENTWISE),  # add + Gelu
    "QuickGelu": (3, ELEMENTWISE),  # multiply, sigmoid, multiply
    # softmax family: max, subtract, exp, sum, divide (log-subtract)
    "Softmax": (5, ELEMENTWISE),
    "LogSoftmax": (5, ELEMENTWISE),
    # normalizations (per input element)
    "LayerNormalization": (8, PER_INPUT),  # mean, subtract, square, sum, normalise, scale, shift, rsqrt/row
    "SkipLayerNormalization": (9, PER_INPUT),  # residual add + LayerNorm
    "InstanceNormalization": (8, PER_INPUT),
    "GroupNormalization": (8, PER_INPUT),
    "MeanVarianceNormalization": (6, PER_INPUT),  # mean, subtract, square, sum, divide by std
    "SimplifiedLayerNormalization": (4, PER_INPUT),  # RMS: square, sum, normalise, scale
    "SkipSimplifiedLayerNormalization": (5, PER_INPUT),
    "RMSNormalization": (4, PER_INPUT),
    "LpNormalization": (3, PER_INPUT),  # |x|^p, sum, divide
    "BatchNormalization": (2, PER_INPUT),  # inference: per-channel scale and shift
    # reductions and global pools: per input element
    "ReduceSum": (1, PER_INPUT),
    "ReduceMean": (1, PER_INPUT),
    "ReduceMax": (1, PER_INPUT),
    "ReduceMin": (1, PER_INPUT),
    "ReduceProd": (1, PER_INPUT),
    "ReduceLogSum": (1, PER_INPUT),
    "ReduceL1": (2, PER_INPUT),  # abs, add
    "ReduceL2": (2, PER_INPUT),  # square, add
    "ReduceSumSquare": (2, PER_INPUT),
    "ReduceLogSumExp": (2, PER_INPUT),  # exp, add
    "ArgMax": (1, PER_INPUT),
    "ArgMin": (1, PER_INPUT),
    "TopK": (1, PER_INPUT),  # lower bound: one compare per element
    "CumSum": (1, PER_INPUT),
    "GlobalAveragePool": (1, PER_INPUT),
    "GlobalMaxPool": (1, PER_INPUT),
    "GlobalLpPool": (2, PER_INPUT),
    # quantization
    "QuantizeLinear": (4, PER_INPUT),  # scale, round, add zero point, saturate
    "DequantizeLinear": (2, PER_INPUT),  # subtract zero point, scale
    "DynamicQuantizeLinear": (6, PER_INPUT),  # min and max over the tensor + quantize
    # data movement: no arithmetic
    **{op: (0, ELEMENTWISE) for op in (
        "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
        "Slice", "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND",
        "Expand", "Tile", "Pad", "Shape", "Size", "DepthToSpace", "SpaceToDepth", "Dropout",
        "ConstantOfShape", "Constant", "NonZero", "OneHot", "EyeLike", "Trilu", "Compress",
        "ReverseSequence", "MaxUnpool", "CenterCropPad", "Col2Im",
    )},
}

# attention ops: per attention score, the scale (1) and the softmax (5) on top of the MatMuls
ATTENTION_FLOPS_PER_SCORE = 6

# ops with a MAC rule: op_type -> (index of the activation input, index of the weight / second operand)
_MATMUL_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "FusedMatMul": (0, 1)}
_GEMM_INPUTS = {"Gemm": (0, 1), "QGemm": (0, 3)}
_CONV_INPUTS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "FusedConv": (0, 1)}
_RNN_OPS = ("RNN", "GRU", "LSTM")
_POOL_OPS = {"MaxPool": 1, "AveragePool": 1, "LpPool": 2}  # flops per window element
_VARIADIC_OPS = ("Sum", "Max", "Min", "Mean")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class NodeCost:
    """Cost of one node. Counts are ints; bytes at the element sizes given to :func:`node_costs`."""

    name: str
    op_type: str
    macs: int
    flops: int
    param_bytes: int
    input_bytes: int
    output_bytes: int
    dram_bytes: int
    intensity: float  # flops per DRAM byte
    shape_known: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelCost:
    """Totals over a model plus the per-node costs (in node order).

    ``param_count`` and ``param_bytes`` cover every initializer once (a weight shared by two
    nodes counts once); ``dram_bytes`` is the sum over nodes (a shared weight is moved by
    each node that reads it). ``uncounted_ops`` are op types with no cost rule (0 FLOPs).
    """

    nodes: int
    macs: int
    flops: int
    param_count: int
    param_bytes: int
    dram_bytes: int
    act_bytes: int
    weight_bytes: int
    shape_known: bool
    uncounted_ops: tuple[str, ...]
    per_node: tuple[NodeCost, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["uncounted_ops"] = list(self.uncounted_ops)
        d["per_node"] = [c.to_dict() for c in self.per_node]
        return d


# ---------------------------------------------------------------------- shape helpers


def _dims(info: TensorInfo) -> IntShape | None:
    """Shape with unknown dimensions as 1 (a lower bound), or None when the rank is unknown."""
    if info.shape is None:
        return None
    return tuple(d if isinstance(d, int) else 1 for d in info.shape)


def _numel(info: TensorInfo) -> int:
    """Element count with unknown dimensions as 1; 0 when the rank is unknown."""
    dims = _dims(info)
    return 0 if dims is None else math.prod(dims)


def _element_size(info: TensorInfo, requested: int) -> int:
    """Bytes per element: ``requested`` for float (or unknown) dtypes, the stored size otherwise."""
    if info.dtype is None or np.dtype(info.dtype).kind == "f":
        return requested
    return int(np.dtype(info.dtype).itemsize)


class _NodeView:
    """Shapes of one node's inputs and outputs, looked up once."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.node = node
        self.inputs = [graph.tensor(n) if n else None for n in node.inputs]
        self.outputs = [graph.tensor(n) if n else None for n in node.outputs]

    def input(self, i: int) -> TensorInfo | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def in_dims(self, i: int) -> IntShape | None:
        info = self.input(i)
        return None if info is None else _dims(info)

    def out_dims(self, i: int = 0) -> IntShape | None:
        info = self.outputs[i] if i < len(self.outputs) else None
        return None if info is None else _dims(info)

    def in_numel(self, i: int) -> int:
        info = self.input(i)
        return 0 if info is None else _numel(info)

    def out_numel(self, i: int = 0) -> int:
        dims = self.out_dims(i)
        return 0 if dims is None else math.prod(dims)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)


def _broadcast(*shapes: IntShape) -> IntShape:
    """Numpy broadcast of shapes (dimension 1 stretches); mismatches take the larger."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(max(col) for col in zip(*padded)) if rank else ()


# ------------------------------------------------------------------------- MAC rules


def _matmul_macs(v: _NodeView, a_idx: int, b_idx: int) -> int:
    """MatMul (numpy semantics, batch dims broadcast): output elements x K."""
    a, b = v.in_dims(a_idx), v.in_dims(b_idx)
    trans_a = bool(v.attr("transA", 0)) and v.node.op_type == "FusedMatMul"
    if a:
        k = a[-2] if trans_a and len(a) >= 2 else a[-1]
    elif b:
        k = b[0] if len(b) == 1 else b[-2]
    else:
        return 0
    out = v.out_dims(0)
    if out is not None:
        return math.prod(out) * k
    if a is None or b is None:
        return 0
    a2 = a if len(a) >= 2 else (1,) + a  # numpy promotes 1-D operands to matrices
    b2 = b if len(b) >= 2 else b + (1,)
    return math.prod(_broadcast(a2[:-2], b2[:-2])) * a2[-2] * b2[-1] * k


def _gemm_macs(v: _NodeView, a_idx: int, b_idx: int) -> int:
    """Gemm: M x N x K, with transA/transB."""
    a, b = v.in_dims(a_idx), v.in_dims(b_idx)
    trans_a, trans_b = bool(v.attr("transA", 0)), bool(v.attr("transB", 0))
    k = None
    if a is not None and len(a) == 2:
        k = a[0] if trans_a else a[1]
    elif b is not None and len(b) == 2:
        k = b[1] if trans_b else b[0]
    if k is None:
        return 0
    out = v.out_dims(0)
    if out is not None:
        return math.prod(out) * k
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return 0
    m = a[1] if trans_a else a[0]
    n = b[0] if trans_b else b[1]
    return m * n * k


def _conv_out_spatial(v: _NodeView, x: IntShape, w: IntShape) -> IntShape:
    """Spatial output dims of a convolution from input, kernel and attributes (when inference gave none)."""
    spatial = x[2:]
    kernel = tuple(v.attr("kernel_shape", w[2:]))
    rank = len(spatial)
    strides = tuple(v.attr("strides", (1,) * rank))
    dilations = tuple(v.attr("dilations", (1,) * rank))
    pads = tuple(v.attr("pads", (0,) * (2 * rank)))
    auto_pad = v.attr("auto_pad", "NOTSET")
    out = []
    for i in range(rank):
        extent = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-spatial[i] // strides[i]))
        elif auto_pad == "VALID":
            out.append(max(0, (spatial[i] - extent) // strides[i] + 1))
        else:
            out.append(max(0, (spatial[i] + pads[i] + pads[i + rank] - extent) // strides[i] + 1))
    return tuple(out)


def _conv_macs(v: _NodeView, x_idx: int, w_idx: int) -> int:
    """Conv: output elements x (C_in / group) x kernel volume; W is (M, C_in/group, *kernel)."""
    w = v.in_dims(w_idx)
    if w is None or len(w) < 2:
        return 0
    per_output = math.prod(w[1:])
    out = v.out_dims(0)
    if out is None:
        x = v.in_dims(x_idx)
        if x is None or len(x) != len(w):
            return 0
        out = (x[0], w[0]) + _conv_out_spatial(v, x, w)
    return math.prod(out) * per_output


def _conv_transpose_macs(v: _NodeView) -> int:
    """ConvTranspose: every input element is scattered to (M / group) x kernel volume outputs;
    W is (C_in, M/group, *kernel). Outputs cropped by pads are counted (they are computed)."""
    x, w = v.in_dims(0), v.in_dims(1)
    if x is None or w is None or len(w) < 2:
        return 0
    return math.prod(x) * math.prod(w[1:])


def _einsum_points(equation: str, shapes: list[IntShape | None]) -> tuple[int, bool] | None:
    """Size of the iteration space of an einsum and whether any label is summed over.

    None when an operand's rank disagrees with its subscripts or a shape is unknown.
    """
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        return None
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    ellipsis: IntShape = ()
    for term, shape in zip(terms, shapes):
        if shape is None:
            return None
        head, dots, tail = term.partition("...")
        n_ell = len(shape) - len(head) - len(tail) if dots else 0
        if n_ell < 0 or (not dots and len(term) != len(shape)):
            return None
        ellipsis = _broadcast(ellipsis, tuple(shape[len(head) : len(head) + n_ell]))
        labelled = list(zip(head, shape[: len(head)])) + list(zip(tail, shape[len(shape) - len(tail) :]))
        for label, size in labelled:
            sizes[label] = max(sizes.get(label, 1), size)
            counts[label] = counts.get(label, 0) + 1
    if "->" in eq:
        out_labels = set(rhs.replace("...", ""))
    else:  # implicit output: labels that appear exactly once
        out_labels = {label for label, c in counts.items() if c == 1}
    summed = any(label not in out_labels for label in sizes)
    return math.prod(sizes.values()) * math.prod(ellipsis), summed


def _einsum_cost(v: _NodeView) -> tuple[int, int]:
    """(macs, flops) of Einsum: (operands - 1) multiplies per iteration point; one operand
    only sums (flops = input elements when a label is summed, else a pure data movement)."""
    shapes = [v.in_dims(i) for i in range(len(v.inputs))]
    result = _einsum_points(str(v.attr("equation", "")), shapes)
    if result is None:
        return 0, 0
    points, summed = result
    if len(shapes) >= 2:
        macs = points * (len(shapes) - 1)
        return macs, 2 * macs
    return 0, (v.in_numel(0) if summed else 0)


def _rnn_macs(v: _NodeView) -> int:
    """RNN/GRU/LSTM: per time step and batch row, W (D, G*H, I) and R (D, G*H, H) each multiply once."""
    x = v.in_dims(0)
    if x is None or len(x) != 3:
        return 0
    seq, batch = (x[1], x[0]) if v.attr("layout", 0) == 1 else (x[0], x[1])
    return seq * batch * (v.in_numel(1) + v.in_numel(2))


def _attention_cost(v: _NodeView) -> tuple[int, int]:
    """(macs, flops) of attention ops: Q.K^T and P.V MatMuls (plus the QKV projection of
    com.microsoft.Attention); flops add ATTENTION_FLOPS_PER_SCORE per attention score."""
    node = v.node
    q = v.in_dims(0)
    if q is None:
        return 0, 0
    proj = 0
    if node.domain == "com.microsoft" and node.op_type == "Attention":
        # input (B, S, D_in), weights (D_in, Dq + Dk + Dv), past (2, B, N, P, H)
        w = v.in_dims(1)
        if w is None or len(q) != 3 or len(w) != 2:
            return 0, 0
        batch, s_q, d_in = q
        proj = batch * s_q * d_in * w[1]
        sizes = v.attr("qkv_hidden_sizes") or [w[1] // 3] * 3
        qk_width, v_width = int(sizes[0]), int(sizes[2])
        past = v.in_dims(4)
        s_kv = s_q + (past[3] if past is not None and len(past) == 5 else 0)
        heads = int(v.attr("num_heads", 1))
    elif node.domain == "com.microsoft" and node.op_type == "MultiHeadAttention":
        # query (B, S, Dq) or packed (B, S, N, 3, H); key (B, L, D) or (B, N, L, H); value likewise
        k, val = v.in_dims(1), v.in_dims(2)
        heads = int(v.attr("num_heads", 1))
        if len(q) == 5:
            batch, s_q, heads, _, head = q
            qk_width = v_width = heads * head
            s_kv = s_q
        elif len(q) == 3 and k is not None and val is not None:
            batch, s_q, qk_width = q
            s_kv = k[1] if len(k) == 3 else k[2]
            v_width = val[2] if len(val) == 3 else val[1] * val[3]
        else:
            return 0, 0
        past = v.in_dims(6)
        s_kv += past[2] if past is not None and len(past) == 4 else 0
    else:
        # ONNX Attention (opset 23): Q (B, Hq, S, D) or (B, S, Hq*D); K/V (B, Hkv, L, D) or (B, L, Hkv*D)
        k, val = v.in_dims(1), v.in_dims(2)
        if k is None or val is None:
            return 0, 0
        if len(q) == 4:
            batch, heads, s_q, d = q
            qk_width = heads * d
            s_kv = k[2]
            v_width = heads * val[3]
        elif len(q) == 3:
            batch, s_q, qk_width = q
            heads = int(v.attr("q_num_heads", 1))
            kv_heads = max(1, int(v.attr("kv_num_heads", heads)))
            s_kv = k[1]
            v_width = val[2] * heads // kv_heads  # heads sharing a K/V head (GQA) each read it
        else:
            return 0, 0
        past = v.in_dims(4)
        s_kv += past[2] if past is not None and len(past) == 4 else 0
    scores = batch * heads * s_q * s_kv
    macs = proj + batch * s_q * s_kv * (qk_width + v_width)
    return macs, 2 * macs + ATTENTION_FLOPS_PER_SCORE * scores


# ------------------------------------------------------------------------ FLOP rules


def _resize_flops(v: _NodeView) -> int:
    """Resize/Upsample: nearest 0; linear 3 per lerp, 2^d - 1 lerps per output; cubic 4-tap
    MACs per axis, (4^d - 1)/3 cubic combinations of 7 flops, d = resized axes."""
    mode = str(v.attr("mode", "nearest"))
    x, y = v.in_dims(0), v.out_dims(0)
    if mode == "nearest" or x is None or y is None or len(x) != len(y):
        return 0
    d = sum(1 for a, b in zip(x, y) if a != b)
    if mode == "linear":
        return math.prod(y) * 3 * (2**d - 1)
    if mode == "cubic":
        return math.prod(y) * 7 * (4**d - 1) // 3
    return 0


def _special_flops(v: _NodeView) -> int | None:
    """FLOPs of ops whose count depends on attributes or arity; None when the op has no rule here."""
    op = v.node.op_type
    if op in _POOL_OPS:
        kernel = v.attr("kernel_shape")
        if not kernel:
            return 0
        return v.out_numel(0) * math.prod(int(k) for k in kernel) * _POOL_OPS[op]
    if op in _VARIADIC_OPS:
        n = sum(1 for i in v.inputs if i is not None)
        out = v.out_numel(0) or max((v.in_numel(i) for i in range(len(v.inputs))), default=0)
        per = max(0, n - 1) + (1 if op == "Mean" and n > 1 else 0)
        return out * per
    if op in ("Resize", "Upsample"):
        return _resize_flops(v)
    if op == "LRN":  # square, window sum, bias/scale/pow, divide
        return v.in_numel(0) * (int(v.attr("size", 1)) + 4)
    return None


def _table_flops(v: _NodeView) -> int | None:
    entry = FLOPS_PER_ELEMENT.get(v.node.op_type)
    if entry is None:
        return None
    per, basis = entry
    if per == 0:
        return 0
    if basis == PER_INPUT:
        return per * v.in_numel(0)
    out = v.out_numel(0)
    if out == 0 and v.out_dims(0) is None:  # output rank unknown: broadcast output >= every input
        out = max((v.in_numel(i) for i in range(len(v.inputs))), default=0)
    return per * out


def _compute(v: _NodeView) -> tuple[int, int, bool]:
    """(macs, flops, has_rule) of one node."""
    op = v.node.op_type
    if op in _MATMUL_INPUTS:
        macs = _matmul_macs(v, *_MATMUL_INPUTS[op])
    elif op in _GEMM_INPUTS:
        macs = _gemm_macs(v, *_GEMM_INPUTS[op])
    elif op in _CONV_INPUTS:
        macs = _conv_macs(v, *_CONV_INPUTS[op])
    elif op == "ConvTranspose":
        macs = _conv_transpose_macs(v)
    elif op in _RNN_OPS:
        macs = _rnn_macs(v)
    elif op == "Einsum":
        return (*_einsum_cost(v), True)
    elif op in ("Attention", "MultiHeadAttention"):
        return (*_attention_cost(v), True)
    else:
        flops = _special_flops(v)
        if flops is None:
            flops = _table_flops(v)
        if flops is None:
            return 0, 0, False
        return 0, flops, True
    return macs, 2 * macs, True


# ------------------------------------------------------------------------------ API


def _node_cost(graph: Graph, node: Node, act_bytes: int, weight_bytes: int) -> tuple[NodeCost, bool]:
    v = _NodeView(graph, node)
    try:
        macs, flops, has_rule = _compute(v)
    except (ZeroDivisionError, IndexError, ValueError, TypeError, OverflowError):
        # attributes or declared shapes that contradict each other (a stride of 0, a MatMul
        # of a scalar): the node cannot run, and its cost is unknown, as for an op without a rule
        macs, flops, has_rule = 0, 0, False
    weights = graph.weights
    param = act_in = act_out = 0
    known = True
    for name in dict.fromkeys(n for n in node.inputs if n):
        if name in weights:
            info = weights.info[name]
            param += _numel(info) * _element_size(info, weight_bytes)
        else:
            info = graph.tensor(name)
            act_in += _numel(info) * _element_size(info, act_bytes)
        known = known and info.is_static
    for name in dict.fromkeys(n for n in node.outputs if n):
        info = graph.tensor(name)
        act_out += _numel(info) * _element_size(info, act_bytes)
        known = known and info.is_static
    dram = param + act_in + act_out
    cost = NodeCost(
        name=node.name,
        op_type=node.qualified_op,
        macs=int(macs),
        flops=int(flops),
        param_bytes=int(param),
        input_bytes=int(act_in),
        output_bytes=int(act_out),
        dram_bytes=int(dram),
        intensity=float(flops) / dram if dram else 0.0,
        shape_known=known,
    )
    return cost, has_rule


def node_costs(model: Model, act_bytes: int = 1, weight_bytes: int = 1) -> list[NodeCost]:
    """Cost of every node in order; element sizes in bytes (1 for int8, 4 for fp32)."""
    return [_node_cost(model.graph, n, act_bytes, weight_bytes)[0] for n in model.graph.nodes]


def model_cost(model: Model, act_bytes: int = 1, weight_bytes: int = 1) -> ModelCost:
    """Totals and per-node costs of a model; element sizes in bytes (1 for int8, 4 for fp32)."""
    graph = model.graph
    per_node: list[NodeCost] = []
    uncounted: dict[str, None] = {}
    for node in graph.nodes:
        cost, has_rule = _node_cost(graph, node, act_bytes, weight_bytes)
        per_node.append(cost)
        if not has_rule:
            uncounted[node.qualified_op] = None
    infos = graph.weights.info.values()
    return ModelCost(
        nodes=len(per_node),
        macs=sum(c.macs for c in per_node),
        flops=sum(c.flops for c in per_node),
        param_count=sum(_numel(i) for i in infos),
        param_bytes=sum(_numel(i) * _element_size(i, weight_bytes) for i in infos),
        dram_bytes=sum(c.dram_bytes for c in per_node),
        act_bytes=act_bytes,
        weight_bytes=weight_bytes,
        shape_known=all(c.shape_known for c in per_node),
        uncounted_ops=tuple(sorted(uncounted)),
        per_node=tuple(per_node),
    )

