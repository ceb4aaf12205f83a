"""Integer-exact arithmetic as integer-only NPUs do it: int8 matmul into int32, requantization.

Exact products (the int32 accumulator of an NPU's MAC array) run on float BLAS. Operands
are centred on their zero points (``a - za``, exact) and held as float32 (a weight once,
as a :class:`MatmulOperand`); with ``bound_a``/``bound_b`` the largest centred magnitudes,
every partial sum of a product over K terms is an integer of magnitude at most
``K * bound_a * bound_b``, so when that is at most ``2**24`` one float32 GEMM is exact
whatever order BLAS sums in, and its float32 result IS the accumulator (no conversion).
Longer K runs in slices of ``2**24 // (bound_a * bound_b)`` (1024 for int8 x int8, 512
for uint8 x int8 around a zero point of 128); their float32 results are added as int32 when
``K * bound_a * bound_b <= 2**31 - 1`` (no overflow possible), else as int64 and checked.
Measured on this project's 2-core machine, float32 in 1024-slices ran 1.1x-3x faster than
one float64 GEMM (exact up to ``2**53``), so float64 is used only when the slices would be
shorter than 256 (int16 operands); operands beyond ``2**53`` fall back to an int64 matmul.
``int_matmul`` is the int32 interface (ONNX MatMulInteger: per-row / per-column zero points).

Requantization (int32 accumulator -> int8 codes) in two roundings:

- ``"half_even_float"``: ``round_half_even(float32(acc) * float32(multiplier)) + zero_point``,
  saturated, as onnxruntime's MLAS requantization does it.
- ``"fixed_point_half_up"``: gemmlowp/TFLite ``MultiplyByQuantizedMultiplier``: the real
  multiplier as a Q31 integer ``m`` in ``[2**30, 2**31)`` and a power-of-two ``shift``
  (``real = m * 2**(shift - 31)``), then ``SaturatingRoundingDoublingHighMul`` (rounds
  half toward +inf) and ``RoundingDivideByPOT`` (rounds half away from zero), fused into
  one int64 multiply, add and shift (:func:`fixed_point_multiply`, equal code for code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ModelError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
ROUNDINGS = ("half_even_float", "fixed_point_half_up")
FLOAT32_EXACT = 2**24
"""Integers of magnitude up to this are exact in float32 (and so are sums staying below it)."""
FLOAT64_EXACT = 2**53
"""The same for float64."""
MIN_FLOAT32_SLICE = 256
"""Shortest K slice run in float32; shorter ones (int16 operands) run in float64."""

_NARROW = {
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-(2**15), 2**15 - 1),
    np.dtype(np.uint16): (0, 2**16 - 1),
}


def _zero_point(value: int | np.ndarray, name: str) -> np.ndarray:
    zp = np.asarray(value)
    if zp.dtype.kind not in "iu" or zp.ndim > 1:
        raise ModelError(f"{name} must be an integer scalar or 1-d integer array")
    return zp.astype(np.int64)


@dataclass(frozen=True)
class MatmulOperand:
    """An integer matmul operand centred on its zero point: ``values = codes - zero_point``
    exactly, as float32 when ``bound <= 2**24``, float64 when ``bound <= 2**53``, else int64;
    ``bound >= max |values|`` (from the dtype and zero point, or the data). Build it with
    :func:`matmul_operand`; a constant operand (a weight) is built once and reused."""

    values: np.ndarray
    bound: int


def matmul_operand(
    codes: np.ndarray, zero_point: int | np.ndarray = 0, axis: int = -1, data_bound: bool = False
) -> MatmulOperand:
    """``codes - zero_point`` as a :class:`MatmulOperand`. ``zero_point`` is a scalar or 1-d
    (per row of a left operand: ``axis=-2``; per column of a right operand: ``axis=-1``).
    For 8/16-bit codes the bound comes from the dtype range and the zero point (no pass over
    the data) unless ``data_bound`` (worth one pass for an operand built once); wider codes
    are centred in int64 and bounded from the data."""
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ModelError(f"integer matmul needs integer operands, got {codes.dtype}")
    narrow = _NARROW.get(codes.dtype)
    if narrow is not None and not data_bound and type(zero_point) is int:  # the per-call fast path
        lo, hi = narrow
        bound = max(hi - zero_point, zero_point - lo, 0)
        values = codes.astype(np.float32 if bound <= FLOAT32_EXACT else np.float64)
        if zero_point:
            values -= zero_point
        return MatmulOperand(values, bound)
    zp = _zero_point(zero_point, "zero point")
    if zp.ndim:
        if codes.ndim < 2 or zp.size != codes.shape[axis]:
            raise ModelError(f"{zp.size} zero points for a matmul operand of shape {codes.shape} along axis {axis}")
        zp_b = zp.reshape((-1, 1) if axis % codes.ndim == codes.ndim - 2 else (-1,))
    else:
        zp_b = zp
        if narrow is not None and not data_bound:
            return matmul_operand(codes, int(zp), axis)
    if narrow is not None and not data_bound:
        lo, hi = narrow
        zp_lo, zp_hi = (int(zp.min()), int(zp.max())) if zp.size else (0, 0)
        bound = max(hi - zp_lo, zp_hi - lo, 0)
        values = codes.astype(np.float32 if bound <= FLOAT32_EXACT else np.float64)
        values -= zp_b.astype(values.dtype)
        return MatmulOperand(values, bound)
    if narrow is not None and (not zp.size or (narrow[0] <= int(zp.min()) and int(zp.max()) <= narrow[1])):
        # data_bound on 8/16-bit codes with in-range zero points: |codes - zp| < 2**17, exact
        # in float32, so no int64 copy (a weight operand: ~3x faster on a process's first run)
        values = codes.astype(np.float32)
        if np.any(zp):
            values -= zp_b.astype(np.float32)
        bound = int(max(float(values.max()), -float(values.min()))) if values.size else 0
        return MatmulOperand(values, bound)
    centred = codes.astype(np.int64)
    if np.any(zp):
        centred -= zp_b
    bound = int(np.abs(centred).max()) if centred.size else 0
    if bound <= FLOAT32_EXACT:
        return MatmulOperand(centred.astype(np.float32), bound)
    if bound <= FLOAT64_EXACT:
        return MatmulOperand(centred.astype(np.float64), bound)
    return MatmulOperand(centred, bound)


def accumulator_dtype(k: int, a_bound: int, b_bound: int) -> type[np.floating | np.integer]:
    """What :func:`exact_matmul` returns for operands of these bounds over ``k`` terms: float32
    (one GEMM, its result the exact accumulator) when ``k * a_bound * b_bound <= 2**24``, else int32."""
    return np.float32 if k * max(a_bound * b_bound, 1) <= FLOAT32_EXACT else np.int32


def exact_matmul(a: MatmulOperand, b: MatmulOperand, out: np.ndarray | None = None) -> np.ndarray:
    """``a.values @ b.values`` (numpy matmul broadcasting) exactly, in the
    :func:`accumulator_dtype` of the operands: float32 holding the exact integers, or int32.
    ModelError if a result does not fit the int32 accumulator. ``out`` (of that dtype and
    the result's shape) receives the result."""
    av, bv = a.values, b.values
    if av.ndim < 2 or bv.ndim < 2 or av.shape[-1] != bv.shape[-2]:
        raise ModelError(f"integer matmul shapes {av.shape} and {bv.shape} do not chain")
    k = av.shape[-1]
    pair = max(a.bound * b.bound, 1)
    if out is not None and out.dtype != accumulator_dtype(k, a.bound, b.bound):
        raise ValueError(f"exact_matmul out has dtype {out.dtype}, expected {np.dtype(accumulator_dtype(k, a.bound, b.bound))}")
    if k * pair <= FLOAT32_EXACT:
        return np.matmul(av.astype(np.float32, copy=False), bv.astype(np.float32, copy=False), out=out)
    fits_int32 = k * pair <= INT32_MAX
    if FLOAT32_EXACT // pair >= MIN_FLOAT32_SLICE:
        ftype, chunk = np.float32, FLOAT32_EXACT // pair
    elif pair <= FLOAT64_EXACT:
        ftype, chunk = np.float64, FLOAT64_EXACT // pair
    else:  # beyond float64: numpy's integer matmul (exact while no int64 sum overflows)
        ftype, chunk = np.int64, k
    av, bv = av.astype(ftype, copy=False), bv.astype(ftype, copy=False)
    acc_type = np.int32 if fits_int32 else np.int64
    total: np.ndarray | None = None
    for start in range(0, k, chunk):
        part = np.matmul(av[..., start : start + chunk], bv[..., start : start + chunk, :]).astype(acc_type)
        if total is None:
            total = part
        else:
            total += part
    assert total is not None
    if not fits_int32:
        if total.size and (total.min() < INT32_MIN or total.max() > INT32_MAX):
            raise ModelError(f"int32 accumulator overflow in an integer matmul with K={k}")
        total = total.astype(np.int32)
    if out is not None:
        out[...] = total
        return out
    return total


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
    acc = exact_matmul(matmul_operand(a, a_zero_point, axis=-2), matmul_operand(b, b_zero_point, axis=-1))
    return acc.astype(np.int32, copy=False)


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


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: ``x / 2**exponent`` rounded half away from zero (int64).

    As ``(x + 2**(e-1) - [x < 0]) >> e`` for ``e >= 1`` (a remainder above half rounds up;
    exactly half rounds up for ``x >= 0`` and down below zero), ``x`` for ``e = 0``;
    ``0 <= e <= 62`` (broadcasting), ``|x| < 2**62``."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    positive = e > 0
    out = x >> 63  # -1 where x < 0, else 0
    if not positive.all():
        out = out & -positive.astype(np.int64)  # no tie term where e = 0
    out += x
    out += np.left_shift(np.int64(1), np.maximum(e - 1, 0)) * positive
    out >>= e
    return out


class FixedPointMultiplier:
    """TFLite ``MultiplyByQuantizedMultiplier`` plus zero point and saturation, prepared once
    for Q31 multipliers ``q31`` in ``[0, 2**31)``, ``shift`` (``>= -62``) and ``zero_point``
    (scalars, or 1-d per channel along ``axis``); calling it on an accumulator (int32 values:
    an integer array, or float32 holding exact integers) returns (int64 codes, number
    saturated to ``[qmin, qmax]``).

    gemmlowp computes ``x = sat_int32(acc << max(shift, 0))``, ``h = SRDHM(x, m)`` (the
    nudged high multiply: ``floor((x m + 2**30) / 2**31)`` for every sign), then
    ``RoundingDivideByPOT(h, r)`` with ``r = max(-shift, 0)`` (for ``r >= 1``:
    ``floor((h + 2**(r-1) - [h < 0]) / 2**r)``). Nested floors of integers merge, so the
    result is ONE shift: ``floor((x m + 2**30 + 2**(30+r) - 2**31 [x < 0]) / 2**(31+r))``
    (for ``r = 0``: ``floor((x m + 2**30) / 2**31)``): an int64 multiply, adds and a shift.
    ``[h < 0]`` may be read as ``[x < 0]`` since ``m >= 0``: they differ only when ``h = 0``,
    where both give 0; ``-2**31 [x < 0]`` is ``x & -2**31`` for int32-range ``x``.
    ``|x m| < 2**62``; the zero point joins the offset as ``zp * 2**(31+r)`` when that stays
    within ``2**60`` (no sum reaches 2**63). SRDHM's saturation case needs ``m = -2**31``:
    never a Q31 multiplier.
    """

    def __init__(self, q31: int | np.ndarray, shift: int | np.ndarray, zero_point: int | np.ndarray = 0, axis: int = -1) -> None:
        q, sh, zp = np.broadcast_arrays(
            np.asarray(q31, dtype=np.int64), np.asarray(shift, dtype=np.int64), np.asarray(zero_point, dtype=np.int64)
        )
        if q.ndim > 1:
            raise ModelError("requantization multipliers, shifts and zero points are scalars or 1-d per channel")
        if q.size and (q.min() < 0 or q.max() > INT32_MAX or sh.min() < -62):
            raise ModelError("Q31 multipliers must be in [0, 2**31) with shifts of at least -62")
        self.axis = axis
        self.q31 = q.copy()
        self.left = np.maximum(sh, 0)
        right = np.maximum(-sh, 0)
        self.tie = right > 0
        offset = np.int64(1 << 30) + np.left_shift(np.int64(1), 30 + right) * self.tie
        self.fold_zp = bool(np.all(np.abs(zp) <= np.right_shift(np.int64(2**60), 31 + right)))
        self.offset = offset + np.left_shift(zp, 31 + right) if self.fold_zp else offset
        self.zero_point = zp.copy()
        self.shift = 31 + right
        self._any_left = bool(self.left.size and self.left.max() > 0)
        self._any_tie = bool(self.tie.any())
        self._all_tie = bool(self.tie.all())
        self._any_zp = bool(np.any(zp))
        self._shaped: dict[int, tuple[np.ndarray, ...]] = {}

    def _params(self, ndim: int) -> tuple[np.ndarray, ...]:
        shaped = self._shaped.get(ndim)
        if shaped is None:
            shaped = self._shaped[ndim] = tuple(
                _along(v, ndim, self.axis) for v in (self.q31, self.offset, self.shift, self.left, self.tie.astype(np.int64), self.zero_point)
            )
        return shaped

    def __call__(self, acc: np.ndarray, qmin: int = INT32_MIN, qmax: int = INT32_MAX) -> tuple[np.ndarray, int]:
        acc = np.asarray(acc)
        q, offset, shift, left, tie, zp = self._params(acc.ndim)
        p = np.asarray(acc.astype(np.int64))  # a fresh int64 array (float32 accumulators hold exact integers)
        if self._any_left:
            p <<= left
            np.clip(p, INT32_MIN, INT32_MAX, out=p)  # TFLite: x * (1 << left_shift) in int32
        negative = np.bitwise_and(p, np.int64(INT32_MIN)) if self._any_tie else None  # -2**31 where x < 0, else 0
        p *= q
        p += offset
        if negative is not None:
            if not self._all_tie:  # per channel, some with r = 0: no tie term there
                negative *= tie
            p += negative
        p >>= shift
        if not self.fold_zp and self._any_zp:
            p += zp
        saturated = 0
        if p.size:
            lo, hi = int(p.min()), int(p.max())
            if hi > qmax:
                saturated += int(np.count_nonzero(p > qmax))
                np.minimum(p, qmax, out=p)
            if lo < qmin:
                saturated += int(np.count_nonzero(p < qmin))
                np.maximum(p, qmin, out=p)
        return p, saturated


def fixed_point_multiply(
    acc: np.ndarray,
    q31: int | np.ndarray,
    shift: int | np.ndarray,
    zero_point: int | np.ndarray = 0,
    qmin: int = INT32_MIN,
    qmax: int = INT32_MAX,
    axis: int = -1,
) -> tuple[np.ndarray, int]:
    """One-off :class:`FixedPointMultiplier` ``(q31, shift, zero_point, axis)`` applied to
    ``acc``: (int64 codes, number saturated to ``[qmin, qmax]``)."""
    return FixedPointMultiplier(q31, shift, zero_point, axis)(acc, qmin, qmax)


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
    if rounding == "fixed_point_half_up":
        if is_q31:
            q31, sh = mult.astype(np.int64), np.asarray(shift, dtype=np.int64)
        else:
            q31_raw, sh_raw = quantize_multiplier(mult.astype(np.float64))
            q31, sh = np.asarray(q31_raw, dtype=np.int64), np.asarray(sh_raw, dtype=np.int64)
        codes, saturated = fixed_point_multiply(acc, q31, sh, np.asarray(zero_point, dtype=np.int64), qmin, qmax, axis)
        return codes.astype(_output_dtype(qmin, qmax)), saturated
    zp = _along(np.asarray(zero_point, dtype=np.int64), acc.ndim, axis)
    real = mult.astype(np.float64) * np.exp2(np.asarray(shift, dtype=np.float64) - 31) if is_q31 else mult
    real32 = _along(np.asarray(real, dtype=np.float32), acc.ndim, axis)
    scaled = np.rint(acc.astype(np.float32) * real32)
    # bound before the integer cast (huge products); out-of-range values stay out of range
    value = np.clip(scaled, qmin - zp - 1, qmax - zp + 1).astype(np.int64) + zp
    saturated = int(np.count_nonzero((value < qmin) | (value > qmax)))
    return np.clip(value, qmin, qmax).astype(_output_dtype(qmin, qmax)), saturated
