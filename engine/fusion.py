"""Fusion opportunities: a pattern matcher over the graph, patterns declared as data.

A :class:`Pattern` is a small DAG of :class:`Step` s (op types plus how each input is wired:
to an earlier step, to a named variable, to a constant, ...) and a ``check`` function that
returns the reason when a structural match does not apply (a constant with the wrong value, a
layout the MAC array cannot read, ...). One generic matcher runs every pattern; there are no
per-case graph walks. Kinds of pattern:

- ``kernel``: the matched nodes become one launched op (Conv+BN+act, MatMul+bias+act,
  LayerNorm, GELU, attention, chains of element-wise ops).
- ``rewire``: the matched layout ops disappear; their reader reads the original tensor
  (Transpose/Reshape chains that cancel, or that fold into a MatMul's operand addressing).
- ``concat`` / ``split``: the op disappears because buffers are placed: producers write
  straight into their slice of the Concat output; readers of a Split output read their slice
  of the Split input.

``dram_bytes_saved`` is exact from shapes and the deployed element size (``act_bytes`` per
float element, integer tensors at their stored size; see :func:`engine.costmodel.tensor_bytes`):
every intermediate tensor a fusion removes was written to DRAM once and read back once, so it
saves ``2 x bytes`` of each internal tensor. For a kernel those are the member outputs read by
other members; for a rewire, the outputs of the removed layout ops; for a Concat, its inputs
(= the copy avoided: reading the inputs and writing the output); for a Split, its outputs.
``est_ns_saved`` is the drop in the summed roofline time of the model's ops on the profile
(:mod:`engine.costmodel`) when this fusion alone is applied: the fused nodes' own time plus
the effect on their neighbours' DRAM traffic.

The matcher never proposes a fusion whose internal tensor is read by a node outside the fusion
(fan-out) or is a graph output; such near-misses, failed checks and fusions that would be slower
are listed in ``rejected`` with the reason. Chosen fusions do not share nodes: greedy, larger
(more nodes) first, ties broken by pattern order then DRAM bytes saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.costmodel import ELEMENTWISE_OPS, CostModel, Rewrite
from engine.graph import Graph, Model, Node, Shape
from engine.npu import NpuProfile

COMMUTATIVE_OPS = frozenset({"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Xor", "Equal"})
ACTIVATION_OPS = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh",
    "Elu", "Selu", "Celu", "Softplus", "Mish",
})
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
# element-wise ops that stream one tensor; BatchNormalization is left to Conv+BN
CHAIN_OPS = ELEMENTWISE_OPS - {"BatchNormalization"}
MAX_REPEAT = 32
# layout checks build an index array of the tensor; larger tensors are not checked
MAX_LAYOUT_ELEMENTS = 1 << 24
KINDS = ("kernel", "rewire", "concat", "split")

# ----------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Step:
    """One node (or a chain of nodes with ``repeat``) of a pattern.

    ``inputs`` wires the node's inputs by position, one reference each:

    - ``"label"``: output 0 of an earlier step (of the last node of a repeated step; of the
      step it passes through when an optional step is absent)
    - ``"$name"``: a variable, bound to the tensor where it first appears, equal thereafter
    - ``"const"``: an initializer
    - ``"ext"``: any tensor not produced by a node of this match
    - ``"*"``: any tensor
    - a ``"?"`` prefix makes the input optional (absent or matching the rest).

    The first reference that is a label or variable is the *flowing* input. Commutative ops
    with two inputs also match with their inputs swapped. ``repeat``: one or more nodes, each
    reading the previous one's output as its flowing input. ``target``: matched for context
    but not part of the fusion (the MatMul a layout chain folds into). ``variadic``: any
    number of inputs, each matching ``inputs[0]``.
    """

    label: str
    ops: frozenset[str]
    inputs: tuple[str, ...]
    optional: bool = False
    repeat: bool = False
    target: bool = False
    variadic: bool = False

    @property
    def flow_index(self) -> int | None:
        for i, ref in enumerate(self.inputs):
            r = ref.lstrip("?")
            if r.startswith("$") or r not in ("const", "ext", "*"):
                return i
        return None


def S(label: str, ops: str | Iterable[str], *inputs: str, **flags: bool) -> Step:
    """Shorthand for a :class:`Step`; ``ops`` is one op type or several."""
    return Step(label, frozenset([ops] if isinstance(ops, str) else ops), tuple(inputs), **flags)


@dataclass(frozen=True)
class Pattern:
    """A named fusion: alternative step lists (``variants``), a kind, and a ``check``."""

    name: str
    kind: str
    variants: tuple[tuple[Step, ...], ...]
    description: str
    check: Callable[[Match], str | None] | None = None
    min_nodes: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"pattern {self.name}: unknown kind {self.kind!r}")
        for steps in self.variants:
            labels: set[str] = set()
            variables: set[str] = set()
            for k, step in enumerate(steps):
                refs = [r.lstrip("?") for r in step.inputs]
                if k > 0 and not any(r in labels or r in variables for r in refs):
                    raise ValueError(f"pattern {self.name}: step {step.label} is wired to no earlier step")
                if step.optional:
                    flow = step.flow_index
                    if flow is None or step.inputs[flow].lstrip("?") not in labels:
                        raise ValueError(f"pattern {self.name}: optional step {step.label} must read an earlier step")
                labels.add(step.label)
                variables.update(r for r in refs if r.startswith("$"))
            if self.kind == "rewire" and sum(1 for s in steps if not s.target) != 1:
                raise ValueError(f"pattern {self.name}: a rewire pattern has exactly one member step (a chain)")


# --------------------------------------------------------------------------- matching


@dataclass
class Match:
    """One structural match: nodes by step label, tensors by label, bound variables."""

    pattern: Pattern
    model: Model
    steps: tuple[Step, ...]
    bound: dict[str, tuple[Node, ...]]
    tensor_of: dict[str, str]
    flow_in: dict[str, str]
    variables: dict[str, str]
    index: dict[str, int]
    consumers: dict[str, list[Node]]
    producers: dict[str, Node]

    @property
    def graph(self) -> Graph:
        return self.model.graph

    def node(self, label: str) -> Node | None:
        nodes = self.bound.get(label, ())
        return nodes[0] if nodes else None

    def nodes(self, label: str) -> tuple[Node, ...]:
        return self.bound.get(label, ())

    def tensor(self, label: str) -> str:
        return self.tensor_of[label]

    def var(self, name: str) -> str:
        return self.variables[name if name.startswith("$") else f"${name}"]

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer, or None when ``tensor`` is computed."""
        return np.asarray(self.graph.weights[tensor]) if tensor and tensor in self.graph.weights else None

    def shape(self, tensor: str) -> Shape | None:
        return self.graph.tensor(tensor).shape

    def _ordered(self, targets: bool) -> list[Node]:
        nodes = {n.name: n for s in self.steps if s.target == targets for n in self.bound.get(s.label, ())}
        return sorted(nodes.values(), key=lambda n: self.index[n.name])

    @property
    def members(self) -> list[Node]:
        """Nodes the fusion removes or merges, in graph order."""
        return self._ordered(False)

    @property
    def targets(self) -> list[Node]:
        return self._ordered(True)


@dataclass
class _State:
    bound: dict[str, tuple[Node, ...]]
    tensor_of: dict[str, str]
    flow_in: dict[str, str]
    variables: dict[str, str]
    used: frozenset[str]
    produced: frozenset[str]

    def add(self, step: Step, nodes: tuple[Node, ...], variables: dict[str, str], flow: str | None) -> _State:
        outs = {o for n in nodes for o in n.outputs if o}
        return _State(
            {**self.bound, step.label: nodes},
            {**self.tensor_of, step.label: nodes[-1].outputs[0] if nodes[-1].outputs else ""},
            {**self.flow_in, step.label: flow or ""},
            variables,
            self.used | {n.name for n in nodes},
            self.produced | outs,
        )

    def skip(self, step: Step) -> _State:
        flow = step.inputs[step.flow_index or 0].lstrip("?")
        through = self.tensor_of[flow]
        return _State(
            {**self.bound, step.label: ()},
            {**self.tensor_of, step.label: through},
            {**self.flow_in, step.label: through},
            self.variables, self.used, self.produced,
        )


class _Matcher:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.graph = model.graph
        self.weights = self.graph.weights
        self.consumers = self.graph.consumers()
        self.producers = self.graph.producers()
        self.index = {n.name: i for i, n in enumerate(self.graph.nodes)}

    def matches(self, pattern: Pattern) -> list[Match]:
        seen: set[tuple[frozenset[str], frozenset[str]]] = set()
        found: list[Match] = []
        for steps in pattern.variants:
            first = steps[0]
            for node in self.graph.nodes:
                if node.op_type not in first.ops or node.domain not in ("", "ai.onnx"):
                    continue
                empty = _State({}, {}, {}, {}, frozenset(), frozenset())
                for state in self._step(steps, 0, empty, node):
                    m = Match(pattern, self.model, steps, state.bound, state.tensor_of, state.flow_in,
                              state.variables, self.index, self.consumers, self.producers)
                    members = frozenset(n.name for n in m.members)
                    if len(members) < pattern.min_nodes:
                        continue
                    key = (members, frozenset(n.name for n in m.targets))
                    if key not in seen:
                        seen.add(key)
                        found.append(m)
        return found

    def _step(self, steps: tuple[Step, ...], k: int, state: _State, start: Node | None) -> Iterator[_State]:
        if k == len(steps):
            yield state
            return
        step = steps[k]
        if step.optional and k > 0:
            yield from self._step(steps, k + 1, state.skip(step), None)
        for node in self._candidates(step, state, start if k == 0 else None):
            for variables, flow in self._bind(step, node, state, None):
                if step.repeat:
                    yield from self._repeat(steps, k, state, (node,), variables, flow)
                else:
                    yield from self._step(steps, k + 1, state.add(step, (node,), variables, flow), None)

    def _repeat(
        self, steps: tuple[Step, ...], k: int, state: _State, chain: tuple[Node, ...],
        variables: dict[str, str], flow: str | None,
    ) -> Iterator[_State]:
        step = steps[k]
        yield from self._step(steps, k + 1, state.add(step, chain, variables, flow), None)
        if len(chain) >= MAX_REPEAT or not chain[-1].outputs:
            return
        prev = chain[-1].outputs[0]
        inner = state.add(step, chain, variables, flow)
        for node in self.consumers.get(prev, []):
            if node.op_type not in step.ops or node.name in inner.used or node.domain not in ("", "ai.onnx"):
                continue
            for more_vars, _ in self._bind(step, node, inner, prev):
                yield from self._repeat(steps, k, state, chain + (node,), more_vars, flow)

    def _candidates(self, step: Step, state: _State, start: Node | None) -> list[Node]:
        if start is not None:
            return [start]
        tensors: list[str] = []
        for ref in step.inputs:
            r = ref.lstrip("?")
            if r in state.tensor_of:
                tensors.append(state.tensor_of[r])
            elif r in state.variables:
                tensors.append(state.variables[r])
        result: dict[str, Node] = {}
        for t in tensors:
            for node in self.consumers.get(t, []):
                if node.op_type in step.ops and node.name not in state.used and node.domain in ("", "ai.onnx"):
                    result.setdefault(node.name, node)
        return list(result.values())

    def _bind(self, step: Step, node: Node, state: _State, prev: str | None) -> Iterator[tuple[dict[str, str], str | None]]:
        """Ways the node's inputs satisfy the step's references: (variables, flowing tensor)."""
        ins = list(node.inputs)
        while ins and not ins[-1]:
            ins.pop()
        if step.variadic:
            if ins and all(self._ref_ok(step.inputs[0], t, state, dict(state.variables)) for t in ins):
                yield dict(state.variables), ins[0]
            return
        orders = [ins]
        if node.op_type in COMMUTATIVE_OPS and len(ins) == 2 and ins[0] != ins[1]:
            orders.append(ins[::-1])
        flow_at = step.flow_index
        for order in orders:
            if len(order) > len(step.inputs):
                continue
            variables = dict(state.variables)
            ok = True
            for i, ref in enumerate(step.inputs):
                t = order[i] if i < len(order) else ""
                if prev is not None and i == flow_at:
                    ok = t == prev
                else:
                    ok = self._ref_ok(ref, t, state, variables)
                if not ok:
                    break
            if ok:
                yield variables, (order[flow_at] if flow_at is not None and flow_at < len(order) else None)

    def _ref_ok(self, ref: str, tensor: str, state: _State, variables: dict[str, str]) -> bool:
        optional = ref.startswith("?")
        r = ref.lstrip("?")
        if not tensor:
            return optional
        if r == "*":
            return True
        if r == "const":
            return tensor in self.weights
        if r == "ext":
            return tensor not in state.produced
        if r.startswith("$"):
            if r in variables:
                return variables[r] == tensor
            variables[r] = tensor
            return True
        return state.tensor_of.get(r) == tensor


# ----------------------------------------------------------------------------- checks


def _scalar(m: Match, tensor: str) -> float | None:
    value = m.const(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(-1)[0])


def _other_input(node: Node, known: str) -> str:
    """The input of a two-input node that is not ``known``."""
    ins = [i for i in node.inputs if i]
    if len(ins) == 2 and ins[0] == known:
        return ins[1]
    if len(ins) == 2 and ins[1] == known:
        return ins[0]
    return ins[-1] if ins else ""


def _close(value: float | None, want: float, rel: float = 1e-3) -> bool:
    """Constants of decomposed ops are matched to 0.1 % (exporters round them to float32)."""
    return value is not None and math.isclose(value, want, rel_tol=rel)


def _static_dims(m: Match, tensor: str) -> tuple[int, ...] | None:
    shape = m.shape(tensor)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _check_conv_bn_act(m: Match) -> str | None:
    bn = m.node("bn")
    if bn is not None:
        if int(bn.attrs.get("training_mode", 0)):
            return f"{bn.name} is in training mode (batch statistics cannot be folded)"
        if len([o for o in bn.outputs if o]) > 1:
            return f"{bn.name} also outputs running statistics (training graph)"
    return None


def _check_bias(m: Match) -> str | None:
    add = m.node("bias")
    if add is None:
        return None
    bias = _other_input(add, m.tensor("mm"))
    value = m.const(bias)
    out = _static_dims(m, m.tensor("mm"))
    if value is None or out is None or not out:
        return f"cannot tell whether {add.name} adds a per-column bias (unknown shapes)"
    if value.size != out[-1] or any(d != 1 for d in value.shape[:-1]):
        return f"{add.name} adds a constant of shape {tuple(value.shape)}, not a per-column bias of {out[-1]}"
    return None


def _reduce_axes(m: Match, node: Node) -> tuple[int, ...] | None:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        value = m.const(node.inputs[1])
        axes = None if value is None else value.reshape(-1).tolist()
    if axes is None:
        return None
    rank = len(m.shape(node.inputs[0]) or ())
    return tuple(sorted(int(a) % rank for a in axes)) if rank else None


def _check_layernorm(m: Match) -> str | None:
    x = m.var("x")
    rank = len(m.shape(x) or ())
    if rank == 0:
        return "the normalised tensor has unknown rank"
    axes1, axes2 = _reduce_axes(m, m.node("mean")), _reduce_axes(m, m.node("var"))
    if axes1 is None or axes1 != axes2:
        return f"the two ReduceMean nodes reduce different or unknown axes ({axes1} vs {axes2})"
    if axes1 != tuple(range(rank - len(axes1), rank)):
        return f"ReduceMean reduces axes {list(axes1)}, not the trailing axes"
    for label in ("mean", "var"):
        if not int(m.node(label).attrs.get("keepdims", 1)):
            return f"{m.node(label).name} drops the reduced axes (keepdims=0)"
    square = m.node("square")
    if square.op_type == "Pow" and not _close(_scalar(m, square.inputs[1]), 2.0):
        return f"{square.name} raises to {_scalar(m, square.inputs[1])}, not 2"
    eps = _scalar(m, _other_input(m.node("eps"), m.tensor("var")))
    if eps is None or not 0 < eps < 1e-2:
        return f"{m.node('eps').name} does not add a small positive epsilon (got {eps})"
    dims = _static_dims(m, x)
    for label, known in (("scale", "norm"), ("shift", "scale")):
        node = m.node(label)
        if node is None:
            continue
        value = m.const(_other_input(node, m.tensor(known)))
        if dims is not None and value is not None and value.size != math.prod(dims[rank - len(axes1):]):
            return f"{node.name} applies a constant of shape {tuple(value.shape)}, not one per normalised element"
    return None


def _check_gelu_erf(m: Match) -> str | None:
    div = m.node("div")
    c = _scalar(m, div.inputs[1])
    want = math.sqrt(2.0) if div.op_type == "Div" else 1.0 / math.sqrt(2.0)
    if not _close(c, want):
        return f"{div.name} scales by {c}, not {'sqrt(2)' if div.op_type == 'Div' else '1/sqrt(2)'}"
    return _check_constants(m, {"one": (m.tensor("erf"), 1.0), **_half(m)})


def _half(m: Match) -> dict[str, tuple[str, float]]:
    if m.node("half") is not None:
        return {"half": (m.var("x"), 0.5)}
    return {"scale_half": (m.tensor("mulx"), 0.5)}


def _check_constants(m: Match, wanted: dict[str, tuple[str, float]]) -> str | None:
    for label, (known, want) in wanted.items():
        node = m.node(label)
        if node is None:
            continue
        value = _scalar(m, _other_input(node, known))
        if not _close(value, want):
            return f"{node.name} uses the constant {value}, not {want:g}"
    return None


def _check_gelu_tanh(m: Match) -> str | None:
    cube = m.node("cube")
    if cube.op_type == "Pow" and not _close(_scalar(m, cube.inputs[1]), 3.0):
        return f"{cube.name} raises to {_scalar(m, cube.inputs[1])}, not 3"
    return _check_constants(m, {
        "kappa": (m.tensor("cube"), 0.044715),
        "beta": (m.tensor("inner"), math.sqrt(2.0 / math.pi)),
        "one": (m.tensor("tanh"), 1.0),
        **_half(m),
    })


def _check_attention(m: Match) -> str | None:
    sm = m.node("softmax")
    rank = len(m.shape(sm.inputs[0]) or ())
    default = -1 if m.model.opset >= 13 else 1
    axis = int(sm.attrs.get("axis", default))
    if rank == 0:
        return "the attention scores have unknown rank"
    if axis % rank != rank - 1 or (m.model.opset < 13 and rank != 2):
        return f"{sm.name} normalises axis {axis}, not the last axis of the scores"
    scale = m.node("scale")
    if scale is not None and _scalar(m, _other_input(scale, m.tensor("qk"))) is None:
        return f"{scale.name} does not scale by one constant"
    return None


def _layout_index(m: Match, chain: tuple[Node, ...], source: str) -> np.ndarray | str:
    """Flat source index of every element after the chain (or the reason it cannot be built)."""
    dims = _static_dims(m, source)
    if dims is None:
        return f"the shape of {source} is unknown"
    numel = math.prod(dims)
    if numel > MAX_LAYOUT_ELEMENTS:
        return f"{source} has {numel} elements, too many to check its layout"
    idx = np.arange(numel, dtype=np.int64).reshape(dims)
    for node in chain:
        if node.op_type == "Transpose":
            perm = node.attrs.get("perm") or list(range(idx.ndim))[::-1]
            if sorted(int(p) for p in perm) != list(range(idx.ndim)):
                return f"{node.name} has an invalid perm {list(perm)}"
            idx = idx.transpose([int(p) for p in perm])
        else:
            out = _static_dims(m, node.outputs[0])
            if out is None or math.prod(out) != idx.size:
                return f"the output shape of {node.name} is unknown"
            idx = idx.reshape(out)
    return idx


def _affine_strides(idx: np.ndarray) -> tuple[int, ...] | None:
    """Strides (in elements) when ``idx`` is an affine function of the multi-index, else None."""
    if idx.size == 0:
        return None
    base = int(idx.reshape(-1)[0])
    strides: list[int] = []
    recon = np.full(idx.shape, base, dtype=np.int64)
    for axis, d in enumerate(idx.shape):
        if d == 1:
            strides.append(0)
            continue
        unit = [0] * idx.ndim
        unit[axis] = 1
        s = int(idx[tuple(unit)]) - base
        strides.append(s)
        view = [1] * idx.ndim
        view[axis] = d
        recon = recon + np.arange(d, dtype=np.int64).reshape(view) * s
    return tuple(strides) if np.array_equal(recon, idx) else None


def _check_layout_cancel(m: Match) -> str | None:
    chain = m.nodes("chain")
    source = m.flow_in["chain"]
    idx = _layout_index(m, chain, source)
    if isinstance(idx, str):
        return idx
    if idx.shape != _static_dims(m, source) or not np.array_equal(idx.reshape(-1), np.arange(idx.size)):
        return "the layout ops do not cancel (their composite is not the identity)"
    return None


def _check_layout_fold(m: Match) -> str | None:
    chain = m.nodes("chain")
    mm = m.targets[0]
    source = m.flow_in["chain"]
    idx = _layout_index(m, chain, source)
    if isinstance(idx, str):
        return idx
    output_side = source in mm.outputs
    if output_side:  # where each element of the MatMul's output lands in the chain's output
        dest = np.empty(idx.size, dtype=np.int64)
        dest[idx.reshape(-1)] = np.arange(idx.size, dtype=np.int64)
        idx = dest.reshape(_static_dims(m, source))
    strides = _affine_strides(idx)
    if strides is None:
        return "the layout ops are not a strided view (the MAC array cannot address it)"
    if idx.ndim == 0:
        return None
    last_ok = idx.shape[-1] == 1 or strides[-1] == 1
    second_ok = idx.ndim >= 2 and (idx.shape[-2] == 1 or strides[-2] == 1)
    operand = "output" if output_side else ("A" if mm.inputs[0] == m.tensor("chain") else "B")
    if mm.op_type == "Gemm" and (last_ok or second_ok):
        return None  # transA / transB read either axis
    if operand == "B" and (last_ok or second_ok):
        return None  # second-to-last contiguous = transposed-B mode
    if last_ok:
        return None
    return f"rows of the MatMul {operand} operand would not be contiguous (last-axis stride {strides[-1]})"


def _gelu_tanh_variants() -> tuple[tuple[Step, ...], ...]:
    cubes = (
        (S("cube", "Pow", "$x", "const"),),
        (S("square", "Mul", "$x", "$x"), S("cube", "Mul", "square", "$x")),
    )
    body = (
        S("kappa", "Mul", "cube", "const"),
        S("inner", "Add", "$x", "kappa"),
        S("beta", "Mul", "inner", "const"),
        S("tanh", "Tanh", "beta"),
        S("one", "Add", "tanh", "const"),
    )
    tails = (
        (S("half", "Mul", "$x", "const"), S("out", "Mul", "half", "one")),
        (S("mulx", "Mul", "$x", "one"), S("scale_half", "Mul", "mulx", "const")),
    )
    return tuple(c + body + t for c in cubes for t in tails)


_CONV = S("conv", ("Conv", "ConvTranspose"), "$x", "const", "?ext")
_BN = S("bn", "BatchNormalization", "conv", "const", "const", "const", "const", optional=True)
_MM = S("mm", ("MatMul", "Gemm"), "$x", "*", "?ext")
_BIAS = S("bias", "Add", "mm", "const", optional=True)

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "conv_bn_act", "kernel",
        (
            (_CONV, _BN, S("sigmoid", "Sigmoid", "bn"), S("silu", "Mul", "bn", "sigmoid")),
            (_CONV, _BN, S("act", ACTIVATION_OPS, "bn", "?const", "?const", optional=True)),
        ),
        "Conv (+ BatchNormalization folded into its weights) + activation (Relu, Clip, SiLU = Sigmoid*x, ...)",
        _check_conv_bn_act, min_nodes=2,
    ),
    Pattern(
        "gemm_bias_act", "kernel",
        (
            (_MM, _BIAS, S("sigmoid", "Sigmoid", "bias"), S("silu", "Mul", "bias", "sigmoid")),
            (_MM, _BIAS, S("act", ACTIVATION_OPS, "bias", "?const", "?const", optional=True)),
        ),
        "MatMul/Gemm + Add of a per-column bias (the accumulator's initial value) + activation",
        _check_bias, min_nodes=2,
    ),
    Pattern(
        "attention", "kernel",
        ((
            S("qk", "MatMul", "*", "*"),
            S("scale", ("Div", "Mul"), "qk", "const", optional=True),
            S("mask", "Add", "scale", "*", optional=True),
            S("softmax", "Softmax", "mask"),
            S("pv", "MatMul", "softmax", "*"),
        ),),
        "MatMul - [Div|Mul scale] - [Add mask] - Softmax - MatMul: one attention op, scores stay on chip",
        _check_attention, min_nodes=3,
    ),
    Pattern(
        "layernorm", "kernel",
        tuple(
            (
                S("mean", "ReduceMean", "$x", "?const"),
                S("center", "Sub", "$x", "mean"),
                *square,
                S("var", "ReduceMean", "square", "?const"),
                S("eps", "Add", "var", "const"),
                S("sqrt", "Sqrt", "eps"),
                S("norm", "Div", "center", "sqrt"),
                S("scale", "Mul", "norm", "const", optional=True),
                S("shift", "Add", "scale", "const", optional=True),
            )
            for square in ((S("square", "Pow", "center", "const"),), (S("square", "Mul", "center", "center"),))
        ),
        "LayerNorm spelled out: ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div(-Mul-Add)",
        _check_layernorm, min_nodes=7,
    ),
    Pattern(
        "gelu_erf", "kernel",
        tuple(
            (
                S("div", ("Div", "Mul"), "$x", "const"),
                S("erf", "Erf", "div"),
                S("one", "Add", "erf", "const"),
                *tail,
            )
            for tail in (
                (S("mulx", "Mul", "$x", "one"), S("scale_half", "Mul", "mulx", "const")),
                (S("half", "Mul", "$x", "const"), S("out", "Mul", "half", "one")),
            )
        ),
        "GELU spelled out: Div(sqrt 2)-Erf-Add(1)-Mul(x)-Mul(0.5)",
        _check_gelu_erf, min_nodes=5,
    ),
    Pattern(
        "gelu_tanh", "kernel", _gelu_tanh_variants(),
        "tanh-approximated GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
        _check_gelu_tanh, min_nodes=8,
    ),
    Pattern(
        "layout_fold", "rewire",
        (
            (S("chain", LAYOUT_OPS, "$a", "?*", repeat=True), S("mm", ("MatMul", "Gemm"), "chain", "*", "?*", target=True)),
            (S("chain", LAYOUT_OPS, "$b", "?*", repeat=True), S("mm", ("MatMul", "Gemm"), "*", "chain", "?*", target=True)),
            (S("mm", ("MatMul", "Gemm"), "*", "*", "?*", target=True), S("chain", LAYOUT_OPS, "mm", "?*", repeat=True)),
        ),
        "Transpose/Reshape chain folded into a MatMul: the MAC array reads or writes the strided layout",
        _check_layout_fold,
    ),
    Pattern(
        "layout_cancel", "rewire",
        ((S("chain", LAYOUT_OPS, "$x", "?*", repeat=True),),),
        "Transpose/Reshape chain whose composite is the identity: removed",
        _check_layout_cancel,
    ),
    Pattern(
        "elementwise_chain", "kernel",
        ((S("ew", CHAIN_OPS, "$x", "?ext", "?ext", repeat=True),),),
        "consecutive element-wise ops streamed as one op",
        None, min_nodes=2,
    ),
    Pattern(
        "concat_placement", "concat",
        ((S("concat", "Concat", "*", variadic=True),),),
        "Concat removed: each producer writes straight into its slice of the output buffer",
    ),
    Pattern(
        "split_placement", "split",
        ((S("split", "Split", "*", "?const"),),),
        "Split removed: each reader reads its slice of the input buffer",
    ),
)

# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Fusion:
    """A chosen fusion. ``rewrite`` tells the cost model how the graph changes."""

    pattern: str
    nodes: tuple[str, ...]
    dram_bytes_saved: int
    est_ns_saved: float
    rewrite: Rewrite

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "nodes": list(self.nodes),
            "dram_bytes_saved": self.dram_bytes_saved,
            "est_ns_saved": self.est_ns_saved,
        }


@dataclass(frozen=True)
class Rejection:
    """A near-miss: a pattern that matched the graph's structure but does not apply."""

    pattern: str
    nodes: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "nodes": list(self.nodes), "reason": self.reason}


@dataclass
class FusionReport:
    """Chosen fusions (in graph order) and rejected near-misses on one profile."""

    profile: str
    fusions: list[Fusion] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def rewrites(self) -> list[Rewrite]:
        return [f.rewrite for f in self.fusions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "fusions": [f.to_dict() for f in self.fusions],
            "rejected": [r.to_dict() for r in self.rejected],
        }


@dataclass
class _Candidate:
    match: Match
    members: tuple[str, ...]
    internal: tuple[str, ...]
    reason: str | None
    rewrite: Rewrite | None = None
    dram_bytes_saved: int = 0
    est_ns_saved: float = 0.0
    priority: int = 0
    first: int = 0


def _structure(m: Match) -> tuple[tuple[str, ...], str | None, Rewrite | None]:
    """(internal tensors, reason it does not apply, rewrite) from the match's wiring alone."""
    g = m.graph
    consumers = m.consumers
    producers = m.producers
    outputs = set(g.output_names)
    members = m.members
    inside = {n.name for n in members} | {n.name for n in m.targets}
    names = tuple(n.name for n in members)
    kind = m.pattern.kind

    def producer_of(t: str) -> str:
        p = producers.get(t)
        return f"output of {p.name}" if p is not None else "a graph input"

    if kind == "concat":
        concat = members[0]
        ins = [i for i in concat.inputs if i]
        for t in ins:
            if ins.count(t) > 1:
                return (), f"{t} appears {ins.count(t)} times among the inputs (one buffer cannot sit in two slices)", None
            if t in g.input_names:
                return (), f"{t} is a graph input (its buffer is the caller's)", None
            if t in outputs:
                return (), f"{t} ({producer_of(t)}) is a graph output", None
            others = [c.name for c in consumers.get(t, []) if c.name != concat.name]
            if others:
                return (), f"{t} ({producer_of(t)}) is also read by {', '.join(others)}", None
        rw = Rewrite(f"{m.pattern.name}:{concat.name}", names, "remove", ((concat.outputs[0], tuple(ins)),))
        return tuple(dict.fromkeys(ins)), None, rw

    if kind == "split":
        split = members[0]
        outs = [o for o in split.outputs if o]
        for t in outs:
            if t in outputs:
                return (), f"{t} (output of {split.name}) is a graph output", None
        rw = Rewrite(f"{m.pattern.name}:{split.name}", names, "remove", tuple((o, (split.inputs[0],)) for o in outs))
        return tuple(outs), None, rw

    # kernel / rewire: every tensor a match node produces and another match node reads is internal
    produced = [o for n in members + m.targets for o in n.outputs if o]
    linked = [t for t in produced if any(c.name in inside for c in consumers.get(t, []))]
    for t in linked:
        if t in outputs:
            return (), f"{t} ({producer_of(t)}) is a graph output", None
        others = [c.name for c in consumers.get(t, []) if c.name not in inside]
        if others:
            return (), f"{t} ({producer_of(t)}) is also read by {', '.join(others)}", None
    if kind == "kernel":
        member_outs = {o for n in members for o in n.outputs if o}
        internal = tuple(t for t in linked if t in member_outs)
        return internal, None, Rewrite(f"{m.pattern.name}:{members[-1].name}", names, "kernel")
    chain = m.nodes("chain")
    result = chain[-1].outputs[0]
    if result in outputs:
        return (), f"{result} (output of {chain[-1].name}) is a graph output and must be materialised", None
    internal = tuple(o for n in members for o in n.outputs if o)
    return internal, None, Rewrite(f"{m.pattern.name}:{chain[-1].name}", names, "remove",
                                   ((result, (m.flow_in["chain"],)),))


def find_fusions(
    model: Model,
    profile: NpuProfile,
    act_bytes: int = 1,
    weight_bytes: int = 1,
    float_ops: Iterable[str] | None = None,
    patterns: Iterable[Pattern] = PATTERNS,
) -> FusionReport:
    """Match every pattern, estimate each candidate on ``profile`` and choose disjoint fusions."""
    patterns = list(patterns)
    cm = CostModel(model, profile, act_bytes, weight_bytes, float_ops)
    base = cm.plan(())
    matcher = _Matcher(model)
    index = matcher.index
    candidates: list[_Candidate] = []
    for priority, pattern in enumerate(patterns):
        for m in matcher.matches(pattern):
            internal, reason, rewrite = _structure(m)
            if reason is None and pattern.check is not None:
                reason = pattern.check(m)
            members = tuple(n.name for n in m.members)
            cand = _Candidate(m, members, internal, reason, rewrite, priority=priority,
                              first=min(index[n] for n in members))
            if reason is None and rewrite is not None:
                cand.dram_bytes_saved = 2 * sum(cm.bytes.get(t, 0) for t in internal)
                cand.est_ns_saved = cm.saving(base, rewrite)
                if cand.est_ns_saved < 0:
                    cand.reason = (f"not faster on {profile.name}: the fused op would take "
                                   f"{-cand.est_ns_saved:.0f} ns longer than the nodes it replaces")
            candidates.append(cand)

    valid = [c for c in candidates if c.reason is None]
    valid.sort(key=lambda c: (-len(c.members), c.priority, -c.dram_bytes_saved, c.first))
    taken: set[str] = set()
    chosen: list[_Candidate] = []
    for c in valid:
        if taken.isdisjoint(c.members):
            chosen.append(c)
            taken.update(c.members)

    report = FusionReport(profile.name)
    for c in sorted(chosen, key=lambda c: c.first):
        report.fusions.append(Fusion(
            c.match.pattern.name, c.members, int(c.dram_bytes_saved), float(c.est_ns_saved), c.rewrite
        ))
    # near-misses: the largest per pattern and first node, unless one chosen fusion contains it
    chosen_sets = [set(c.members) for c in chosen]
    seen: set[tuple[str, int]] = set()
    for c in sorted((c for c in candidates if c.reason is not None), key=lambda c: (c.first, -len(c.members))):
        key = (c.match.pattern.name, c.first)
        if key in seen or any(s.issuperset(c.members) for s in chosen_sets):
            continue
        seen.add(key)
        report.rejected.append(Rejection(c.match.pattern.name, c.members, c.reason or ""))
    return report
