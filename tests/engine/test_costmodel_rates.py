"""Float-lane work without MACs runs at the vector datapath's rate, MAC work at the float peak."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from engine import model_from_proto
from engine.costmodel import CostModel
from engine.npu import NpuProfile


def _model():
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), helper.make_node("Div", ["y", "y"], ["z"], name="div")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [64, 64])],
        [w],
    )
    return model_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_float_lane_elementwise_runs_at_vector_rate() -> None:
    profile = NpuProfile(
        name="cpu", int8_tops=0.1, vector_gops=5.0, dram_gbps=1e6, sram_kib=1 << 20, op_overhead_ns=0.0,
        float_gflops=100.0,
    )
    cm = CostModel(_model(), profile, act_bytes=4, weight_bytes=4)
    est = {e.name: e for e in cm.plan(()).layers()}
    assert est["mm"].lane == est["div"].lane == "float"
    # MatMul: 2*64^3 FLOP at 100 GFLOP/s; Div: 64*64 ops at 5 GOP/s (not at the 100 GFLOP/s FMA peak)
    assert np.isclose(est["mm"].compute_ns, 2 * 64**3 / 100.0)
    assert np.isclose(est["div"].compute_ns, est["div"].ops / 5.0)
