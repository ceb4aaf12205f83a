"""Per-layer cost accounting: exact MACs, FLOPs and byte counts of small hand-checked graphs."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.models import bert_encoder, cnn, single_op, tiny_mlp
from engine import load_model, model_from_proto
from engine.cost import FLOPS_PER_ELEMENT, ModelCost, NodeCost, model_cost, node_costs
from engine.graph import Model

F = TensorProto.FLOAT


def _one(proto: onnx.ModelProto, act_bytes: int = 1, weight_bytes: int = 1) -> NodeCost:
    costs = node_costs(model_from_proto(proto), act_bytes=act_bytes, weight_bytes=weight_bytes)
    assert len(costs) == 1
    return costs[0]


def _w(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------ MACs


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs, out_hw",
    [
        # plain 3x3, no padding: 17 - 3 + 1 = 15
        ((1, 8, 17, 17), (16, 8, 3, 3), {}, (15, 15)),
        # groups 4, stride 2, pad 1: (17 + 2 - 3) // 2 + 1 = 9; each output reads 8/4 = 2 channels
        ((1, 8, 17, 17), (16, 2, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (9, 9)),
        # depthwise, dilation 2, asymmetric pads: H (17 + 0 + 2 - 5) // 1 + 1 = 15, W (17 + 1 + 1 - 5) + 1 = 15
        ((2, 8, 17, 17), (8, 1, 3, 3), {"group": 8, "dilations": [2, 2], "pads": [0, 1, 2, 1]}, (15, 15)),
        # batch 3, stride (2, 1), 1x5 kernel: H (16 - 1) // 2 + 1 = 8, W 16 - 5 + 1 = 12
        ((3, 4, 16, 16), (6, 4, 1, 5), {"strides": [2, 1]}, (8, 12)),
    ],
)
def test_conv_macs_exact_with_groups_strides_padding(x_shape, w_shape, attrs, out_hw) -> None:
    proto = single_op("Conv", [("x", x_shape)], None, {"w": _w(*w_shape)}, **attrs)
    cost = _one(proto)
    n, m = x_shape[0], w_shape[0]
    c_per_group = x_shape[1] // attrs.get("group", 1)
    expected = n * m * out_hw[0] * out_hw[1] * c_per_group * w_shape[2] * w_shape[3]
    assert cost.macs == expected
    assert cost.flops == 2 * expected
    assert cost.shape_known


def test_conv_macs_without_inferred_output_shape_match() -> None:
    """With the output shape unknown the count comes from input, kernel and attributes."""
    attrs = {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}
    proto = single_op("Conv", [("x", (1, 8, 17, 17))], None, {"w": _w(16, 2, 3, 3)}, **attrs)
    model = model_from_proto(proto)
    known = node_costs(model)[0]
    del model.graph.tensors["y"]
    blind = node_costs(model)[0]
    assert blind.macs == known.macs == 16 * 9 * 9 * 2 * 9
    assert not blind.shape_known
    assert blind.output_bytes == 0


def test_conv_transpose_macs() -> None:
    # every input element (4 x 5 x 5) is scattered to M/group = 2 channels x 3x3 outputs
    proto = single_op("ConvTranspose", [("x", (1, 4, 5, 5))], None, {"w": _w(4, 2, 3, 3)}, strides=[2, 2])
    assert _one(proto).macs == 4 * 5 * 5 * 2 * 3 * 3


@pytest.mark.parametrize(
    "a_shape, b_shape, attrs",
    [((5, 7), (7, 3), {}), ((7, 5), (7, 3), {"transA": 1}), ((5, 7), (3, 7), {"transB": 1}), ((7, 5), (3, 7), {"transA": 1, "transB": 1})],
)
def test_gemm_macs(a_shape, b_shape, attrs) -> None:
    proto = single_op("Gemm", [("a", a_shape)], None, {"b": _w(*b_shape), "c": _w(3)}, **attrs)
    cost = _one(proto)
    assert cost.macs == 5 * 3 * 7
    assert cost.flops == 2 * cost.macs  # the bias is the accumulator's initial value


@pytest.mark.parametrize(
    "a_shape, b_shape, expected",
    [
        ((2, 3, 4, 5), (5, 6), 2 * 3 * 4 * 6 * 5),  # batched activation times a weight matrix
        ((2, 1, 4, 5), (3, 5, 6), 2 * 3 * 4 * 6 * 5),  # batch dims broadcast: (2, 3, 4, 6)
        ((5,), (5, 6), 6 * 5),  # 1-D times matrix: (6,)
        ((4, 5), (5,), 4 * 5),  # matrix times vector: (4,)
    ],
)
def test_batched_matmul_macs(a_shape, b_shape, expected) -> None:
    proto = single_op("MatMul", [("a", a_shape), ("b", b_shape)], None)
    cost = _one(proto)
    assert cost.macs == expected
    model = model_from_proto(proto)
    del model.graph.tensors["y"]  # the broadcast fallback gives the same count
    assert node_costs(model)[0].macs == expected


@pytest.mark.parametrize(
    "equation, shapes, macs, flops, out",
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5, 2 * 2 * 3 * 4 * 5, None),
        ("bhqd,bhkd->bhqk", [(1, 4, 8, 16), (1, 4, 10, 16)], 4 * 8 * 10 * 16, 2 * 4 * 8 * 10 * 16, None),
        ("...ij,...jk->...ik", [(3, 1, 2, 4), (5, 4, 6)], 3 * 5 * 2 * 4 * 6, 2 * 3 * 5 * 2 * 4 * 6, (3, 5, 2, 6)),  # ONNX inference leaves this output unknown
        ("ij,jk", [(2, 3), (3, 4)], 2 * 3 * 4, 2 * 2 * 3 * 4, None),  # implicit output "ik"
        ("i,j,k->ijk", [(2,), (3,), (4,)], 2 * (2 * 3 * 4), 4 * (2 * 3 * 4), None),  # two multiplies per point
        ("ij->", [(6, 7)], 0, 6 * 7, None),  # one operand, summed: one add per element
        ("ij->ji", [(6, 7)], 0, 0, None),  # one operand, nothing summed: data movement
    ],
)
def test_einsum_macs(equation, shapes, macs, flops, out) -> None:
    names = [f"x{i}" for i in range(len(shapes))]
    proto = single_op("Einsum", list(zip(names, shapes)), out, equation=equation)
    cost = _one(proto)
    assert (cost.macs, cost.flops) == (macs, flops)
    assert cost.shape_known


def test_attention_op_macs_are_its_two_matmuls() -> None:
    q, k, v = (2, 4, 8, 16), (2, 4, 10, 16), (2, 4, 10, 12)
    proto = single_op("Attention", [("q", q), ("k", k), ("v", v)], None, opset=23)
    cost = _one(proto)
    scores = 2 * 4 * 8 * 10
    assert cost.macs == scores * 16 + scores * 12
    assert cost.flops == 2 * cost.macs + 6 * scores  # scale + softmax per score


def test_contrib_attention_ops_count_projection_and_matmuls() -> None:
    b, s, d, heads, kv_len = 2, 8, 32, 4, 10
    nodes = [
        helper.make_node("Attention", ["x", "w", "bias"], ["y"], domain="com.microsoft", num_heads=heads, name="att"),
        helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y2"], domain="com.microsoft", num_heads=heads, name="mha"),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g",
        [vi("x", F, [b, s, d]), vi("q", F, [b, s, d]), vi("k", F, [b, kv_len, d]), vi("v", F, [b, kv_len, d])],
        [vi("y", F, [b, s, d]), vi("y2", F, [b, s, d])],
        initializer=[numpy_helper.from_array(_w(d, 3 * d), "w"), numpy_helper.from_array(_w(3 * d), "bias")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    att, mha = node_costs(model_from_proto(helper.make_model(graph, opset_imports=opsets)))
    assert att.op_type == "com.microsoft::Attention"
    assert att.macs == b * s * d * 3 * d + b * s * s * (d + d)  # QKV projection, Q.K^T, P.V
    assert mha.macs == b * s * kv_len * (d + d)
    assert mha.flops == 2 * mha.macs + 6 * b * heads * s * kv_len


def test_lstm_macs() -> None:
    seq, batch, inp, hidden = 5, 2, 3, 4
    weights = {"w": _w(1, 4 * hidden, inp), "r": _w(1, 4 * hidden, hidden)}
    proto = single_op("LSTM", [("x", (seq, batch, inp))], None, weights, hidden_size=hidden)
    assert _one(proto).macs == seq * batch * 4 * hidden * (inp + hidden)


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    "op, shape, attrs, per_element",
    [
        ("Relu", (2, 3, 4), {}, 1),
        ("Softmax", (2, 3, 4), {"axis": -1}, 5),
        ("Erf", (2, 3, 4), {}, 8),
        ("Reshape", None, {}, 0),
        ("Transpose", (2, 3, 4), {"perm": [2, 0, 1]}, 0),
    ],
)
def test_elementwise_flops_from_table(op, shape, attrs, per_element) -> None:
    if op == "Reshape":
        proto = single_op("Reshape", [("x", (2, 3, 4))], None, {"s": np.array([6, 4], dtype=np.int64)})
    else:
        proto = single_op(op, [("x", shape)], None, **attrs)
    cost = _one(proto)
    assert FLOPS_PER_ELEMENT[op][0] == per_element
    assert cost.flops == per_element * 24
    assert cost.macs == 0


def test_broadcast_add_counts_output_elements() -> None:
    proto = single_op("Add", [("a", (4, 1, 5)), ("b", (3, 1))], None)
    assert _one(proto).flops == 4 * 3 * 5


def test_layernorm_and_pools_and_reductions() -> None:
    ln = single_op("LayerNormalization", [("x", (2, 8, 16))], None, {"g": _w(16), "b": _w(16)}, axis=-1)
    assert _one(ln).flops == 8 * 2 * 8 * 16
    pool = single_op("MaxPool", [("x", (1, 3, 8, 8))], None, kernel_shape=[3, 3], strides=[2, 2])
    assert _one(pool).flops == 3 * 3 * 3 * 9  # output (1, 3, 3, 3), 9 compares each
    gap = single_op("GlobalAveragePool", [("x", (1, 3, 8, 8))], None)
    assert _one(gap).flops == 3 * 8 * 8
    red = single_op("ReduceSum", [("x", (4, 5))], None, {"axes": np.array([1], dtype=np.int64)})
    assert _one(red).flops == 20
    total = single_op("Sum", [("a", (2, 3)), ("b", (2, 3)), ("c", (2, 3))], None)
    assert _one(total).flops == 2 * 6  # two adds per output element


# ----------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("act_bytes, weight_bytes", [(1, 1), (4, 4), (1, 4), (4, 1)])
def test_conv_bytes_exact(act_bytes: int, weight_bytes: int) -> None:
    proto = single_op(
        "Conv", [("x", (1, 8, 17, 17))], None, {"w": _w(16, 2, 3, 3), "bias": _w(16)},
        group=4, strides=[2, 2], pads=[1, 1, 1, 1],
    )
    cost = _one(proto, act_bytes=act_bytes, weight_bytes=weight_bytes)
    assert cost.param_bytes == (16 * 2 * 3 * 3 + 16) * weight_bytes
    assert cost.input_bytes == 8 * 17 * 17 * act_bytes
    assert cost.output_bytes == 16 * 9 * 9 * act_bytes
    assert cost.dram_bytes == cost.param_bytes + cost.input_bytes + cost.output_bytes
    assert cost.intensity == pytest.approx(cost.flops / cost.dram_bytes, rel=1e-12)


def test_integer_tensors_count_at_stored_size_and_inputs_once() -> None:
    table = numpy_helper.from_array(_w(10, 4), "table")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], name="gather"),
        helper.make_node("Mul", ["e", "e"], ["y"], name="square"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", F, [3, 4])], initializer=[table],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for act in (1, 4):
        gather, square = node_costs(model_from_proto(proto), act_bytes=act, weight_bytes=2)
        assert gather.param_bytes == 40 * 2
        assert gather.input_bytes == 3 * 8  # int64 ids keep 8 bytes at any act_bytes
        assert gather.output_bytes == 12 * act
        assert gather.flops == 0
        assert square.input_bytes == 12 * act  # Mul(e, e) reads e once
        assert square.flops == 12


# ------------------------------------------------------------------- whole models


def test_bert_totals_match_hand_count() -> None:
    layers, hidden, heads, ffn, seq, vocab = 2, 64, 4, 128, 16, 50
    proto = bert_encoder(layers=layers, hidden=hidden, heads=heads, ffn=ffn, seq=seq, vocab=vocab)
    cost = model_cost(model_from_proto(proto), act_bytes=1, weight_bytes=1)
    per_layer = 4 * seq * hidden * hidden + 2 * seq * seq * hidden + 2 * seq * hidden * ffn
    assert cost.macs == layers * per_layer
    assert cost.param_count == sum(math.prod(t.dims) for t in proto.graph.initializer)
    assert cost.nodes == len(proto.graph.node) == len(cost.per_node)
    assert cost.shape_known and cost.uncounted_ops == ()
    assert cost.dram_bytes == sum(c.dram_bytes for c in cost.per_node)
    assert cost.flops == sum(c.flops for c in cost.per_node) > 2 * cost.macs
    softmax = [c for c in cost.per_node if c.op_type == "Softmax"]
    assert len(softmax) == layers and all(c.flops == 5 * heads * seq * seq for c in softmax)


def test_param_bytes_scale_with_weight_bytes_for_float_weights_only() -> None:
    model = model_from_proto(cnn(blocks=2, width=8, image=16))
    one, four = model_cost(model, 1, 1), model_cost(model, 4, 4)
    assert four.param_bytes == 4 * one.param_bytes == 4 * one.param_count  # all weights are float32
    assert four.macs == one.macs and four.flops == one.flops
    assert four.dram_bytes == 4 * one.dram_bytes
    bert = model_from_proto(bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=20))
    b1, b4 = model_cost(bert, 1, 1), model_cost(bert, 1, 4)
    int64_elems = sum(
        math.prod(i.shape) for i in bert.graph.weights.info.values() if i.dtype == np.int64
    )
    assert int64_elems > 0
    assert b4.param_bytes - b1.param_bytes == 3 * (b1.param_count - int64_elems)


def test_unbound_dims_report_shape_unknown_and_lower_bounds() -> None:
    proto = tiny_mlp(inputs=16, hidden=32, outputs=4, batch="batch")
    free = model_cost(model_from_proto(proto))
    assert not free.shape_known
    assert all(not c.shape_known for c in free.per_node)
    assert free.macs == 16 * 32 + 32 * 4  # the unknown batch counts as 1: a lower bound
    bound = model_cost(model_from_proto(proto, dims={"batch": 8}))
    assert bound.shape_known
    assert bound.macs == 8 * free.macs
    assert bound.dram_bytes > free.dram_bytes


def test_unknown_op_is_listed_and_counts_zero() -> None:
    node = helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="example.com")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, [2, 3])]
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.com", 1)]
    )
    cost = model_cost(model_from_proto(proto), act_bytes=4)
    assert cost.uncounted_ops == ("example.com::MyOp",)
    assert cost.flops == 0
    assert cost.per_node[0].input_bytes == 24


def test_to_dict_is_json() -> None:
    cost = model_cost(model_from_proto(tiny_mlp()), act_bytes=4, weight_bytes=4)
    data = json.loads(json.dumps(cost.to_dict()))
    assert data["macs"] == cost.macs
    assert len(data["per_node"]) == cost.nodes
    assert data["per_node"][0]["name"] == cost.per_node[0].name
    assert isinstance(cost, ModelCost)


def test_external_data_model_is_costed_without_reading_weights(tmp_path, monkeypatch) -> None:
    proto = bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=20)
    path = tmp_path / "bert.onnx"
    # tensors above 256 bytes go to the data file (the Reshape shape tensors stay embedded)
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="bert.data", size_threshold=256)
    model: Model = load_model(path)
    store = model.graph.weights
    assert len(store.external) >= 6  # the matrices and embedding tables really are external
    cached = dict(store._cache)

    def refuse() -> np.ndarray:
        raise AssertionError("cost accounting read weight bytes")

    for name in list(store._loaders):
        monkeypatch.setitem(store._loaders, name, refuse)
    cost = model_cost(model, act_bytes=1, weight_bytes=1)
    assert store._cache.keys() == cached.keys()
    embedded = model_cost(model_from_proto(bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=20)))
    assert cost.macs == embedded.macs > 0
    assert cost.param_count == embedded.param_count == sum(math.prod(t.dims) for t in proto.graph.initializer)
    assert cost.dram_bytes == embedded.dram_bytes
