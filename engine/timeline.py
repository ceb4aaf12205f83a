"""The int8 NPU timeline: launched ops scheduled on lanes, unfused and with fusions applied.

Lanes: ``dma_in`` (DRAM -> SRAM loads), ``mac``, ``vector``, ``float`` (compute units of the
NPU), ``host`` (float fallbacks on a pure int8 chip) and ``dma_out`` (SRAM -> DRAM stores).
Ops run in the cost model's order (:mod:`engine.costmodel`); each lane runs its events one at
a time in that order. The scheduler models a double-buffered NPU:

- An op whose data (weights + activations + outputs) exceeds half the SRAM is cut into
  ``ceil(bytes / (sram / 2))`` tiles (at most :data:`MAX_TILES`, enough to show the overlap).
  Every tile is a load (``dma_in``: its share of the op's DRAM reads), a compute event (its
  share of ``compute_ns``; the first tile also pays ``op_overhead_ns``) and a store
  (``dma_out``: its share of the DRAM writes). Times are bytes / ``dram_gbps``.
- Two input buffers: the load of tile ``t`` (counted over all NPU tiles in order) starts after
  the compute of tile ``t - 2`` ends, so loads run one tile ahead of compute. Two output
  buffers: the compute of tile ``t`` starts after the store of tile ``t - 2`` ends.
- Loads and stores share the DRAM bandwidth: no ``dma_in`` event overlaps a ``dma_out``
  event; a transfer fills the free time of the DRAM channel from its earliest start on (so
  the next op's loads fill the gaps while this op computes), split around transfers placed
  before it when it does not fit in one gap.
- Data dependencies: a load that reads an activation from DRAM starts after the producer's
  last store ends; a compute that reads an activation kept in SRAM starts after the
  producer's last compute ends. A host op starts after all its inputs are in DRAM, and its
  outputs are in DRAM when it ends (``est_ns`` of the host op: compute and its own memory
  traffic; the NPU side's store and load are the DMA round trip).

Ops a fusion removes (layout chains, placed Concat/Split) have no events; a fused group's
events carry its label (``pattern:last node``), and ``Timeline.units`` maps it to its nodes.
:func:`analyze` and :func:`timelines` drop (into ``rejected``) any chosen fusion that would
make the fused timeline end after the unfused one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.costmodel import CostModel, LayerEstimate, Plan
from engine.fusion import Fusion, FusionReport, Rejection, find_fusions
from engine.graph import Model
from engine.npu import NpuProfile

MAX_TILES = 8


def time_unit(span_ns: float) -> tuple[str, float]:
    """(unit name, ns per unit) for an axis spanning ``span_ns``: ns, µs, ms or s."""
    if span_ns < 1e4:
        return "ns", 1.0
    if span_ns < 1e7:
        return "µs", 1e3
    if span_ns < 1e10:
        return "ms", 1e6
    return "s", 1e9


@dataclass(frozen=True)
class Event:
    """One busy interval of a lane. ``node`` is a node name or a fused group's label."""

    node: str
    lane: str
    start_ns: float
    end_ns: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "lane": self.lane, "start_ns": self.start_ns, "end_ns": self.end_ns}


@dataclass
class Timeline:
    """A schedule on one profile. ``total_ns`` is when the last event ends.

    ``units`` maps every event ``node`` to the graph nodes it covers; ``dependencies`` lists
    (producer, consumer, ``"sram"`` or ``"dram"``) for every tensor passed between ops.
    """

    profile: str
    total_ns: float
    events: list[Event]
    total_ns_unfused: float = 0.0
    fused: bool = False
    units: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dependencies: list[tuple[str, str, str]] = field(default_factory=list)

    def lane_events(self, lane: str) -> list[Event]:
        return [e for e in self.events if e.lane == lane]

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "total_ns": self.total_ns,
            "total_ns_unfused": self.total_ns_unfused,
            "events": [e.to_dict() for e in self.events],
        }


class _DramChannel:
    """Busy intervals of the DRAM channel, sorted. A transfer fills the free gaps from its
    earliest start on (a long transfer is split around transfers placed before it)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def place(self, earliest: float, duration: float) -> list[tuple[float, float]]:
        """Reserve ``duration`` ns from ``earliest``; returns the (start, end) pieces, in order."""
        pieces: list[tuple[float, float]] = []
        if duration <= 0:
            return [(earliest, earliest)]
        i = bisect.bisect_right(self.ends, earliest)
        t, left = earliest, duration
        while left > 1e-9:
            if i < len(self.starts) and self.starts[i] <= t:
                t = max(t, self.ends[i])
                i += 1
                continue
            gap_end = self.starts[i] if i < len(self.starts) else math.inf
            take = min(left, gap_end - t)
            if take > 1e-9:
                pieces.append((t, t + take))
                self.starts.insert(i, t)
                self.ends.insert(i, t + take)
                i += 1
                left -= take
            t = gap_end
        return pieces


def simulate(plan: Plan) -> Timeline:
    """Schedule the plan's ops on lanes (see the module docstring for the rules)."""
    profile = plan.profile
    bw = profile.dram_bytes_per_ns
    half_sram = profile.sram_bytes / 2.0
    overhead = profile.op_overhead_ns
    channel = _DramChannel()
    events: list[Event] = []
    lane_free: dict[str, float] = {}
    ready: dict[str, float] = {}  # tensor -> when its reader can have it (SRAM or DRAM)
    comp_ends: list[float] = []  # per NPU tile, in order
    out_ends: list[float] = []
    deps: list[tuple[str, str, str]] = []

    for u in plan.units:
        for t in u.reads:
            p = plan.producer.get(t)
            if p is not None:
                deps.append((plan.units[p].name, u.name, "sram" if t in plan.resident else "dram"))
        est = u.estimate
        assert est is not None
        if u.lane == "host":
            start = max([lane_free.get("host", 0.0)] + [ready.get(t, 0.0) for t in u.reads])
            end = start + est.est_ns
            events.append(Event(u.name, "host", start, end))
            lane_free["host"] = end
            for t in u.writes:
                ready[t] = end
            continue

        load, store = u.dram_read, u.dram_write
        footprint = u.param_bytes + sum(u.reads.values()) + sum(u.writes.values())
        tiles = min(MAX_TILES, max(1, math.ceil(footprint / half_sram))) if half_sram > 0 else 1
        dram_ready = max([0.0] + [ready.get(t, 0.0) for t in u.reads if t not in plan.resident])
        sram_ready = max([0.0] + [ready.get(t, 0.0) for t in u.resident_in])
        in_ns, out_ns = load / bw / tiles, store / bw / tiles
        in_end = comp_end = out_end = 0.0
        for j in range(tiles):
            g = len(comp_ends)
            if load > 0:
                earliest = max(dram_ready, in_end, comp_ends[g - 2] if g >= 2 else 0.0)
                for start, end in channel.place(earliest, in_ns):
                    events.append(Event(u.name, "dma_in", start, end))
                    in_end = end
            start = max(
                lane_free.get(u.lane, 0.0), in_end, sram_ready, comp_end, out_ends[g - 2] if g >= 2 else 0.0
            )
            comp_end = start + u.compute_ns / tiles + (overhead if j == 0 else 0.0)
            events.append(Event(u.name, u.lane, start, comp_end))
            lane_free[u.lane] = comp_end
            comp_ends.append(comp_end)
            if store > 0:
                for start, end in channel.place(max(comp_end, out_end), out_ns):
                    events.append(Event(u.name, "dma_out", start, end))
                    out_end = end
            out_ends.append(out_end if store > 0 else comp_end)
        for t in u.writes:
            ready[t] = comp_end if (t in plan.resident or store == 0) else out_end

    total = max((e.end_ns for e in events), default=0.0)
    events.sort(key=lambda e: (e.start_ns, e.lane))
    return Timeline(
        profile=profile.name,
        total_ns=float(total),
        events=events,
        total_ns_unfused=float(total),
        units={u.name: u.nodes for u in plan.units},
        dependencies=deps,
    )


def _rewrites(fusions: FusionReport | Iterable[Fusion]) -> list:
    items = fusions.fusions if isinstance(fusions, FusionReport) else list(fusions)
    return [f.rewrite for f in items]


def _settle(cm: CostModel, report: FusionReport, unfused_ns: float) -> Plan:
    """The fused plan of ``report``; fusions that would lengthen the timeline are dropped.

    Every chosen fusion lowers the summed roofline time, but list scheduling can in principle
    turn a shorter op into a longer schedule. Should the fused timeline end after the unfused
    one, the fusion whose removal shortens it most is moved to ``report.rejected``, until the
    fused timeline is no longer than the unfused one.
    """
    plan = cm.plan(report.rewrites)
    total = simulate(plan).total_ns
    while total > unfused_ns and report.fusions:
        trials = []
        for i in range(len(report.fusions)):
            rest = report.fusions[:i] + report.fusions[i + 1:]
            trial = cm.plan([f.rewrite for f in rest])
            trials.append((simulate(trial).total_ns, i, trial))
        total, i, plan = min(trials, key=lambda x: (x[0], x[1]))
        dropped = report.fusions.pop(i)
        report.rejected.append(Rejection(
            dropped.pattern, dropped.nodes,
            f"lengthens the scheduled timeline on {report.profile} (DMA and compute overlap worse)",
        ))
    return plan


def timelines(
    model: Model,
    profile: NpuProfile,
    fusions: FusionReport | Iterable[Fusion] | None = None,
    act_bytes: int = 1,
    weight_bytes: int = 1,
    float_ops: Iterable[str] | None = None,
) -> tuple[Timeline, Timeline]:
    """(unfused, fused) timelines.

    ``fusions`` default to :func:`engine.fusion.find_fusions` (settled so that the fused
    timeline is never longer than the unfused one); given ones are applied as they are.
    """
    cm = CostModel(model, profile, act_bytes, weight_bytes, float_ops)
    unfused = simulate(cm.plan(()))
    if fusions is None:
        report = find_fusions(model, profile, act_bytes, weight_bytes, float_ops)
        fused_plan = _settle(cm, report, unfused.total_ns)
    else:
        fused_plan = cm.plan(_rewrites(fusions))
    fused = simulate(fused_plan)
    fused.fused = True
    fused.total_ns_unfused = unfused.total_ns
    return unfused, fused


@dataclass
class NpuReport:
    """Everything the NPU view shows: per-layer roofline, fusions, and both timelines."""

    profile: NpuProfile
    layers: list[LayerEstimate]
    fused_layers: list[LayerEstimate]
    fusions: FusionReport
    timeline: Timeline
    timeline_unfused: Timeline

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "layers": [layer.to_dict() for layer in self.layers],
            "fused_layers": [layer.to_dict() for layer in self.fused_layers],
            "fusions": [f.to_dict() for f in self.fusions.fusions],
            "rejected": [r.to_dict() for r in self.fusions.rejected],
            "timeline": self.timeline.to_dict(),
            "timeline_unfused": self.timeline_unfused.to_dict(),
        }


def analyze(
    model: Model,
    profile: NpuProfile,
    act_bytes: int = 1,
    weight_bytes: int = 1,
    float_ops: Iterable[str] | None = None,
) -> NpuReport:
    """Roofline per node, fusion opportunities and the unfused/fused timelines of a model.

    ``act_bytes`` / ``weight_bytes``: deployed element sizes (1 = int8); ``float_ops``: op
    types the quantization scheme keeps in float (default
    :data:`engine.costmodel.DEFAULT_FLOAT_OPS`).
    """
    report = find_fusions(model, profile, act_bytes, weight_bytes, float_ops)
    cm = CostModel(model, profile, act_bytes, weight_bytes, float_ops)
    plan = cm.plan(())
    unfused = simulate(plan)
    fused_plan = _settle(cm, report, unfused.total_ns)
    fused = simulate(fused_plan)
    fused.fused = True
    fused.total_ns_unfused = unfused.total_ns
    return NpuReport(profile, plan.layers(), fused_plan.layers(), report, fused, unfused)
