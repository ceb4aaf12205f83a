"""Small models built in code with onnx.helper, shared by the tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# onnxruntime (the reference in tests) reads IR versions up to 10 at least; onnx.helper writes newer
IR_VERSION = 10


def matmul_relu(batch: int | str = "batch", k: int = 16, n: int = 8, opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """x(batch, k) @ W(k, n) + b -> Relu -> y(batch, n)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="bias"),
        helper.make_node("Relu", ["xwb"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])],
        [w, b],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def with_constant_weights(seed: int = 0) -> onnx.ModelProto:
    """Weights held by Constant nodes (as PaddlePaddle exports do) instead of initializers."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "Wc"), name="const_w"),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul"),
    ]
    g = helper.make_graph(
        nodes,
        "constant_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def reshape_by_shape(seq: str = "seq", hidden: int = 8) -> onnx.ModelProto:
    """A reshape whose target shape is computed from Shape ops (as exporters write them)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0, name="gather0"),
        helper.make_node("Unsqueeze", ["d0", "axes0"], ["d0u"], name="unsq"),
        helper.make_node("Concat", ["d0u", "minus1"], ["target"], axis=0, name="concat"),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    g = helper.make_graph(
        nodes,
        "reshape_by_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, hidden, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "cols"])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
