"""GraphView: drawing a GraphLayout, selection, search, colouring, fusion outlines, zoom."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication

import engine
from benchmarks.models import bert_encoder
from engine.layout import GraphLayout, layout_graph
from widgets.graph_view import (
    BOUND_COLORS,
    DETAIL_MIN_SCALE,
    OP_LABEL_MIN_SCALE,
    ROLE_KIND,
    ROLE_VALUE,
    GraphView,
    op_color,
)

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"


@pytest.fixture(scope="module")
def vit_layout() -> GraphLayout:
    return layout_graph(engine.load_model(SAMPLES / "vit-digits.onnx").graph)


@pytest.fixture
def view(qtbot, vit_layout: GraphLayout) -> GraphView:
    v = GraphView()
    qtbot.addWidget(v)
    v.resize(900, 700)
    v.show()
    qtbot.waitExposed(v)
    v.set_layout(vit_layout)
    qtbot.waitUntil(lambda: not v.is_building, timeout=10_000)
    return v


def _click(qtbot, view: GraphView, name: str) -> None:
    box = view._layout.nodes[name]
    view.select_node(name)  # scrolls it into view
    view.clear_selection()
    point = view.mapFromScene(box.x + box.w / 2, box.y + box.h / 2)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_builds_every_node_edge_and_label(view: GraphView, vit_layout: GraphLayout) -> None:
    kinds = [item.data(ROLE_KIND) for item in view.scene().items()]
    assert kinds.count("node") == len(vit_layout.nodes)
    # edges of one tensor share one path item
    assert kinds.count("edge") == len({(e.src, e.tensor) for e in vit_layout.edges})
    assert kinds.count("arrows") >= 1
    for name, box in vit_layout.nodes.items():
        item = view.node_item(name)
        assert item is not None
        rect = item.sceneBoundingRect()
        assert rect.center().x() == pytest.approx(box.x + box.w / 2, abs=1.0)
        assert rect.center().y() == pytest.approx(box.y + box.h / 2, abs=1.0)
    # default colouring: op category colours, shown in the legend
    assert view.color_metric == "op type"
    assert view.node_item("/blocks.0/attn/Softmax").brush().color() == op_color("Softmax")
    assert view.node_item("/patch_embed/Conv").brush().color() == op_color("MatMul")  # both "layer"
    assert view._legend.isVisible()


def test_click_emits_node_selected(qtbot, view: GraphView) -> None:
    name = "/blocks.0/attn/Softmax"
    with qtbot.waitSignal(view.node_selected, timeout=2000) as blocker:
        _click(qtbot, view, name)
    assert blocker.args == [name]
    assert view.selected_node == name


def test_select_node_does_not_emit_and_centres(qtbot, view: GraphView) -> None:
    name = "/blocks.1/mlp/mlp.2/MatMul"
    view.node_selected.connect(view.select_node)  # the app's usual wiring: no signal loop
    with qtbot.assertNotEmitted(view.node_selected):
        assert view.select_node(name)
    assert view.selected_node == name
    box = view._layout.nodes[name]
    centre = view.mapToScene(view.viewport().rect().center())
    assert centre.y() == pytest.approx(box.y + box.h / 2, abs=2.0 / view.zoom)
    assert not view.select_node("no such node")
    # a click after the wiring above still emits exactly once
    with qtbot.waitSignal(view.node_selected, timeout=2000):
        _click(qtbot, view, "/blocks.0/attn/Softmax")


def test_search_by_op_type_and_name(qtbot, view: GraphView, vit_layout: GraphLayout) -> None:
    softmaxes = [n for n in vit_layout.node_order if vit_layout.nodes[n].op_type == "Softmax"]
    assert len(softmaxes) == 2
    with qtbot.waitSignal(view.node_selected, timeout=2000) as blocker:
        assert view.find("softmax") == softmaxes[0]
    assert blocker.args == [softmaxes[0]] and view.selected_node == softmaxes[0]
    assert view.match_count == 2
    assert view.find_next() == softmaxes[1]
    assert view.find_next() == softmaxes[0]  # wraps
    # by name substring (case-insensitive), in reading order
    assert view.find("BLOCKS.1/NORM2") == "/blocks.1/norm2/LayerNormalization"
    assert view.find("logits") == "output:logits"
    assert view.find("nothing like this") is None and view.match_count == 0


def test_numeric_metric_colours_low_and_high_apart(view: GraphView, vit_layout: GraphLayout) -> None:
    ops = [n for n, b in vit_layout.nodes.items() if b.kind == "op"]
    values = {n: float(i) for i, n in enumerate(ops)}  # 0 .. len-1
    low, high = ops[0], ops[-1]
    view.set_color_metric("isolated SQNR", values, higher_is_better=True)
    assert view.color_metric == "isolated SQNR"
    low_c, high_c = view.node_item(low).brush().color(), view.node_item(high).brush().color()
    assert low_c != high_c
    assert low_c.red() > low_c.blue() and high_c.blue() > high_c.red()  # bad is red, good is blue
    assert view.node_item(low).data(ROLE_VALUE) == 0.0
    assert view.node_item(high).data(ROLE_VALUE) == float(len(ops) - 1)
    # est_ns: lower is better, so the ends swap
    view.set_color_metric("est_ns", values, higher_is_better=False)
    assert view.node_item(low).brush().color() == high_c and view.node_item(high).brush().color() == low_c
    # nodes without a value are grey
    view.set_color_metric("accumulated SQNR", {low: 10.0, high: 30.0})
    middle = view.node_item(ops[len(ops) // 2]).brush().color()
    assert middle.saturation() < 30 and view.node_item(ops[len(ops) // 2]).data(ROLE_VALUE) is None


def test_categorical_bound_metric(view: GraphView, vit_layout: GraphLayout) -> None:
    ops = [n for n, b in vit_layout.nodes.items() if b.kind == "op"]
    bound = {n: ("compute" if vit_layout.nodes[n].op_type == "MatMul" else "memory") for n in ops}
    view.set_color_metric("bound", bound)
    matmul = next(n for n in ops if bound[n] == "compute")
    other = next(n for n in ops if bound[n] == "memory")
    assert view.node_item(matmul).brush().color() == QColor(BOUND_COLORS["compute"])
    assert view.node_item(other).brush().color() == QColor(BOUND_COLORS["memory"])
    assert view.node_item(other).data(ROLE_VALUE) == "memory"


def test_fusion_groups_are_outlined(view: GraphView, vit_layout: GraphLayout) -> None:
    groups = [
        (("/blocks.0/attn/q/MatMul", "/blocks.0/attn/q/Add"), "gemm_bias_act"),
        (("/blocks.0/attn/MatMul", "/blocks.0/attn/Mul", "/blocks.0/attn/Softmax", "/blocks.0/attn/MatMul_1"),
         "attention"),
        (("not/in/graph",), "ignored"),
    ]
    view.set_fusion_groups(groups)
    outlines = view.fusion_items
    assert len(outlines) == 2
    assert all(item.data(ROLE_KIND) == "fusion" for item in outlines)
    for item, (members, _) in zip(outlines, groups):
        for name in members:
            assert item.sceneBoundingRect().contains(view.node_item(name).sceneBoundingRect())
    view.set_fusion_groups([])
    assert view.fusion_items == []
    assert not [i for i in view.scene().items() if i.data(ROLE_KIND) == "fusion"]


def test_zoom_keys_fit_and_level_of_detail(qtbot, view: GraphView) -> None:
    view.fit()
    fitted = view.zoom
    rect = view.mapToScene(view.viewport().rect()).boundingRect()
    assert rect.contains(view.scene().sceneRect().adjusted(2, 2, -2, -2))
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.zoom == pytest.approx(fitted * 1.25)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.zoom == pytest.approx(fitted)
    view.resetTransform()
    view.zoom_by(OP_LABEL_MIN_SCALE / 2)
    assert not view.labels_visible
    view.zoom_by(2 * DETAIL_MIN_SCALE / view.zoom)
    assert view.labels_visible
    # the wheel zooms in (angle delta > 0) and out
    before = view.zoom
    centre = QPointF(view.viewport().rect().center())
    wheel = QWheelEvent(centre, view.mapToGlobal(centre), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.zoom > before


def test_drag_on_empty_space_pans(qtbot, view: GraphView, vit_layout: GraphLayout) -> None:
    view.resetTransform()
    view.select_node("/blocks.0/attn/MatMul")
    bar = view.verticalScrollBar()
    start_value = bar.value()
    empty = QPoint(15, view.viewport().height() // 2)  # left margin: no node there
    assert view.node_at(QPointF(empty)) is None
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=empty)
    for dy in (-40, -80, -120):
        qtbot.mouseMove(view.viewport(), pos=empty + QPoint(0, dy))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=empty + QPoint(0, -120))
    assert bar.value() > start_value  # dragging up scrolls down the graph
    assert view.selected_node == "/blocks.0/attn/MatMul"  # panning does not select


def test_grab_png(qtbot, view: GraphView, tmp_path: Path) -> None:
    view.set_fusion_groups([(("/blocks.0/attn/q/MatMul", "/blocks.0/attn/q/Add"), "gemm_bias_act")])
    view.select_node("/blocks.0/attn/MatMul")
    path = tmp_path / "graph.png"
    assert view.grab().save(str(path))
    assert path.stat().st_size > 10_000  # a real drawing, not an empty frame


def test_five_thousand_node_scene(qtbot) -> None:
    """A 5,000-node scene is built over many event-loop turns (set_layout returns at once);
    the view finds and selects nodes meanwhile; colours set mid-build reach the late nodes."""
    graph = engine.model_from_proto(bert_encoder(layers=150, hidden=16, heads=2, ffn=32, seq=8, vocab=50)).graph
    start = time.perf_counter()
    layout = layout_graph(graph)
    layout_s = time.perf_counter() - start
    assert len(layout.nodes) >= 5000
    v = GraphView()
    qtbot.addWidget(v)
    v.resize(1200, 900)
    v.show()
    none_refs = sys.getrefcount(None)
    slices: list[float] = []
    start = time.perf_counter()
    v.set_layout(layout)
    slices.append(time.perf_counter() - start)
    assert v.is_building  # the items come over the next event-loop turns
    qtbot.waitUntil(lambda: len(v._nodes) > 0, timeout=10_000)
    nodes = [i for i in v.scene().items() if i.data(ROLE_KIND) == "node"]
    assert 0 < len(nodes) < len(layout.nodes)
    # usable while building: search and selection work on nodes not drawn yet
    last = layout.node_order[-1]
    assert v.node_item(last) is None
    assert v.select_node(last) and v.selected_node == last
    ops = [n for n, b in layout.nodes.items() if b.kind == "op"]
    v.set_color_metric("index", {n: float(i) for i, n in enumerate(ops)})
    tick = v._build_tick

    def timed_tick() -> None:
        t = time.perf_counter()
        tick()
        slices.append(time.perf_counter() - t)

    v._build_tick = timed_tick  # type: ignore[method-assign]
    v._build_timer.timeout.disconnect()
    v._build_timer.timeout.connect(timed_tick)
    with qtbot.waitSignal(v.build_finished, timeout=60_000):
        pass
    build_s = time.perf_counter() - start
    assert not v.is_building
    assert sys.getrefcount(None) >= none_refs - 100  # PySide6 6.12 void-call refcount bug guard
    nodes = [i for i in v.scene().items() if i.data(ROLE_KIND) == "node"]
    assert len(nodes) == len(layout.nodes)
    assert v.node_item(ops[-1]).data(ROLE_VALUE) == float(len(ops) - 1)  # coloured when it was added
    assert v.node_item(ops[-1]).brush().color() != v.node_item(ops[0]).brush().color()
    start = time.perf_counter()
    image = v.grab()
    paint_ms = (time.perf_counter() - start) * 1e3
    assert not image.isNull()
    print(f"\n5,000-node graph: {len(layout.nodes)} nodes, layout {layout_s:.2f} s, scene build {build_s:.2f} s "
          f"in {len(slices)} slices (longest {1e3 * max(slices):.0f} ms), one frame {paint_ms:.0f} ms")
    # a search far down the graph centres it
    name = v.find("encoder.layer.75/output/Add")
    assert name == "encoder.layer.75/output/Add"
    centre = v.mapToScene(v.viewport().rect().center())
    assert centre.y() == pytest.approx(layout.nodes[name].y + layout.nodes[name].h / 2, abs=5.0)


def test_a_new_layout_mid_build_replaces_the_old_one(qtbot, vit_layout: GraphLayout) -> None:
    graph = engine.model_from_proto(bert_encoder(layers=12)).graph
    big = layout_graph(graph)
    v = GraphView()
    qtbot.addWidget(v)
    v.resize(800, 600)
    v.show()
    v.set_layout(big)
    assert v.is_building
    v.set_layout(vit_layout, incremental=False)  # stops the first build, draws the second at once
    assert not v.is_building
    kinds = [item.data(ROLE_KIND) for item in v.scene().items()]
    assert kinds.count("node") == len(vit_layout.nodes)
    qtbot.wait(50)  # no stale slice of the first layout arrives later
    assert [item.data(ROLE_KIND) for item in v.scene().items()].count("node") == len(vit_layout.nodes)


def test_fit_keeps_the_legend_off_the_graph(view: GraphView, vit_layout: GraphLayout) -> None:
    view.resize(420, 700)  # narrow: the graph fills the width, under the legend's corner
    view.fit()
    legend = view._legend.geometry()
    top_nodes = [n for n, b in vit_layout.nodes.items() if b.y == min(bb.y for bb in vit_layout.nodes.values())]
    for n in top_nodes:
        rect = view.mapFromScene(view.node_item(n).sceneBoundingRect()).boundingRect()
        assert not rect.intersects(legend), f"{n} is under the legend"
