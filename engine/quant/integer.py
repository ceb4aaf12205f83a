"""Integer-exact arithmetic as integer-only NPUs do it: int8 matmul into int32, requantization.

``int_matmul`` is bit-exact (the int32 accumulator of an NPU's MAC array). The raw product
``a @ b`` runs on float32 BLAS in slices of K small enough that every partial sum is an
integer below 2**24 (exact in float32); the slices are added in int64. int8 x int8 gives
slices of 1024 (``2**24 / (128 * 128)``), uint8 x int8 512. Measured on this project's
2-core machine, float32 in 1024-slices ran 1.1x-3x faster than one float64 GEMM (exact
up to K * 2**14 < 2**53) on 256x4096x256, 3136x576x64 and 64x1024x1024 int8 products,
so float64 is used only when the slices would be shorter than 256 (int16 operands).
Zero points are applied afterwards with row/column sums:
``sum_k (a - za)(b - zb) = a @ b - zb * rowsum(a) - za * colsum(b) + K * za * zb``.

Requantization (int32 accumulator -> int8 codes) in two roundings:

- ``"half_even_float"``: ``round_half_even(float32(acc) * float32(multiplier)) + zero_point``,
  saturated, as onnxruntime's MLAS requantization does it.
- ``"fixed_point_half_up"``: gemmlowp/TFLite ``MultiplyByQuantizedMultiplier``: the real
  multiplier as a Q31 integer ``m`` in ``[2**30, 2**31)`` and a power-of-two ``shift``
  (``real = m * 2**(shift - 31)``), then ``SaturatingRoundingDoublingHighMul`` (rounds
  half away from zero) and ``RoundingDivideByPOT`` (rounds half away from zero), int64
  numpy arithmetic, vectorised.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ModelError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
ROUNDINGS = ("half_even_float", "fixed_point_half_up")

_DTYPE_BOUND = {np.dtype(np.int8): 128, np.dtype(np.uint8): 255, np.dtype(np.int16): 2**15, np.dtype(np.uint16): 2**16 - 1}


def _abs_bound(x: np.ndarray) -> int:
    """Largest |value| x can hold (from its dtype when narrow, else from the data)."""
    if x.dtype in _DTYPE_BOUND:
        return _DTYPE_BOUND[x.dtype]
    if x.size == 0:
        return 1
    return max(int(np.abs(x.min(), dtype=np.float64)), int(np.abs(x.max(), dtype=np.float64)), 1)


def _exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` exactly, as int64, with BLAS on float slices of K (see module doc)."""
    k = a.shape[-1]
    bound = _abs_bound(a) * _abs_bound(b)
    ftype, mantissa = (np.float32, 24) if (2**24) // bound >= 256 else (np.float64, 53)
    chunk = max(1, (2**mantissa) // bound)
    if chunk >= k:
        return np.matmul(a.astype(ftype), b.astype(ftype)).astype(np.int64)
    total: np.ndarray | None = None
    for start in range(0, k, chunk):
        part = np.matmul(a[..., start : start + chunk].astype(ftype), b[..., start : start + chunk, :].astype(ftype))
        total = part.astype(np.int64) if total is None else total + part.astype(np.int64)
    assert total is not None
    return total


def _zero_point(value: int | np.ndarray, name: str) -> np.ndarray:
    zp = np.asarray(value)
    if zp.dtype.kind not in "iu" or zp.ndim > 1:
        raise ModelError(f"{name} must be an integer scalar or 1-d integer array")
    return zp.astype(np.int64)


def int_matmul(
    a: np.ndarray, b: np.ndarray, a_zero_point: int | np.ndarray = 0, b_zero_point: int | np.ndarray = 0
) -> np.ndarray:
    """``sum_k (a[..., m, k] - za) * (b[..., k, n] - zb)`` exactly, as int32.

    ``a`` is ``[..., M, K]`` and ``b`` ``[..., K, N]`` (numpy matmul broadcasting) of any
    integer dtype (int8/uint8 typical); ``a_zero_point`` is a scalar or per-row ``[M]``,
    ``b_zero_point`` a scalar or per-column ``[N]`` (as ONNX MatMulInteger). Raises
    ModelError if a result does not fit the int32 accumulator.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise ModelError(f"int_matmul needs integer operands, got {a.dtype} and {b.dtype}")
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ModelError(f"int_matmul shapes {a.shape} and {b.shape} do not chain")
    za = _zero_point(a_zero_point, "a_zero_point")
    zb = _zero_point(b_zero_point, "b_zero_point")
    acc = _exact_product(a, b)
    k = a.shape[-1]
    za_rows = za[:, None] if za.ndim else za  # per-row zero point runs down the M axis
    if np.any(zb):
        acc -= a.sum(axis=-1, dtype=np.int64)[..., :, None] * zb
    if np.any(za):
        acc -= za_rows * b.sum(axis=-2, dtype=np.int64)[..., None, :]
        if np.any(zb):
            acc += k * za_rows * zb
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ModelError(f"int32 accumulator overflow in an integer matmul with K={k}")
    return acc.astype(np.int32)


def quantize_multiplier(real_multiplier: float | np.ndarray) -> tuple[int | np.ndarray, int | np.ndarray]:
    """(Q31 multiplier, shift) with ``real = multiplier * 2**(shift - 31)``, as TFLite's QuantizeMultiplier.

    ``multiplier`` is in ``[2**30, 2**31)`` (0 for a zero multiplier or one below
    ``2**-32``), rounded half away from zero; ``shift > 0`` is a left shift. Multipliers of
    ``2**31`` or more saturate to ``(2**31 - 1, 30)``. Arrays give arrays (per channel).
    """
    real = np.asarray(real_multiplier, dtype=np.float64)
    if not np.all(np.isfinite(real)) or np.any(real < 0):
        raise ModelError("requantization multipliers must be finite and non-negative")
    mantissa, exponent = np.frexp(real)
    q = np.floor(mantissa * 2.0**31 + 0.5).astype(np.int64)
    exponent = exponent.astype(np.int64)
    carry = q == 2**31
    q = np.where(carry, q // 2, q)
    exponent = np.where(carry, exponent + 1, exponent)
    tiny = exponent < -31
    q = np.where(tiny, 0, q)
    exponent = np.where(tiny, 0, exponent)
    huge = exponent > 30
    q = np.where(huge, 2**31 - 1, q)
    exponent = np.where(huge, 30, exponent)
    if real.ndim == 0:
        return int(q), int(exponent)
    return q, exponent


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64 arrays.

    ``round_half_away(a * b / 2**31)`` (the C++ nudge then truncating division), saturating
    the single overflow case ``a == b == INT32_MIN`` to INT32_MAX.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))  # C++ division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: ``x / 2**exponent`` rounded half away from zero (int64)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = np.left_shift(np.int64(1), exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _along(value: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Place a 1-d per-channel array along ``axis`` of a rank-``ndim`` tensor."""
    if value.ndim == 0:
        return value
    if ndim == 0 or not -ndim <= axis < ndim:
        raise ModelError(f"per-channel axis {axis} out of range for a rank-{ndim} accumulator")
    shape = [1] * ndim
    shape[axis % ndim] = value.size
    return value.reshape(shape)


def _output_dtype(qmin: int, qmax: int) -> type[np.integer]:
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ModelError(f"output range [{qmin}, {qmax}] does not fit int32")


def requantize(
    acc_int32: np.ndarray,
    multiplier: float | np.ndarray,
    shift: int | np.ndarray | None = None,
    zero_point: int | np.ndarray = 0,
    qmin: int = -128,
    qmax: int = 127,
    rounding: str = "half_even_float",
    axis: int = -1,
) -> tuple[np.ndarray, int]:
    """Scale int32 accumulators to output codes: (codes, number saturated to qmin/qmax).

    ``multiplier`` is either the real multiplier (float: ``in_scale * w_scale / out_scale``)
    or, with integer dtype, the Q31 multiplier from :func:`quantize_multiplier` together
    with its ``shift``; each rounding converts what it is given (float -> Q31 via
    :func:`quantize_multiplier`; Q31 -> ``m * 2**(shift - 31)`` as float32). 1-d
    ``multiplier``/``shift``/``zero_point`` are per channel along ``axis`` of ``acc_int32``.
    Codes come back in the smallest integer dtype holding ``[qmin, qmax]`` (int8 for int8).
    """
    if rounding not in ROUNDINGS:
        raise ModelError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    acc = np.asarray(acc_int32)
    if acc.dtype.kind not in "iu":
        raise ModelError(f"requantize needs an integer accumulator, got {acc.dtype}")
    acc = acc.astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ModelError("requantize accumulator values exceed int32")
    mult = np.asarray(multiplier)
    is_q31 = mult.dtype.kind in "iu"
    if is_q31 and shift is None:
        raise ModelError("an integer (Q31) multiplier needs its shift")
    zp = _along(np.asarray(zero_point, dtype=np.int64), acc.ndim, axis)
    if rounding == "half_even_float":
        real = mult.astype(np.float64) * np.exp2(np.asarray(shift, dtype=np.float64) - 31) if is_q31 else mult
        real32 = _along(np.asarray(real, dtype=np.float32), acc.ndim, axis)
        scaled = np.rint(acc.astype(np.float32) * real32)
        # bound before the integer cast (huge products); out-of-range values stay out of range
        value = np.clip(scaled, qmin - zp - 1, qmax - zp + 1).astype(np.int64) + zp
    else:
        if is_q31:
            q31, sh = mult.astype(np.int64), np.asarray(shift, dtype=np.int64)
        else:
            q31_raw, sh_raw = quantize_multiplier(mult.astype(np.float64))
            q31, sh = np.asarray(q31_raw, dtype=np.int64), np.asarray(sh_raw, dtype=np.int64)
        q31 = _along(q31, acc.ndim, axis)
        sh = _along(sh, acc.ndim, axis)
        left = np.maximum(sh, 0)
        right = np.maximum(-sh, 0)
        shifted = np.clip(acc << left, INT32_MIN, INT32_MAX)  # TFLite: x * (1 << left_shift) in int32
        value = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, q31), right) + zp
    saturated = int(np.count_nonzero((value < qmin) | (value > qmax)))
    return np.clip(value, qmin, qmax).astype(_output_dtype(qmin, qmax)), saturated
