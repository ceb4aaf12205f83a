"""Scale/zero-point properties of each scheme, quantize/dequantize conventions."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.qparams import (
    MIN_SCALE,
    QuantScheme,
    dequantize,
    qparams_for_weight,
    qparams_from_range,
    quantize,
    qrange,
)

RANGES = [(-1.3, 2.7), (0.0, 6.0), (-4.0, -0.5), (0.25, 0.75), (-1e-3, 5e2)]


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("power_of_two", [False, True])
def test_symmetric(lo: float, hi: float, dtype: str, power_of_two: bool) -> None:
    qp = qparams_from_range(lo, hi, dtype, symmetric=True, power_of_two=power_of_two)
    amax = max(-min(lo, 0.0), max(hi, 0.0))
    half = (qp.qmax - qp.qmin) // 2
    assert int(qp.zero_point) == (128 if dtype == "uint8" else 0)
    assert qp.scale == np.float32(qp.scale)  # a float32 value
    if power_of_two:
        assert np.log2(qp.scale) == np.round(np.log2(qp.scale))
        assert amax / half <= qp.scale < 2 * amax / half * (1 + 1e-7)
    else:
        assert qp.scale == pytest.approx(amax / half, rel=1e-7)
    # both ends of the (0-extended) range are representable without saturation
    codes, clipped = quantize(np.array([min(lo, 0.0), max(hi, 0.0), -amax, amax, 0.0], np.float32), qp)
    assert clipped == 0
    assert dequantize(codes, qp)[4] == 0.0


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("power_of_two", [False, True])
def test_asymmetric(lo: float, hi: float, dtype: str, power_of_two: bool) -> None:
    qp = qparams_from_range(lo, hi, dtype, symmetric=False, power_of_two=power_of_two)
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    assert (qp.qmin, qp.qmax) == qrange(dtype, False)
    assert qp.qmin <= int(qp.zero_point) <= qp.qmax
    if power_of_two:
        assert np.log2(qp.scale) == np.round(np.log2(qp.scale))
        assert (hi0 - lo0) / (qp.qmax - qp.qmin) <= qp.scale
        # the zero point is placed so the whole range stays inside the codes
        assert (qp.qmin - int(qp.zero_point)) * qp.scale <= lo0 + 1e-12
        assert (qp.qmax - int(qp.zero_point)) * qp.scale >= hi0 - 1e-12
    else:
        assert qp.scale == pytest.approx((hi0 - lo0) / (qp.qmax - qp.qmin), rel=1e-7)
    x = np.array([lo0, hi0, 0.0], np.float32)
    codes, clipped = quantize(x, qp)
    assert dequantize(codes, qp)[2] == 0.0  # 0 exactly representable
    assert np.all(np.abs(dequantize(codes, qp) - x) <= qp.scale * 0.5 * (1 + 1e-5) + 1e-6)
    assert clipped == 0 or not power_of_two


def test_zero_range_gets_safe_scale() -> None:
    for symmetric in (True, False):
        qp = qparams_from_range(0.0, 0.0, "int8", symmetric)
        assert qp.scale == 1.0
        codes, clipped = quantize(np.zeros(5, np.float32), qp)
        assert clipped == 0 and np.all(dequantize(codes, qp) == 0.0)
    assert qparams_from_range(-1e-40, 1e-40, "int8").scale == 1.0
    assert qparams_from_range(-1e-30, 1e-30, "int8").scale >= MIN_SCALE


def test_quantize_rounds_half_to_even_and_counts_saturation() -> None:
    qp = qparams_from_range(-127.0, 127.0, "int8", True)  # scale exactly 1
    assert qp.scale == 1.0
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 200.0, -300.0, np.inf, np.nan], np.float32)
    codes, clipped = quantize(x, qp)
    assert codes.dtype == np.int8
    assert codes.tolist() == [0, 2, 2, 0, -2, 127, 127, -127, 127, 0]
    assert clipped == 4  # 200, -300, inf, nan


def test_per_channel_weights() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32) * np.arange(1, 7)[:, None, None, None]
    scheme = QuantScheme(weight_per_channel=True)
    qp = qparams_for_weight(w, scheme, axis=0)
    amax = np.abs(w).reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(qp.scale, amax / 127, rtol=1e-7)
    codes, clipped = quantize(w, qp)
    assert clipped == 0 and codes.dtype == np.int8
    assert np.all(np.abs(codes).reshape(6, -1).max(axis=1) == 127)  # each channel uses its full range
    err = np.abs(dequantize(codes, qp) - w)
    assert np.all(err <= (qp.scale[:, None, None, None] / 2) * (1 + 1e-5))
    per_tensor = qparams_for_weight(w, QuantScheme(weight_per_channel=False))
    assert per_tensor.axis is None and per_tensor.scale == pytest.approx(float(amax.max()) / 127, rel=1e-7)


def test_scheme_validation_and_roundtrip() -> None:
    scheme = QuantScheme(activation_dtype="uint8", symmetric=False, method="entropy")
    assert QuantScheme.from_dict(scheme.to_dict()) == scheme
    assert scheme.activation_qrange == (0, 255) and scheme.weight_qrange == (-127, 127)
    with pytest.raises(ModelError):
        QuantScheme(activation_dtype="int4")
    with pytest.raises(ModelError):
        QuantScheme(method="kl")
    with pytest.raises(ModelError):
        qparams_from_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), "int8")  # no axis
    with pytest.raises(ModelError):
        qparams_from_range(-np.inf, 1.0)
