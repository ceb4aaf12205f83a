"""Memory bound before allocating (engine.memory) and where the engine applies it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import memory
from engine.errors import ModelError
from engine.executor import Executor, random_feeds
from engine.graph import Node
from engine.loader import model_from_proto
from engine.ops import make_kernel
from tests.builders import IR_VERSION, matmul_relu

GIB = 1 << 30


def test_allocation_bytes_is_exact_for_absurd_shapes() -> None:
    assert memory.allocation_bytes((1 << 40, 1 << 40), np.float32) == 4 << 80  # no int64 overflow
    assert memory.allocation_bytes((3, 5), np.float64) == 120
    assert memory.allocation_bytes((), np.int8) == 1
    assert memory.allocation_bytes((4, -1), np.float32) == 0


def test_available_bytes_is_positive() -> None:
    assert memory.available_bytes() > 0


def test_check_allocation_refuses_with_one_line_naming_the_tensor(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * GIB)
    memory.check_allocation((1024, 1024, 256), np.float32, "tensor 'ok'")  # 1 GiB fits in 2
    with pytest.raises(ModelError) as info:
        memory.check_allocation((1024, 1024, 1024), np.float32, "tensor 'act'", "/m/model.onnx")
    text = str(info.value)
    assert text == ("/m/model.onnx: tensor 'act' of shape (1024, 1024, 1024) would need 4 GiB, "
                    "more than the 2 GiB available")


def test_small_tensors_never_read_the_system(monkeypatch) -> None:
    def boom() -> int:
        raise AssertionError("available_bytes read for a small tensor")

    monkeypatch.setattr(memory, "available_bytes", boom)
    memory.check_allocation((1024, 1024, 16), np.float32, "t")  # 64 MiB: below the threshold


def _big_input_model(dim: int) -> object:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim, 1024])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def test_executor_and_random_feeds_refuse_declared_shapes_that_cannot_fit() -> None:
    model = model_from_proto(_big_input_model(1 << 40), path="big.onnx")
    with pytest.raises(ModelError, match=r"big.onnx: tensor 'x' of shape \(1099511627776, 1024\) would need"):
        Executor(model)
    with pytest.raises(ModelError, match=r"input 'x' .* GiB, more than the .* GiB available"):
        random_feeds(model)
    small = model_from_proto(matmul_relu(batch=2))
    assert Executor(small).run(random_feeds(small))["y"].shape == (2, 8)


@pytest.mark.parametrize(
    "op, inputs, attrs",
    [
        ("ConstantOfShape", [np.array([1 << 20, 1 << 20], np.int64)], {}),
        ("Expand", [np.ones((1, 4), np.float32), np.array([1 << 20, 1 << 20, 1], np.int64)], {}),
        ("Tile", [np.ones((2, 4), np.float32), np.array([1 << 20, 1 << 20], np.int64)], {}),
        ("Range", [np.array(0.0, np.float32), np.array(2.0**40, np.float32), np.array(1.0, np.float32)], {}),
    ],
)
def test_data_dependent_kernels_check_before_allocating(op, inputs, attrs) -> None:
    node = Node(op.lower(), op, [f"i{k}" for k in range(len(inputs))], ["out"], attrs)
    kernel = make_kernel(node, 17)
    with pytest.raises(ModelError, match=r"tensor 'out' of shape .* would need .* GiB, more than the .* GiB available"):
        kernel.run(*inputs)


def test_executor_names_the_node_and_file_of_a_kernel_refusal() -> None:
    g = helper.make_graph(
        [
            helper.make_node("Abs", ["target_src"], ["target"], name="hide"),  # inference cannot see the target
            helper.make_node("ConstantOfShape", ["target"], ["big"], name="fill"),
            helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Add", ["x", "s"], ["y"], name="add"),
        ],
        "runtime",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "target_src")],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    model = model_from_proto(proto, path="rt.onnx")
    with pytest.raises(ModelError) as info:
        Executor(model).run({"x": np.zeros(2, np.float32)})
    assert str(info.value).startswith("rt.onnx: node fill (ConstantOfShape): tensor 'big' of shape (1048576, 1048576)")
