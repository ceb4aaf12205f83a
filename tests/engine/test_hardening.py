"""Regressions for crashes the command-line fuzz test (tests/inspector/test_fuzz_cli.py) found,
each pinned at the depth where it was fixed."""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.analysis import ErrorAccumulator, WeightView
from engine.calibrate import _open_arrays
from engine.cost import model_cost
from engine.errors import ModelError
from engine.loader import load_model_bytes, model_from_proto
from engine.quant.observers import MAX_ABS_BINS, HistogramObserver
from engine.quant.ranges import percentile_range
from tests.builders import IR_VERSION, matmul_relu


def test_sqnr_of_an_overflowing_error_is_minus_infinity_not_a_crash() -> None:
    acc = ErrorAccumulator()
    with np.errstate(all="ignore"):
        acc.update(np.array([1.0, 2.0]), np.array([1e200, -1e200]))  # squared error overflows to inf
    assert acc.sqnr_db == -math.inf
    assert acc.summary().sqnr_db == -math.inf


def test_weight_view_without_finite_values_is_valid_json() -> None:
    view = WeightView("w", "conv", 0, [math.inf, -1.0], [-math.inf, 1.0], None)
    d = json.loads(json.dumps(view.to_dict(), allow_nan=False))
    assert d["min"] == [None, -1.0] and d["max"] == [None, 1.0]


@pytest.mark.parametrize("value", [2.5, -2.5, 1e30, 3e-30])
def test_abs_histogram_of_a_constant_tensor_stays_bounded(value) -> None:
    obs = HistogramObserver()
    obs.update(np.full(100, value))
    counts, width = obs.abs_histogram()
    assert counts.size <= MAX_ABS_BINS and counts.sum() == 100
    # the one occupied bin still holds |value|: within one bin width
    top = (np.flatnonzero(counts)[-1] + 1) * width
    assert top - width <= abs(value) <= top + width
    _, hi = percentile_range(obs, 99.0, symmetric=True)
    assert hi == pytest.approx(abs(value), rel=1e-3)


def test_abs_histogram_of_ordinary_data_is_unchanged() -> None:
    obs = HistogramObserver()
    obs.update(np.random.default_rng(0).normal(size=1000))
    _, width = obs.abs_histogram()
    assert width == obs.width  # no coarsening when the fold fits


def test_cost_of_contradictory_attributes_is_unknown_not_a_crash() -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], strides=[0, 0], name="conv")],
        "stride0",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = model_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION))
    cost = model_cost(model)
    assert cost.macs == 0 and cost.uncounted_ops == ("Conv",)


def test_a_name_that_is_not_utf8_is_refused_by_the_loader() -> None:
    data = matmul_relu(batch=2).SerializeToString().replace(b"matmul", b"\xf5atmul", 1)
    with pytest.raises(ModelError) as info:
        load_model_bytes(data, "m.onnx")
    assert "m.onnx: node 0 name" in str(info.value) and "not valid UTF-8" in str(info.value)


def _npz_stored(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_a_damaged_npz_member_is_a_model_error(tmp_path) -> None:
    raw = bytearray(_npz_stored({"image": np.arange(64, dtype=np.float32).reshape(4, 16)}))
    # corrupt the member's local header offset in the central directory: seeking fails
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 42: cd + 46] = (0x7FFFFFF0).to_bytes(4, "little")
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError) as info:
        _open_arrays(str(path))
    assert str(path) in str(info.value)


def test_a_bad_crc_while_reading_rows_is_a_model_error(tmp_path) -> None:
    raw = bytearray(_npz_stored({"image": np.arange(4096, dtype=np.float32).reshape(64, 64)}))
    raw[-400] ^= 0xFF  # inside the data near its end (before the central directory)
    path = tmp_path / "crc.npz"
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is not None  # the damage is real
    arr = _open_arrays(str(path))["image"]
    with pytest.raises(ModelError, match="array data cannot be read"):
        arr.read(0, 64)


def test_npy_format_versions(tmp_path) -> None:
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=(3, 0))
    (tmp_path / "v3.npy").write_bytes(buf.getvalue())
    assert np.array_equal(_open_arrays(str(tmp_path / "v3.npy"))["v3"].read(0, 3), a)
    (tmp_path / "v81.npy").write_bytes(buf.getvalue().replace(b"\x93NUMPY\x03", b"\x93NUMPY\x51", 1))
    with pytest.raises(ModelError, match="unknown .npy format version 81.0"):
        _open_arrays(str(tmp_path / "v81.npy"))


def test_read_npz_refuses_a_header_that_claims_more_than_memory(tmp_path) -> None:
    from engine.fileio import read_npz

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 64)})
    data = header.getvalue() + bytes(64)
    (tmp_path / "x.npy").write_bytes(data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", data)
    (tmp_path / "in.npz").write_bytes(buf.getvalue())
    for name in ("x.npy", "in.npz"):
        with pytest.raises(ModelError, match=r"array 'x' of shape \(1099511627776, 64\) would need .* GiB, more than"):
            read_npz(tmp_path / name)
