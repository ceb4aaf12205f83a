"""Roofline cost of every node (or fused group) of a model on an NPU profile.

Per launched op (a node, or a fused group of nodes)::

    est_ns = max(compute_ns, dram_ns) + op_overhead_ns
    compute_ns = ops / (rate of the unit it runs on, ops per ns)
    dram_ns = dram_bytes / dram_gbps            (1 GB/s = 1 byte/ns)

``bound`` is ``"compute"`` when ``compute_ns >= dram_ns``, else ``"memory"``;
``intensity`` is ops per DRAM byte (None when the op moves no DRAM bytes).

Units (``unit``) and the lanes they run on (``lane``):

- ``"mac"``: the int8 MAC array, for :data:`MAC_OPS` (MatMul, Gemm, Conv, ConvTranspose,
  Einsum and their integer forms). ops = 2 x MACs. Rate: ``int8_tops`` for 1-byte operands,
  ``int16_tops`` (or a quarter of ``int8_tops``) for 2-byte ones.
- ``"vector"``: element-wise, reduction and data-movement ops. ops = the FLOPs of
  :mod:`engine.cost`, or one op per output element for pure data movement (a copy).
- ``"float"``: ops the quantization scheme keeps in float (``float_ops``, default
  :data:`DEFAULT_FLOAT_OPS`) and ops an int8 datapath cannot run at all
  (:data:`FLOAT_ONLY_OPS`). They run on the profile's float unit (lane ``"float"``) when
  ``float_gflops > 0``. On a pure int8 chip (``float_gflops == 0``) they run on the host CPU
  (lane ``"host"``, at ``host_gflops``), and every tensor they read or write makes a DMA round
  trip: the NPU stores it to DRAM and loads the result back (the SRAM rule below never keeps
  a tensor of a host op on chip).

Bytes follow :mod:`engine.cost`: float tensors count ``act_bytes`` (activations) or
``weight_bytes`` (initializers) per element; integer and bool tensors their stored size;
unknown dimensions count as 1.

SRAM rule (which tensors cost no DRAM traffic). Ops run one after another in graph order
(fused groups at the place of their last node). A tensor produced by op P is kept in SRAM,
neither written to DRAM by P nor read from DRAM by its reader, exactly when all hold:

1. it is not a graph output;
2. exactly one op reads it, and that op runs right after P;
3. its bytes are at most half of ``sram_kib`` (the other half double-buffers the next tile);
4. neither P nor the reader runs on the host.

Every other activation is written to DRAM once by its producer and read once by each op that
reads it; graph inputs and weights are read from DRAM by each op that reads them (a Gather
from a weight table reads only the rows it picks). A tensor that nothing reads and that is
no graph output is never stored. Every node is launched as written: a
Reshape or Transpose is a copy until a fusion removes it.

Fused groups (see :mod:`engine.fusion`) are one launched op: one overhead, no DRAM traffic for
their internal tensors, and compute pipelined across the units they use
(``compute_ns = max`` over units of the summed member work). A group that is a unary
element-wise function of one tensor (GELU, chains of element-wise ops with scalar constant
operands) is one lookup table on the vector unit when activations are int8/int16 (ops = output
elements). A group with a member that would run on the host runs on the host entirely.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.cost import node_costs
from engine.graph import Model, Node, TensorInfo
from engine.npu import NpuProfile

MAC_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum",
    "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "QGemm", "FusedMatMul", "FusedConv",
})

# the default quantization scheme: transcendental and normalisation ops an int8 quantizer
# leaves in float (no int8 kernel with a range fixed at calibration time)
DEFAULT_FLOAT_OPS = frozenset({
    "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Pow",
    "Softmax", "LogSoftmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
    "Gelu",
})

# ops an int8 datapath cannot run whatever the scheme: control flow and data-dependent shapes
FLOAT_ONLY_OPS = frozenset({
    "If", "Loop", "Scan", "NonZero", "NonMaxSuppression", "TopK", "Unique", "RoiAlign",
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
})

# element-wise ops (one output element from the same position of each broadcast input)
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Neg", "Abs", "Sign", "Ceil", "Floor",
    "Round", "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Relu", "LeakyRelu",
    "PRelu", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus", "Softsign",
    "Mish", "Gelu", "ThresholdedRelu", "Sin", "Cos", "Cast", "BatchNormalization",
})

LANES = ("dma_in", "mac", "vector", "float", "host", "dma_out")

# ops that read only the rows of their (weight) table that their indices pick
GATHER_OPS = frozenset({"Gather", "GatherElements", "GatherND"})


def tensor_bytes(info: TensorInfo, element_bytes: int) -> int:
    """Bytes of a tensor: ``element_bytes`` per float (or unknown-type) element, the stored
    size for integer and bool tensors; unknown dimensions count as 1, unknown rank as 0."""
    if info.shape is None:
        return 0
    numel = math.prod(d if isinstance(d, int) else 1 for d in info.shape)
    if info.dtype is None or np.dtype(info.dtype).kind == "f":
        return numel * element_bytes
    return numel * int(np.dtype(info.dtype).itemsize)


def tensor_numel(info: TensorInfo) -> int:
    """Element count with unknown dimensions as 1 (0 for unknown rank)."""
    if info.shape is None:
        return 0
    return math.prod(d if isinstance(d, int) else 1 for d in info.shape)


@dataclass(frozen=True)
class Rewrite:
    """How one fusion changes the graph for the cost model.

    ``kind == "kernel"``: ``nodes`` become one launched op named ``label``.
    ``kind == "remove"``: ``nodes`` disappear; a reader of tensor T in ``aliases`` reads its
    sources instead: one source = a view or slice of it (``bytes(T)`` read from the source),
    several = the pieces T was assembled from (each read whole).
    """

    label: str
    nodes: tuple[str, ...]
    kind: str
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class LayerEstimate:
    """Roofline estimate of one launched op (a node, or a fused group of ``nodes``)."""

    name: str
    op_type: str
    nodes: tuple[str, ...]
    unit: str  # "mac" | "vector" | "float"
    lane: str  # "mac" | "vector" | "float" | "host"
    est_ns: float
    compute_ns: float
    dram_ns: float
    bound: str  # "compute" | "memory"
    macs: int
    ops: float
    dram_bytes: int
    intensity: float | None  # ops per DRAM byte

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "est_ns": self.est_ns,
            "bound": self.bound,
            "macs": self.macs,
            "dram_bytes": self.dram_bytes,
            "intensity": self.intensity,
            "unit": self.unit,
            "lane": self.lane,
        }


@dataclass
class PlanUnit:
    """One launched op of a plan, before and after the SRAM rule is applied."""

    name: str
    op_type: str
    nodes: tuple[str, ...]
    unit: str
    lane: str
    macs: int
    ops: float
    compute_ns: float
    param_bytes: int
    reads: dict[str, int]  # activation tensor -> bytes read
    writes: dict[str, int]  # activation tensor -> bytes written
    dram_read: int = 0  # weights + activations loaded from DRAM
    dram_write: int = 0
    resident_in: tuple[str, ...] = ()
    estimate: LayerEstimate | None = None

    @property
    def dram_bytes(self) -> int:
        return self.dram_read + self.dram_write


@dataclass
class Plan:
    """Launched ops in execution order with the SRAM rule applied."""

    profile: NpuProfile
    units: list[PlanUnit]
    producer: dict[str, int]  # tensor -> index of the unit writing it
    readers: dict[str, list[int]]  # tensor -> indices of the units reading it
    resident: set[str]
    tensor_bytes: dict[str, int] = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)  # tensors that must reach DRAM

    @property
    def total_est_ns(self) -> float:
        """Sum of the roofline times (the serial time, no overlap between ops)."""
        return float(sum(u.estimate.est_ns for u in self.units if u.estimate is not None))

    def layers(self) -> list[LayerEstimate]:
        return [u.estimate for u in self.units if u.estimate is not None]


@dataclass(frozen=True)
class _NodeFacts:
    index: int
    node: Node
    unit: str
    lane: str
    macs: int
    ops: float
    weights: tuple[str, ...]
    weight_reads: dict[str, int]  # weight -> bytes this node reads of it
    inputs: tuple[str, ...]  # distinct activation inputs
    outputs: tuple[str, ...]  # distinct outputs


class CostModel:
    """Per-node facts of a model on a profile, and plans with or without fusions.

    ``act_bytes`` / ``weight_bytes``: deployed element size of float activations / weights
    (1 = int8, 2 = int16, 4 = float32: everything then runs on the float unit).
    ``float_ops``: op types or node names the quantization scheme keeps in float.
    """

    def __init__(
        self,
        model: Model,
        profile: NpuProfile,
        act_bytes: int = 1,
        weight_bytes: int = 1,
        float_ops: Iterable[str] | None = None,
    ) -> None:
        if act_bytes not in (1, 2, 4) or weight_bytes not in (1, 2, 4):
            raise ValueError(f"element sizes must be 1, 2 or 4 bytes, got {act_bytes} and {weight_bytes}")
        self.model = model
        self.graph = model.graph
        self.profile = profile
        self.act_bytes = act_bytes
        self.weight_bytes = weight_bytes
        self.float_ops = frozenset(DEFAULT_FLOAT_OPS if float_ops is None else float_ops)
        self.graph_outputs = frozenset(self.graph.output_names)
        weights = self.graph.weights
        self.bytes: dict[str, int] = {}
        self.numel: dict[str, int] = {}
        for name, info in weights.info.items():
            self.bytes[name] = tensor_bytes(info, weight_bytes)
            self.numel[name] = tensor_numel(info)
        for t in self.graph.inputs:
            self.bytes[t.name] = tensor_bytes(t, act_bytes)
            self.numel[t.name] = tensor_numel(t)
        costs = node_costs(model, act_bytes=act_bytes, weight_bytes=weight_bytes)
        self.facts: dict[str, _NodeFacts] = {}
        self.order: list[str] = []
        self.readers: dict[str, set[str]] = {}
        for node in self.graph.nodes:
            for i in node.inputs:
                if i:
                    self.readers.setdefault(i, set()).add(node.name)
        for index, (node, cost) in enumerate(zip(self.graph.nodes, costs)):
            outputs = tuple(dict.fromkeys(o for o in node.outputs if o))
            for o in outputs:
                info = self.graph.tensor(o)
                self.bytes[o] = tensor_bytes(info, act_bytes)
                self.numel[o] = tensor_numel(info)
            distinct = tuple(dict.fromkeys(i for i in node.inputs if i))
            node_weights = tuple(i for i in distinct if i in weights)
            acts = tuple(i for i in distinct if i not in weights)
            for i in acts:  # a tensor no earlier step sized (e.g. an unlisted input)
                if i not in self.bytes:
                    info = self.graph.tensor(i)
                    self.bytes[i] = tensor_bytes(info, act_bytes)
                    self.numel[i] = tensor_numel(info)
            unit, lane = self.placement(node)
            weight_reads = {w: self.bytes[w] for w in node_weights}
            if node.op_type in GATHER_OPS and node.inputs and node.inputs[0] in weights:
                # a gather reads only the rows it picks: at most one table element per output element
                table = node.inputs[0]
                per_element = self.bytes[table] // max(1, self.numel[table])
                picked = sum(self.numel[o] for o in outputs) * per_element
                weight_reads[table] = min(self.bytes[table], picked)
            if unit == "mac":
                ops = 2.0 * cost.macs
            elif cost.flops > 0:
                ops = float(cost.flops)
            else:  # data movement: one op per output element
                ops = float(sum(self.numel[o] for o in outputs))
            self.facts[node.name] = _NodeFacts(
                index, node, unit, lane, int(cost.macs), ops, node_weights, weight_reads, acts, outputs
            )
            self.order.append(node.name)

    # ----------------------------------------------------------------- placement and rates

    def placement(self, node: Node) -> tuple[str, str]:
        """(unit, lane) a node runs on under this profile and scheme."""
        op = node.op_type
        float_lane = "float" if self.profile.has_float_unit else "host"
        kept_float = op in self.float_ops or node.name in self.float_ops
        if op in FLOAT_ONLY_OPS or kept_float or max(self.act_bytes, self.weight_bytes) >= 4:
            return "float", float_lane
        if op in MAC_OPS:
            return "mac", "mac"
        return "vector", "vector"

    def rate(self, lane: str) -> float:
        """Throughput of a lane in ops per ns."""
        p = self.profile
        if lane == "mac":
            return p.mac_ops_per_ns(max(self.act_bytes, self.weight_bytes))
        if lane == "vector":
            return p.vector_ops_per_ns
        if lane == "float":
            return p.float_flops_per_ns
        if lane == "host":
            return p.host_flops_per_ns
        raise ValueError(f"no compute lane {lane!r}")

    def node_rate(self, f: _NodeFacts) -> float:
        """Throughput for one node's ops, ops per ns: its lane's rate, except that element-wise,
        reduction and data-movement work on a float unit runs no faster than the vector
        datapath. A float unit's peak (``float_gflops``) is FMA throughput on matrix work; ops
        without MACs do not reach it (on a CPU both are the same SIMD units, and the host
        profile measures them apart: GEMM for ``float_gflops``, adds for ``vector_gops``)."""
        rate = self.rate(f.lane)
        if f.lane == "float" and f.macs == 0:
            return min(rate, self.profile.vector_ops_per_ns)
        return rate

    # -------------------------------------------------------------------------- planning

    def plan(self, rewrites: Iterable[Rewrite] = ()) -> Plan:
        """Launched ops in order with ``rewrites`` applied and the SRAM rule evaluated."""
        rewrites = list(rewrites)
        removed: set[str] = set()
        group_of: dict[str, Rewrite] = {}
        aliases: dict[str, tuple[str, ...]] = {}
        for rw in rewrites:
            if rw.kind == "remove":
                removed.update(rw.nodes)
                aliases.update({t: src for t, src in rw.aliases})
            elif rw.kind == "kernel":
                for n in rw.nodes:
                    group_of[n] = rw
            else:
                raise ValueError(f"unknown rewrite kind {rw.kind!r}")
        last_member = {rw.label: max(self.facts[n].index for n in rw.nodes) for rw in rewrites if rw.kind == "kernel"}

        units: list[PlanUnit] = []
        for name in self.order:
            if name in removed:
                continue
            rw = group_of.get(name)
            if rw is None:
                units.append(self._single_unit(self.facts[name], aliases))
            elif self.facts[name].index == last_member[rw.label]:
                units.append(self._group_unit(rw, aliases))

        producer: dict[str, int] = {}
        readers: dict[str, list[int]] = {}
        for i, u in enumerate(units):
            for t in u.writes:
                producer[t] = i
            for t in u.reads:
                readers.setdefault(t, []).append(i)
        pinned = self._pinned(aliases)
        resident = {
            t for t, p in producer.items()
            if self._stays_in_sram(t, p, readers.get(t, []), units, pinned)
        }
        for u in units:
            u.estimate = self._estimate(u, resident.__contains__, lambda t: bool(readers.get(t)), pinned)
        return Plan(self.profile, units, producer, readers, resident, dict(self.bytes), pinned)

    def _pinned(self, aliases: Mapping[str, tuple[str, ...]]) -> set[str]:
        """Tensors that must reach DRAM: graph outputs and the tensors they alias."""
        pinned = set(self.graph_outputs)
        for out in self.graph_outputs:
            pinned.update(_resolve(out, aliases, self.bytes).keys())
        return pinned

    def _stays_in_sram(self, t: str, p: int, users: list[int], units: Any, pinned: set[str]) -> bool:
        """The SRAM rule of the module docstring, for tensor ``t`` written by unit ``p``."""
        if t in pinned or len(users) != 1 or users[0] != p + 1:
            return False
        if self.bytes.get(t, 0) > self.profile.sram_bytes / 2.0:
            return False
        return units[p].lane != "host" and units[users[0]].lane != "host"

    def _estimate(self, u: PlanUnit, resident: Any, has_readers: Any, pinned: set[str]) -> LayerEstimate:
        """Roofline of one unit given which tensors stay in SRAM (sets its DRAM bytes)."""
        u.resident_in = tuple(t for t in u.reads if resident(t))
        u.dram_read = u.param_bytes + sum(b for t, b in u.reads.items() if not resident(t))
        # a tensor nobody reads and that is no graph output is never stored
        u.dram_write = sum(b for t, b in u.writes.items() if not resident(t) and (t in pinned or has_readers(t)))
        dram_ns = u.dram_bytes / self.profile.dram_bytes_per_ns
        est = max(u.compute_ns, dram_ns) + self.profile.op_overhead_ns
        return LayerEstimate(
            name=u.name,
            op_type=u.op_type,
            nodes=u.nodes,
            unit=u.unit,
            lane=u.lane,
            est_ns=float(est),
            compute_ns=float(u.compute_ns),
            dram_ns=float(dram_ns),
            bound="compute" if u.compute_ns >= dram_ns else "memory",
            macs=u.macs,
            ops=float(u.ops),
            dram_bytes=int(u.dram_bytes),
            intensity=(float(u.ops) / u.dram_bytes) if u.dram_bytes else None,
        )

    def saving(self, base: Plan, rw: Rewrite) -> float:
        """``base.total_est_ns`` minus the total with ``rw`` applied; ``base = self.plan(())``.

        Exact and local: only ops whose composition or SRAM residency can change are
        re-estimated (members, readers of rewired tensors, producers and readers of every tensor
        they touch, and the ops that become neighbours where members are removed).
        """
        index = {u.name: i for i, u in enumerate(base.units)}
        members = sorted(index[n] for n in rw.nodes)
        aliases = dict(rw.aliases)
        gone = set(members)
        new_units: dict[int, PlanUnit] = {}  # base index -> replacement
        if rw.kind == "kernel":
            removed = members[:-1]
            new_units[members[-1]] = self._group_unit(rw, aliases)
        else:
            removed = members
        for t in aliases:
            for i in base.readers.get(t, []):
                if i not in gone:
                    new_units[i] = self._single_unit(self.facts[base.units[i].name], aliases)
        removed_set = set(removed)

        def new_pos(i: int) -> int:
            return i - bisect.bisect_left(removed, i)

        touched: set[str] = set(aliases)
        for src in aliases.values():
            touched.update(src)
        for i in members:
            touched.update(base.units[i].reads)
            touched.update(base.units[i].writes)
        for u in new_units.values():
            touched.update(u.reads)
            touched.update(u.writes)
        n = len(base.units)
        for r in removed:  # ops that become neighbours around a removed position
            a, b = r - 1, r + 1
            while a >= 0 and a in removed_set:
                a -= 1
            while b < n and b in removed_set:
                b += 1
            for i in (a, b):
                if 0 <= i < n:
                    touched.update(base.units[i].writes)
                    touched.update(base.units[i].reads)
        affected: set[int] = set(members) | set(new_units)
        for t in touched:
            if t in base.producer:
                affected.add(base.producer[t])
            affected.update(base.readers.get(t, []))

        # the changed plan, restricted to the affected ops (by base index)
        after: dict[int, PlanUnit] = {}
        for i in affected:
            if i in new_units:
                after[i] = new_units[i]
            elif i not in gone:
                after[i] = base.units[i]
        producer: dict[str, int] = {}
        readers: dict[str, list[int]] = {}
        lanes: dict[int, PlanUnit] = {}
        for i in sorted(after):
            u, p = after[i], new_pos(i)
            lanes[p] = u
            for t in u.writes:
                if t in touched:
                    producer[t] = p
            for t in u.reads:
                if t in touched:
                    readers.setdefault(t, []).append(p)
        pinned = self._pinned(aliases)
        resident_touched = {
            t for t, p in producer.items()
            if self._stays_in_sram(t, p, readers.get(t, []), lanes, pinned)
        }

        def resident(t: str) -> bool:
            return t in resident_touched if t in touched else t in base.resident

        def has_readers(t: str) -> bool:
            return bool(readers.get(t)) if t in touched else bool(base.readers.get(t))

        before_ns = sum(base.units[i].estimate.est_ns for i in affected)  # type: ignore[union-attr]
        after_ns = 0.0
        for i, u in after.items():
            probe = PlanUnit(u.name, u.op_type, u.nodes, u.unit, u.lane, u.macs, u.ops, u.compute_ns,
                             u.param_bytes, u.reads, u.writes)
            after_ns += self._estimate(probe, resident, has_readers, pinned).est_ns
        return float(before_ns - after_ns)

    def _reads(self, tensors: Iterable[str], aliases: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
        reads: dict[str, int] = {}
        for t in tensors:
            for src, b in _resolve(t, aliases, self.bytes).items():
                reads[src] = reads.get(src, 0) + b
        return reads

    def _single_unit(self, f: _NodeFacts, aliases: Mapping[str, tuple[str, ...]]) -> PlanUnit:
        return PlanUnit(
            name=f.node.name,
            op_type=f.node.qualified_op,
            nodes=(f.node.name,),
            unit=f.unit,
            lane=f.lane,
            macs=f.macs,
            ops=f.ops,
            compute_ns=f.ops / self.node_rate(f),
            param_bytes=sum(f.weight_reads.values()),
            reads=self._reads(f.inputs, aliases),
            writes={o: self.bytes[o] for o in f.outputs},
        )

    def _group_unit(self, rw: Rewrite, aliases: Mapping[str, tuple[str, ...]]) -> PlanUnit:
        members = sorted((self.facts[n] for n in rw.nodes), key=lambda f: f.index)
        produced = {o for f in members for o in f.outputs}
        external_in = list(dict.fromkeys(i for f in members for i in f.inputs if i not in produced))
        names = set(rw.nodes)
        outputs = [
            o for f in members for o in f.outputs
            if o in self.graph_outputs or not self.readers.get(o) or self.readers[o] - names
        ]
        weight_reads: dict[str, int] = {}  # a weight read by several members is loaded once
        for f in members:
            for w, b in f.weight_reads.items():
                weight_reads[w] = max(weight_reads.get(w, 0), b)
        macs = sum(f.macs for f in members)
        lanes = {f.lane for f in members}
        total_ops = sum(f.ops for f in members)
        if self._is_lut(members, external_in, outputs):
            unit = lane = "vector"
            ops = float(sum(self.numel[o] for o in outputs))
            compute_ns = ops / self.rate("vector")
        elif "host" in lanes:
            unit, lane = "float", "host"
            ops = total_ops
            compute_ns = ops / self.rate("host")
        else:
            per_lane: dict[str, float] = {}
            for f in members:
                per_lane[f.lane] = per_lane.get(f.lane, 0.0) + f.ops / self.node_rate(f)
            compute_ns = max(per_lane.values())
            lane = "mac" if "mac" in per_lane else max(per_lane, key=lambda k: per_lane[k])
            unit = lane
            ops = total_ops
        return PlanUnit(
            name=rw.label,
            op_type=f"fused:{rw.label.split(':', 1)[0]}",
            nodes=tuple(f.node.name for f in members),
            unit=unit,
            lane=lane,
            macs=macs,
            ops=ops,
            compute_ns=compute_ns,
            param_bytes=sum(weight_reads.values()),
            reads=self._reads(external_in, aliases),
            writes={o: self.bytes[o] for o in outputs},
        )

    def _is_lut(self, members: list[_NodeFacts], external_in: list[str], outputs: list[str]) -> bool:
        """A unary element-wise function of one tensor, on int8/int16 activations: one lookup table."""
        if max(self.act_bytes, self.weight_bytes) > 2 or len(external_in) != 1 or len(outputs) != 1:
            return False
        if any(f.node.op_type not in ELEMENTWISE_OPS for f in members):
            return False
        if any(self.numel.get(w, 0) != 1 for f in members for w in f.weights):
            return False  # a per-channel constant makes one table per channel, not one table
        n = self.numel.get(external_in[0], 0)
        return n > 0 and all(self.numel[o] == n for f in members for o in f.outputs)


def _resolve(tensor: str, aliases: Mapping[str, tuple[str, ...]], nbytes: Mapping[str, int]) -> dict[str, int]:
    """The tensors (and bytes of each) actually read when ``tensor`` is read, following aliases."""
    result: dict[str, int] = {}
    stack: list[tuple[str, int, int]] = [(tensor, nbytes.get(tensor, 0), 0)]
    while stack:
        t, b, depth = stack.pop()
        sources = aliases.get(t)
        if not sources or depth > 64:
            result[t] = result.get(t, 0) + b
        elif len(sources) == 1:
            stack.append((sources[0], b, depth + 1))
        else:
            stack.extend((s, nbytes.get(s, 0), depth + 1) for s in sources)
    return result


def layer_estimates(
    model: Model,
    profile: NpuProfile,
    act_bytes: int = 1,
    weight_bytes: int = 1,
    float_ops: Iterable[str] | None = None,
    rewrites: Iterable[Rewrite] = (),
) -> list[LayerEstimate]:
    """Roofline estimate of every node (or fused group when ``rewrites`` are given), in order."""
    return CostModel(model, profile, act_bytes, weight_bytes, float_ops).plan(rewrites).layers()
