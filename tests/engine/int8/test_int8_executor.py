"""The int8 executor on whole models: agreement with the float model under a min/max plan,
plan consistency (pass-through parameters), paths, run_node, GELU units, hooks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from benchmarks.models import (
    bert_encoder,
    bert_feeds,
    cnn,
    cnn_feeds,
    mlp_feeds,
    tiny_mlp,
)
from engine.errors import ModelError
from engine.int8 import Int8Executor, QTensor, propagate_passthrough
from engine.int8.executor import find_bias_units, find_gelu_units
from engine.int8.plan import QuantPlan, same_params
from engine.quant.metrics import compare
from engine.quant.qparams import QuantScheme, dequantize, qparams_from_range, quantize
from tests.engine.int8.helpers import minmax_plan

COSINE_MIN = 0.99


@pytest.fixture(scope="module")
def mlp():
    model = engine.model_from_proto(tiny_mlp(batch=16))
    return model, [mlp_feeds(batch=16, seed=s) for s in range(1, 17)], mlp_feeds(batch=16, seed=0)


@pytest.fixture(scope="module")
def small_cnn():
    model = engine.model_from_proto(cnn(blocks=3, width=8, image=16, batch=2))
    return model, [cnn_feeds(batch=2, image=16, seed=s) for s in range(1, 5)], cnn_feeds(batch=2, image=16, seed=0)


@pytest.mark.parametrize("rounding", ["half_even_float", "fixed_point_half_up"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("which", ["mlp", "small_cnn"])
def test_minmax_int8_agrees_with_float(which: str, symmetric: bool, rounding: str, request) -> None:
    model, calib, feeds = request.getfixturevalue(which)
    plan = minmax_plan(model, calib, QuantScheme(symmetric=symmetric), rounding)  # type: ignore[arg-type]
    result = Int8Executor(model, plan).run(feeds)
    out = model.graph.output_names[0]
    ref = engine.run(model, feeds)[out]
    stats = compare(ref, result.values[out])
    print(f"{which} symmetric={symmetric} {rounding}: cosine {stats.cosine:.5f}, SQNR {stats.sqnr_db:.1f} dB")
    assert stats.cosine > COSINE_MIN
    assert all(p == "integer" for p in result.paths.values()), result.notes
    assert set(result.values) == {out} and result.values[out].dtype == np.float32


def test_intermediate_values_codes_and_params(small_cnn) -> None:
    model, calib, feeds = small_cnn
    plan = minmax_plan(model, calib)
    result = Int8Executor(model, plan).run(feeds, intermediate=True)
    graph = model.graph
    produced = {o for n in graph.nodes for o in n.outputs} | set(graph.input_names)
    assert produced <= set(result.values)
    for name in produced:
        codes, qp = result.codes[name], result.params[name]
        assert codes.dtype == np.int8 and same_params(qp, plan.activations[name])
        assert np.array_equal(result.values[name], dequantize(codes, qp))
    conv_w = graph.nodes[0].inputs[1]
    assert result.codes[conv_w].dtype == np.int8 and result.params[conv_w].per_channel
    assert set(result.clipped) >= produced


def test_intermediate_without_weights_keeps_every_node_output(small_cnn) -> None:
    model, calib, feeds = small_cnn
    plan = minmax_plan(model, calib)
    executor = Int8Executor(model, plan)
    full = executor.run(feeds, intermediate=True)
    lean = executor.run(feeds, intermediate=True, weights_too=False)
    weights = {name for n in model.graph.nodes for name in n.inputs if name in model.graph.weights}
    assert weights & set(full.values) and not weights & set(lean.values)
    assert not weights & set(lean.codes)
    assert set(full.values) - weights == set(lean.values)
    for name, value in lean.values.items():
        assert np.array_equal(value, full.values[name]), name
    assert lean.clipped == {k: v for k, v in full.clipped.items() if k not in weights}


def test_values_left_quantized_dequantize_to_the_same_values(small_cnn) -> None:
    """``dequantized=False``: every quantized tensor comes back as its QTensor (no float32
    copy held); dequantized, it equals the default run's values bit for bit."""
    model, calib, feeds = small_cnn
    executor = Int8Executor(model, minmax_plan(model, calib))
    full = executor.run(feeds, intermediate=True, weights_too=False)
    lean = executor.run(feeds, intermediate=True, weights_too=False, dequantized=False)
    assert set(lean.values) == set(full.values) and lean.clipped == full.clipped
    quantized = 0
    for name, value in lean.values.items():
        if isinstance(value, QTensor):
            quantized += 1
            assert value.float_codes is None and np.array_equal(value.codes, lean.codes[name])
            value = value.dequantize()
        assert value.dtype == full.values[name].dtype and np.array_equal(value, full.values[name]), name
    assert quantized == len(lean.params) > 3


def test_propagate_passthrough_gives_inputs_params(small_cnn) -> None:
    model, calib, _ = small_cnn
    graph = model.graph
    plan = minmax_plan(model, calib)
    raw = replace(plan, activations={k: v for k, v in plan.activations.items()})
    for node in graph.nodes:  # undo the propagation: calibrated ranges of their own
        if node.op_type in ("MaxPool", "Flatten"):
            raw.activations[node.outputs[0]] = replace(plan.activations[node.outputs[0]], scale=float(plan.activations[node.outputs[0]].scale) * 1.1)
    fixed = propagate_passthrough(model, raw)
    for node in graph.nodes:
        if node.op_type in ("MaxPool", "Flatten"):
            assert not same_params(raw.activations[node.outputs[0]], raw.activations[node.inputs[0]])
            assert same_params(fixed.activations[node.outputs[0]], fixed.activations[node.inputs[0]])
    feeds = cnn_feeds(batch=2, image=16, seed=9)
    result = Int8Executor(model, fixed).run(feeds, intermediate=True)
    for node in graph.nodes:
        if node.op_type == "Flatten":  # codes pass through untouched
            src = result.codes[node.inputs[0]]
            assert np.array_equal(result.codes[node.outputs[0]], src.reshape(src.shape[0], -1))
            assert result.clipped[node.outputs[0]] == 0
    # a plan with different parameters still runs: the codes are requantized
    inconsistent = Int8Executor(model, raw).run(feeds, intermediate=True)
    flat = next(n for n in graph.nodes if n.op_type == "Flatten")
    step = float(raw.activations[flat.outputs[0]].scale)
    diff = np.abs(inconsistent.values[flat.outputs[0]] - inconsistent.values[flat.inputs[0]].reshape(2, -1))
    assert diff.max() <= 0.5 * step + 1e-6


def test_gather_table_gets_output_params_and_passes_codes() -> None:
    model = engine.model_from_proto(bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=50))
    plan = minmax_plan(model, [bert_feeds(seq=8, vocab=50, seed=s) for s in range(3)])
    gather = model.graph.nodes[0]
    assert gather.op_type == "Gather"
    assert same_params(plan.weights[gather.inputs[0]], plan.activations[gather.outputs[0]])
    feeds = bert_feeds(seq=8, vocab=50, seed=7)
    result = Int8Executor(model, plan).run(feeds, intermediate=True)
    table = result.codes[gather.inputs[0]]
    assert np.array_equal(result.codes[gather.outputs[0]], table[feeds["input_ids"]])
    assert result.values["input_ids"].dtype == np.int64 and "input_ids" not in result.codes  # never quantized


def test_run_node_reproduces_each_node_of_a_run(small_cnn) -> None:
    """Dequantized int8 values are exactly representable: feeding them to run_node must give
    the very codes of the full run, node by node (run_node is the isolated-error primitive)."""
    model, calib, feeds = small_cnn
    plan = minmax_plan(model, calib, QuantScheme(symmetric=False))
    executor = Int8Executor(model, plan)
    result = executor.run(feeds, intermediate=True)
    for node in model.graph.nodes:
        inputs = [None if name in model.graph.weights else result.values[name] for name in node.inputs]
        outs, clipped = executor.run_node(node, inputs)
        for name, value in zip(node.outputs, outs):
            assert np.array_equal(value, result.values[name]), node.name
        assert set(clipped) == set(node.outputs)
    with pytest.raises(ModelError):
        executor.run_node("no such node", [])


def test_run_node_cache_quantizes_a_shared_input_once(monkeypatch) -> None:
    """A tensor read by several nodes is quantized once when run_node is given a cache, with
    the same outputs as without; another array under the same name is quantized afresh."""
    model = engine.model_from_proto(bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=50))
    plan = minmax_plan(model, [bert_feeds(seq=8, vocab=50, seed=s) for s in range(3)])
    executor = Int8Executor(model, plan)
    floats = engine.run(model, bert_feeds(seq=8, vocab=50, seed=5), intermediate=True)
    readers: dict[str, list] = {}
    for node in model.graph.nodes:
        for name in node.inputs:
            if name in plan.activations and name not in model.graph.weights:
                readers.setdefault(name, []).append(node)
    shared, nodes = next((n, r) for n, r in readers.items() if len(r) >= 3)
    import engine.int8.executor as module

    calls: list[np.ndarray] = []
    real = module.quantize_tensor

    def counting(x, qp):
        calls.append(x)
        return real(x, qp)

    monkeypatch.setattr(module, "quantize_tensor", counting)
    cache: dict = {}
    for node in nodes:
        args = [None if n in model.graph.weights else floats[n] for n in node.inputs]
        cached_out, _ = executor.run_node(node, args, cache)
        plain_out, _ = executor.run_node(node, args)
        for a, b in zip(cached_out, plain_out):
            assert np.array_equal(a, b), node.name
    # the shared tensor: once with the cache, once per node without it
    assert sum(1 for x in calls if x is floats[shared]) == 1 + len(nodes)
    assert cache[shared][0] is floats[shared]
    fresh = [None if n in model.graph.weights else floats[n].copy() for n in nodes[0].inputs]
    executor.run_node(nodes[0], fresh, cache)  # another array under that name: quantized again
    assert cache[shared][0] is fresh[nodes[0].inputs.index(shared)]


def test_float_path_and_fallback_notes(mlp) -> None:
    model, calib, feeds = mlp
    relu = next(n for n in model.graph.nodes if n.op_type == "Relu")
    plan = minmax_plan(model, calib, paths={relu.name: "float"})
    result = Int8Executor(model, plan).run(feeds, intermediate=True)
    out = relu.outputs[0]
    assert result.paths[relu.name] == "float" and out not in result.codes
    assert result.values[out].dtype == np.float32 and np.all(result.values[out] >= 0)
    nxt = next(n for n in model.graph.nodes if out in n.inputs)
    assert result.paths[nxt.name] == "integer"  # quantizes the float input with its QParams
    # per-channel parameters on an input an integer kernel needs per tensor: float fallback, with a reason
    add = next(n for n in model.graph.nodes if n.op_type == "Add")
    bias = next(i for i in add.inputs if i in model.graph.weights)
    b = np.asarray(model.graph.weights[bias])
    # the Add on its own (not fused with its MatMul), its bias listed per channel
    bad = replace(plan, paths={}, weights={**plan.weights, bias: qparams_from_range(np.minimum(b, 0), np.maximum(b, 0), axis=0)}, fuse_bias=False)
    result = Int8Executor(model, bad).run(feeds)
    assert result.paths[add.name] == "float_fallback" and "per-channel" in result.notes[add.name]
    with pytest.raises(ModelError):
        Int8Executor(model, replace(plan, paths={relu.name: "fast"}))  # type: ignore[dict-item]


def test_output_without_params_stays_float(mlp) -> None:
    model, calib, feeds = mlp
    plan = minmax_plan(model, calib)
    out = model.graph.output_names[0]
    partial = replace(plan, activations={k: v for k, v in plan.activations.items() if k != out})
    result = Int8Executor(model, partial).run(feeds)
    ref = engine.run(model, feeds)[out]
    assert out not in result.codes and compare(ref, result.values[out]).cosine > COSINE_MIN


def test_gelu_unit_integer_and_fallback() -> None:
    model = engine.model_from_proto(bert_encoder(layers=2, hidden=32, heads=2, ffn=64, seq=8, vocab=50))
    units = find_gelu_units(model.graph)
    assert len(units) == 2 and all(len(members) == 5 for members, *_ in units)
    feeds = bert_feeds(seq=8, vocab=50, seed=11)
    calib = [bert_feeds(seq=8, vocab=50, seed=s) for s in range(4)]
    ref = engine.run(model, feeds, intermediate=True)
    for fuse in (True, False):
        plan = minmax_plan(model, calib, fuse_gelu=fuse)
        result = Int8Executor(model, plan).run(feeds, intermediate=True)
        for members, erf, x, y in units:
            inner = model.graph.nodes[members[1]].outputs[0]
            assert (inner in result.values) == (not fuse)
            assert compare(ref[y], result.values[y]).cosine > COSINE_MIN
            if fuse:
                assert "GELU unit" in result.notes[erf.name]
        assert compare(ref["last_hidden"], result.values["last_hidden"]).cosine > COSINE_MIN
        executor = Int8Executor(model, plan)
        if fuse:  # a unit evaluated alone on the int8 run's own input reproduces its output
            unit = executor.units[units[0][0][0]]
            outs, clipped = executor.run_node(unit.node.name, [result.values[unit.x]])
            assert np.array_equal(outs[0], result.values[unit.y]) and set(clipped) == {unit.y}


def test_decomposed_gelu_variants_are_recognised() -> None:
    def model(order: str) -> engine.Model:
        c = {k: numpy_helper.from_array(np.array(v, np.float32), k) for k, v in {"s": 0.7071068, "one": 1.0, "half": 0.5}.items()}
        scaled = helper.make_node("Mul", ["x", "s"], ["d"], name="scale")
        erf = helper.make_node("Erf", ["d"], ["e"], name="erf")
        add = helper.make_node("Add", ["one", "e"], ["a"], name="add")
        if order == "half_first":
            nodes = [helper.make_node("Mul", ["half", "x"], ["h"], name="half"), scaled, erf, add, helper.make_node("Mul", ["a", "h"], ["y"], name="mul")]
        else:
            nodes = [scaled, erf, add, helper.make_node("Mul", ["a", "x"], ["m"], name="mul"), helper.make_node("Mul", ["m", "half"], ["y"], name="mul_half")]
        g = helper.make_graph(
            nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], list(c.values()),
        )
        return engine.model_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))

    for order in ("half_first", "half_last"):
        m = model(order)
        (members, erf, x, y), = find_gelu_units(m.graph)
        assert x == "x" and y == "y" and len(members) == 5 and erf.name == "erf"
    shared = model("half_last")
    shared.graph.outputs.append(engine.TensorInfo("e", (4, 16), np.dtype(np.float32)))  # inner tensor exposed
    assert find_gelu_units(shared.graph) == []


def test_bias_units_found_only_for_a_matmul_feeding_one_bias_add() -> None:
    model = engine.model_from_proto(bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=50))
    units = find_bias_units(model.graph)
    # Q, K, V, attention output, FFN in and out: each a MatMul with a bias Add
    assert len(units) == 6
    for members, mm, add, bias in units:
        assert [model.graph.nodes[i] for i in members] == [mm, add] and mm.op_type == "MatMul" and add.op_type == "Add"
        assert bias in model.graph.weights and mm.outputs[0] in add.inputs
    # the attention MatMuls (two activations) are not units
    assert all(mm.inputs[1] in model.graph.weights for _, mm, _, _ in units)

    def graph_with(bias_shape, extra_reader=False, output_h=False):
        w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
        b = numpy_helper.from_array(np.ones(bias_shape, np.float32), "b")
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Add", ["b", "h"], ["y"], name="add")]
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        if extra_reader:
            nodes.append(helper.make_node("Relu", ["h"], ["r"], name="relu"))
            outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
        if output_h:
            outs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], outs, [w, b])
        return engine.model_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).graph

    assert len(find_bias_units(graph_with((3,)))) == 1  # bias first in the Add: either order
    assert len(find_bias_units(graph_with((1, 3)))) == 1
    assert find_bias_units(graph_with((2, 3))) == []  # one value per row too: not a column bias
    assert find_bias_units(graph_with((3,), extra_reader=True)) == []  # h read twice
    assert find_bias_units(graph_with((3,), output_h=True)) == []  # h is a graph output


@pytest.mark.parametrize("per_channel", [True, False])
def test_bias_unit_adds_the_bias_in_int32_and_requantizes_once(mlp, per_channel: bool) -> None:
    """The unit's codes are those of ``round((acc + round(b / s_acc)) * s_acc / s_y)`` computed
    here from the plan's parameters (the MatMul output is never quantized); the two nodes
    report the unit, run_node of the unit reproduces the run, fuse_bias=False restores
    the separate requantization."""
    model, calib, feeds = mlp
    plan = minmax_plan(model, calib, QuantScheme(weight_per_channel=per_channel))
    executor = Int8Executor(model, plan)
    result = executor.run(feeds, intermediate=True)
    graph = model.graph
    mm = next(n for n in graph.nodes if n.name == "fc2/MatMul")
    add = next(n for n in graph.nodes if n.name == "fc2/Add")
    x, w = mm.inputs
    y = add.outputs[0]
    assert mm.outputs[0] not in result.values and "MatMul + bias unit" in result.notes[mm.name]
    assert result.paths[mm.name] == result.paths[add.name] == "integer"
    qx, qw, qy = plan.activations[x], plan.weights[w], plan.activations[y]
    s_x = np.float32(qx.scale)
    s_w = np.asarray(qw.scale, dtype=np.float32).reshape(-1)
    s_acc = (s_x * s_w).astype(np.float32)
    xc = result.codes[x].astype(np.int64) - int(np.asarray(qx.zero_point))
    wc = quantize(np.asarray(graph.weights[w]), qw)[0].astype(np.int64)
    acc = xc @ wc + np.rint(np.asarray(graph.weights["fc2.bias"], np.float64) / s_acc.astype(np.float64)).astype(np.int64)
    m = (s_acc / np.float32(qy.scale)).astype(np.float32)
    want = np.clip(np.rint(acc.astype(np.float32) * m) + int(np.asarray(qy.zero_point)), qy.qmin, qy.qmax).astype(np.int8)
    assert np.array_equal(result.codes[y], want)
    unit = executor.units[graph.nodes.index(mm)]
    assert unit.kind == "bias" and unit.node.name == f"{mm.name}:bias"
    alone, _ = executor.run_node(unit.node.name, [result.values[x]])
    assert np.array_equal(alone[0], result.values[y])
    separate = Int8Executor(model, replace(plan, fuse_bias=False)).run(feeds, intermediate=True)
    assert mm.outputs[0] in separate.values and not executor_units_for(model, replace(plan, fuse_bias=False))
    ref = engine.run(model, feeds)[y]
    # one rounding fewer: at least as close to the float model, give or take a step's noise
    step = float(np.float32(qy.scale))
    assert np.abs(result.values[y] - ref).max() <= np.abs(separate.values[y] - ref).max() + step


def test_bias_unit_falls_back_as_a_whole_with_the_int8_weight(mlp) -> None:
    """A unit its integer kernel cannot run (here: its input quantized per channel) takes the
    float-fallback path as one unit: dequantized input, the MatMul on the weight as the int8
    model holds it, the bias, one quantization; the reason is in both members' notes."""
    model, calib, feeds = mlp
    plan = minmax_plan(model, calib)
    mm = next(n for n in model.graph.nodes if n.name == "fc2/MatMul")
    x = mm.inputs[0]
    lo = np.full(32, -3.0)
    hi = np.linspace(1.0, 4.0, 32)
    per_row = replace(plan, activations={**plan.activations, x: qparams_from_range(lo, hi, "int8", True, axis=1)})
    result = Int8Executor(model, per_row).run(feeds, intermediate=True)
    for name in ("fc2/MatMul", "fc2/Add"):
        assert result.paths[name] == "float_fallback"
        assert "MatMul + bias unit" in result.notes[name] and "float fallback" in result.notes[name]
    y = model.graph.output_names[0]
    qw = plan.weights[mm.inputs[1]]
    w_int8 = dequantize(quantize(np.asarray(model.graph.weights[mm.inputs[1]]), qw)[0], qw)
    h = result.values[x] @ w_int8 + np.asarray(model.graph.weights["fc2.bias"])
    qy = plan.activations[y]
    want = dequantize(quantize(h.astype(np.float32), qy)[0], qy)
    np.testing.assert_allclose(result.values[y], want, atol=float(np.float32(qy.scale)) * 1.01)


def executor_units_for(model, plan) -> dict:
    return Int8Executor(model, plan).units


def test_bias_unit_only_when_both_nodes_take_the_integer_path(mlp) -> None:
    model, calib, feeds = mlp
    for name in ("fc2/MatMul", "fc2/Add"):
        for path in ("float", "float_fallback"):
            plan = minmax_plan(model, calib, paths={name: path})
            executor = Int8Executor(model, plan)
            fc2 = [i for i, n in enumerate(model.graph.nodes) if n.name.startswith("fc2/")]
            assert not any(i in executor.units for i in fc2)
            assert "fc2/MatMul" not in executor.run(feeds).notes


def test_hook_progress_and_replacement(mlp) -> None:
    model, calib, feeds = mlp
    plan = replace(minmax_plan(model, calib), fuse_bias=False)  # every node on its own: one hook call each
    seen: list[tuple[str, bool]] = []
    steps: list[tuple[int, int]] = []
    relu = next(n for n in model.graph.nodes if n.op_type == "Relu")

    def hook(node, inputs, outputs):
        seen.append((node.name, isinstance(outputs[0], QTensor)))
        if node.name == relu.name:  # replace by zeros, left float: consumers quantize it
            return [np.zeros(outputs[0].codes.shape, np.float32)]
        return None

    result = Int8Executor(model, plan).run(feeds, hook=hook, progress=lambda d, t: steps.append((d, t)))
    n = len(model.graph.nodes)
    assert [s for s, _ in seen] == [node.name for node in model.graph.nodes] and all(q for _, q in seen)
    assert steps == [(i, n) for i in range(1, n + 1)]
    # with the hidden layer zeroed the output is the last bias alone
    out = model.graph.output_names[0]
    bias = np.asarray(model.graph.weights["fc2.bias"])
    assert np.allclose(result.values[out], np.broadcast_to(bias, result.values[out].shape), atol=float(plan.activations[out].scale))


def test_plan_to_dict_is_json_safe(mlp) -> None:
    import json

    model, calib, _ = mlp
    data = minmax_plan(model, calib).to_dict()
    assert json.loads(json.dumps(data))["fuse_gelu"] is True


def test_unsupported_model_is_a_model_error() -> None:
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="bad", domain="custom")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], ir_version=8)
    model = engine.model_from_proto(proto)
    with pytest.raises(ModelError):
        Int8Executor(model, QuantPlan(QuantScheme()))
    assert isinstance(proto, onnx.ModelProto)
