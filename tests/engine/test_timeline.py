"""Cost model and timeline: the roofline formula, units and lanes, the SRAM rule, schedule
invariants, and fused never slower than unfused."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from benchmarks.models import bert_encoder, cnn, tiny_mlp
from engine import model_from_proto
from engine.cost import node_costs
from engine.costmodel import CostModel, layer_estimates
from engine.fusion import find_fusions
from engine.npu import NpuProfile, load_profile, shipped_profiles
from engine.timeline import analyze, timelines
from tests.engine import npu_graphs as G

# relative tolerance of float comparisons of times in ns (sums of a few products)
REL = 1e-12


def single_matmul(rows: int = 64, k: int = 256, n: int = 128):
    g = G.G()
    g.input("x", (rows, k))
    g.op("MatMul", ["x", g.const("w", np.zeros((k, n)))], "y")
    return g.model({"y": (rows, n)})


@pytest.mark.parametrize("act_bytes", [1, 2])
def test_roofline_of_a_single_matmul_equals_the_formula(act_bytes: int) -> None:
    profile = NpuProfile("p", int8_tops=2.0, vector_gops=50.0, dram_gbps=8.0, sram_kib=16, op_overhead_ns=300.0,
                         int16_tops=0.8)
    (layer,) = layer_estimates(single_matmul(), profile, act_bytes=act_bytes, weight_bytes=act_bytes)
    macs = 64 * 256 * 128
    nbytes = (64 * 256 + 256 * 128 + 64 * 128) * act_bytes  # input + weights + output, all in DRAM
    tops = 2.0 if act_bytes == 1 else 0.8
    compute_ns = 2 * macs / (tops * 1e3)
    dram_ns = nbytes / 8.0
    assert layer.est_ns == pytest.approx(max(compute_ns, dram_ns) + 300.0, rel=REL)
    assert layer.macs == macs and layer.dram_bytes == nbytes and layer.unit == "mac"
    assert layer.intensity == pytest.approx(2 * macs / nbytes, rel=REL)
    assert layer.bound == ("compute" if compute_ns >= dram_ns else "memory")
    d = layer.to_dict()
    assert {"est_ns", "bound", "macs", "dram_bytes", "intensity", "unit"} <= set(d)


def test_memory_bound_when_bandwidth_is_low() -> None:
    slow = NpuProfile("slow", int8_tops=100.0, vector_gops=50.0, dram_gbps=0.5, sram_kib=16, op_overhead_ns=10.0)
    (layer,) = layer_estimates(single_matmul(), slow)
    assert layer.bound == "memory" and layer.est_ns == pytest.approx(layer.dram_bytes / 0.5 + 10.0, rel=REL)


def _chain(op: str = "Erf", rows: int = 4, cols: int = 16, fan_out: bool = False):
    """x -> Relu r -> op e -> Relu y (optionally r also read by a second Relu)."""
    g = G.G()
    g.input("x", (rows, cols))
    g.op("Relu", ["x"], "r")
    g.op(op, ["r"], "e")
    g.op("Relu", ["e"], "y")
    outputs = {"y": (rows, cols)}
    if fan_out:
        outputs[g.op("Relu", ["r"], "y2")] = (rows, cols)
    return g.model(outputs)


def test_units_and_lanes() -> None:
    model = _chain("Erf")
    on_float = {e.name: e for e in layer_estimates(model, G.FLOAT_CHIP)}
    assert (on_float["r"].unit, on_float["e"].unit, on_float["e"].lane) == ("vector", "float", "float")
    on_int8 = {e.name: e for e in layer_estimates(model, G.INT8_CHIP)}
    assert (on_int8["e"].unit, on_int8["e"].lane) == ("float", "host")
    # the scheme decides what stays float
    custom = {e.name: e for e in layer_estimates(model, G.FLOAT_CHIP, float_ops={"Relu"})}
    assert (custom["r"].unit, custom["e"].unit) == ("float", "vector")
    assert {e.unit for e in layer_estimates(single_matmul(), G.FLOAT_CHIP)} == {"mac"}


def test_sram_rule() -> None:
    small = {e.name: e for e in layer_estimates(_chain("Sigmoid"), G.FLOAT_CHIP)}
    # 64-byte tensors whose single reader runs next stay on chip: r reads x, y writes y only
    assert (small["r"].dram_bytes, small["e"].dram_bytes, small["y"].dram_bytes) == (64, 0, 64)
    # tensors over half the SRAM (64 KiB / 2) go to DRAM: 256 x 256 = 64 KiB each
    big = {e.name: e for e in layer_estimates(_chain("Sigmoid", rows=256, cols=256), G.FLOAT_CHIP)}
    assert big["e"].dram_bytes == 2 * 65536
    # a tensor with two readers goes to DRAM
    fan = {e.name: e for e in layer_estimates(_chain("Sigmoid", fan_out=True), G.FLOAT_CHIP)}
    assert fan["r"].dram_bytes == 64 + 64
    # a float fallback on the host: its tensors make the round trip through DRAM
    host = {e.name: e for e in layer_estimates(_chain("Erf"), G.INT8_CHIP)}
    assert (host["r"].dram_bytes, host["e"].dram_bytes, host["y"].dram_bytes) == (128, 128, 128)
    on_chip = {e.name: e for e in layer_estimates(_chain("Erf"), G.FLOAT_CHIP)}
    assert on_chip["e"].dram_bytes == 0


def test_dram_bytes_match_engine_cost_when_nothing_stays_on_chip() -> None:
    model = model_from_proto(bert_encoder(layers=1))
    no_sram = NpuProfile("no-sram", int8_tops=1.0, vector_gops=1.0, dram_gbps=1.0, sram_kib=1e-6, op_overhead_ns=1.0)
    ours = layer_estimates(model, no_sram)
    theirs = node_costs(model)
    assert [e.macs for e in ours] == [c.macs for c in theirs]
    weights = model.graph.weights
    shrunk = 0
    for node, e, c in zip(model.graph.nodes, ours, theirs):
        if c.op_type == "Gather":  # reads only the picked rows of the table, not all of it
            table = weights.nbytes(node.inputs[0]) // 4  # float32 stored, 1 byte deployed
            assert e.dram_bytes == c.dram_bytes - table + min(table, c.output_bytes)
            shrunk += table > c.output_bytes
        else:
            assert e.dram_bytes == c.dram_bytes, e.name
    assert shrunk == 1  # the word-embedding table is larger than the rows picked


def test_local_saving_equals_the_full_replan() -> None:
    for model in (model_from_proto(bert_encoder(layers=1)), model_from_proto(cnn()), G.random_graph(3)):
        for profile in shipped_profiles().values():
            cm = CostModel(model, profile)
            base = cm.plan(())
            for f in find_fusions(model, profile).fusions:
                full = base.total_est_ns - cm.plan([f.rewrite]).total_est_ns
                assert cm.saving(base, f.rewrite) == pytest.approx(full, rel=1e-9, abs=1e-6)


def check_schedule(timeline) -> None:
    """No overlap within a lane (nor between the two DMA lanes, which share DRAM); no op
    starts work before what it reads is where it reads it from."""
    lanes: dict[str, list] = {}
    for e in timeline.events:
        assert e.end_ns >= e.start_ns >= 0
        lanes.setdefault(e.lane, []).append(e)
    lanes["dram"] = lanes.get("dma_in", []) + lanes.get("dma_out", [])
    for lane, events in lanes.items():
        events = sorted(events, key=lambda e: e.start_ns)
        for a, b in itertools.pairwise(events):
            assert b.start_ns >= a.end_ns - 1e-6, (lane, a, b)
    by_unit: dict[str, list] = {}
    for e in timeline.events:
        by_unit.setdefault(e.node, []).append(e)
    compute = ("mac", "vector", "float", "host")
    for producer, consumer, where in timeline.dependencies:
        p_events, c_events = by_unit[producer], by_unit[consumer]
        if where == "dram":  # written to DRAM: everything the consumer does comes after the last store
            ready = max(e.end_ns for e in p_events)
            assert min(e.start_ns for e in c_events) >= ready - 1e-6, (producer, consumer)
        else:  # kept in SRAM: the consumer computes after the producer computed
            ready = max(e.end_ns for e in p_events if e.lane in compute)
            assert min(e.start_ns for e in c_events if e.lane != "dma_in") >= ready - 1e-6, (producer, consumer)


def graphs():
    yield "bert", model_from_proto(bert_encoder(layers=2))
    yield "cnn", model_from_proto(cnn())
    yield "mlp", model_from_proto(tiny_mlp())
    for name in ("gelu_erf", "layernorm", "attention", "concat", "split", "reshape_transpose_matmul"):
        yield name, getattr(G, name)()
    for seed in range(6):
        yield f"random{seed}", G.random_graph(seed)


PROFILES = list(shipped_profiles().values()) + [G.FLOAT_CHIP, G.INT8_CHIP]


@pytest.mark.parametrize("name, model", list(graphs()), ids=[n for n, _ in graphs()])
def test_schedules_are_valid_and_fusion_never_slower(name: str, model) -> None:
    for profile in PROFILES:
        for act_bytes in (1, 2):
            report = analyze(model, profile, act_bytes=act_bytes)
            check_schedule(report.timeline_unfused)
            check_schedule(report.timeline)
            assert report.timeline.total_ns <= report.timeline_unfused.total_ns + 1e-6, (profile.name, act_bytes)
            assert sum(e.est_ns for e in report.fused_layers) <= sum(e.est_ns for e in report.layers) + 1e-6
            assert report.timeline.total_ns_unfused == report.timeline_unfused.total_ns
            # every node of the graph is scheduled, alone or in a fused op (removed ones excepted)
            removed = {n for f in report.fusions.fusions if f.rewrite.kind == "remove" for n in f.nodes}
            covered = {n for nodes in report.timeline.units.values() for n in nodes}
            assert covered | removed == {n.name for n in model.graph.nodes}


def test_transfers_overlap_compute() -> None:
    # a chain of weight-heavy MatMuls: the next layer's weights load while this one computes
    g = G.G()
    x = g.input("x", (256, 512))
    for i in range(4):
        x = g.op("MatMul", [x, g.const(f"w{i}", np.zeros((512, 512)))], f"m{i}")
    model = g.model({x: (256, 512)})
    profile = NpuProfile("p", int8_tops=1.0, vector_gops=10.0, dram_gbps=4.0, sram_kib=4096, op_overhead_ns=100.0)
    unfused, _ = timelines(model, profile, fusions=[])
    loads = [e for e in unfused.events if e.lane == "dma_in"]
    macs = [e for e in unfused.events if e.lane == "mac"]
    assert any(l.start_ns < m.end_ns and m.start_ns < l.end_ns for l in loads for m in macs if l.node != m.node)
    serial = sum(e.est_ns for e in layer_estimates(model, profile))
    busy = sum(e.end_ns - e.start_ns for e in unfused.events)
    assert unfused.total_ns < busy  # lanes ran in parallel
    assert unfused.total_ns <= serial * 1.5  # and the schedule is of the order of the rooflines


def test_host_fallback_round_trip_in_the_timeline() -> None:
    unfused, _ = timelines(_chain("Erf"), G.INT8_CHIP, fusions=[])
    by = {(e.node, e.lane): e for e in unfused.events}
    host = by[("e", "host")]
    assert by[("r", "dma_out")].end_ns <= host.start_ns  # stored for the host
    assert by[("y", "dma_in")].start_ns >= host.end_ns  # loaded back after it


def test_timeline_to_dict_and_plain_data() -> None:
    report = analyze(model_from_proto(tiny_mlp()), load_profile("xavier"))
    d = report.timeline.to_dict()
    assert set(d) == {"profile", "total_ns", "total_ns_unfused", "events"}
    assert set(d["events"][0]) == {"node", "lane", "start_ns", "end_ns"}
    assert d["profile"] == "xavier" and d["total_ns"] < d["total_ns_unfused"]
    full = report.to_dict()
    assert set(full) == {"profile", "layers", "fused_layers", "fusions", "rejected", "timeline", "timeline_unfused"}
    json.dumps(full)  # plain data only


def test_timelines_gives_unfused_then_fused() -> None:
    model = model_from_proto(tiny_mlp())
    unfused, fused = timelines(model, load_profile("rpi3"))
    assert (unfused.fused, fused.fused) == (False, True)
    assert fused.total_ns_unfused == unfused.total_ns == unfused.total_ns_unfused
    assert fused.total_ns < unfused.total_ns
    assert any(name.startswith("gemm_bias_act:") for name in fused.units)


def test_a_fusion_that_lengthens_the_schedule_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # the scheduler cannot be made to misbehave on a small graph, so pretend it does:
    # any plan containing the fused MatMul+Add+Relu takes longer than the unfused one
    import engine.timeline as tl

    real = tl.simulate

    def pessimistic(plan):
        result = real(plan)
        if any(u.name.startswith("gemm_bias_act:fc1") for u in plan.units):
            result.total_ns += 1e9
        return result

    monkeypatch.setattr(tl, "simulate", pessimistic)
    report = tl.analyze(model_from_proto(tiny_mlp()), load_profile("rpi3"))
    assert [f.nodes for f in report.fusions.fusions] == [("fc2/MatMul", "fc2/Add")]
    assert any(r.nodes[0] == "fc1/MatMul" and "lengthens the scheduled timeline" in r.reason
               for r in report.fusions.rejected)
    assert report.timeline.total_ns <= report.timeline_unfused.total_ns
