"""Detail panels (widgets/): each is given real engine data and shows exactly that data.

NPU panels get ``engine.timeline.analyze`` of the bundled CNN on the shipped ``journey5``
profile (the ViT for rejected fusions and the host roof); the quantization panels get
``engine.analysis.run_analysis`` of the CNN on the bundled calibration / validation data, and
the per-method clipping ranges from the engine's range functions. Tests check the data the
panels hold (bar counts, roof lines, rows, histogram sums, line positions) and that clicks
and selections emit / highlight. No timed assertions: the 5,000-event Gantt prints its time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from engine import load_model
from engine.analysis import (
    WeightView,
    qparams_range,
)
from engine.calibrate import calibrate_plan, data_spec
from engine.costmodel import LANES
from engine.findings import Finding
from engine.npu import load_profile
from engine.quant.qparams import QuantScheme, qparams_from_range
from engine.quant.ranges import METHODS, compute_range
from engine.timeline import Event, Timeline, analyze

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
CNN = SAMPLES / "cnn-digits.onnx"
VIT = SAMPLES / "vit-digits.onnx"
CALIB = SAMPLES / "digits-calib.npz"
VAL = SAMPLES / "digits-val.npz"


# ------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def vit_report():
    return analyze(load_model(str(VIT), dims={"batch": 1}), load_profile("journey5"))


@pytest.fixture(scope="module")
def method_ranges(cnn):
    """tensor -> method -> represented range [lo, hi] of int8 symmetric qparams (the plan's scheme)."""
    scheme = QuantScheme()
    _, stats = calibrate_plan(cnn, data_spec(str(CALIB)), scheme)
    qmin, qmax = scheme.activation_qrange
    out = {}
    for name, obs in stats.tensors.items():
        out[name] = {
            m: qparams_range(qparams_from_range(*compute_range(obs, m, scheme.symmetric, qmin, qmax, scheme.percentile),
                                                "int8", scheme.symmetric))
            for m in METHODS
        }
    return out


def _show(qtbot, widget, w: int = 1000, h: int = 620):
    qtbot.addWidget(widget)
    widget.resize(w, h)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


# -------------------------------------------------------------------------- timeline


def test_timeline_bars_per_lane_equal_events(qtbot, npu_report):
    from widgets.timeline import TimelinePanel

    panel = _show(qtbot, TimelinePanel())
    panel.set_report(npu_report)
    for which, tl in (("fused", npu_report.timeline), ("unfused", npu_report.timeline_unfused)):
        want = Counter(e.lane for e in tl.events)
        got = panel.bar_counts(which)
        assert {k: v for k, v in got.items() if v} == dict(want)
        for lane, bars in ((lane, panel.lane_bars(which, lane)) for lane in want):
            starts = [e.start_ns for e in tl.events if e.lane == lane]
            np.testing.assert_array_equal(bars.start_ns, starts)
    assert panel.lanes == [lane for lane in LANES if lane in panel.lanes]  # engine lane order
    assert panel.lanes[0] == "dma_in" and panel.lanes[-1] == "dma_out"
    data = panel.current_data()
    assert data["plots"]["fused"]["total_ns"] == npu_report.timeline.total_ns
    assert data["plots"]["fused"]["total_ns"] < data["plots"]["unfused"]["total_ns"]
    panel.set_mode("fused")
    assert not panel.plot_item("unfused").isVisible() and panel.plot_item("fused").isVisible()
    assert not panel.grab().isNull()


def test_timeline_click_on_fused_bar_emits_its_nodes(qtbot, npu_report):
    from widgets.timeline import TimelinePanel

    panel = _show(qtbot, TimelinePanel())
    panel.set_report(npu_report)
    panel.set_mode("fused")
    qtbot.wait(20)
    fused = npu_report.timeline
    event = next(e for e in fused.events if e.lane == "mac" and len(fused.units[e.node]) > 1)
    members = list(fused.units[event.node])
    bars = panel.lane_bars("fused", "mac")
    vb = panel.plot_item("fused").getViewBox()
    unit = {"ns": 1.0, "µs": 1e3, "ms": 1e6, "s": 1e9}[panel.current_data()["time_unit"]]
    scene = vb.mapViewToScene(QPointF((event.start_ns + event.end_ns) / 2 / unit, bars.row))
    pos = panel.canvas.mapFromScene(scene)
    with qtbot.waitSignal(panel.node_hovered, timeout=2000) as hovered:
        qtbot.mouseMove(panel.canvas.viewport(), pos)
    assert hovered.args == [members[0]]
    groups: list[list[str]] = []
    panel.nodes_selected.connect(groups.append)
    with qtbot.waitSignal(panel.node_selected, timeout=2000) as blocker:
        qtbot.mouseClick(panel.canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [members[0]]
    assert groups == [members]
    assert panel.selected_node == members[0]
    assert panel.highlighted_count("fused") == sum(1 for e in fused.events if e.node == event.node)


def test_timeline_select_node_highlights_every_covering_bar(qtbot, npu_report):
    from widgets.timeline import TimelinePanel

    panel = _show(qtbot, TimelinePanel())
    panel.set_report(npu_report)
    conv = "/features/features.3/Conv"
    n = panel.select_node(conv)
    covering = {
        k: sum(1 for e in tl.events if conv in tl.units.get(e.node, (e.node,)))
        for k, tl in (("fused", npu_report.timeline), ("unfused", npu_report.timeline_unfused))
    }
    assert covering["fused"] > 0 and covering["unfused"] > 0
    assert panel.highlighted_count("fused") == covering["fused"]
    assert panel.highlighted_count("unfused") == covering["unfused"]
    assert n == covering["fused"] + covering["unfused"]
    panel.clear_selection()
    assert panel.highlighted_count("fused") == 0
    assert panel.select_node("no such node") == 0


def test_gantt_with_5000_events_builds(qtbot):
    from widgets.timeline import TimelinePanel

    rng = np.random.default_rng(0)
    lanes = np.array(["dma_in", "mac", "vector", "dma_out"])
    lane_of = lanes[rng.integers(0, lanes.size, 5000)]
    durations = rng.uniform(50.0, 2000.0, 5000)
    events = []
    free = dict.fromkeys(lanes.tolist(), 0.0)
    for i, (lane, d) in enumerate(zip(lane_of.tolist(), durations.tolist())):
        start = free[lane] + (i % 3) * 10.0
        free[lane] = start + d
        events.append(Event(f"/block{i // 50}/op{i}", lane, start, start + d))
    total = max(e.end_ns for e in events)
    tl = Timeline("synthetic", total, events, total, fused=True, units={e.node: (e.node,) for e in events})
    panel = _show(qtbot, TimelinePanel())
    t0 = time.perf_counter()
    panel.set_timelines(None, tl)
    qtbot.wait(1)
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    image = panel.grab()
    grabbed = time.perf_counter() - t1
    print(f"\nGantt with {len(events)} events: set_timelines + layout {built * 1e3:.0f} ms, grab {grabbed * 1e3:.0f} ms")
    assert sum(panel.bar_counts("fused").values()) == 5000
    assert panel.bar_counts("fused") == dict(Counter(lane_of.tolist()))
    assert not image.isNull()
    assert panel.select_node("/block3/op170") == 1


# -------------------------------------------------------------------------- roofline


def test_roofline_points_and_roofs(qtbot, npu_report):
    from widgets.roofline import RooflinePanel

    panel = _show(qtbot, RooflinePanel(), 900, 600)
    panel.set_report(npu_report)
    profile = npu_report.profile
    data = panel.current_data()
    assert set(panel.roof_keys()) == {"dram", "mac", "vector"}  # journey5: no float unit, nothing on the host
    assert data["roofs"]["mac"]["peak"] == pytest.approx(profile.int8_tops * 1e3)
    assert data["roofs"]["vector"]["peak"] == pytest.approx(profile.vector_gops)
    assert data["roofs"]["dram"]["peak"] == pytest.approx(profile.dram_gbps)
    assert data["roofs"]["mac"]["ridge"] == pytest.approx(profile.int8_tops * 1e3 / profile.dram_gbps)
    # the DRAM slope: log10(GOP/s) = log10(intensity) + log10(GB/s)
    x, y = panel._roof_items["dram"].getData()
    np.testing.assert_allclose(y - x, math.log10(profile.dram_gbps))
    layers = {layer.name: layer for layer in npu_report.layers}
    plotted = [p for pts in data["points"].values() for p in pts]
    assert len(plotted) + len(data["unplotted"]) == len(npu_report.layers)
    for name, intensity, gops in plotted:
        assert intensity == pytest.approx(layers[name].intensity)
        assert gops == pytest.approx(layers[name].ops / layers[name].est_ns)
    for name in data["unplotted"]:
        assert layers[name].intensity is None or layers[name].ops == 0
    for lane, pts in data["points"].items():
        assert all(layers[n].lane == lane for n, _, _ in pts)
    panel.fused_box.setChecked(True)
    assert sum(panel.point_counts().values()) + len(panel.unplotted) == len(npu_report.fused_layers)


def test_roofline_host_and_float_roofs():
    from widgets.roofline import profile_roofs

    journey5, xavier = load_profile("journey5"), load_profile("xavier")
    assert {r.key for r in profile_roofs(journey5, ["mac", "host"])} == {"dram", "mac", "vector", "host"}
    roofs = {r.key: r for r in profile_roofs(xavier, ["mac", "float"])}
    assert set(roofs) == {"dram", "mac", "vector", "float"}
    assert roofs["float"].peak_gops == pytest.approx(xavier.float_gflops)


def test_roofline_click_and_select(qtbot, npu_report):
    from widgets.roofline import RooflinePanel

    panel = _show(qtbot, RooflinePanel(), 900, 600)
    panel.set_report(npu_report)
    qtbot.wait(20)
    series = panel.series["mac"]
    k = 0
    layer = panel.layers[int(series.indices[k])]
    vb = panel.plot.getViewBox()
    scene = vb.mapViewToScene(QPointF(math.log10(series.x[k]), math.log10(series.y[k])))
    pos = panel.plot_widget.mapFromScene(scene)
    with qtbot.waitSignal(panel.node_selected, timeout=2000) as blocker:
        qtbot.mouseClick(panel.plot_widget.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [layer.nodes[0]]
    assert panel.highlighted() == pytest.approx((series.x[k], series.y[k]))
    # a node inside a fused op rings that op
    panel.set_report(npu_report, fused=True)
    fused_op = next(f for f in npu_report.fused_layers if len(f.nodes) == 3)
    assert panel.select_node(fused_op.nodes[1])
    assert panel.highlighted() == pytest.approx((fused_op.intensity, fused_op.ops / fused_op.est_ns))
    assert not panel.select_node("/features/features.2/Relu_unknown")


# ---------------------------------------------------------------------- fusion panel


def test_fusion_rows_equal_report(qtbot, vit_report):
    from widgets.fusion_panel import FusionPanel

    panel = _show(qtbot, FusionPanel(), 900, 600)
    panel.set_npu_report(vit_report)
    rep = vit_report.fusions
    rows = panel.fusion_rows()
    assert len(rows) == len(rep.fusions) > 0
    want = sorted((f.pattern, tuple(f.nodes), f.dram_bytes_saved, round(f.est_ns_saved, 6)) for f in rep.fusions)
    got = sorted((r["pattern"], tuple(r["nodes"]), r["dram_bytes_saved"], round(r["est_ns_saved"], 6)) for r in rows)
    assert got == want
    saved = [r["est_ns_saved"] for r in rows]
    assert saved == sorted(saved, reverse=True)  # largest saving first
    rejected = panel.rejected_rows()
    assert len(rejected) == len(rep.rejected) > 0
    assert [(r["pattern"], tuple(r["nodes"]), r["reason"]) for r in rejected] == [
        (r.pattern, tuple(r.nodes), r.reason) for r in rep.rejected
    ]


def test_fusion_click_emits_nodes_and_select_node(qtbot, npu_report):
    from widgets.fusion_panel import FusionPanel

    panel = _show(qtbot, FusionPanel(), 900, 600)
    panel.set_npu_report(npu_report)
    t = panel.fusions
    rect = t.visualItemRect(t.item(1, 2))
    with qtbot.waitSignal(panel.fusion_selected, timeout=2000) as blocker:
        qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [panel.fusion_rows()[1]["nodes"]]
    assert blocker.args[0] in [list(f.nodes) for f in npu_report.fusions.fusions]
    # selection from the graph: no signal, the row of the fusion holding the node
    seen = []
    panel.fusion_selected.connect(seen.append)
    assert panel.select_node("/features/features.8/BatchNormalization")
    assert "/features/features.8/BatchNormalization" in panel.selected_nodes()
    assert seen == []
    assert not panel.select_node("/head/Gemm")
    assert panel.selected_nodes() == []


# ---------------------------------------------------------------------- distribution


def _producer_layer(analysis, tensor):
    return next(layer for layer in analysis.layers if tensor in layer.outputs)


def test_distribution_histograms_and_clip_lines(qtbot, analysis, method_ranges, cnn):
    from widgets.distribution import DistributionData, DistributionPanel

    ranges = method_ranges
    tensor = "/features/features.4/BatchNormalization_output_0"
    view = analysis.activations[tensor]
    layer = _producer_layer(analysis, tensor)
    method = analysis.plan.scheme.method
    # the plan's range is the one the engine computes for its method
    assert (view.lo, view.hi) == pytest.approx(ranges[tensor][method])
    panel = _show(qtbot, DistributionPanel(), 1100, 680)
    panel.set_data(DistributionData.from_activation(view, layer, ranges[tensor], method))
    data = panel.current_data()
    numel = math.prod(cnn.graph.tensor(tensor).shape)
    assert data["float_total"] == 64 * numel == sum(view.counts)  # every calibration value counted once
    assert data["quantized_total"] == pytest.approx(data["float_total"], rel=1e-12)
    assert data["quantized"].size == 255  # int8 symmetric: codes -127..127
    assert data["clip_lines"] == pytest.approx(list(ranges[tensor][method]))
    assert data["methods"] == list(METHODS)
    # error histograms: every finite error value counted (in range or beyond +-16 steps)
    assert data["error_totals"]["isolated"] == layer.isolated.n
    assert data["error_totals"]["accumulated"] == layer.accumulated.n
    # switching the method moves the lines and re-bins the codes
    before = data["quantized"]
    with qtbot.waitSignal(panel.method_changed, timeout=1000) as blocker:
        panel.set_method("percentile")
    assert blocker.args == ["percentile"]
    after = panel.current_data()
    assert after["clip_lines"] == pytest.approx(list(ranges[tensor]["percentile"]))
    assert after["quantized_total"] == pytest.approx(data["float_total"], rel=1e-12)
    assert not np.allclose(after["quantized"], before)
    assert after["clipped_fraction"] > data["clipped_fraction"]  # percentile clips, minmax does not


def test_distribution_grid_lines_when_zoomed_ticks_when_not(qtbot, analysis, method_ranges):
    from widgets.distribution import DistributionData, DistributionPanel

    ranges = method_ranges
    tensor = "/features/features.4/BatchNormalization_output_0"
    lo, hi = ranges[tensor]["minmax"]
    panel = _show(qtbot, DistributionPanel(), 1100, 680)
    panel.set_data(DistributionData.from_activation(analysis.activations[tensor], None, ranges[tensor], "minmax"))
    qtbot.wait(20)
    step = (hi - lo) / 254
    coarse = panel.grid_state()
    assert coarse["mode"] == "ticks" and coarse["stride"] >= 2
    assert coarse["stride"] & (coarse["stride"] - 1) == 0  # a power of two
    xs = panel._grid_item.getData()[0][::2]
    np.testing.assert_allclose(np.diff(xs), coarse["stride"] * step, rtol=1e-9)
    assert np.min(np.abs(xs)) < 1e-9 * (hi - lo)  # counted from the zero point: 0.0 is a tick
    panel.float_plot.setXRange(-10 * step, 10 * step, padding=0.0)
    qtbot.wait(20)
    fine = panel.grid_state()
    assert fine["mode"] == "lines" and fine["stride"] == 1
    assert fine["count"] in (20, 21, 22)  # one line per level in view
    xs = panel._grid_item.getData()[0][::2]
    np.testing.assert_allclose(np.diff(xs), step, rtol=1e-9)


def test_distribution_log_scale_draws_log_counts(qtbot, analysis):
    from widgets.distribution import LOG_FLOOR, DistributionData, DistributionPanel

    view = analysis.activations["image"]
    panel = _show(qtbot, DistributionPanel())
    panel.set_data(DistributionData.from_activation(view))
    assert panel.current_data()["methods"] == ["plan"]  # no per-method ranges: the plan's only
    assert panel.current_data()["clip_lines"] == pytest.approx([view.lo, view.hi])
    panel.set_log_scale(True)
    curve = next(i for i in panel.float_plot.listDataItems())
    _, y = curve.getOriginalDataset()
    counts = np.asarray(view.counts, dtype=np.float64)
    want = np.where(counts > 0, np.log10(np.maximum(counts, 1)), LOG_FLOOR)
    np.testing.assert_allclose(y, want)
    assert panel.float_plot.getAxis("left").logMode


def test_quantized_counts_round_and_saturate():
    from widgets.distribution import quantized_counts

    # one bin centred on level 1 of 3 (levels -1, 0, 1; step 1): all its mass rounds to 0
    np.testing.assert_allclose(quantized_counts(np.array([10.0]), np.array([-0.5, 0.5]), -1.0, 1.0, 3), [0, 10, 0])
    # a bin beyond hi saturates at the top code; a bin across a boundary splits linearly
    np.testing.assert_allclose(quantized_counts(np.array([4.0]), np.array([1.5, 2.5]), -1.0, 1.0, 3), [0, 0, 4])
    np.testing.assert_allclose(quantized_counts(np.array([4.0]), np.array([0.0, 1.0]), -1.0, 1.0, 3), [0, 2, 2])


def test_distribution_weight_outlier_channels(qtbot, cnn, analysis):
    from widgets.distribution import DistributionData, DistributionPanel

    name = "features.3.weight"
    w = np.asarray(cnn.graph.weights[name]).copy()
    w[5] *= 12.0  # one output channel far beyond the others
    flat = w.reshape(w.shape[0], -1)
    qp = analysis.weights[name].qparams
    view = WeightView(name, analysis.weights[name].node, 0, flat.min(axis=1).tolist(), flat.max(axis=1).tolist(), qp)
    counts, edges = np.histogram(w, bins=64)
    panel = _show(qtbot, DistributionPanel())
    panel.set_data(DistributionData.from_weight(view, counts, edges))
    data = panel.current_data()
    assert data["channels"] == w.shape[0]
    assert data["outlier_channels"] == [5]
    assert data["float_total"] == w.size
    assert data["visible"] == {"float": True, "quantized": False, "error": False, "channels": True}
    # per-channel scales: each channel's represented range is drawn (qmax x scale)
    g_lo, g_hi = panel.data.channel_grid
    np.testing.assert_allclose(g_hi, np.asarray(qp["scale"]) * qp["qmax"])
    np.testing.assert_allclose(g_lo, np.asarray(qp["scale"]) * qp["qmin"])


# ----------------------------------------------------------------------- error panel


def test_error_panel_curves_table_and_click(qtbot, analysis):
    from widgets.error_panel import ErrorPanel

    panel = _show(qtbot, ErrorPanel(), 900, 520)
    panel.set_result(analysis)
    data = panel.current_data()
    rated = [layer for layer in analysis.layers if layer.isolated is not None]
    assert data["names"] == [layer.name for layer in rated]
    np.testing.assert_allclose(data["isolated"], [layer.isolated.sqnr_db for layer in rated])
    np.testing.assert_allclose(data["accumulated"], [layer.accumulated.sqnr_db for layer in rated])
    assert panel.point_count("isolated") == panel.point_count("accumulated") == len(rated)
    assert "higher is better" in panel.plot.getAxis("left").labelText
    out = analysis.outputs[0]
    assert len(data["outputs"]) == len(analysis.outputs) == 1
    row = data["outputs"][0]
    assert row[0] == out.name and row[2] == f"{out.error.sqnr_db:.1f}"
    assert row[3] == f"{out.top1_agreement:.2%}" and row[5] == f"{out.accuracy_int8:.2%}"
    qtbot.wait(20)
    i = 4
    vb = panel.plot.getViewBox()
    pos = panel.plot_widget.mapFromScene(vb.mapViewToScene(QPointF(i, data["accumulated"][i])))
    with qtbot.waitSignal(panel.node_selected, timeout=2000) as blocker:
        qtbot.mouseClick(panel.plot_widget.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [rated[i].name]
    assert panel.selected_node == rated[i].name
    assert panel.select_node(rated[0].name) and not panel.select_node("not a layer")


def test_error_panel_exact_layer_is_drawn_above_the_rest(qtbot, analysis):
    from widgets.error_panel import EXACT_MARGIN_DB, ErrorPanel

    layers = list(analysis.layers)
    exact = dataclasses.replace(layers[2].isolated, sqnr_db=math.inf)  # e.g. a ReLU that is exact in int8
    layers[2] = dataclasses.replace(layers[2], isolated=exact)
    panel = _show(qtbot, ErrorPanel())
    panel.set_layers(layers, analysis.outputs)
    finite = np.concatenate([panel.sqnr[v][np.isfinite(panel.sqnr[v])] for v in ("isolated", "accumulated")])
    _xs, ys = panel._scatter["isolated"].getData()
    assert ys[2] == pytest.approx(finite.max() + EXACT_MARGIN_DB)
    assert np.isposinf(panel.current_data()["isolated"][2])


# -------------------------------------------------------------------------- findings


def test_findings_rows_click_and_filter(qtbot, analysis):
    from widgets.findings import FindingsPanel

    findings = list(analysis.findings) + [
        Finding("/features/features.3/Conv", "outlier_channels", "high",
                "activation x range dominated by 1 outlier channel (7 on axis 1)", {"wasted_bits": 3.1}),
        Finding("/features/features.6/MaxPool", "bias", "low", "systematic bias: mean +0.2 steps", {"gain_db": 1.0}),
    ]
    panel = _show(qtbot, FindingsPanel(), 900, 420)
    panel.set_findings(findings)
    rows = panel.current_data()["rows"]
    assert len(rows) == len(findings) == panel.table.rowCount()
    assert [(r["node"], r["severity"], r["text"]) for r in rows] == [(f.node, f.severity, f.text) for f in findings]
    target = len(findings) - 2
    rect = panel.table.visualItemRect(panel.table.item(target, 1))
    with qtbot.waitSignal(panel.node_selected, timeout=2000) as blocker:
        qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [findings[target].node]
    assert panel.selected_index() == target
    panel.set_severity_filter("high")
    assert [findings[i].severity for i in panel.visible_rows()] == ["high"]
    panel.set_severity_filter("low")
    assert len(panel.visible_rows()) == len(findings)
    assert panel.select_node("/features/features.6/MaxPool")
    assert panel.selected_index() == len(findings) - 1
