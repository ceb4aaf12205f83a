"""Integer kernels against int64 references (exact) and float references (within a stated
number of output steps), the two rounding modes, and saturation counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import engine
from benchmarks.models import single_op
from engine.int8 import Int8Executor, QTensor
from engine.int8.ops.conv import conv_accumulate
from engine.int8.ops.linalg import matmul_accumulate
from engine.int8.plan import QuantPlan
from engine.int8.qtensor import requantize_acc
from engine.ops.conv import conv_pads
from engine.quant.integer import INT32_MAX, INT32_MIN, requantize
from engine.quant.qparams import (
    QParams,
    QuantScheme,
    qparams_from_range,
    quantize,
)

ROUNDINGS = ("half_even_float", "fixed_point_half_up")


def per_tensor(scale: float, zero_point: int, dtype: str = "int8") -> QParams:
    info = np.iinfo(np.int8 if dtype == "int8" else np.uint8)
    return QParams(float(np.float32(scale)), np.asarray(zero_point, dtype=np.int64), dtype, None, int(info.min), int(info.max))


def per_channel(scales: np.ndarray, zero_points: np.ndarray, axis: int) -> QParams:
    return QParams(np.asarray(scales, np.float32).astype(np.float64), np.asarray(zero_points, np.int64), "int8", axis, -128, 127)


def random_codes(rng: np.random.Generator, shape: tuple[int, ...], dtype: str = "int8") -> np.ndarray:
    info = np.iinfo(np.int8 if dtype == "int8" else np.uint8)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(info.dtype)


def one_node(op: str, inputs: list[tuple[str, tuple]], weights: dict | None = None, opset: int = 17, **attrs):
    return engine.model_from_proto(single_op(op, inputs, None, weights or {}, opset=opset, **attrs))


# ------------------------------------------------------------------ exact accumulators


@pytest.mark.parametrize("a_dtype", ["int8", "uint8"])
def test_matmul_accumulator_equals_int64_reference(a_dtype: str) -> None:
    rng = np.random.default_rng(1)
    k = 1500  # longer than one exact float32 slice of int_matmul
    a = random_codes(rng, (2, 7, k), a_dtype)
    b = random_codes(rng, (k, 9))
    za = 131 if a_dtype == "uint8" else -5
    zb = rng.integers(-4, 5, 9)
    cases = [
        (per_tensor(0.1, za, a_dtype), per_tensor(0.02, 3)),
        (per_tensor(0.1, za, a_dtype), per_channel(rng.uniform(0.01, 0.03, 9), zb, axis=1)),
    ]
    for qa, qb in cases:
        acc, _, axis = matmul_accumulate(QTensor(a, qa), QTensor(b, qb))
        zb_ref = np.asarray(qb.zero_point, np.int64)
        ref = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb_ref)
        assert acc.dtype == np.int32 and axis == -1
        assert np.array_equal(acc, ref)


def test_matmul_per_row_weight_accumulator() -> None:
    rng = np.random.default_rng(2)
    w = random_codes(rng, (6, 40))
    x = random_codes(rng, (40, 5), "uint8")
    zw = rng.integers(-3, 4, 6)
    acc, scale, axis = matmul_accumulate(QTensor(w, per_channel(np.full(6, 0.01), zw, axis=0)), QTensor(x, per_tensor(0.1, 100, "uint8")))
    ref = (w.astype(np.int64) - zw[:, None]) @ (x.astype(np.int64) - 100)
    assert np.array_equal(acc, ref) and axis == -2 and scale.shape == (6,)


def conv_reference(x, zx, w, zw, group, strides, dilations, begins, ends) -> np.ndarray:
    """Direct int64 convolution: one strided view per kernel tap and group (a few loops)."""
    nd = x.ndim - 2
    xc = np.pad(x.astype(np.int64) - zx, [(0, 0), (0, 0)] + list(zip(begins, ends)))
    wc = w.astype(np.int64) - np.asarray(zw, np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    kernel = w.shape[2:]
    out = [(s - (k - 1) * d - 1) // st + 1 for s, k, d, st in zip(xc.shape[2:], kernel, dilations, strides)]
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    y = np.zeros((n, m) + tuple(out), dtype=np.int64)
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(t * d, t * d + (o - 1) * st + 1, st) for t, d, o, st in zip(tap, dilations, out, strides))
        patch = xc[(slice(None), slice(None)) + window]
        for g in range(group):
            taps = wc[(slice(g * mg, (g + 1) * mg), slice(None)) + tap]  # (mg, cg)
            y[:, g * mg : (g + 1) * mg] += np.einsum("nc...,mc->nm...", patch[:, g * cg : (g + 1) * cg], taps)
    assert nd == len(out)
    return y


CONV_CASES = [
    # (x shape, w shape, group, strides, dilations, pads, x dtype, x zero point, asymmetric weights)
    ((2, 4, 9, 8), (6, 4, 3, 3), 1, [1, 1], [1, 1], [1, 1, 1, 1], "uint8", 131, False),
    ((1, 6, 11, 10), (4, 3, 3, 2), 2, [2, 1], [2, 1], [2, 0, 1, 3], "int8", -7, True),
    ((1, 5, 7, 7), (5, 1, 3, 3), 5, [1, 1], [1, 1], [1, 1, 1, 1], "int8", 9, False),  # depthwise
    ((2, 8, 5, 5), (3, 8, 1, 1), 1, [1, 1], [1, 1], [0, 0, 0, 0], "uint8", 0, False),  # 1x1
    ((1, 3, 17), (4, 3, 5), 1, [3], [2], [4, 2], "int8", 100, True),  # 1-D
    ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), 1, [1, 2, 1], [1, 1, 1], [1, 0, 1, 0, 1, 1], "uint8", 250, False),  # 3-D
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_accumulator_equals_int64_reference(case) -> None:
    x_shape, w_shape, group, strides, dilations, pads, dtype, zx, asym = case
    rng = np.random.default_rng(len(x_shape) * 10 + group)
    x = random_codes(rng, x_shape, dtype)
    w = random_codes(rng, w_shape)
    m = w_shape[0]
    zw = rng.integers(-6, 7, m) if asym else np.zeros(m, np.int64)
    nd = len(x_shape) - 2
    begins, ends = conv_pads("NOTSET", x_shape[2:], w_shape[2:], strides, dilations, pads)
    acc = conv_accumulate(
        QTensor(x, per_tensor(0.05, zx, dtype)),
        QTensor(w, per_channel(np.full(m, 0.01), zw, axis=0)),
        group, strides, dilations, (begins, ends),
    )
    ref = conv_reference(x, zx, w, zw, group, strides, dilations, begins, ends)
    assert acc.shape == ref.shape and len(acc.shape) == nd + 2
    assert np.array_equal(acc, ref)


def test_conv_zero_point_padding_is_a_float_zero() -> None:
    """An input that is all zero point (real value 0): every output is the bias alone,
    border positions included, so the padding contributed nothing."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.3, 4).astype(np.float32)
    model = one_node("Conv", [("x", (1, 3, 6, 6))], {"w": w, "b": b}, pads=[1, 1, 1, 1])
    x_qp, y_qp = per_tensor(0.02, 37, "uint8"), per_tensor(0.01, -3)
    plan = QuantPlan(QuantScheme(), {"x": x_qp, "y": y_qp}, {"w": per_channel(np.abs(w).reshape(4, -1).max(1) / 127, np.zeros(4), 0)})
    result = Int8Executor(model, plan).run({"x": np.zeros((1, 3, 6, 6), np.float32)}, intermediate=True)
    assert np.array_equal(result.codes["x"], np.full((1, 3, 6, 6), 37, np.uint8))
    expected, _ = quantize(np.broadcast_to(b.reshape(1, 4, 1, 1), (1, 4, 6, 6)), y_qp)
    assert np.abs(result.codes["y"].astype(int) - expected.astype(int)).max() <= 1  # bias rounded to int32 then requantized


# ------------------------------------------------------------------ Gemm codes


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_gemm_codes_equal_requantized_int64_reference(rounding: str) -> None:
    rng = np.random.default_rng(4)
    a_f = rng.normal(0, 1, (5, 12)).astype(np.float32)
    w_f = rng.normal(0, 0.3, (7, 12)).astype(np.float32)
    c_f = rng.normal(0, 0.5, 7).astype(np.float32)
    model = one_node("Gemm", [("a", (5, 12))], {"w": w_f, "c": c_f}, transB=1, alpha=0.75, beta=2.0)
    a_qp = qparams_from_range(-3.0, 3.0, "int8", symmetric=False)
    y_qp = per_tensor(0.04, 2)
    w_scales = np.abs(w_f).max(1) / 127
    w_qp = per_channel(w_scales, np.zeros(7), 0)
    plan = QuantPlan(QuantScheme(), {"a": a_qp, "y": y_qp}, {"w": w_qp}, rounding=rounding)
    result = Int8Executor(model, plan).run({"a": a_f}, intermediate=True)
    qa, _ = quantize(a_f, a_qp)
    qw, _ = quantize(w_f, w_qp)
    za = int(a_qp.zero_point)
    acc = (qa.astype(np.int64) - za) @ qw.astype(np.int64).T
    acc_scale = (np.float32(a_qp.scale) * np.float32(0.75) * np.asarray(w_qp.scale, np.float32)).astype(np.float32)
    bias = np.rint(c_f.astype(np.float64) * 2.0 / acc_scale.astype(np.float64)).astype(np.int64)
    multiplier = (acc_scale / np.float32(y_qp.scale)).astype(np.float64)
    expected, _ = requantize(acc + bias, multiplier, None, 2, -128, 127, rounding, axis=1)
    assert np.array_equal(result.codes["y"], expected)


# ------------------------------------------------------------------ requantization


def test_float_requantization_fast_path_equals_integer_requantize() -> None:
    rng = np.random.default_rng(5)
    acc = rng.integers(-(2**31), 2**31 - 1, (3, 8, 50), endpoint=True).astype(np.int32)
    acc[0] = rng.integers(-3000, 3000, (8, 50))  # mostly in range
    out = per_tensor(0.1, -9)
    for mult in (0.0371, rng.uniform(1e-4, 0.05, 8)):
        ours = requantize_acc(acc, mult, out, "half_even_float", axis=1)
        ref, clipped = requantize(acc, np.asarray(mult), None, -9, -128, 127, "half_even_float", axis=1)
        assert np.array_equal(ours.codes, ref) and ours.clipped == clipped > 0


def test_fixed_point_and_float_rounding_differ_by_at_most_one_code() -> None:
    rng = np.random.default_rng(6)
    acc = rng.integers(-40000, 40000, 200_000).astype(np.int32)
    out = per_tensor(1.0, 0)
    for mult in (0.5, 0.0123456, 0.25, 0.7071):
        a = requantize_acc(acc, mult, out, "half_even_float").codes.astype(int)
        b = requantize_acc(acc, mult, out, "fixed_point_half_up").codes.astype(int)
        assert np.abs(a - b).max() <= 1
    ties = np.arange(-21, 23, 2, dtype=np.int32)  # odd accumulators times 0.5: exact halves
    a = requantize_acc(ties, 0.5, out, "half_even_float").codes.astype(int)
    b = requantize_acc(ties, 0.5, out, "fixed_point_half_up").codes.astype(int)
    assert np.abs(a - b).max() == 1 and np.all(a % 2 == 0)  # half-even vs half-away-from-zero


@pytest.mark.parametrize("op", ["Conv", "Add"])
def test_rounding_modes_within_one_code_on_kernels(op: str) -> None:
    rng = np.random.default_rng(7)
    if op == "Conv":
        w = rng.normal(0, 0.2, (8, 4, 3, 3)).astype(np.float32)
        model = one_node("Conv", [("x", (2, 4, 10, 10))], {"w": w}, pads=[1, 1, 1, 1])
        weights = {"w": per_channel(np.abs(w).reshape(8, -1).max(1) / 127, np.zeros(8), 0)}
        feeds = {"x": rng.normal(0, 1, (2, 4, 10, 10)).astype(np.float32)}
        acts = {"x": per_tensor(0.03, 4), "y": per_tensor(0.05, -2)}
    else:
        model = one_node("Add", [("a", (3, 40)), ("b", (3, 40))])
        weights = {}
        feeds = {"a": rng.normal(0, 1, (3, 40)).astype(np.float32), "b": rng.normal(0, 2, (3, 40)).astype(np.float32)}
        acts = {"a": per_tensor(0.011, 3), "b": per_tensor(0.023, -5), "y": per_tensor(0.031, 1)}
    codes = {}
    for rounding in ROUNDINGS:
        plan = QuantPlan(QuantScheme(), acts, weights, rounding=rounding)
        codes[rounding] = Int8Executor(model, plan).run(feeds).codes["y"].astype(int)
    assert np.abs(codes["half_even_float"] - codes["fixed_point_half_up"]).max() <= 1


# ------------------------------------------------------------------ element-wise and friends vs float


def _dequantized_inputs(result, names):
    return [result.values[n] for n in names]


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_residual_add_rescales_both_inputs_within_one_step(op: str, rounding: str) -> None:
    rng = np.random.default_rng(8)
    model = one_node(op, [("a", (2, 8, 6, 6)), ("b", (1, 8, 1, 6))])
    a_qp, b_qp, y_qp = per_tensor(0.02, 3), per_tensor(0.05, -7), per_tensor(0.06, 1)
    feeds = {"a": rng.normal(0, 0.8, (2, 8, 6, 6)).astype(np.float32), "b": rng.normal(0, 2, (1, 8, 1, 6)).astype(np.float32)}
    plan = QuantPlan(QuantScheme(), {"a": a_qp, "b": b_qp, "y": y_qp}, rounding=rounding)
    result = Int8Executor(model, plan).run(feeds, intermediate=True)
    a, b = _dequantized_inputs(result, ["a", "b"])
    exact = a.astype(np.float64) + b if op == "Add" else a.astype(np.float64) - b
    err = np.abs(result.values["y"] - exact) / y_qp.scale
    assert err.max() <= 1.0  # stated: one output step (0.5 from the final rounding)
    assert err.max() <= 0.5 + 1e-3 and result.clipped["y"] == 0


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize(
    "op,attrs,shape",
    [
        ("Mul", {}, (2, 30)),
        ("Relu", {}, (2, 30)),
        ("Clip", {}, (2, 30)),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 3, 7, 7)),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1, "ceil_mode": 1, "strides": [2, 2]}, (1, 3, 8, 8)),
        ("GlobalAveragePool", {}, (2, 3, 5, 5)),
        ("ReduceMean", {"axes": [1], "keepdims": 0}, (2, 9, 4)),
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (1, 3, 6, 6)),
        ("Div", {}, (2, 30)),
        ("Where", {}, (2, 30)),
    ],
)
def test_integer_kernels_match_float_within_one_step(op: str, attrs: dict, shape: tuple, rounding: str) -> None:
    rng = np.random.default_rng(9)
    inputs = [("x", shape)]
    weights: dict = {}
    if op == "Mul":
        inputs.append(("b", shape))
    if op == "Clip":
        weights = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.9, np.float32)}
    if op == "Div":
        weights = {"c": np.array(-2.75, np.float32)}
    if op == "Where":
        inputs = [("c", shape), ("x", shape), ("y", shape)]
    model = one_node(op, inputs, weights, opset=17, **attrs)
    feeds = {name: rng.normal(0, 1, s).astype(np.float32) for name, s in inputs}
    if op == "Where":
        feeds["c"] = feeds["c"] > 0
        model = _bool_condition(model)
    float_out = engine.run(model, feeds)["y"]
    acts = {name: qparams_from_range(float(v.min()), float(v.max()), "int8", symmetric=False) for name, v in feeds.items() if v.dtype.kind == "f"}
    acts["y"] = qparams_from_range(float(float_out.min()), float(float_out.max()), "int8", symmetric=False)
    if op == "MaxPool":
        acts["y"] = acts["x"]
    plan = QuantPlan(QuantScheme(), acts, rounding=rounding)
    result = Int8Executor(model, plan).run(feeds, intermediate=True)
    assert result.paths[model.graph.nodes[0].name] == "integer"
    # the float op on the DEQUANTIZED inputs, so only this node's own error remains
    ref = engine.run(model, {n: result.values[n] for n in feeds})["y"]
    steps = np.abs(result.values["y"].astype(np.float64) - ref) / float(acts["y"].scale)
    assert steps.max() <= 1.0, f"{op}: {steps.max():.3f} steps"


def _bool_condition(model: engine.Model) -> engine.Model:
    """The one-node Where model with its first input declared bool."""
    graph = model.graph
    graph.inputs[0] = engine.TensorInfo("c", graph.inputs[0].shape, np.dtype(np.bool_))
    graph.tensors["c"] = graph.inputs[0]
    return model


def test_batchnorm_is_a_per_channel_requantization() -> None:
    rng = np.random.default_rng(10)
    c = 6
    bn = {
        "gamma": rng.uniform(-1.5, 1.5, c).astype(np.float32),
        "beta": rng.normal(0, 0.5, c).astype(np.float32),
        "mean": rng.normal(0, 0.2, c).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, c).astype(np.float32),
    }
    model = one_node("BatchNormalization", [("x", (2, c, 4, 4))], bn, epsilon=1e-5)
    feeds = {"x": rng.normal(0, 1, (2, c, 4, 4)).astype(np.float32)}
    float_out = engine.run(model, feeds)["y"]
    x_qp = qparams_from_range(-4.0, 4.0, "int8", symmetric=False)
    y_qp = qparams_from_range(float(float_out.min()), float(float_out.max()), "int8", symmetric=False)
    for rounding in ROUNDINGS:
        result = Int8Executor(model, QuantPlan(QuantScheme(), {"x": x_qp, "y": y_qp}, rounding=rounding)).run(feeds, intermediate=True)
        ref = engine.run(model, {"x": result.values["x"]})["y"]
        # output rounding (0.5 step) + the offset's int32 rounding (0.5 * s_x |f| / s_y)
        factor = np.abs(bn["gamma"] / np.sqrt(bn["var"] + 1e-5))
        bound = 0.5 + 0.5 * float(x_qp.scale) * factor.max() / float(y_qp.scale) + 1e-3
        assert (np.abs(result.values["y"] - ref) / float(y_qp.scale)).max() <= bound
        assert result.paths[model.graph.nodes[0].name] == "integer"


# ------------------------------------------------------------------ saturation


def test_saturation_counts_on_forced_clipping() -> None:
    rng = np.random.default_rng(11)
    w = rng.normal(0, 0.5, (16, 8)).astype(np.float32)
    model = one_node("MatMul", [("x", (10, 16))], {"w": w})
    x = rng.normal(0, 1, (10, 16)).astype(np.float32)
    x[0, :3] = [9.0, -9.0, 20.0]  # beyond the input range below: 3 inputs clip
    x_qp = qparams_from_range(-4.0, 4.0, "int8", symmetric=True)
    y_qp = qparams_from_range(-1.0, 1.0, "int8", symmetric=True)  # far too narrow: many outputs clip
    w_qp = per_tensor(float(np.abs(w).max() / 127), 0)
    for rounding in ROUNDINGS:
        plan = QuantPlan(QuantScheme(), {"x": x_qp, "y": y_qp}, {"w": w_qp}, rounding=rounding)
        result = Int8Executor(model, plan).run({"x": x})
        codes_x, clipped_x = quantize(x, x_qp)
        assert result.clipped["x"] == clipped_x == 3
        acc = codes_x.astype(np.int64) @ quantize(w, w_qp)[0].astype(np.int64)
        mult = float(np.float32(x_qp.scale) * np.float32(w_qp.scale) / np.float32(y_qp.scale))
        unclipped, _ = requantize(acc, mult, None, 0, -(2**31), 2**31 - 1, rounding)
        expected = int(np.count_nonzero((unclipped < -127) | (unclipped > 127)))
        assert expected > 20 and result.clipped["y"] == expected
        assert np.abs(result.values["y"]).max() <= 1.0 + 1e-6


def test_fast_quantize_and_dequantize_equal_the_reference_functions() -> None:
    from engine.int8.qtensor import quantize_tensor
    from engine.quant.qparams import dequantize

    rng = np.random.default_rng(12)
    x = (rng.standard_normal(50_000) * 3).astype(np.float32)
    x[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    x[5:2005] = np.round(x[5:2005] / 0.02) * 0.02 + 0.01  # many near-ties
    for qp in (
        qparams_from_range(-2.0, 2.0),
        qparams_from_range(-1.0, 3.0, "uint8", symmetric=False),
        qparams_from_range(-1.5, 2.5, "int8", symmetric=False),
        qparams_from_range(-5.0, 5.0, "int16"),
    ):
        ours = quantize_tensor(x, qp)
        codes, clipped = quantize(x, qp)
        assert np.array_equal(ours.codes, codes) and ours.codes.dtype == codes.dtype
        assert ours.clipped == clipped >= 5
        assert np.array_equal(ours.dequantize(), dequantize(codes, qp))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_fast_per_channel_quantize_equals_the_reference(axis: int) -> None:
    """Per-channel float32 passes (weights) == qparams.quantize: codes, dtype and the
    saturated count, with NaN/Inf, values far beyond the range, near-ties, per-channel zero
    points (uint8) and float64 / non-contiguous inputs."""
    from engine.int8.qtensor import quantize_tensor

    rng = np.random.default_rng(21)
    x = (rng.standard_normal((24, 10, 16)) * 3).astype(np.float32)
    x.reshape(-1)[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    x[3] = np.round(x[3] / 0.02) * 0.02 + 0.01  # near-ties
    channels = x.shape[axis]
    lo = -rng.uniform(0.5, 4.0, channels)
    hi = rng.uniform(0.5, 4.0, channels)
    for qp in (
        qparams_from_range(lo, hi, "int8", True, axis=axis),
        qparams_from_range(lo, hi, "uint8", False, axis=axis),
        qparams_from_range(lo, hi, "int8", False, axis=axis),
        qparams_from_range(lo * 100, hi * 100, "int16", True, axis=axis),
    ):
        assert qp.per_channel
        for arr in (x, x.astype(np.float64), np.swapaxes(np.swapaxes(x, 0, 2).copy(), 0, 2)):
            ours = quantize_tensor(arr, qp)
            codes, clipped = quantize(arr, qp)
            assert np.array_equal(ours.codes, codes) and ours.codes.dtype == codes.dtype
            assert ours.clipped == clipped >= 5


def test_fixed_point_requantize_fixed_matches_python_integers() -> None:
    """The executor's fixed-point requantization (per channel along axis 1) equals a
    Python-integer transcription of gemmlowp's functions, code for code and in saturation counts."""
    from engine.int8.qtensor import requantize_fixed
    from engine.quant.integer import quantize_multiplier
    from tests.engine.quant.test_integer import _fixed_point_reference

    rng = np.random.default_rng(13)
    acc = rng.integers(-(2**31), 2**31 - 1, (3, 6, 40), endpoint=True).astype(np.int64)
    acc[0] = rng.integers(-5000, 5000, (6, 40))
    acc[1] = rng.integers(-64, 64, (6, 40)) * 2**20 + 2**19  # exact halves for the right shifts
    acc[1, :, :4] = [INT32_MIN, INT32_MAX, -1, 0]
    for mult in (0.0371, 0.5, 1.0, 3.7, 1e-9, rng.uniform(1e-5, 4.0, 6), 2.0 ** -np.arange(6)):
        per_channel = np.broadcast_to(np.asarray(mult, dtype=np.float64), (6,))
        params = [quantize_multiplier(float(v)) for v in per_channel]
        for zp, qmin, qmax in ((0, -127, 127), (-9, -128, 127), (131, 0, 255)):
            ours, n_ours = requantize_fixed(acc, mult, zp, qmin, qmax, axis=1)
            ref = np.empty_like(acc)
            unclipped_out = 0
            for c, (m, shift) in enumerate(params):
                for idx in np.ndindex(acc.shape[0], acc.shape[2]):
                    v = int(acc[idx[0], c, idx[1]])
                    ref[idx[0], c, idx[1]] = _fixed_point_reference(v, int(m), int(shift), zp, qmin, qmax)
                    u = _fixed_point_reference(v, int(m), int(shift), zp, -(2**40), 2**40)
                    unclipped_out += u < qmin or u > qmax
            assert np.array_equal(np.asarray(ours, dtype=np.int64), ref), (mult, zp)
            assert n_ours == unclipped_out, (mult, zp)
