"""Convolution, pooling, resize and tensor kernels checked against onnxruntime.

Each check builds a one-node model with onnx.helper and runs it through the engine
(``model_from_proto`` + ``run``) and through onnxruntime on the same float32 inputs.
Tolerance for float32 results: rtol 1e-5, atol 1e-5 (inputs are uniform in [-1, 1] and
reductions are at most a few hundred terms long). Integer outputs must match exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import ModelError, model_from_proto, run

ort = pytest.importorskip("onnxruntime")

RTOL = 1e-5
ATOL = 1e-5
OPSET = 19
IR_VERSION = 9  # the newest IR onnxruntime reads


def _model(
    op: str,
    inputs: dict[str, np.ndarray],
    weights: dict[str, np.ndarray] | None = None,
    n_outputs: int = 1,
    opset: int = OPSET,
    input_order: Sequence[str] | None = None,
    **attrs: Any,
) -> onnx.ModelProto:
    weights = weights or {}
    names = list(input_order) if input_order is not None else list(inputs) + list(weights)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
            for n, a in inputs.items()
        ],
        [onnx.ValueInfoProto(name=o) for o in outs],  # types left to inference
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _both(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(engine outputs, onnxruntime outputs) in graph output order."""
    names = [o.name for o in model.graph.output]
    got = run(model_from_proto(model), inputs)
    ours = [got[n] for n in names]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    theirs = session.run(names, inputs)
    return ours, theirs


def _assert_same(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
        assert a.dtype == b.dtype, f"dtype {a.dtype} != {b.dtype}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        else:
            np.testing.assert_array_equal(a, b)


def _uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- Conv


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_dilation_2_matches_onnxruntime(strides: list[int], multiplier: int) -> None:
    rng = np.random.default_rng(1)
    c = 8
    x = _uniform(rng, 2, c, 13, 11)
    w = _uniform(rng, c * multiplier, 1, 3, 3)
    b = _uniform(rng, c * multiplier)
    model = _model(
        "Conv", {"x": x}, {"w": w, "b": b}, group=c, dilations=[2, 2], strides=strides, pads=[2, 1, 2, 3]
    )
    ours, theirs = _both(model, {"x": x})
    _assert_same(ours, theirs)


@pytest.mark.parametrize(
    "attrs",
    [
        {"group": 2, "strides": [2, 1], "auto_pad": "SAME_UPPER"},
        {"group": 1, "dilations": [2, 1], "pads": [1, 0, 0, 2]},
        {"group": 4, "auto_pad": "SAME_LOWER", "strides": [2, 2]},
        {"group": 1, "auto_pad": "VALID"},
    ],
)
def test_grouped_conv_matches_onnxruntime(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    x = _uniform(rng, 2, 8, 10, 9)
    w = _uniform(rng, 12, 8 // attrs["group"], 3, 2)
    model = _model("Conv", {"x": x}, {"w": w}, **attrs)
    _assert_same(*_both(model, {"x": x}))


def test_pointwise_and_3d_conv_match_onnxruntime() -> None:
    rng = np.random.default_rng(3)
    x = _uniform(rng, 1, 16, 7, 7)
    w = _uniform(rng, 24, 16, 1, 1)
    _assert_same(*_both(_model("Conv", {"x": x}, {"w": w}), {"x": x}))
    x3 = _uniform(rng, 1, 4, 5, 6, 7)
    w3 = _uniform(rng, 6, 4, 3, 3, 3)
    _assert_same(*_both(_model("Conv", {"x": x3}, {"w": w3}, pads=[1, 0, 1, 1, 0, 1], strides=[1, 2, 2]), {"x": x3}))


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2]},
        {"strides": [2, 3], "pads": [1, 0, 1, 2], "output_padding": [1, 1], "group": 2},
        {"strides": [2, 2], "dilations": [2, 1], "output_shape": [15, 12]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    ],
)
def test_strided_conv_transpose_matches_onnxruntime(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(4)
    x = _uniform(rng, 2, 4, 6, 5)
    group = attrs.get("group", 1)
    w = _uniform(rng, 4, 3, 3, 3)
    b = _uniform(rng, 3 * group)
    model = _model("ConvTranspose", {"x": x}, {"w": w, "b": b}, **attrs)
    _assert_same(*_both(model, {"x": x}))


def test_conv_keeps_float16_and_rejects_channel_mismatch() -> None:
    rng = np.random.default_rng(5)
    x = _uniform(rng, 1, 4, 6, 6).astype(np.float16)
    w = _uniform(rng, 2, 4, 3, 3).astype(np.float16)
    y = run(model_from_proto(_model("Conv", {"x": x}, {"w": w})), {"x": x})["y0"]
    assert y.dtype == np.float16
    want = _reference_conv(x.astype(np.float32), w.astype(np.float32))
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=2e-3, atol=2e-3)  # float16 rounding of the output
    bad = _uniform(rng, 2, 3, 3, 3)
    with pytest.raises(ModelError, match="channels"):
        run(model_from_proto(_model("Conv", {"x": x.astype(np.float32)}, {"w": bad})), {"x": x.astype(np.float32)})


def _reference_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct definition (no padding, stride 1) summed in float64 for the float16 check."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    out = np.zeros((n, m, h - kh + 1, wd - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + h - kh + 1, j : j + wd - kw + 1].astype(np.float64)
            out += np.einsum("nchw,mc->nmhw", patch, w[:, :, i, j].astype(np.float64))
    return out


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 0, 1, 2]},
        {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER", "strides": [2, 3]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "storage_order": 1},
    ],
)
def test_max_pool_with_indices_matches_onnxruntime(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(6)
    x = _uniform(rng, 2, 3, 11, 10)
    model = _model("MaxPool", {"x": x}, n_outputs=2, **attrs)
    _assert_same(*_both(model, {"x": x}))


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_average_pool_matches_onnxruntime(count_include_pad: int, ceil_mode: int) -> None:
    rng = np.random.default_rng(7)
    x = _uniform(rng, 1, 4, 10, 9)
    model = _model(
        "AveragePool",
        {"x": x},
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 0],
        count_include_pad=count_include_pad,
        ceil_mode=ceil_mode,
    )
    _assert_same(*_both(model, {"x": x}))


# ----------------------------------------------------------------------------- Resize


def _resize_model(x: np.ndarray, scales: np.ndarray | None, sizes: np.ndarray | None, **attrs: Any) -> onnx.ModelProto:
    weights = {"roi": np.zeros(0, np.float32)}
    order = ["x", "roi"]
    if scales is not None:
        weights["scales"] = scales.astype(np.float32)
        order.append("scales")
    else:
        weights["scales"] = np.zeros(0, np.float32)
        weights["sizes"] = sizes.astype(np.int64)
        order += ["scales", "sizes"]
    return _model("Resize", {"x": x}, weights, input_order=order, **attrs)


@pytest.mark.parametrize(
    "scales,sizes",
    [
        (np.array([1, 1, 2.0, 1.5]), None),
        (np.array([1, 1, 0.5, 0.7]), None),
        (None, np.array([1, 3, 17, 5])),
    ],
)
def test_resize_linear_half_pixel_matches_onnxruntime(scales: np.ndarray | None, sizes: np.ndarray | None) -> None:
    rng = np.random.default_rng(8)
    x = _uniform(rng, 1, 3, 9, 8)
    model = _resize_model(x, scales, sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    _assert_same(*_both(model, {"x": x}))


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        {"mode": "cubic", "coordinate_transformation_mode": "half_pixel"},
        {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
        {"mode": "nearest", "nearest_mode": "round_prefer_ceil", "coordinate_transformation_mode": "asymmetric"},
        {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "align_corners"},
        {"mode": "nearest", "nearest_mode": "round_prefer_floor"},
    ],
)
def test_resize_modes_match_onnxruntime(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(9)
    if attrs.get("coordinate_transformation_mode") == "align_corners":
        # scale * size integral: with a fractional one, ONNX's own expected values divide by
        # (scale * size - 1) and onnxruntime by (floor(scale * size) - 1); the engine follows ONNX
        x = _uniform(rng, 1, 2, 8, 6)
        scale_sets = (np.array([1, 1, 1.75, 2.5]), np.array([1, 1, 0.5, 0.5]))
    else:
        x = _uniform(rng, 1, 2, 7, 6)
        scale_sets = (np.array([1, 1, 1.75, 2.5]), np.array([1, 1, 0.6, 0.5]))
    for scales in scale_sets:
        model = _resize_model(x, scales, None, **attrs)
        _assert_same(*_both(model, {"x": x}))


def test_resize_opset10_and_upsample_nearest_match_onnxruntime() -> None:
    rng = np.random.default_rng(10)
    x = _uniform(rng, 1, 2, 5, 4)
    for scales in (np.array([1, 1, 2.0, 3.0], np.float32), np.array([1, 1, 0.6, 0.5], np.float32)):
        model = _model("Resize", {"x": x}, {"scales": scales}, opset=10, mode="nearest")
        _assert_same(*_both(model, {"x": x}))
    scales = np.array([1, 1, 2.0, 1.5], np.float32)
    model = _model("Upsample", {"x": x}, {"scales": scales}, opset=9, mode="linear")
    _assert_same(*_both(model, {"x": x}))


# ----------------------------------------------------------------------------- tensor ops


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_match_onnxruntime(mode: str) -> None:
    rng = np.random.default_rng(11)
    x = _uniform(rng, 2, 3, 5, 4)
    pads = np.array([0, 1, 2, -1, 0, 0, 3, 2], np.int64)
    weights = {"pads": pads, "value": np.array(1.5, np.float32)}
    model = _model("Pad", {"x": x}, weights, mode=mode)
    _assert_same(*_both(model, {"x": x}))


def test_slice_with_negative_steps_and_clamping_matches_onnxruntime() -> None:
    x = np.arange(4 * 7 * 5, dtype=np.float32).reshape(4, 7, 5)
    weights = {
        "starts": np.array([-1, 100, 1], np.int64),
        "ends": np.array([-1000, 1, 5], np.int64),
        "axes": np.array([0, 1, -1], np.int64),
        "steps": np.array([-2, -3, 2], np.int64),
    }
    model = _model("Slice", {"x": x}, weights)
    ours, theirs = _both(model, {"x": x})
    _assert_same(ours, theirs)
    np.testing.assert_array_equal(ours[0], x[::-2, :1:-3, 1::2])


def test_scatter_elements_add_accumulates_duplicates() -> None:
    data = np.zeros((2, 4), np.float32)
    indices = np.array([[1, 1, 3], [0, 0, 0]], np.int64)
    updates = np.array([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]], np.float32)
    model = _model("ScatterElements", {"data": data}, {"indices": indices, "updates": updates}, axis=1, reduction="add")
    ours, theirs = _both(model, {"data": data})
    _assert_same(ours, theirs)
    np.testing.assert_array_equal(ours[0], [[0, 3, 0, 4], [3, 0, 0, 0]])


def test_gather_nd_with_batch_dims_and_cumsum_match_onnxruntime() -> None:
    rng = np.random.default_rng(12)
    data = _uniform(rng, 2, 3, 4, 5)
    indices = np.array([[[1, -1], [0, 2]], [[2, 3], [-3, 0]]], np.int64)
    _assert_same(*_both(_model("GatherND", {"data": data}, {"indices": indices}, batch_dims=1), {"data": data}))
    x = _uniform(rng, 3, 6)
    cum = _model("CumSum", {"x": x}, {"axis": np.array(1, np.int64)}, exclusive=1, reverse=1)
    _assert_same(*_both(cum, {"x": x}))


def test_split_uneven_num_outputs_and_shape_slice() -> None:
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    model = _model("Split", {"x": x}, n_outputs=3, opset=18, axis=0, num_outputs=3)
    ours, theirs = _both(model, {"x": x})
    _assert_same(ours, theirs)
    assert [o.shape[0] for o in ours] == [3, 3, 1]
    shape = run(model_from_proto(_model("Shape", {"x": x}, start=-1)), {"x": x})["y0"]
    assert shape.dtype == np.int64 and shape.tolist() == [2]


def test_reshape_zero_and_minus_one_and_allowzero() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = run(model_from_proto(_model("Reshape", {"x": x}, {"s": np.array([0, -1], np.int64)})), {"x": x})["y0"]
    assert y.shape == (2, 12)
    empty = np.zeros((0, 3), np.float32)
    y = run(
        model_from_proto(_model("Reshape", {"x": empty}, {"s": np.array([3, 0], np.int64)}, allowzero=1)),
        {"x": empty},
    )["y0"]
    assert y.shape == (3, 0)
