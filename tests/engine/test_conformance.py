"""The ONNX project's own node test cases, for every op the float executor claims.

A case runs when every op in its graph has a kernel (so ``*_expanded`` cases, which
spell a function op out in primitive ops, run too). Cases skipped on purpose are listed
in KNOWN_UNSUPPORTED (or by element type in UNSUPPORTED_TYPES) with the reason.
Tolerances are the ones each case declares (rtol, atol).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engine import ModelError, model_from_proto, run
from engine.ops import kernel_class

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import onnx.backend.test.case.node as node_cases

    ALL_CASES = node_cases.collect_testcases("")

# element types numpy has no dtype for, or the executor does not compute in
UNSUPPORTED_TYPES = {
    onnx.TensorProto.BFLOAT16: "bfloat16 has no numpy dtype",
    onnx.TensorProto.FLOAT8E4M3FN: "float8 types have no numpy dtype",
    onnx.TensorProto.FLOAT8E4M3FNUZ: "float8 types have no numpy dtype",
    onnx.TensorProto.FLOAT8E5M2: "float8 types have no numpy dtype",
    onnx.TensorProto.FLOAT8E5M2FNUZ: "float8 types have no numpy dtype",
    onnx.TensorProto.UINT4: "4-bit integer types have no numpy dtype",
    onnx.TensorProto.INT4: "4-bit integer types have no numpy dtype",
    onnx.TensorProto.STRING: "string tensors are not model math",
}
for _name in ("FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2"):
    if hasattr(onnx.TensorProto, _name):
        UNSUPPORTED_TYPES[getattr(onnx.TensorProto, _name)] = f"{_name.lower()} has no numpy dtype"

# case name -> why the kernel knowingly does not support it
KNOWN_UNSUPPORTED: dict[str, str] = {
    # Dropout with training_mode=True drops at random (the expected values come from numpy's
    # RandomState); the executor runs inference graphs only and refuses such a node
    "test_training_dropout": "Dropout in training mode is random; inference executor",
    "test_training_dropout_default": "Dropout in training mode is random; inference executor",
    "test_training_dropout_mask": "Dropout in training mode is random; inference executor",
    "test_training_dropout_default_mask": "Dropout in training mode is random; inference executor",
    # the loader accepts opset 7 and later (engine/loader.py MIN_OPSET)
    "test_not_2d": "opset 1 model; the loader accepts opset 7 and later",
    "test_not_3d": "opset 1 model; the loader accepts opset 7 and later",
    "test_not_4d": "opset 1 model; the loader accepts opset 7 and later",
    # expected values come from float16 arithmetic inside Softmax; the kernel computes a float16
    # softmax in float32 and rounds once (bit-identical to onnxruntime), a 1-ulp gap > rtol 1e-3
    "test_attention_4d_causal_fp16_expanded": "float16 Softmax computed in float32 (as onnxruntime); "
    "expected values rounded in float16 differ by 1 ulp",
}


def _elem_types(model: onnx.ModelProto) -> set[int]:
    g = model.graph
    types = {vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output)}
    types |= {t.data_type for t in g.initializer}
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                types.add(a.t.data_type)
            if a.name == "to" and a.type == onnx.AttributeProto.INT:
                types.add(a.i)
            if a.name in ("output_dtype", "dtype") and a.type == onnx.AttributeProto.INT:
                types.add(a.i)
    return types


def _claimed(model: onnx.ModelProto) -> bool:
    return all(
        kernel_class(n.op_type, n.domain) is not None for n in model.graph.node
    ) and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute)


def _cases():
    for case in ALL_CASES:
        if case.kind != "node" or not _claimed(case.model):
            continue
        marks = []
        reason = KNOWN_UNSUPPORTED.get(case.name)
        bad_types = [UNSUPPORTED_TYPES[t] for t in _elem_types(case.model) if t in UNSUPPORTED_TYPES]
        if reason is None and bad_types:
            reason = bad_types[0]
        if reason is not None:
            marks.append(pytest.mark.skip(reason=reason))
        yield pytest.param(case, id=case.name, marks=marks)


CASES = list(_cases())


def _as_array(value) -> np.ndarray:
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


@pytest.mark.parametrize("case", CASES)
def test_node_case(case) -> None:
    model = model_from_proto(case.model, path=case.name)
    names_in = [vi.name for vi in case.model.graph.input]
    names_out = [vi.name for vi in case.model.graph.output]
    for inputs, expected in case.data_sets:
        feeds = {n: _as_array(v) for n, v in zip(names_in, inputs) if n}
        got = run(model, feeds)
        for name, want in zip(names_out, expected):
            want = _as_array(want)
            have = np.asarray(got[name])
            assert have.shape == want.shape, f"{name}: shape {have.shape} != {want.shape}"
            if want.dtype.kind in "fc":
                assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} != {want.dtype}"
                np.testing.assert_allclose(have, want, rtol=case.rtol, atol=case.atol, equal_nan=True)
            else:
                np.testing.assert_array_equal(have, want)


def test_conformance_covers_the_claimed_ops() -> None:
    """Every op with a kernel has at least one ONNX node case that runs (none untested)."""
    from engine.ops import supported_ops

    ran = {n.op_type for p in CASES if not p.marks for n in p.values[0].model.graph.node}
    untested = [op for op in supported_ops() if "::" not in op and op not in ran]
    assert not untested, f"ops with a kernel but no passing ONNX node case: {untested}"


def test_unsupported_op_is_a_model_error() -> None:
    from onnx import helper

    g = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model = model_from_proto(m)
    with pytest.raises(ModelError, match="unsupported ops: com.example::NoSuchOp"):
        run(model, {"x": np.zeros(2, np.float32)})
