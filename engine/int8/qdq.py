"""Import a QDQ model (QuantizeLinear/DequantizeLinear pairs, as onnxruntime's
``quantize_static(..., quant_format=QuantFormat.QDQ)`` writes it): its own scales and zero
points become a :class:`QuantPlan`, and the graph without the pairs its float reference.

``plan_from_qdq(model) -> (float_model, plan)``:

- weights: ``DequantizeLinear(codes, scale, zp)`` on an initializer is replaced by the
  dequantized float initializer (the engine's DequantizeLinear kernel computes it, as
  onnxruntime does); 8/16-bit codes give ``plan.weights`` QParams (per channel along the
  DQ's ``axis``), int32 codes are biases (not listed: the integer kernels re-derive them at
  scale ``s_x * s_w``, which reproduces the codes). A weight is named after its code
  initializer with onnxruntime's ``_quantized`` suffix dropped, when that name is free;
  else after the DQ output.
- activations: ``x -> QuantizeLinear -> DequantizeLinear(s) -> consumers`` becomes
  ``x -> consumers`` and ``plan.activations[x]`` the pair's QParams. When a DQ output is a
  graph output (onnxruntime renames the producer's output ``<y>_QuantizeLinear_Input``), the
  tensor takes the graph output's name.
- QParams use the full range of the code type (QuantizeLinear saturates to it);
  ``plan.source = "qdq"``, ``plan.fuse_gelu = plan.fuse_bias = False`` (the model's own Q/DQ points sit
  between the nodes of a decomposed GELU), rounding ``"half_even_float"`` (onnxruntime's).
- clamps: onnxruntime removes a Relu whose output pair clamps at 0 by itself (zero point =
  qmin); with ``restore_clamps`` (default) such pairs after a node not known to be
  non-negative get an explicit Relu in the float model, so the float reference computes
  what the QDQ model does (see :func:`_restore_clamps`; listed in
  ``plan.calibration["restored_clamps"]``).
- Q/DQ nodes that fit neither pattern (blocked quantization, a Q whose output is not only
  read by DQs of the same parameters, non-constant scales) stay in the float model as they are.

The float model is a new engine :class:`Model` built from engine Graph objects (no protobuf);
shapes and dtypes come from the QDQ model's inferred tensors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from engine.errors import ModelError
from engine.graph import Graph, Model, Node, TensorInfo, WeightStore
from engine.int8.plan import PASSTHROUGH_OPS, QuantPlan, same_params
from engine.ops import make_kernel
from engine.ops.elementwise import ONNX_TO_NUMPY
from engine.quant.qparams import DTYPES, QParams, QuantScheme

QDQ_DOMAINS = ("", "ai.onnx", "com.microsoft")


@dataclass(frozen=True)
class _Pair:
    """A Q node and the DQ nodes reading its output."""

    q: Node
    dqs: tuple[Node, ...]
    params: QParams


def _is_op(node: Node, op: str) -> bool:
    return node.op_type == op and node.domain in QDQ_DOMAINS


def _const(graph: Graph, name: str) -> np.ndarray | None:
    return np.asarray(graph.weights[name]) if name and name in graph.weights else None


def _params(graph: Graph, node: Node, rank: int | None) -> QParams | None:
    """QParams of a Q or DQ node from its constant scale/zero point (None when they are not
    constants, blocked, or of a code type the executor has no QParams for)."""
    if int(node.attrs.get("block_size", 0) or 0) > 0:
        return None
    scale = _const(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None or scale.dtype.kind != "f" or scale.ndim > 1:
        return None
    zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
    zp = _const(graph, zp_name)
    if zp_name and zp is None:
        return None
    if zp is None:
        if _is_op(node, "DequantizeLinear"):
            src = graph.tensor(node.inputs[0]).dtype
            code_dtype = np.dtype(src) if src is not None else np.dtype(np.uint8)
        else:
            code = int(node.attrs.get("output_dtype", 0) or 0)
            code_dtype = ONNX_TO_NUMPY.get(code, np.dtype(np.int64)) if code else np.dtype(np.uint8)
        zp = np.zeros(scale.shape, dtype=code_dtype)
    dtype = {np.dtype(v): k for k, v in DTYPES.items()}.get(np.dtype(zp.dtype))
    if dtype is None:
        return None
    info = np.iinfo(DTYPES[dtype])
    if scale.size == 1 and zp.size == 1:
        return QParams(float(np.float32(scale.reshape(-1)[0])), np.asarray(int(zp.reshape(-1)[0]), dtype=np.int64), dtype, None, int(info.min), int(info.max))
    axis = int(node.attrs.get("axis", 1))
    if rank is not None:
        if not -rank <= axis < rank:
            return None
        axis %= rank
    scale64 = np.asarray(scale, dtype=np.float32).astype(np.float64).reshape(-1)
    zp64 = np.broadcast_to(np.asarray(zp, dtype=np.int64).reshape(-1), scale64.shape).copy()
    return QParams(scale64, zp64, dtype, axis, int(info.min), int(info.max))


def _rank(graph: Graph, name: str) -> int | None:
    if name in graph.weights:
        shape = graph.weights.info[name].shape
    else:
        shape = graph.tensor(name).shape
    return None if shape is None else len(shape)


def plan_from_qdq(model: Model, restore_clamps: bool = True) -> tuple[Model, QuantPlan]:
    """The float reference model and the QuantPlan of a QDQ model (see module doc)."""
    graph = model.graph
    consumers = graph.consumers()
    graph_outputs = set(graph.output_names)
    graph_inputs = set(graph.input_names)
    removed: set[int] = set()  # ids of Q/DQ nodes taken out
    rename: dict[str, str] = {}
    activations: dict[str, QParams] = {}
    weights: dict[str, QParams] = {}
    new_weights: dict[str, np.ndarray] = {}
    used_names = {t for n in graph.nodes for t in list(n.inputs) + list(n.outputs) if t} | set(graph.weights) | graph_inputs

    # weights: DequantizeLinear on an initializer
    for node in graph.nodes:
        if not _is_op(node, "DequantizeLinear") or node.inputs[0] not in graph.weights or not node.outputs[0]:
            continue
        codes_name, out_name = node.inputs[0], node.outputs[0]
        codes = np.asarray(graph.weights[codes_name])
        qp = _params(graph, node, codes.ndim)
        if codes.dtype != np.int32 and qp is None:
            continue
        if out_name in graph_outputs:
            continue
        kernel = make_kernel(node, model.opsets.get(node.domain, model.opset))
        args = [graph.weights[n] if n else None for n in node.inputs]
        (value,) = kernel.run(*args)
        name = out_name
        if codes_name.endswith("_quantized"):
            base = codes_name[: -len("_quantized")]
            if base not in used_names or base == out_name:
                name = base
        used_names.add(name)
        rename[out_name] = name
        new_weights[name] = np.asarray(value)
        if codes.dtype != np.int32 and qp is not None:
            weights[name] = qp
        removed.add(id(node))

    # activations: Q -> DQ(s)
    pairs: list[_Pair] = []
    for node in graph.nodes:
        if not _is_op(node, "QuantizeLinear") or not node.outputs[0]:
            continue
        x, xq = node.inputs[0], node.outputs[0]
        qp = _params(graph, node, _rank(graph, x))
        readers = consumers.get(xq, [])
        if qp is None or not readers or xq in graph_outputs:
            continue
        if not all(_is_op(r, "DequantizeLinear") and r.inputs[0] == xq and same_params(_params(graph, r, _rank(graph, x)), qp) for r in readers):
            continue
        pairs.append(_Pair(node, tuple(readers), qp))

    for pair in pairs:
        x = pair.q.inputs[0]
        outs = [d.outputs[0] for d in pair.dqs if d.outputs[0]]
        exposed = [o for o in outs if o in graph_outputs]
        if len(exposed) > 1 or (exposed and (x in graph_inputs or x in graph.weights or x in graph_outputs)):
            continue
        target = rename.get(x, x)
        if exposed:
            target = exposed[0]
            rename[x] = target
        for o in outs:
            rename[o] = target
        if x in graph.weights or target in new_weights:
            weights[target] = pair.params
        else:
            activations[target] = pair.params
        removed.add(id(pair.q))
        removed.update(id(d) for d in pair.dqs)

    def rn(name: str) -> str:
        seen = 0
        while name in rename and rename[name] != name and seen < 4:
            name = rename[name]
            seen += 1
        return name

    nodes = [
        Node(n.name, n.op_type, [rn(i) if i else i for i in n.inputs], [rn(o) if o else o for o in n.outputs], dict(n.attrs), n.domain)
        for n in graph.nodes
        if id(n) not in removed
    ]
    clamps: dict[str, str] = {}
    if restore_clamps:
        nodes, clamps = _restore_clamps(nodes, activations, graph, used_names)
        for pre, post in clamps.items():
            activations[pre] = activations[post]
    read = {i for n in nodes for i in n.inputs if i} | {rn(o) for o in graph.output_names}
    store = WeightStore()
    for name in graph.weights:
        if name in read and name not in new_weights:
            store.add(graph.weights.info[name], lambda n=name: graph.weights[n], external=name in graph.weights.external)
    for name, value in new_weights.items():
        if name in read:
            store.add_array(name, value)
    present = read | {o for n in nodes for o in n.outputs if o} | set(graph.input_names)
    tensors: dict[str, TensorInfo] = {}
    for name, info in graph.tensors.items():
        new = rn(name)
        if new in present and new not in store and (new == name or new not in tensors):
            tensors[new] = TensorInfo(new, info.shape, info.dtype)
    for pre, post in clamps.items():
        if post in tensors:
            tensors[pre] = TensorInfo(pre, tensors[post].shape, tensors[post].dtype)
    outputs = [tensors.get(rn(t.name)) or TensorInfo(rn(t.name), t.shape, t.dtype) for t in graph.outputs]
    float_graph = Graph(nodes=nodes, inputs=list(graph.inputs), outputs=outputs, weights=store, tensors=tensors)
    float_model = replace(model, graph=float_graph)
    activations = {k: v for k, v in activations.items() if k in present}
    weights = {k: v for k, v in weights.items() if k in read}
    if not activations and not weights:
        raise ModelError("no QuantizeLinear/DequantizeLinear pairs with constant parameters: not a QDQ model", model.path)
    plan = QuantPlan(
        scheme=_scheme(activations, weights),
        activations=activations,
        weights=weights,
        rounding="half_even_float",
        source="qdq",
        calibration={
            "qdq_pairs": len(pairs),
            "qdq_weights": len(weights),
            "removed_nodes": len(removed),
            "restored_clamps": sorted(clamps.values()),
        },
        fuse_gelu=False,
        fuse_bias=False,
    )
    return float_model, plan


NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "Sqrt", "HardSigmoid", "Softplus"})
"""Ops whose outputs are never negative."""
SIGN_KEEPING_OPS = PASSTHROUGH_OPS | {"AveragePool", "GlobalAveragePool", "ReduceMean", "Concat", "Resize", "ReduceMax"}
"""Ops whose outputs are non-negative when their data inputs are."""


def _restore_clamps(
    nodes: list[Node], activations: dict[str, QParams], graph: Graph, used: set[str]
) -> tuple[list[Node], dict[str, str]]:
    """Put back the Relus a QDQ model expresses by a Q/DQ range starting at 0.

    onnxruntime's QDQ quantizer removes a Relu (or Clip at 0) whose input is quantized and
    lets the pair after it clamp (zero point = qmin, asymmetric activations). Stripping the
    pairs would then drop the clamp from the float reference. Every activation pair with
    zero point = qmin that follows a node not known to be non-negative therefore gets an
    explicit ``Relu`` in the float model: the producer writes ``<x>:pre_clamp`` (same
    QParams, so the int8 execution is unchanged) and the Relu ``<x>:clamp`` writes ``x``.
    Returns the nodes and ``{pre_clamp name: tensor name}``.
    """
    nonneg: set[str] = set()
    result: list[Node] = []
    clamps: dict[str, str] = {}
    for node in nodes:
        result.append(node)
        data = [i for i in node.inputs if i and i not in graph.weights]
        if node.op_type in NONNEGATIVE_OPS or (node.op_type in SIGN_KEEPING_OPS and data and all(d in nonneg for d in data[: None if node.op_type == "Concat" else 1])):
            nonneg.update(o for o in node.outputs if o)
            continue
        if node.op_type == "Clip" and len(node.inputs) > 1 and node.inputs[1] in graph.weights and float(np.asarray(graph.weights[node.inputs[1]])) >= 0:
            nonneg.update(o for o in node.outputs if o)
            continue
        for index, out in enumerate(node.outputs):
            qp = activations.get(out)
            if not out or qp is None or qp.per_channel or int(np.asarray(qp.zero_point)) != qp.qmin:
                continue
            pre = f"{out}:pre_clamp"
            while pre in used:
                pre += "_"
            used.add(pre)
            node.outputs[index] = pre
            result.append(Node(f"{out}:clamp", "Relu", [pre], [out]))
            clamps[pre] = out
            nonneg.add(out)
    return result, clamps


def _scheme(activations: dict[str, QParams], weights: dict[str, QParams]) -> QuantScheme:
    """The scheme that best describes the imported parameters (the most common dtypes;
    symmetric when every activation zero point is the symmetric one)."""
    act_dtypes = Counter(qp.dtype for qp in activations.values())
    w_dtypes = Counter(qp.dtype for qp in weights.values() if qp.dtype in ("int8", "int16"))
    act_dtype = act_dtypes.most_common(1)[0][0] if act_dtypes else "int8"
    symmetric = bool(activations) and all(
        np.all(np.asarray(qp.zero_point) == (128 if qp.dtype == "uint8" else 0)) for qp in activations.values()
    )
    return QuantScheme(
        activation_dtype=act_dtype,
        symmetric=symmetric,
        weight_per_channel=any(qp.per_channel for qp in weights.values()),
        weight_dtype=w_dtypes.most_common(1)[0][0] if w_dtypes else "int8",
    )
