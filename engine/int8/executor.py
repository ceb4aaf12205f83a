"""The integer-exact int8 executor: a model run with the integer arithmetic an int8 NPU uses.

``Int8Executor(model, plan).run(feeds)`` quantizes the float feeds with the graph inputs'
QParams and runs the nodes in topological order. Each node takes one of three paths
(``plan.paths``, defaults in :class:`engine.int8.plan.QuantPlan`):

- ``"integer"`` -- :meth:`Int8Executor._integer_path`: integer math on codes, then
  requantize (the kernels of :mod:`engine.int8.ops`; for Softmax, GELU, LayerNorm and
  Sigmoid/SiLU the I-BERT integer-only approximations);
- ``"float_fallback"`` -- :meth:`Int8Executor._float_fallback_path`: dequantize the inputs
  (weights listed in the plan as their int8 values), run the FLOAT kernel of
  :mod:`engine.ops`, quantize the float outputs with their QParams. Ops without an
  integer kernel, and nodes whose integer kernel cannot run them as configured (e.g.
  per-channel parameters where it needs per-tensor ones; the reason is in
  ``Int8Result.notes``), take this path;
- ``"float"`` -- the same, but the outputs stay float.

Non-float tensors (int64 shapes and indices, bool masks) are never quantized. A float
initializer read by an integer kernel is quantized once (cached) with the plan's
``weights`` QParams, else with what the kernel asks for (a pass-through op: its output's
QParams), else per tensor symmetric in the scheme's weight dtype. Biases of Conv/Gemm are
quantized to int32 by the kernels at scale ``s_x * s_w``.

With ``plan.fuse_gelu`` a recognised erf-GELU subgraph ``x / sqrt2 -> Erf -> + 1 -> * x
-> * 0.5`` (either multiplication order; ``* (1/sqrt2)`` for the division) runs as one
Gelu unit, at the position of its first node and on the path of its Erf node; its inner
tensors are then not produced (absent from ``values``).

With ``plan.fuse_bias`` a MatMul whose output feeds only ``+ bias`` (a constant of one
value per output column; PyTorch exports a Linear layer on 3-D input this way) runs with
that Add as one unit: the bias is added in int32 to the exact product and the sum is
requantized once, to the Add's output parameters (:class:`engine.int8.ops.linalg.MatMulBias`),
as an NPU's fully connected layer does; the MatMul's own output is then not produced.

Tensors are freed after their last use as in the float executor (unless
``intermediate``). ``run_node`` evaluates a single node on given float inputs for the
per-layer ("isolated") error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.errors import ModelError
from engine.executor import executor_for
from engine.graph import Graph, Model, Node
from engine.int8.ops import IntKernel, int_kernel_class
from engine.int8.plan import NodePath, QuantPlan, same_params
from engine.int8.qtensor import (
    NotInteger,
    QTensor,
    Value,
    check_rounding,
    is_float,
    quantize_tensor,
    to_float,
)
from engine.ops import OpKernel
from engine.quant.qparams import QParams, qparams_from_range

Int8Hook = Callable[[Node, Sequence[Value | None], tuple[Value, ...]], Sequence[Value] | None]
"""``hook(node, inputs, outputs)`` after each node (a fused GELU unit: a synthetic Gelu
node); values are QTensor (codes + QParams), float or non-float arrays. Returning values
replaces the outputs (float arrays are quantized by the consumers that need codes)."""
ProgressFn = Callable[[int, int], None]

PATHS: tuple[NodePath, ...] = ("integer", "float_fallback", "float")
_KERNEL_ERRORS = (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError)


@dataclass
class Int8Result:
    """One int8 run.

    ``values``: float32 DEQUANTIZED value of every tensor when ``intermediate`` (graph
    inputs, weights read by nodes as the int8 model holds them, node outputs), else of the
    graph outputs; float tensors left float and non-float tensors as they are.
    ``codes``: the integer codes of the quantized tensors among those. ``clipped``: values
    saturated when each quantized tensor was produced (every quantized tensor, also
    without ``intermediate``). ``params``: QParams of every quantized tensor.
    ``paths``: the path each node took; ``notes``: why a node did not take its planned
    path (or the GELU unit it ran in).
    """

    values: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    params: dict[str, QParams] = field(default_factory=dict)
    paths: dict[str, NodePath] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    dequantized: bool = True
    """False: ``values`` holds a quantized tensor as its QTensor (codes and QParams, which
    ``dequantize()``), not as float32: see :meth:`Int8Executor.run`."""

    def record(self, name: str, value: Value, keep: bool) -> None:
        """Store one tensor's facts (its values and codes only when ``keep``)."""
        if isinstance(value, QTensor):
            self.clipped[name] = value.clipped
            self.params[name] = value.qp
            if keep:
                self.codes[name] = value.codes
                if self.dequantized:
                    self.values[name] = value.dequantize()
                else:  # the codes only: a float32 copy of them would be held as long as the values
                    self.values[name] = QTensor(value.codes, value.qp, value.clipped)
        elif keep:
            self.values[name] = value


# ------------------------------------------------------------------ GELU subgraphs

SQRT2 = math.sqrt(2.0)


UNIT_NAMES = {"gelu": "GELU", "bias": "MatMul + bias"}
"""How the kinds of fused units are named (unit members' notes, findings, the report, gates)."""
UNIT_MARKS = {"gelu": "·G", "bias": "·B"}
"""The short mark of a unit's members in layer tables (the window's and the report's)."""


@dataclass
class FusedUnit:
    """Nodes run as one unit: member node indices (sorted), the unit's activation input ``x``
    and output ``y``, and its synthetic ``node`` (inputs: ``x`` then constants of the model).
    ``kind``: ``"gelu"`` (an erf-GELU subgraph) or ``"bias"`` (MatMul + bias Add); ``anchor``:
    the member whose planned path the unit takes (the Erf; the MatMul)."""

    members: list[int]
    anchor: Node
    x: str
    y: str
    node: Node
    path: NodePath = "integer"
    int_kernel: IntKernel | None = None
    float_kernel: OpKernel | None = None
    kind: str = "gelu"

    writer: str = ""
    """The member writing the unit's output (its row carries the unit's error)."""

    @property
    def label(self) -> str:
        """How messages name the unit."""
        return f"{UNIT_NAMES[self.kind]} unit {self.node.name}"

    def note(self, member: str) -> str:
        """What a member's note says of the unit it runs in."""
        role = "its error is on this node" if member == self.writer else f"output not produced; its error is on {self.writer}"
        return f"runs in {self.label} ({role})"


GeluUnit = FusedUnit  # the name before bias units existed


def _any_float(args: Sequence[Value | None]) -> bool:
    """Whether any argument is a QTensor or a floating-point array (see ``is_float``)."""
    for a in args:
        if type(a) is QTensor or is_float(a):
            return True
    return False


def _scalar_const(graph: Graph, name: str) -> float | None:
    if name not in graph.weights:
        return None
    info = graph.weights.info[name]
    if info.dtype is None or np.dtype(info.dtype).kind != "f" or info.numel != 1:
        return None
    return float(np.asarray(graph.weights[name]).reshape(-1)[0])


def _near(graph: Graph, name: str, target: float) -> bool:
    value = _scalar_const(graph, name)
    return value is not None and abs(value - target) <= 1e-3 * abs(target)


def _other_input(node: Node, name: str) -> str | None:
    """The second input of a binary node one of whose inputs is ``name``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a == name:
        return b
    if b == name:
        return a
    return None


def _binary_with_const(graph: Graph, node: Node | None, op: str, target: float) -> str | None:
    """For ``op(t, c)`` / ``op(c, t)`` with ``c`` a scalar constant near ``target`` (Div:
    only ``t / c``): the tensor ``t``; else None."""
    if node is None or node.op_type != op or node.domain or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if _near(graph, b, target):
        return a
    if op != "Div" and _near(graph, a, target):
        return b
    return None


def find_gelu_units(graph: Graph) -> list[tuple[list[int], Node, str, str]]:
    """Erf-GELU subgraphs: ``(member indices, Erf node, input x, output y)`` each.

    Recognised: ``d = x / sqrt2`` (or ``x * (1/sqrt2)``), ``e = Erf(d)``, ``a = e + 1``, then
    ``y = (x * a) * 0.5`` or ``y = (x * 0.5) * a`` (operands in either order); every inner
    tensor has that one consumer and is not a graph output.
    """
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.output_names)
    index = {id(n): i for i, n in enumerate(graph.nodes)}

    def sole_consumer(tensor: str) -> Node | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    found: list[tuple[list[int], Node, str, str]] = []
    for erf in graph.nodes:
        if erf.op_type != "Erf" or erf.domain or len(erf.inputs) != 1 or len(erf.outputs) != 1:
            continue
        d = erf.inputs[0]
        scale_node = producers.get(d)
        if scale_node is None or sole_consumer(d) is not erf:
            continue
        x = _binary_with_const(graph, scale_node, "Div", SQRT2) or _binary_with_const(
            graph, scale_node, "Mul", 1.0 / SQRT2
        )
        if x is None:
            continue
        add = sole_consumer(erf.outputs[0])
        if add is None or _binary_with_const(graph, add, "Add", 1.0) != erf.outputs[0]:
            continue
        m1 = sole_consumer(add.outputs[0])
        if m1 is None or m1.op_type != "Mul" or m1.domain:
            continue
        other = _other_input(m1, add.outputs[0])
        if other == x:  # (x * a) * 0.5
            m2 = sole_consumer(m1.outputs[0])
            if _binary_with_const(graph, m2, "Mul", 0.5) != m1.outputs[0]:
                continue
            assert m2 is not None
            members = [scale_node, erf, add, m1, m2]
            y = m2.outputs[0]
        else:  # (x * 0.5) * a
            half = producers.get(other) if other else None
            if other is None or half is None or sole_consumer(other) is not m1:
                continue
            if _binary_with_const(graph, half, "Mul", 0.5) != x:
                continue
            members = [half, scale_node, erf, add, m1]
            y = m1.outputs[0]
        if any(len(n.outputs) != 1 for n in members):
            continue
        found.append((sorted(index[id(n)] for n in members), erf, x, y))
    return found


def find_bias_units(graph: Graph) -> list[tuple[list[int], Node, Node, str]]:
    """MatMul + bias pairs: ``(member indices, MatMul node, Add node, bias name)`` each.

    Recognised: ``h = MatMul(x, W)`` with ``x`` not a constant and ``W`` a 2-D constant
    ``[K, N]``, ``h`` read only by ``y = Add(h, b)`` (either order) and no graph output,
    ``b`` a float constant of ``N`` values along the last axis (shape ``[N]`` or
    ``[1, ..., 1, N]``, no larger in rank than ``h``)."""
    weights = graph.weights
    consumers = graph.consumers()
    outputs = set(graph.output_names)
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    found: list[tuple[list[int], Node, Node, str]] = []
    for mm in graph.nodes:
        if mm.op_type != "MatMul" or mm.domain or len(mm.inputs) != 2 or len(mm.outputs) != 1:
            continue
        x, w = mm.inputs
        h = mm.outputs[0]
        if not x or x in weights or w not in weights or h in outputs:
            continue
        w_info = weights.info[w]
        if w_info.shape is None or len(w_info.shape) != 2:
            continue
        users = consumers.get(h, [])
        if len(users) != 1:
            continue
        add = users[0]
        if add.op_type != "Add" or add.domain or len(add.inputs) != 2 or len(add.outputs) != 1 or add.inputs[0] == add.inputs[1]:
            continue
        b = add.inputs[1] if add.inputs[0] == h else add.inputs[0]
        if b not in weights:
            continue
        b_info = weights.info[b]
        n = int(w_info.shape[1])
        if b_info.dtype is None or np.dtype(b_info.dtype).kind != "f" or b_info.shape is None:
            continue
        shape = tuple(int(d) for d in b_info.shape)
        if not shape or shape[-1] != n or any(d != 1 for d in shape[:-1]):
            continue
        found.append((sorted((index[id(mm)], index[id(add)])), mm, add, b))
    return found


class _ChainKernel(OpKernel):
    """The float kernels of a fused unit's member nodes run in order on one input (no
    quantization between them): the unit's float path, equal to the float model's. Tensors
    private to the chain (and the input, when the caller hands it over: ``run_reusing``)
    are given to the member that reads them last as reusable buffers, as the float
    executor does."""

    reuses = (0,)

    def __init__(self, node: Node, chain: list[tuple[Node, OpKernel]], graph: Graph) -> None:
        super().__init__(node, 0)
        self.chain = chain
        self.graph = graph
        private = {node.inputs[0]} | {o for member, _ in chain for o in member.outputs if o}
        last: dict[str, int] = {}
        for j, (member, _) in enumerate(chain):
            for name in member.inputs:
                last[name] = j
        self._dying: list[tuple[int, ...]] = [
            tuple(
                p
                for p, name in enumerate(member.inputs)
                if name in private and last.get(name) == j and member.inputs.count(name) == 1 and p in kernel.reuses
            )
            for j, (member, kernel) in enumerate(chain)
        ]

    def _run(self, x: np.ndarray, *constants: np.ndarray | None) -> np.ndarray:
        return self._chain(x, constants, owned=False)

    def _run_reusing(self, reusable: tuple[int, ...], x: np.ndarray, *constants: np.ndarray | None) -> np.ndarray:
        return self._chain(x, constants, owned=0 in reusable)

    def _chain(self, x: np.ndarray, constants: tuple[np.ndarray | None, ...], owned: bool) -> np.ndarray:
        """The members in order; the unit node's later inputs (model constants) as given (a
        weight as the int8 model holds it, on the fallback path), else the model's."""
        given = {n: c for n, c in zip(self.node.inputs[1:], constants) if c is not None}
        local: dict[str, np.ndarray] = {self.node.inputs[0]: x}
        own = {self.node.inputs[0]} if owned else set()
        for (member, kernel), dying in zip(self.chain, self._dying):
            args = [local[n] if n in local else given.get(n, self.graph.weights[n]) if n else None for n in member.inputs]
            reusable = tuple(p for p in dying if member.inputs[p] in own)
            outs = kernel.run_reusing(reusable, *args) if reusable else kernel.run(*args)
            foreign = [a for n, a in zip(member.inputs, args) if n not in own]
            for name, value in zip(member.outputs, outs):
                local[name] = value
                if isinstance(value, np.ndarray) and value.base is None and not any(value is a for a in foreign):
                    own.add(name)  # a fresh array (or a reused private buffer): private to the chain
        return local[self.node.outputs[0]]


# ------------------------------------------------------------------ the executor


class Int8Executor:
    """A prepared int8 run of ``model`` under ``plan``: kernels built once, weights quantized
    on first use and cached.

    Attributes for inspection: ``planned`` (the path each node index will try),
    ``int_kernels`` (its integer kernel or None), ``units`` (node index -> the
    :class:`FusedUnit` it belongs to, every member index listed).
    """

    def __init__(self, model: Model, plan: QuantPlan) -> None:
        check_rounding(plan.rounding)
        self.model = model
        self.plan = plan
        self.graph = model.graph
        self.float_exec = executor_for(model)  # validates that every op can run
        self.index: dict[str, int] = {n.name: i for i, n in enumerate(self.graph.nodes)}
        self.int_kernels: list[IntKernel | None] = []
        self.planned: list[NodePath] = []
        for node, float_kernel in zip(self.graph.nodes, self.float_exec.kernels):
            cls = int_kernel_class(node.op_type, node.domain)
            opset = model.opsets.get(node.domain, model.opset)
            int_kernel = cls(node, opset, plan.rounding, float_kernel) if cls else None
            if int_kernel is not None:
                int_kernel.constant_inputs = frozenset(i for i, name in enumerate(node.inputs) if name in self.graph.weights)
            self.int_kernels.append(int_kernel)
            path = plan.path(node.name, "integer" if cls else "float_fallback")
            if path not in PATHS:
                raise ModelError(f"plan: node {node.name} has path {path!r}; expected one of {', '.join(PATHS)}", model.path)
            self.planned.append("float_fallback" if path == "integer" and cls is None else path)
        self.units: dict[int, FusedUnit] = {}
        if plan.fuse_gelu:
            for members, erf, x, y in find_gelu_units(self.graph):
                self._add_unit(members, erf, x, y)
        if plan.fuse_bias:
            for members, mm, add, bias in find_bias_units(self.graph):
                if all(self.planned[i] == "integer" and i not in self.units for i in members):
                    self._add_bias_unit(members, mm, add, bias)
        self._consts: dict[str, tuple[np.ndarray, QParams, QTensor, bool]] = {}

    def _add_unit(self, members: list[int], erf: Node, x: str, y: str) -> None:
        node = Node(name=f"{erf.name}:gelu", op_type="Gelu", inputs=[x], outputs=[y], attrs={"approximate": "none"})
        gelu_cls = int_kernel_class("Gelu")
        chain = [(self.graph.nodes[i], self.float_exec.kernels[i]) for i in members]
        float_kernel = _ChainKernel(node, chain, self.graph)
        int_kernel = gelu_cls(node, 20, self.plan.rounding, float_kernel) if gelu_cls else None
        path = self.planned[self.index[erf.name]]
        unit = FusedUnit(members, erf, x, y, node, path, int_kernel, float_kernel, writer=self._writer(members, y))
        for i in members:
            self.units[i] = unit

    def _add_bias_unit(self, members: list[int], mm: Node, add: Node, bias: str) -> None:
        from engine.int8.ops.linalg import MatMulBias

        x, w = mm.inputs
        y = add.outputs[0]
        node = Node(name=f"{mm.name}:bias", op_type=MatMulBias.op_type, inputs=[x, w, bias], outputs=[y], attrs={})
        chain = [(self.graph.nodes[i], self.float_exec.kernels[i]) for i in members]
        float_kernel = _ChainKernel(node, chain, self.graph)
        int_kernel = MatMulBias(node, self.model.opset, self.plan.rounding, float_kernel)
        int_kernel.constant_inputs = frozenset({1, 2})
        unit = FusedUnit(members, mm, x, y, node, "integer", int_kernel, float_kernel, kind="bias", writer=add.name)
        for i in members:
            self.units[i] = unit

    def quantize_weights(self) -> None:
        """Quantize every weight the plan gives parameters to now (the cache a first run
        fills): before forking worker processes, so they share the codes instead of each
        quantizing all weights on its first sample."""
        weights = self.graph.weights
        for name in self.plan.weights:
            if name in weights:
                self._const(name, weights[name], None)

    def _writer(self, members: list[int], y: str) -> str:
        return next(self.graph.nodes[m].name for m in members if y in self.graph.nodes[m].outputs)

    # -------------------------------------------------------------- running

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        intermediate: bool = False,
        hook: Int8Hook | None = None,
        progress: ProgressFn | None = None,
        weights_too: bool = True,
        dequantized: bool = True,
    ) -> Int8Result:
        """Execute once on float ``feeds`` (quantized at the graph inputs); see :class:`Int8Result`.

        ``weights_too=False`` with ``intermediate``: the weights are left out of ``values`` and
        ``codes`` (dequantizing every weight tensor per run costs more than a run of a
        Transformer; a per-layer comparison reads node outputs only). ``dequantized=False``:
        ``values`` keeps each quantized tensor as its QTensor, dequantized by the reader when
        it reads it (a quarter of the memory held, and the float32 values are made when they
        are compared, still in cache)."""
        graph = self.graph
        weights = graph.weights
        outputs = set(graph.output_names)
        result = Int8Result(dequantized=dequantized)
        values: dict[str, Value] = {}
        for name, array in self.float_exec.check_feeds(feeds).items():
            qp = self.plan.activations.get(name)
            value: Value = quantize_tensor(array, qp) if qp is not None and array.dtype.kind == "f" and name not in weights else array
            values[name] = value
            result.record(name, value, intermediate or name in outputs)
        total = len(graph.nodes)
        for i, node in enumerate(graph.nodes):
            unit = self.units.get(i)
            if unit is None:
                args = [self._arg(name, values) for name in node.inputs]
                outs, path, note = self._execute(node, args, self.planned[i], self.int_kernels[i], self.float_exec.kernels[i])
                ran, out_names = node, node.outputs
                for name in node.inputs:
                    if name and intermediate and weights_too and name in weights and name not in values and name not in result.values:
                        self._record_weight(result, name)
                result.paths[node.name] = path
                if note:
                    result.notes[node.name] = note
            elif i == unit.members[0]:
                args = [self._arg(name, values) for name in unit.node.inputs]
                outs, path, note = self._execute(unit.node, args, unit.path, unit.int_kernel, unit.float_kernel)
                ran, out_names = unit.node, unit.node.outputs
                for name in unit.node.inputs[1:]:
                    if intermediate and weights_too and name not in result.values:
                        self._record_weight(result, name)
                for m in unit.members:
                    member = graph.nodes[m].name
                    result.paths[member] = path
                    result.notes[member] = unit.note(member) + (f"; {note}" if note else "")
            else:
                outs, out_names = (), []
            if out_names and hook is not None:
                replaced = hook(ran, args, outs)
                if replaced is not None:
                    outs = tuple(replaced)
            for name, value in zip(out_names, outs):
                if name:
                    values[name] = value
                    result.record(name, value, intermediate or name in outputs)
            for name in self.float_exec.free_after[i]:
                values.pop(name, None)
            for name in self.float_exec.dead_outputs[i]:
                values.pop(name, None)
            if progress is not None:
                progress(i + 1, total)
        for name in graph.output_names:
            if name not in result.values and name in weights:
                result.values[name] = np.asarray(weights[name])
        return result

    def run_node(
        self,
        node: Node | str,
        float_inputs: Sequence[np.ndarray | None],
        quantized: dict[str, tuple[np.ndarray, QTensor]] | None = None,
    ) -> tuple[tuple[np.ndarray | None, ...], dict[str, int]]:
        """Evaluate ONE node quantized on given FLOAT inputs: (dequantized outputs, clipped per output).

        Float activation inputs are quantized with the plan's QParams (the node then sees
        exactly what the int8 model would feed it given exact producers); weights may be
        passed as None (the model's initializer is used). The node runs on its planned
        path on its own (never as part of a GELU unit). Non-float outputs come back as is.
        ``quantized``: a cache, input name -> (the float array, its QTensor), filled here and
        reused when the same array is given again (a tensor read by several nodes is
        quantized once; the caller drops entries it no longer needs).
        """
        name = node if isinstance(node, str) else node.name
        if name not in self.index:
            unit = next((u for u in self.units.values() if u.node.name == name), None)
            if unit is None:
                raise ModelError(f"run_node: no node named {name!r}", self.model.path)
            return self.run_unit(unit, float_inputs[0] if float_inputs else None, quantized)
        i = self.index[name]
        graph_node = self.graph.nodes[i]
        weights = self.graph.weights
        args: list[Value | None] = []
        given = list(float_inputs) + [None] * max(0, len(graph_node.inputs) - len(float_inputs))
        for input_name, x in zip(graph_node.inputs, given):
            if not input_name:
                args.append(None)
            elif x is None:
                if input_name not in weights:
                    raise ModelError(f"run_node {name}: input {input_name!r} has no value", self.model.path)
                args.append(weights[input_name])
            else:
                args.append(self._activation_arg(input_name, x, quantized))
        outs, _, _ = self._execute(graph_node, args, self.planned[i], self.int_kernels[i], self.float_exec.kernels[i])
        clipped = {o: v.clipped for o, v in zip(graph_node.outputs, outs) if o and isinstance(v, QTensor)}
        return tuple(to_float(v) for v in outs), clipped

    def run_unit(
        self, unit: FusedUnit, x: np.ndarray | None, quantized: dict[str, tuple[np.ndarray, QTensor]] | None = None
    ) -> tuple[tuple[np.ndarray | None, ...], dict[str, int]]:
        """Evaluate one fused unit alone on float ``x`` (quantized with its QParams; the unit's
        constants are the model's), as :meth:`run_node` does for a node: (dequantized
        outputs, clipped per output; ``quantized`` as there). ``run_node(unit.node.name, [x])``
        does the same."""
        if x is None:
            raise ModelError(f"run_unit {unit.node.name}: input {unit.x!r} has no value", self.model.path)
        args: list[Value | None] = [self._activation_arg(unit.x, x, quantized), *(self.graph.weights[n] for n in unit.node.inputs[1:])]
        outs, _, _ = self._execute(unit.node, args, unit.path, unit.int_kernel, unit.float_kernel)
        clipped = {o: v.clipped for o, v in zip(unit.node.outputs, outs) if o and isinstance(v, QTensor)}
        return tuple(to_float(v) for v in outs), clipped

    def _activation_arg(
        self, name: str, x: np.ndarray, quantized: dict[str, tuple[np.ndarray, QTensor]] | None
    ) -> Value:
        """A float input given to :meth:`run_node` / :meth:`run_unit`: quantized with the plan's
        QParams of ``name`` (once per array when a ``quantized`` cache is given), else as is."""
        array = np.asarray(x)
        qp = self.plan.activations.get(name)
        if qp is None or name in self.graph.weights or array.dtype.kind != "f":
            return array
        hit = quantized.get(name) if quantized is not None else None
        if hit is not None and hit[0] is x:
            return hit[1]
        q = quantize_tensor(array, qp)
        if quantized is not None:
            quantized[name] = (x, q)
        return q

    # -------------------------------------------------------------- one node

    def _arg(self, name: str, values: Mapping[str, Value]) -> Value | None:
        if not name:
            return None
        if name in values:
            return values[name]
        return self.graph.weights[name]

    def _execute(
        self,
        node: Node,
        args: list[Value | None],
        path: NodePath,
        int_kernel: IntKernel | None,
        float_kernel: OpKernel | None,
    ) -> tuple[tuple[Value, ...], NodePath, str]:
        """Run one node on its path: (outputs, the path taken, why it differs from the plan)."""
        assert float_kernel is not None
        try:
            if not _any_float(args):  # shapes, indices, masks: as they are
                outs = float_kernel.run(*args)
                if path == "float":
                    return outs, "float", ""
                return self._quantize_outputs(node, outs), "integer", ""
            note = ""
            if path == "integer" and int_kernel is not None:
                try:
                    return self._integer_path(node, args, int_kernel), "integer", ""
                except NotInteger as e:
                    note = f"float fallback: {e}"
                    path = "float_fallback"
            elif path == "integer":
                path = "float_fallback"
            return self._float_fallback_path(node, args, float_kernel, keep_float=path == "float"), path, note
        except ModelError as e:
            raise ModelError(f"node {node.name} ({node.op_type}): {e.problem}", self.model.path) from None
        except _KERNEL_ERRORS as e:
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise ModelError(f"node {node.name} ({node.op_type}) failed: {detail}", self.model.path) from None

    def _integer_path(self, node: Node, args: list[Value | None], kernel: IntKernel) -> tuple[Value, ...]:
        """Integer math, then requantize: float inputs quantized, the integer kernel run."""
        activations = self.plan.activations
        out_params = [activations.get(o) if o else None for o in node.outputs]
        prepared: list[Value | None] = []
        float_inputs = kernel.float_inputs
        for index, (name, value) in enumerate(zip(node.inputs, args)):
            if type(value) is QTensor:
                prepared.append(value.dequantize() if index in float_inputs else value)
            elif value is None or not is_float(value):
                prepared.append(value)
            elif index in float_inputs:
                prepared.append(to_float(value))
            elif isinstance(value, QTensor):
                prepared.append(value)
            else:
                prepared.append(self._quantize_input(name, value, kernel.const_params(index, value, out_params)))
        return tuple(kernel.run(prepared, out_params))

    def _float_fallback_path(
        self, node: Node, args: list[Value | None], kernel: OpKernel, keep_float: bool = False
    ) -> tuple[Value, ...]:
        """Dequantize, float math, requantize (``keep_float``: the outputs stay float)."""
        floats: list[np.ndarray | None] = []
        owned: list[int] = []
        for position, (name, value) in enumerate(zip(node.inputs, args)):
            if isinstance(value, QTensor):
                floats.append(value.dequantize())
                owned.append(position)
            elif not keep_float and name in self.plan.weights and is_float(value) and self._is_stored(name, value):
                floats.append(self._const(name, value, None).dequantize())  # int8 weights, as the chip holds them
                owned.append(position)
            else:
                floats.append(value)
        # dequantized inputs are fresh arrays only this call holds: the kernel may write over them
        reusable = tuple(p for p in kernel.reuses if p in owned)
        outs = kernel.run_reusing(reusable, *floats) if reusable else kernel.run(*floats)
        return outs if keep_float else self._quantize_outputs(node, outs)

    def _quantize_outputs(self, node: Node, outs: tuple[np.ndarray, ...]) -> tuple[Value, ...]:
        result: list[Value] = []
        for name, value in zip(node.outputs, outs):
            qp = self.plan.activations.get(name) if name else None
            if qp is not None and isinstance(value, np.ndarray) and value.dtype.kind == "f":
                result.append(quantize_tensor(value, qp))
            else:
                result.append(value)
        return tuple(result)

    def _is_stored(self, name: str, value: object) -> bool:
        return name in self.graph.weights and value is self.graph.weights[name]

    def _quantize_input(self, name: str, value: np.ndarray, hint: QParams | None) -> QTensor:
        """A float input of an integer kernel as codes: an initializer with its constant
        parameters, an activation (left float by a ``"float"`` node) with its QParams."""
        qp = self.plan.activations.get(name)
        if name in self.graph.weights and (qp is None or self._is_stored(name, value)):
            return self._const(name, value, hint)
        if qp is None:
            raise NotInteger(f"input {name!r} is float and has no QParams")
        return quantize_tensor(value, qp)

    def _const(self, name: str, value: np.ndarray, hint: QParams | None) -> QTensor:
        """A float initializer quantized (cached): plan weights, else ``hint``, else per tensor
        symmetric (the default depends on the values only, so it is cached as such)."""
        qp = self.plan.weights.get(name)
        if qp is None:
            qp = hint
        cached = self._consts.get(name)
        if cached is not None and cached[0] is value and (same_params(cached[1], qp) if qp is not None else cached[3]):
            return cached[2]
        default = qp is None
        if qp is None:
            qp = self._default_const_params(np.asarray(value))
        q = quantize_tensor(value, qp)
        self._consts[name] = (value, qp, q, default)
        return q

    def _default_const_params(self, value: np.ndarray) -> QParams:
        """Per-tensor symmetric parameters of a constant from its finite min/max."""
        scheme = self.plan.scheme
        finite = value[np.isfinite(value)] if value.size else value
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        return qparams_from_range(lo, hi, scheme.weight_dtype, True, scheme.power_of_two)

    def _record_weight(self, result: Int8Result, name: str) -> None:
        cached = self._consts.get(name)
        stored = self.graph.weights[name]
        if cached is not None and cached[0] is stored:
            result.record(name, cached[2], True)
        else:
            result.record(name, np.asarray(stored), True)


def run_int8(
    model: Model,
    plan: QuantPlan,
    feeds: Mapping[str, np.ndarray],
    intermediate: bool = False,
    hook: Int8Hook | None = None,
    progress: ProgressFn | None = None,
) -> Int8Result:
    """One-shot ``Int8Executor(model, plan).run(...)``."""
    return Int8Executor(model, plan).run(feeds, intermediate=intermediate, hook=hook, progress=progress)
