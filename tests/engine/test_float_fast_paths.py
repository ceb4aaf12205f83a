"""The float executor's fast paths: float32 erf accuracy, buffer reuse safety, and the
rewritten Conv / LayerNormalization / Softmax / BatchNormalization kernels.

Buffer reuse is checked two ways: a run with reuse must give bit-identical results to the
same run with reuse switched off (a no-op ``hook`` disables it), and arrays the caller or
the model owns (feeds, weights, Constant values, kept tensors, views still alive) must come
out unchanged. Kernel results are checked against onnxruntime on one-node and small
multi-node models; tolerances are stated per assertion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from engine import model_from_proto, run
from engine.executor import Executor, executor_for
from engine.ops.conv import pad_spatial
from engine.ops.elementwise import _ERF32_TANH, erf

ort = pytest.importorskip("onnxruntime")

OPSET = 17


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    weights: dict[str, np.ndarray] | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in (weights or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _no_reuse(node: Any, inputs: Any, outputs: Any) -> None:
    """A hook that changes nothing: its presence switches buffer reuse off."""


def _count_reuse(plan: Executor) -> list[int]:
    """Wrap every kernel's ``run_reusing``; the returned list counts calls that were offered a buffer."""
    calls = [0]
    for kernel in plan.kernels:
        inner = kernel.run_reusing

        def counted(reusable: tuple[int, ...], *args: Any, _inner: Any = inner) -> Any:
            calls[0] += bool(reusable)
            return _inner(reusable, *args)

        kernel.run_reusing = counted  # type: ignore[method-assign]
    return calls


# ------------------------------------------------------------------ erf


def test_float32_erf_error_against_math_erf_on_a_dense_grid() -> None:
    # measured on this project's machine (4.2M points): max abs error 1.42e-7, 3.5 float32 ulp;
    # asserted with margin for other numpy float32 tanh implementations: 2e-7 abs, 5 ulp
    x = np.concatenate([
        np.linspace(-8.0, 8.0, 400_001),
        np.geomspace(1e-30, 8.0, 20_000),
        -np.geomspace(1e-30, 8.0, 20_000),
    ]).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32
    want = np.array([math.erf(float(v)) for v in x])
    err = np.abs(got.astype(np.float64) - want)
    assert err.max() <= 2e-7
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.max(err / ulp) <= 5.0


def test_float32_erf_special_values_and_in_place() -> None:
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e20, -1e20, 3e38, -3e38, 1e-40, 4.0, -4.0], np.float32)
    with np.errstate(all="raise"):  # no warnings leak out of erf
        y = erf(x)
    assert y[0] == 0.0 and not np.signbit(y[0]) and y[1] == 0.0 and np.signbit(y[1])
    np.testing.assert_array_equal(y[[2, 5, 7, 10]], 1.0)
    np.testing.assert_array_equal(y[[3, 6, 8, 11]], -1.0)
    assert np.isnan(y[4])
    assert abs(float(y[9]) - 2 / math.sqrt(math.pi) * 1e-40) <= 1e-44
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((64, 33)) * 2).astype(np.float32)
    b = a.copy()
    assert erf(b, out=b) is b
    np.testing.assert_array_equal(b, erf(a))
    # float16 is evaluated in float32 and rounded once
    h = a.astype(np.float16)
    np.testing.assert_array_equal(erf(h), erf(h.astype(np.float32)).astype(np.float16))


def test_erf_polynomial_is_positive_so_tanh_saturates_with_the_right_sign() -> None:
    z = np.concatenate([np.linspace(0.0, 100.0, 100_001), np.geomspace(100.0, 3.4e38, 10_000)])
    assert np.all(np.polyval([float(c) for c in _ERF32_TANH], z) > 0)


# ------------------------------------------------------------------ buffer reuse safety


def test_reuse_never_overwrites_a_tensor_whose_view_is_alive() -> None:
    # a = x * 2 (fresh); v = Reshape(a) is a view of a; Relu(a) is a's last reader while v lives on
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["a"]),
        helper.make_node("Reshape", ["a", "flat"], ["v"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Reshape", ["r", "flat"], ["rf"]),
        helper.make_node("Sub", ["rf", "v"], ["y"]),
    ]
    weights = {"two": np.array(2.0, np.float32), "flat": np.array([24], np.int64)}
    model = model_from_proto(_model(nodes, {"x": x}, ["y"], weights))
    got = run(model, {"x": x})["y"]
    a = (x * 2).reshape(24)
    np.testing.assert_array_equal(got, np.maximum(a, 0) - a)


def test_reuse_leaves_feeds_weights_constants_and_kept_tensors_alone() -> None:
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    x_before = x.copy()
    w = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),  # the feed itself flows on
        helper.make_node("Relu", ["xi"], ["xr"]),
        helper.make_node("Identity", ["w"], ["wi"]),  # the weight object itself flows on
        helper.make_node("Neg", ["wi"], ["wn"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.full((3, 5), 0.5, np.float32))),
        helper.make_node("Exp", ["c"], ["ce"]),
        helper.make_node("Add", ["xr", "wn"], ["s"]),
        helper.make_node("Mul", ["s", "ce"], ["y"]),
    ]
    model = model_from_proto(_model(nodes, {"x": x}, ["y"], {"w": w}))
    plan = executor_for(model)
    reused = _count_reuse(plan)
    want = (np.maximum(x, 0) - w) * np.exp(np.float32(0.5))
    for _ in range(3):  # a mutated weight or Constant would change later runs
        out = plan.run({"x": x}, keep=["s"])
        np.testing.assert_allclose(out["y"], want, rtol=1e-6)
        np.testing.assert_allclose(out["s"], np.maximum(x, 0) - w, rtol=1e-6)  # kept: not overwritten by Mul
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(model.graph.weights["w"], w)
    assert reused[0] > 0  # Add still reused its dead inputs; the mechanism is on


def test_graph_output_that_is_also_read_later_is_not_overwritten() -> None:
    x = np.random.default_rng(4).standard_normal((2, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("Relu", ["sq"], ["y0"]),  # a graph output ...
        helper.make_node("Neg", ["y0"], ["y1"]),  # ... read by a later node
    ]
    out = run(model_from_proto(_model(nodes, {"x": x}, ["y0", "y1"])), {"x": x})
    np.testing.assert_array_equal(out["y0"], x * x)
    np.testing.assert_array_equal(out["y1"], -(x * x))


def _bert_like() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    from benchmarks.models import bert_encoder, bert_feeds

    return bert_encoder(layers=1, hidden=64, heads=4, ffn=128, seq=16), bert_feeds(seq=16, masked=3)


def _cnn_like() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    from benchmarks.models import cnn, cnn_feeds

    return cnn(blocks=3, width=8, image=16), cnn_feeds(image=16)


@pytest.mark.parametrize("build", [_bert_like, _cnn_like], ids=["bert", "cnn"])
def test_reuse_is_bit_identical_to_a_run_without_reuse(build: Any) -> None:
    proto, feeds = build()
    model = model_from_proto(proto)
    plan = executor_for(model)
    reused = _count_reuse(plan)
    fast = plan.run(feeds)
    assert reused[0] >= 5  # in-place Add/Relu/BatchNormalization/Softmax/LayerNormalization happened
    reference = plan.run(feeds, hook=_no_reuse)
    full = plan.run(feeds, intermediate=True)
    for name, value in fast.items():
        np.testing.assert_array_equal(value, reference[name])
        np.testing.assert_array_equal(value, full[name])
    # onnxruntime agrees on the whole model: rtol 1e-4 relative to the output's scale
    theirs = _ort(proto, feeds)[0]
    ours = fast[proto.graph.output[0].name]
    assert np.max(np.abs(ours - theirs)) <= 1e-4 * np.max(np.abs(theirs))


# ------------------------------------------------------------------ kernels against onnxruntime


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((2, 6, 9, 11), (8, 3, 3, 3), {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]}),
        ((1, 4, 10, 10), (4, 1, 3, 3), {"group": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
        ((1, 3, 12, 12), (5, 3, 5, 5), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ((2, 3, 17), (4, 3, 4), {"pads": [0, 3], "strides": [3]}),
        ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
        ((1, 8, 7, 7), (16, 8, 1, 1), {}),
        ((1, 16, 64, 64), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]}),  # im2col with a multi-MB column matrix
        # large unit-stride maps with deep products take Conv._kernel_row_products
        ((1, 32, 40, 40), (8, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
        ((2, 64, 33, 36), (12, 32, 3, 3), {"group": 2, "pads": [1, 0, 1, 2], "dilations": [2, 1]}),
        ((1, 16, 40, 40), (6, 16, 1, 7), {"pads": [0, 3, 0, 3]}),
        ((1, 64, 36, 36), (4, 64, 7, 1), {"pads": [3, 0, 3, 0]}),
    ],
)
def test_conv_matches_onnxruntime(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, x_shape).astype(np.float32)
    w = rng.uniform(-1, 1, w_shape).astype(np.float32)
    b = rng.uniform(-1, 1, w_shape[:1]).astype(np.float32)
    proto = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": x}, ["y"], {"w": w, "b": b})
    ours = run(model_from_proto(proto), {"x": x})["y"]
    theirs = _ort(proto, {"x": x})[0]
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    # each output sums `depth` products in [-1, 1]: float32 rounding grows with it (1e-5 per 100 terms)
    depth = int(np.prod(w_shape[1:]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * max(1.0, depth / 100))


@pytest.mark.parametrize(
    "begins, ends, value",
    [([1, 2], [0, 3], 0.0), ([-1, 2], [1, -2], -np.inf), ([-2, -1], [-1, 0], 0.0), ([0, 0], [0, 0], 7.0)],
)
def test_pad_spatial_matches_np_pad_after_cropping(begins: list[int], ends: list[int], value: float) -> None:
    x = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    crop = (slice(None), slice(None)) + tuple(slice(max(0, -b), s - max(0, -e)) for s, b, e in zip(x.shape[2:], begins, ends))
    widths = [(0, 0), (0, 0)] + [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    want = np.pad(x[crop], widths, mode="constant", constant_values=value)
    np.testing.assert_array_equal(pad_spatial(x, begins, ends, value), want)


def test_layernorm_softmax_on_views_and_other_axes_match_onnxruntime() -> None:
    # Transpose outputs are non-contiguous views: the kernels take their general paths
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 5, 6, 7)) * 3 + 1).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, (6, 7)).astype(np.float32)
    bias = rng.standard_normal((6, 7)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["t"], ["s_last"], axis=-1),
        helper.make_node("Softmax", ["t"], ["s_mid"], axis=1),
        helper.make_node("LogSoftmax", ["t"], ["ls"], axis=-1),
        helper.make_node("Transpose", ["x"], ["u"], perm=[0, 1, 2, 3]),
        helper.make_node("LayerNormalization", ["u", "scale", "bias"], ["ln", "mean", "inv_std"], axis=2, epsilon=1e-5),
        helper.make_node("Add", ["x", "x"], ["x2"]),
        helper.make_node("LayerNormalization", ["x2", "scale7"], ["ln_last"], axis=-1),
        helper.make_node("Softmax", ["x2"], ["s_dead"], axis=-1),
    ]
    weights = {"scale": scale, "bias": bias, "scale7": scale[0]}
    outputs = ["s_last", "s_mid", "ls", "ln", "mean", "inv_std", "ln_last", "s_dead"]
    proto = _model(nodes, {"x": x}, outputs, weights)
    got = run(model_from_proto(proto), {"x": x})
    theirs = dict(zip(outputs, _ort(proto, {"x": x})))
    for name in outputs:
        assert got[name].shape == theirs[name].shape, name
        assert got[name].dtype == np.float32, name
        np.testing.assert_allclose(got[name], theirs[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_softmax_row_max_propagates_nan_and_keeps_masked_rows_finite() -> None:
    x = np.array([[0.0, np.nan, 1.0], [-1e4, -1e4, -1e4], [3e38, -3e38, 0.0]], np.float32)
    proto = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {"x": x}, ["y"])
    y = run(model_from_proto(proto), {"x": x})["y"]
    assert np.all(np.isnan(y[0]))
    np.testing.assert_allclose(y[1], 1 / 3, rtol=1e-6)
    np.testing.assert_array_equal(y[2], [1.0, 0.0, 0.0])


def test_batchnorm_fold_follows_parameter_overrides() -> None:
    # the folded (factor, offset) is cached per parameter arrays; feeds overriding an
    # initializer are new arrays, so the fold must be recomputed for them
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    params = {
        "scale": rng.uniform(0.5, 1.5, 3).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
        "mean": rng.standard_normal(3).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 3).astype(np.float32),
    }
    proto = _model(
        [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-5)],
        {"x": x}, ["y"], params,
    )
    model = model_from_proto(proto)

    def reference(scale: np.ndarray) -> np.ndarray:
        shape = (1, 3, 1, 1)
        return (x - params["mean"].reshape(shape)) / np.sqrt(params["var"].reshape(shape) + 1e-5) * scale.reshape(
            shape
        ) + params["bias"].reshape(shape)

    np.testing.assert_allclose(run(model, {"x": x})["y"], reference(params["scale"]), rtol=1e-5, atol=1e-6)
    doubled = params["scale"] * 2
    np.testing.assert_allclose(run(model, {"x": x, "scale": doubled})["y"], reference(doubled), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(model, {"x": x})["y"], reference(params["scale"]), rtol=1e-5, atol=1e-6)
