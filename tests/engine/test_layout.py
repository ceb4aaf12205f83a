"""Layered graph layout (engine.layout): structure, geometry, determinism, progress, cancel."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from benchmarks.models import bert_encoder
from engine.errors import Cancelled
from engine.graph import Graph
from engine.layout import GraphLayout, layout_graph

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
EPS = 1e-6  # scene units; positions are sums of widths, so only float rounding is allowed


@pytest.fixture(scope="module")
def vit() -> Graph:
    return engine.load_model(SAMPLES / "vit-digits.onnx").graph


@pytest.fixture(scope="module")
def bert4() -> Graph:
    return engine.model_from_proto(bert_encoder(layers=4, hidden=16, heads=2, ffn=32, seq=8, vocab=50)).graph


def _graph(nodes, inputs, outputs, initializers=()) -> Graph:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return engine.model_from_proto(model).graph


def _vi(name: str, shape: list[int]) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check_geometry(layout: GraphLayout) -> None:
    boxes = layout.nodes
    for e in layout.edges:
        s, d = boxes[e.src], boxes[e.dst]
        assert s.layer < d.layer, f"{e.src} -> {e.dst} does not go down"
        pts = np.asarray(e.points)
        assert np.all(np.diff(pts[:, 1]) >= -EPS), f"{e.src} -> {e.dst} goes up somewhere"
        assert pts[0] == pytest.approx((s.x + s.w / 2, s.y + s.h))  # leaves the source's bottom centre
        assert pts[-1] == pytest.approx((d.x + d.w / 2, d.y))  # enters the reader's top centre
    by_layer: dict[int, list] = defaultdict(list)
    for b in boxes.values():
        by_layer[b.layer].append(b)
        assert 0 <= b.x and b.x + b.w <= layout.width + EPS and 0 <= b.y and b.y + b.h <= layout.height + EPS
    for layer, row in by_layer.items():
        row.sort(key=lambda b: b.x)
        for a, b in itertools.pairwise(row):
            assert a.x + a.w <= b.x + EPS, f"layer {layer}: {a.name} overlaps {b.name}"
        tops = {round(b.y + b.h / 2, 6) for b in row}
        assert len(tops) == 1, f"layer {layer}: boxes not centred on one line"
    # a long edge passes a layer between boxes, never through one
    for e in layout.edges:
        for x, y in e.points[1:-1]:
            for b in boxes.values():
                if b.y - EPS <= y <= b.y + b.h + EPS and b.layer not in (boxes[e.src].layer, boxes[e.dst].layer):
                    assert not (b.x < x < b.x + b.w), f"{e.src} -> {e.dst} crosses {b.name}"


def test_vit_layout_places_every_node_and_edge(vit: Graph) -> None:
    layout = layout_graph(vit)
    ops = {n.name for n in vit.nodes}
    assert ops <= set(layout.nodes)
    assert set(layout.nodes) - ops == {"input:image", "output:logits"}
    assert not set(layout.nodes) & set(vit.weights), "initializers must not be nodes"
    # one edge per (producer, reader, tensor) of activations; initializers give none
    producers = vit.producers()
    expected = {(producers[t].name if t in producers else f"input:{t}", n.name, t)
                for n in vit.nodes for t in n.inputs if t and t not in vit.weights}
    expected |= {(producers[t.name].name, f"output:{t.name}", t.name) for t in vit.outputs}
    assert {(e.src, e.dst, e.tensor) for e in layout.edges} == expected
    assert layout.nodes["input:image"].kind == "input" and layout.nodes["output:logits"].kind == "output"
    assert layout.node_order[0] == "input:image" and layout.node_order[-1] == "output:logits"
    _check_geometry(layout)


def test_bert_layout_geometry_and_shared_chains(bert4: Graph) -> None:
    layout = layout_graph(bert4)
    _check_geometry(layout)
    # attention_mask is read by every block: its edges share one chain of bend points
    mask = [e for e in layout.edges if e.src == "input:attention_mask"]
    assert len(mask) == 4
    longest = max(mask, key=lambda e: len(e.points))
    for e in mask:
        assert e.points[:-1] == longest.points[: len(e.points) - 1]
    assert layout.dummies < sum(len(e.points) - 2 for e in layout.edges) / 2 + 1


def test_weights_are_badges_not_nodes() -> None:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    b = numpy_helper.from_array(np.ones(3, np.float32), "b")
    graph = _graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="/enc/fc/MatMul"),
         helper.make_node("Add", ["h", "b"], ["y"], name="/enc/fc/Add")],
        [_vi("x", [2, 4])], [_vi("y", [2, 3])], [w, b],
    )
    layout = layout_graph(graph)
    mm = layout.nodes["/enc/fc/MatMul"]
    assert (mm.weights, mm.params, mm.badge) == (1, 12, "12")
    assert mm.label == "MatMul" and mm.detail == "enc/fc"
    assert layout.nodes["input:x"].detail == "2\u00d74"
    assert len(layout.nodes) == 4 and len(layout.edges) == 3


def test_late_input_sits_above_its_reader() -> None:
    # x -> Relu -> Relu -> Relu -> Add(.., bias_in): the second input is drawn next to the Add
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r0"),
        helper.make_node("Relu", ["a"], ["b"], name="r1"),
        helper.make_node("Relu", ["b"], ["c"], name="r2"),
        helper.make_node("Add", ["c", "late"], ["y"], name="add"),
    ]
    layout = layout_graph(_graph(nodes, [_vi("x", [4]), _vi("late", [4])], [_vi("y", [4])]))
    assert layout.nodes["input:late"].layer == layout.nodes["add"].layer - 1
    assert [layout.nodes[n].layer for n in ("input:x", "r0", "r1", "r2", "add", "output:y")] == [0, 1, 2, 3, 4, 5]
    _check_geometry(layout)


def test_chain_is_straight_and_fan_out_is_centred() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="top")]
    nodes += [helper.make_node("Sigmoid", ["a"], [f"b{i}"], name=f"mid{i}") for i in range(3)]
    nodes += [helper.make_node("Sum", [f"b{i}" for i in range(3)], ["c"], name="sum"),
              helper.make_node("Tanh", ["c"], ["d"], name="t1"),
              helper.make_node("Tanh", ["d"], ["y"], name="t2")]
    layout = layout_graph(_graph(nodes, [_vi("x", [4])], [_vi("y", [4])]))
    cx = {k: b.x + b.w / 2 for k, b in layout.nodes.items()}
    assert cx["mid1"] == pytest.approx(cx["top"])  # the middle reader right under its input
    assert cx["mid0"] < cx["mid1"] < cx["mid2"]
    assert cx["mid1"] - cx["mid0"] == pytest.approx(cx["mid2"] - cx["mid1"])
    for a, b in (("input:x", "top"), ("sum", "t1"), ("t1", "t2"), ("t2", "output:y")):
        assert cx[a] == pytest.approx(cx[b]), f"{a} -> {b} is not vertical"


def test_deep_encoder_does_not_lean() -> None:
    """24 blocks are no wider than 2 (no sideways drift block after block) and residual
    edges run straight."""
    def build(layers: int) -> GraphLayout:
        return layout_graph(engine.model_from_proto(
            bert_encoder(layers=layers, hidden=16, heads=2, ffn=32, seq=8, vocab=50)).graph)

    shallow, deep = build(2), build(24)
    assert deep.width <= 1.25 * shallow.width, (shallow.width, deep.width)
    long_edges = [e for e in deep.edges if len(e.points) > 3]
    straight = [e for e in long_edges if len({round(x, 6) for x, _ in e.points[1:-1]}) == 1]
    assert len(straight) >= 0.9 * len(long_edges)
    # one-to-one links (the only output read by the only input) are vertical: the lean
    # correction must not tilt them
    outs = defaultdict(int)
    ins = defaultdict(int)
    for e in deep.edges:
        outs[e.src] += 1
        ins[e.dst] += 1
    links = [e for e in deep.edges if outs[e.src] == 1 and ins[e.dst] == 1 and len(e.points) == 2]
    vertical = [e for e in links if abs(e.points[0][0] - e.points[1][0]) < 1e-6]
    assert len(links) > 200 and len(vertical) >= 0.95 * len(links)
    # the operator path is the spine: a residual Add sits under the op before it, and the
    # skip connection bends in from the side
    for k in range(24):
        add = deep.nodes[f"encoder.layer.{k}/output/Add"]
        dense = deep.nodes[f"encoder.layer.{k}.output.dense/Add"]
        assert add.x + add.w / 2 == pytest.approx(dense.x + dense.w / 2)


def test_layout_is_deterministic(vit: Graph) -> None:
    a, b = layout_graph(vit), layout_graph(vit)
    assert a.nodes == b.nodes
    assert a.edges == b.edges
    assert (a.width, a.height, a.node_order) == (b.width, b.height, b.node_order)


def test_progress_reaches_total(vit: Graph) -> None:
    calls: list[tuple[int, int]] = []
    layout_graph(vit, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 5
    totals = {t for _, t in calls}
    assert len(totals) == 1
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[-1] == totals.pop()


def test_cancel_raises_cancelled(vit: Graph) -> None:
    with pytest.raises(Cancelled):
        layout_graph(vit, cancelled=lambda: True)
    # cancelled part way: some progress first, then Cancelled, never a result
    calls: list[int] = []
    polls = iter(range(1000))
    with pytest.raises(Cancelled):
        layout_graph(vit, progress=lambda d, t: calls.append(d), cancelled=lambda: next(polls) >= 4)
    assert 0 < len(calls) < 10


def test_input_straight_to_output_and_empty_graph() -> None:
    layout = layout_graph(_graph([], [_vi("x", [2])], [_vi("x", [2])]))
    assert set(layout.nodes) == {"input:x", "output:x"}
    assert [(e.src, e.dst) for e in layout.edges] == [("input:x", "output:x")]
    _check_geometry(layout)
