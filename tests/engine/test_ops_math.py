"""Focused tests of the math kernels where the ONNX node cases are thin.

Old-opset semantics (Softmax coerced to 2-D, Clip bounds as attributes, Reduce axes as
attributes, per-axis QuantizeLinear) are checked against onnxruntime on single-node models;
dtype and numerical-range behaviour against numpy. Tolerances are stated per assertion.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import model_from_proto, run
from engine.ops.elementwise import erf

ort = pytest.importorskip("onnxruntime")

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def single_node_model(
    op: str,
    inputs: dict[str, np.ndarray],
    n_outputs: int = 1,
    opset: int = 17,
    initializers: dict[str, np.ndarray] | None = None,
    out_types: list[int] | None = None,
    **attrs,
) -> onnx.ModelProto:
    """One node reading ``inputs`` (graph inputs) then ``initializers`` (in that order).

    Outputs are typed ``out_types`` (default: the first input's element type).
    """
    initializers = initializers or {}
    first = NP_TO_ONNX[next(iter(inputs.values())).dtype]
    out_types = out_types or [first] * n_outputs
    names = list(inputs) + list(initializers)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, NP_TO_ONNX[a.dtype], a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)],
        initializer=[numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(engine outputs, onnxruntime outputs) for the model's outputs in order."""
    ours = run(model_from_proto(model), feeds)
    names = [o.name for o in model.graph.output]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(names, feeds)
    return [ours[n] for n in names], list(theirs)


# ------------------------------------------------------------------ dtype and range behaviour


def test_softmax_large_magnitude_float32_stays_finite() -> None:
    x = np.array([[1e30, 3e38, -3e38, 0.0], [88.0, 89.0, 90.0, 1000.0]], np.float32)
    (y,) = run(model_from_proto(single_node_model("Softmax", {"x": x}, opset=13)), {"x": x}).values()
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)
    assert y[0, 1] == 1.0 and y[1, 3] == 1.0


def test_logsoftmax_large_magnitude_is_finite_and_exact() -> None:
    x = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    (y,) = run(model_from_proto(single_node_model("LogSoftmax", {"x": x}, opset=13)), {"x": x}).values()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.0, -1000.0, -2000.0]], rtol=1e-6)


def test_matmul_float32_stays_float32() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 6)).astype(np.float32)
    (y,) = run(model_from_proto(single_node_model("MatMul", {"a": a, "b": b})), {"a": a, "b": b}).values()
    assert y.dtype == np.float32
    assert y.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(y, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_gemm_trans_b_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 7)).astype(np.float32)  # (N, K)
    b = rng.standard_normal((4, 7)).astype(np.float32)  # (M, K): transB
    c = rng.standard_normal((4,)).astype(np.float32)
    model = single_node_model("Gemm", {"a": a, "b": b, "c": c}, transB=1, alpha=0.5, beta=2.0)
    (y,) = run(model_from_proto(model), {"a": a, "b": b, "c": c}).values()
    assert y.dtype == np.float32 and y.shape == (3, 4)
    np.testing.assert_allclose(y, 0.5 * a @ b.T + 2.0 * c, rtol=1e-5, atol=1e-6)


def test_scalar_results_are_arrays() -> None:
    x = np.array(2.0, np.float32)
    out = run(model_from_proto(single_node_model("Mul", {"a": x, "b": x})), {"a": x, "b": x})["y0"]
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32 and float(out) == 4.0


def test_erf_matches_math_erf() -> None:
    x = np.concatenate([np.linspace(-7.0, 7.0, 20001), [0.0, 1.0, -1.0, 8.0, 30.0, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=2e-15, atol=1e-300)
    assert np.isnan(erf(np.array([np.nan]))[0])
    # float32 input is evaluated in float32: at most 8 float32 ulp from the exact value
    x32 = x.astype(np.float32)
    got32 = erf(x32)
    assert got32.dtype == np.float32
    want32 = np.array([math.erf(float(v)) for v in x32])
    ulp = np.spacing(np.abs(want32).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got32 - want32) / ulp) <= 8


def test_gelu_keeps_relative_accuracy_in_the_negative_tail() -> None:
    x = np.concatenate([np.linspace(-30.0, 6.0, 3601), [-0.5, 0.0, 0.5]]).astype(np.float32)
    y = run(model_from_proto(single_node_model("Gelu", {"x": x}, opset=20)), {"x": x})["y0"]
    assert y.dtype == np.float32
    xd = x.astype(np.float64)
    want = 0.5 * xd * np.array([math.erfc(-v / math.sqrt(2.0)) for v in xd])
    tiny = np.abs(want) < 1e-37  # below float32's normal range
    np.testing.assert_allclose(y[~tiny], want[~tiny], rtol=2e-5, atol=0)
    assert y[x == -30.0][0] <= 0.0 and y[x == 0.0][0] == 0.0


def test_cast_float_to_int_truncates_and_to_bool_is_nonzero() -> None:
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7], np.float32)
    to_int = run(model_from_proto(single_node_model("Cast", {"x": x}, to=TensorProto.INT32)), {"x": x})["y0"]
    assert to_int.dtype == np.int32
    np.testing.assert_array_equal(to_int, [-2, 0, 0, 0, 2])
    to_bool = run(model_from_proto(single_node_model("Cast", {"x": x}, to=TensorProto.BOOL)), {"x": x})["y0"]
    np.testing.assert_array_equal(to_bool, [True, True, False, True, True])


def test_cast_to_unsupported_type_is_reported() -> None:
    from engine import ModelError

    x = np.zeros(3, np.float32)
    model = model_from_proto(single_node_model("Cast", {"x": x}, to=TensorProto.FLOAT8E4M3FN))
    with pytest.raises(ModelError, match="Cast to element type 17"):
        run(model, {"x": x})


def test_round_is_half_to_even() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.6], np.float32)
    y = run(model_from_proto(single_node_model("Round", {"x": x})), {"x": x})["y0"]
    np.testing.assert_array_equal(y, [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 3.0])


def test_topk_ties_take_lower_index_first() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(5, 40)).astype(np.float32)  # many ties
    k = np.array([7], np.int64)
    for largest in (1, 0):
        model = single_node_model("TopK", {"x": x}, n_outputs=2, initializers={"k": k}, largest=largest, axis=1)
        values, indices = run(model_from_proto(model), {"x": x}).values()
        assert indices.dtype == np.int64
        for row in range(x.shape[0]):
            key = -x[row] if largest else x[row]
            want = np.lexsort((np.arange(x.shape[1]), key))[:7]  # by value, then by index
            np.testing.assert_array_equal(indices[row], want)
            np.testing.assert_array_equal(values[row], x[row, want])


# ------------------------------------------------------------------ old-opset semantics vs onnxruntime


def test_softmax_opset11_coerces_to_2d() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for opset, axis in ((11, 1), (11, 0), (13, 1)):
        for op in ("Softmax", "LogSoftmax", "Hardmax"):
            model = single_node_model(op, {"x": x}, opset=opset, axis=axis)
            (ours,), (theirs,) = run_both(model, {"x": x})
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=f"{op} opset {opset} axis {axis}")
    # the opset-11 result really differs from the single-axis one
    y11 = run(model_from_proto(single_node_model("Softmax", {"x": x}, opset=11, axis=1)), {"x": x})["y0"]
    np.testing.assert_allclose(y11.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_clip_attribute_form_before_opset_11() -> None:
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    model = single_node_model("Clip", {"x": x}, opset=10, min=-1.0, max=2.0)
    (ours,), (theirs,) = run_both(model, {"x": x})
    np.testing.assert_array_equal(ours, theirs)
    assert ours.min() == -1.0 and ours.max() == 2.0


def test_reduce_axes_attribute_and_input_forms() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    cases = [
        ("ReduceSum", 11, {"axes": [1], "keepdims": 0}, None),
        ("ReduceSum", 13, {"keepdims": 1}, np.array([0, 2], np.int64)),
        ("ReduceMean", 13, {"axes": [-1]}, None),
        ("ReduceMean", 18, {"keepdims": 0}, np.array([1], np.int64)),
        ("ReduceLogSumExp", 13, {"axes": [0, 2]}, None),
        ("ReduceL2", 18, {}, np.array([2], np.int64)),
        ("ReduceMax", 18, {"noop_with_empty_axes": 1}, np.array([], np.int64)),
        ("ReduceSumSquare", 18, {"noop_with_empty_axes": 1}, np.array([], np.int64)),
    ]
    for op, opset, attrs, axes in cases:
        inits = {"axes": axes} if axes is not None else {}
        model = single_node_model(op, {"x": x}, opset=opset, initializers=inits, **attrs)
        (ours,), (theirs,) = run_both(model, {"x": x})
        assert ours.dtype == np.float32, op
        assert ours.shape == theirs.shape, f"{op} opset {opset}: {ours.shape} != {theirs.shape}"
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=f"{op} opset {opset}")


def test_batchnorm_opset9_inference_matches_onnxruntime() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    params = {
        "scale": rng.uniform(0.5, 2, 3).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
        "mean": rng.standard_normal(3).astype(np.float32),
        "var": rng.uniform(0.1, 3, 3).astype(np.float32),
    }
    model = single_node_model("BatchNormalization", {"x": x}, opset=9, initializers=params, epsilon=1e-3)
    (ours,), (theirs,) = run_both(model, {"x": x})
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_quantize_per_axis_opset13_matches_onnxruntime() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32) * 3
    scale = np.array([0.02, 0.05, 0.1, 0.5], np.float32)
    zero_point = np.array([0, 10, -5, 127], np.int8)
    model = single_node_model(
        "QuantizeLinear", {"x": x}, opset=13, initializers={"s": scale, "zp": zero_point},
        out_types=[TensorProto.INT8], axis=1,
    )
    (ours,), (theirs,) = run_both(model, {"x": x})
    assert ours.dtype == np.int8
    np.testing.assert_array_equal(ours, theirs)
    assert ours.min() == -128  # saturates


def test_quantize_rounds_half_to_even_and_dequantize_int32() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0], np.float32)
    scale = np.array(1.0, np.float32)
    zp = np.array(0, np.uint8)
    q = run(model_from_proto(single_node_model("QuantizeLinear", {"x": x}, initializers={"s": scale, "zp": zp})), {"x": x})
    np.testing.assert_array_equal(q["y0"], np.array([0, 2, 2, 0, 0, 255, 0], np.uint8))

    acc = np.array([-(2**31) + 5, -7, 0, 2**31 - 1], np.int32)
    model = single_node_model(
        "DequantizeLinear", {"q": acc}, initializers={"s": np.array(0.001, np.float32), "zp": np.array(0, np.int32)},
        out_types=[TensorProto.FLOAT],
    )
    (ours,), (theirs,) = run_both(model, {"q": acc})
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, acc.astype(np.float64) * np.float64(np.float32(0.001)), rtol=1e-7)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_blocked_dequantize_expands_blocks() -> None:
    q = np.arange(10, dtype=np.int8).reshape(2, 5)
    scale = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]], np.float32)  # blocks of 2 along axis 1
    model = single_node_model(
        "DequantizeLinear", {"q": q}, opset=21, initializers={"s": scale}, axis=1, block_size=2
    )
    y = run(model_from_proto(model), {"q": q})["y0"]
    want = q * np.repeat(scale, 2, axis=1)[:, :5]
    np.testing.assert_array_equal(y, want.astype(np.float32))
