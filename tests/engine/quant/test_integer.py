"""Integer matmul bit-exactness and requantization against Python-integer references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.integer import (
    INT32_MAX,
    INT32_MIN,
    int_matmul,
    quantize_multiplier,
    requantize,
)


def _reference(a: np.ndarray, b: np.ndarray, za, zb) -> np.ndarray:
    za = np.asarray(za, np.int64)
    za = za[:, None] if za.ndim else za
    return np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - np.asarray(zb, np.int64))


@pytest.mark.parametrize(
    "a_dtype,b_dtype,k",
    [(np.int8, np.int8, 4096), (np.int8, np.int8, 37), (np.uint8, np.int8, 3001), (np.uint8, np.uint8, 1500), (np.int16, np.int8, 300)],
)
def test_int_matmul_exact(a_dtype, b_dtype, k: int) -> None:
    rng = np.random.default_rng(k)
    ia, ib = np.iinfo(a_dtype), np.iinfo(b_dtype)
    a = rng.integers(ia.min, ia.max, (2, 9, k), endpoint=True).astype(a_dtype)
    b = rng.integers(ib.min, ib.max, (k, 11), endpoint=True).astype(b_dtype)
    # worst-case operands too: every product at its extreme
    a[0, 0, :] = ia.min if ia.min < 0 else ia.max
    b[:, 0] = ib.min if ib.min < 0 else ib.max
    for za, zb in [(0, 0), (int(ia.max) // 3, 0), (0, -7 if ib.min < 0 else 200), (5, 3)]:
        out = int_matmul(a, b, za, zb)
        assert out.dtype == np.int32
        assert np.array_equal(out, _reference(a, b, za, zb))


def test_int_matmul_per_row_and_per_column_zero_points() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (5, 2048)).astype(np.uint8)
    b = rng.integers(-128, 128, (2048, 6)).astype(np.int8)
    za = rng.integers(0, 256, 5)
    zb = rng.integers(-10, 10, 6)
    assert np.array_equal(int_matmul(a, b, za, zb), _reference(a, b, za, zb))


def test_int_matmul_overflow_and_bad_input() -> None:
    a = np.full((1, 140_000), -128, np.int8)
    b = np.full((140_000, 1), -128, np.int8)
    with pytest.raises(ModelError):
        int_matmul(a, b)  # 140000 * 16384 > 2**31 - 1
    with pytest.raises(ModelError):
        int_matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.int8))


def test_quantize_multiplier() -> None:
    rng = np.random.default_rng(2)
    real = np.concatenate([10.0 ** rng.uniform(-9, 1, 2000), [1.0, 0.5, 0.25, 2.0**-31, 0.9999999999]])
    m, shift = quantize_multiplier(real)
    assert np.all((m >= 2**30) & (m < 2**31))
    approx = m * np.exp2(shift.astype(np.float64) - 31)
    # rounded to 31 bits: relative error at most 2**-31
    assert np.all(np.abs(approx - real) <= real * 2.0**-30)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12)[0] == 0
    with pytest.raises(ModelError):
        quantize_multiplier(-0.5)


def _srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(t) >> 31
    return q if t >= 0 else -q


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def _fixed_point_reference(acc: int, m: int, shift: int, zp: int, qmin: int, qmax: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(acc * (1 << left), INT32_MIN), INT32_MAX)
    return min(max(_rdbpot(_srdhm(x, m), right) + zp, qmin), qmax)


def test_fixed_point_requantize_matches_python_integers() -> None:
    rng = np.random.default_rng(3)
    acc = rng.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True)
    acc[:6] = [INT32_MIN, INT32_MAX, 0, -1, 1, -(2**20) - 2**19]  # extremes and a half-way point
    acc = np.concatenate([acc, rng.integers(-(2**16), 2**16, 3000)])
    reals = np.array([0.3, 2.0**-12, 1.7e-5, 1.5, 0.0078125])
    for real in reals:
        m, shift = quantize_multiplier(float(real))
        for zp, qmin, qmax in [(0, -128, 127), (-5, -128, 127), (100, 0, 255), (0, -32768, 32767)]:
            out, saturated = requantize(acc.astype(np.int32), m, shift, zp, qmin, qmax, "fixed_point_half_up")
            ref = [_fixed_point_reference(int(v), m, shift, zp, qmin, qmax) for v in acc]
            assert out.tolist() == ref
            unclipped = [_fixed_point_reference(int(v), m, shift, zp, -(2**40), 2**40) for v in acc]
            assert saturated == sum(1 for u in unclipped if u < qmin or u > qmax)
        if shift > 0:
            continue  # left shifts saturate int32 first; the rational check is for multipliers < 1
        # double rounding stays within one code of the exact rational result
        exact = [Fraction(int(v)) * m * Fraction(2) ** (shift - 31) for v in acc[:500]]
        got, _ = requantize(acc[:500].astype(np.int32), m, shift, 0, -(2**31), 2**31 - 1, "fixed_point_half_up")
        assert all(abs(int(g) - e) <= 1 for g, e in zip(got.tolist(), exact))


def test_fixed_point_per_channel_along_axis() -> None:
    rng = np.random.default_rng(4)
    acc = rng.integers(-(2**22), 2**22, (2, 3, 4, 5)).astype(np.int32)
    reals = np.array([1e-3, 4e-4, 2.5e-5])
    m, shift = quantize_multiplier(reals)
    out, _ = requantize(acc, m, shift, 3, -128, 127, "fixed_point_half_up", axis=1)
    for c in range(3):
        ref = [_fixed_point_reference(int(v), int(m[c]), int(shift[c]), 3, -128, 127) for v in acc[:, c].ravel()]
        assert out[:, c].ravel().tolist() == ref
    # a float multiplier goes through quantize_multiplier: same codes
    out_float_in, _ = requantize(acc, reals, None, 3, -128, 127, "fixed_point_half_up", axis=1)
    assert np.array_equal(out, out_float_in)


def test_float_requantize_half_even() -> None:
    acc = np.array([5, 15, 25, -5, -15, 10000, -10000, 2**24 + 1], np.int32)
    out, saturated = requantize(acc, 0.1, None, 0, -128, 127, "half_even_float")
    # float32(0.1) * 5 = 0.5 exactly in float32 -> 0; 1.5 -> 2; 2.5 -> 2 (half to even)
    expected = np.clip(np.rint(acc.astype(np.float32) * np.float32(0.1)), -128, 127)
    assert out.tolist() == expected.astype(int).tolist()
    assert out.tolist()[:5] == [0, 2, 2, 0, -2]
    assert saturated == 3 and out.dtype == np.int8
    # uint8 output with a zero point
    out_u, sat_u = requantize(np.array([-100, 0, 100], np.int32), 0.5, None, 128, 0, 255, "half_even_float")
    assert out_u.tolist() == [78, 128, 178] and sat_u == 0 and out_u.dtype == np.uint8


def test_requantize_rejects_bad_input() -> None:
    with pytest.raises(ModelError):
        requantize(np.array([1], np.int64) * 2**33, 0.5, None, 0, -128, 127)
    with pytest.raises(ModelError):
        requantize(np.array([1], np.int32), 0.5, None, 0, -128, 127, "truncate")
    with pytest.raises(ModelError):
        requantize(np.array([1], np.int32), np.int64(2**30), None, 0, -128, 127, "fixed_point_half_up")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_matmul_operand_is_the_exact_centred_codes(dtype) -> None:
    """codes - zero_point, exactly, with a bound >= every |value| (the data's own when
    data_bound); zero points scalar or per row / column, in and out of the dtype's range."""
    from engine.quant.integer import matmul_operand

    info = np.iinfo(dtype)
    rng = np.random.default_rng(4)
    codes = rng.integers(info.min, info.max, (7, 9), endpoint=True).astype(dtype)
    for zp, axis in ((0, -1), (int(info.min) + 3, -1), (rng.integers(info.min, info.max, 9), -1),
                     (rng.integers(info.min, info.max, 7), -2), (2**40, -1)):
        zp_b = np.asarray(zp, dtype=np.int64)
        if zp_b.ndim:
            zp_b = zp_b.reshape((-1, 1) if axis == -2 else (-1,))
        want = codes.astype(np.int64) - zp_b
        for data_bound in (False, True):
            op = matmul_operand(codes, zp, axis, data_bound=data_bound)
            assert np.array_equal(op.values.astype(np.int64), want) and np.array_equal(op.values, want.astype(op.values.dtype))
            assert op.bound >= int(np.abs(want).max())
            if data_bound:
                assert op.bound == int(np.abs(want).max())
            if np.all(zp_b < 2**40):
                assert op.values.dtype == np.float32
