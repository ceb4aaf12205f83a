"""Panels at the sizes the window gives them: nothing clipped, empty states explained.

Every detail panel has ``clear(message)``: it shows the message in place of its content and
says nothing else; data brings the content back. Plot titles stay inside their plots (a long
pyqtgraph title used to widen the plot past its widget, hiding the right end of the axis and
the "hi" clipping line), the error panel's headers are never narrower than their text, the
timeline shows every lane after a clear, and refilling the fusion tables keeps their column
modes. Units: format_ns / format_bytes choose the unit after rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QHeaderView


SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
CNN = SAMPLES / "cnn-digits.onnx"


def _show(qtbot, widget, w: int, h: int):
    qtbot.addWidget(widget)
    widget.resize(w, h)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


# ------------------------------------------------------------------ empty states


@pytest.mark.parametrize("name", ["distribution", "error", "findings", "timeline", "roofline", "fusions"])
def test_every_panel_clears_with_an_explanation(qtbot, name, cnn, npu_report, analysis) -> None:
    from widgets.distribution import DistributionData, DistributionPanel
    from widgets.error_panel import ErrorPanel
    from widgets.findings import FindingsPanel
    from widgets.fusion_panel import FusionPanel
    from widgets.roofline import RooflinePanel
    from widgets.timeline import TimelinePanel

    cls = {"distribution": DistributionPanel, "error": ErrorPanel, "findings": FindingsPanel,
           "timeline": TimelinePanel, "roofline": RooflinePanel, "fusions": FusionPanel}[name]
    panel = _show(qtbot, cls(), 600, 450)
    assert panel.message, f"{name}: an empty panel must say why it is empty"

    def fill() -> None:
        if name == "distribution":
            tensor = "/features/features.4/BatchNormalization_output_0"
            layer = next(layer for layer in analysis.layers if tensor in layer.outputs)
            panel.set_data(DistributionData.from_activation(analysis.activations[tensor], layer))
        elif name == "error":
            panel.set_result(analysis)
        elif name == "findings":
            panel.set_findings(analysis.findings)
        elif name in ("timeline", "roofline"):
            panel.set_report(npu_report)
        else:
            panel.set_npu_report(npu_report)

    fill()
    if name == "findings" and not analysis.findings:
        assert "Nothing stood out" in panel.message
    else:
        assert panel.message == ""
    panel.clear("Computing the NPU report…")
    assert panel.message == "Computing the NPU report…"
    # and nothing of the old data is left behind
    if name == "distribution":
        assert panel.data is None
    elif name == "error":
        assert panel.names == [] and panel.table.rowCount() == 0
    elif name == "findings":
        assert panel.findings == [] and panel.table.rowCount() == 0
    elif name == "timeline":
        assert panel.current_data()["plots"] == {"unfused": None, "fused": None}
    elif name == "roofline":
        assert panel.point_counts() == {} and panel.roof_keys() == []
    else:
        assert panel.fusion_rows() == [] and panel.rejected_rows() == []
    fill()
    assert panel.message == "" or name == "findings"


# ------------------------------------------------------------------ nothing clipped


def test_distribution_plots_stay_inside_their_widgets(qtbot, analysis) -> None:
    """At the layer tabs' default size (about 600 x 420 px) every plot, its right axis end
    and both clipping lines are inside the widget; long titles are elided, not overflowing."""
    from widgets.distribution import DistributionData, DistributionPanel

    panel = _show(qtbot, DistributionPanel(), 600, 420)
    tensor = "/features/features.8/BatchNormalization_output_0"
    layer = next(layer for layer in analysis.layers if tensor in layer.outputs)
    data = DistributionData.from_activation(analysis.activations[tensor], layer)
    panel.set_data(data)
    qtbot.wait(50)  # let the plots lay out
    for key, widget in (("float", panel.float_widget), ("quantized", panel.quant_widget),
                        ("error", panel.error_widget)):
        assert widget.isVisible()
        item = widget.getPlotItem()
        assert item.width() <= widget.viewport().width() + 1, f"{key} plot wider than its widget"
        title = panel.titles[key]
        assert title.text and (title.shown == title.text or title.shown.endswith("…"))
    lo, hi = data.ranges[data.method]
    (x0, x1), _ = panel.float_plot.getViewBox().viewRange()
    assert x0 < lo and hi < x1  # both clipping lines in view
    (q0, q1), _ = panel.quant_plot.getViewBox().viewRange()
    assert q0 < data.qmin and data.qmax < q1  # every code in view


def test_error_panel_headers_fit_a_narrow_panel(qtbot, analysis) -> None:
    from widgets.error_panel import ErrorPanel

    panel = _show(qtbot, ErrorPanel(), 480, 450)
    panel.set_result(analysis)
    qtbot.wait(50)
    assert panel.header_clipped() == []
    header = panel.table.horizontalHeader()
    fm = header.fontMetrics()
    assert header.sectionSize(3) >= max(fm.horizontalAdvance(s) for s in ("Top-1", "agreement"))


def test_timeline_shows_every_lane_after_a_clear(qtbot, npu_report) -> None:
    """An empty timeline's view limits used to clamp the next one to a single lane."""
    from widgets.timeline import TimelinePanel

    panel = _show(qtbot, TimelinePanel(), 600, 450)
    panel.clear()
    panel.set_report(npu_report)
    n = len(panel.lanes)
    assert n > 1
    for which in ("unfused", "fused"):
        _, (y0, y1) = panel.plot_item(which).getViewBox().viewRange()
        assert y0 <= -0.5 and y1 >= n - 0.5, f"{which}: lanes cut off ({y0:.2f}..{y1:.2f} for {n} lanes)"


def test_roofline_label_of_a_point_near_the_right_edge_stays_in_view(qtbot, npu_report) -> None:
    from widgets.roofline import RooflinePanel

    panel = _show(qtbot, RooflinePanel(), 560, 450)
    panel.set_report(npu_report)
    points = [(name, x) for lane in panel.current_data()["points"].values() for name, x, _ in lane]
    rightmost = max(points, key=lambda p: p[1])[0]
    assert panel.select_node(rightmost)
    qtbot.wait(50)
    label = panel._highlight_label
    vb = panel.plot.getViewBox()
    assert vb.sceneBoundingRect().contains(label.sceneBoundingRect().topLeft())
    assert label.sceneBoundingRect().right() <= vb.sceneBoundingRect().right() + 1


def test_fusion_tables_refill_in_order_with_their_column_modes(qtbot, npu_report) -> None:
    from widgets.fusion_panel import FusionPanel

    panel = _show(qtbot, FusionPanel(), 600, 450)
    panel.set_npu_report(npu_report)
    first = panel.fusion_rows()
    panel.set_npu_report(npu_report)  # a refill (e.g. a new profile) gives the same table
    assert panel.fusion_rows() == first
    saved = [r["est_ns_saved"] for r in first]
    assert saved == sorted(saved, reverse=True)
    modes = [panel.fusions.horizontalHeader().sectionResizeMode(c) for c in range(5)]
    assert modes == [QHeaderView.ResizeMode.ResizeToContents] * 2 + [QHeaderView.ResizeMode.Stretch] + \
        [QHeaderView.ResizeMode.ResizeToContents] * 2
    # a header click still sorts (ascending by pattern name)
    panel.fusions.horizontalHeader().sectionClicked.emit(1)
    patterns = [r["pattern"] for r in panel.fusion_rows()]
    assert patterns == sorted(patterns, key=str.lower)


# ------------------------------------------------------------------ units


def test_units_are_chosen_after_rounding() -> None:
    from widgets.style import format_bytes, format_ns

    assert format_ns(999.4) == "999 ns"
    assert format_ns(999.6) == "1.00 µs"  # not "1000 ns" beside "1.00 µs" in the same column
    assert format_ns(999_600) == "1.00 ms"
    assert format_ns(2_500) == "2.50 µs"
    assert format_bytes(1023.8) == "1 KiB"
    assert format_bytes(512) == "512 B"


def test_graph_flags_nodes(qtbot, cnn) -> None:
    from engine.layout import layout_graph
    from widgets.graph_view import GraphView

    view = _show(qtbot, GraphView(), 600, 600)
    view.set_layout(layout_graph(cnn.graph))
    conv = "/features/features.0/Conv"
    view.set_flagged({conv: "no kernel for op Conv", "no such node": "x"})
    assert view.flagged == [conv]
    kinds = [i.data(1) for i in view.scene().items()]
    assert kinds.count("flag") == 1
    view.set_flagged({})
    assert view.flagged == [] and [i.data(1) for i in view.scene().items()].count("flag") == 0
    assert np.isfinite(view.zoom)


def test_a_fixed_colour_scale_keeps_good_sqnr_out_of_the_red(qtbot, cnn) -> None:
    """Relative colours paint the worst layer red even at a healthy 31 dB; on the fixed SQNR
    scale (15..45 dB) 31 dB sits mid-ramp and only really low SQNR is red."""
    from engine.layout import layout_graph
    from widgets.graph_view import GraphView, ramp_color

    view = _show(qtbot, GraphView(), 600, 600)
    layout = layout_graph(cnn.graph)
    view.set_layout(layout)
    ops = [n for n, b in layout.nodes.items() if b.kind == "op"]
    values = {n: 31.0 + 10.0 * i / (len(ops) - 1) for i, n in enumerate(ops)}
    red = ramp_color(0.0)
    view.set_color_metric("SQNR (dB)", values, True)
    assert view.node_item(ops[0]).brush().color() == red  # relative: the lowest is the red end
    view.set_color_metric("SQNR (dB)", values, True, value_range=(15.0, 45.0))
    assert view.node_item(ops[0]).brush().color() == ramp_color((31.0 - 15.0) / 30.0)
    values[ops[1]] = 10.0  # below the scale: the red end
    view.set_color_metric("SQNR (dB)", values, True, value_range=(15.0, 45.0))
    assert view.node_item(ops[1]).brush().color() == red
    assert view._legend.ramp is not None and view._legend.ramp[0].startswith("≤")


def test_a_bigger_result_is_not_clamped_by_the_previous_one(qtbot, analysis) -> None:
    """View limits are set before the range: a second, wider result is shown whole."""
    import dataclasses

    from widgets.distribution import DistributionData, DistributionPanel
    from widgets.error_panel import ErrorPanel

    panel = _show(qtbot, ErrorPanel(), 600, 450)
    panel.set_layers(analysis.layers[:3], analysis.outputs)
    panel.set_result(analysis)  # more layers than before
    (x0, x1), _ = panel.plot.getViewBox().viewRange()
    assert x0 <= 0 and x1 >= len(panel.names) - 1
    dist = _show(qtbot, DistributionPanel(), 600, 420)
    tensor = "/features/features.4/BatchNormalization_output_0"
    view = analysis.activations[tensor]
    narrow = dataclasses.replace(view, edges=np.asarray(view.edges) / 100.0, lo=view.lo / 100.0, hi=view.hi / 100.0)
    dist.set_data(DistributionData.from_activation(narrow))
    dist.set_data(DistributionData.from_activation(view))  # a hundred times wider
    (d0, d1), _ = dist.float_plot.getViewBox().viewRange()
    assert d0 <= float(view.edges[0]) and d1 >= float(view.edges[-1])


def test_minmax_range_clips_nothing(qtbot, analysis) -> None:
    """Under the minmax range no value is beyond the range: the histogram estimate says 0 %
    (it used to spread the last bin's count past the observed max)."""
    from widgets.distribution import DistributionData, DistributionPanel, tightened_edges

    assert tightened_edges([0.0, 1.0, 2.0, 3.0], 0.5, 2.2).tolist() == [0.5, 1.0, 2.0, 2.2]
    assert tightened_edges([0.0, 1.0, 2.0, 3.0], None, 3.5).tolist() == [0.0, 1.0, 2.0, 3.0]
    panel = _show(qtbot, DistributionPanel(), 600, 420)
    tensor = "/features/features.4/BatchNormalization_output_0"
    view = analysis.activations[tensor]
    lo, hi = -max(abs(view.min), abs(view.max)), max(abs(view.min), abs(view.max))  # symmetric minmax
    panel.set_data(DistributionData.from_activation(view, ranges={"minmax": (lo, hi)}, method="minmax"))
    assert panel.clipped_fraction() == 0.0
    data = panel.current_data()
    assert data["quantized_total"] == pytest.approx(data["float_total"], rel=1e-12)
