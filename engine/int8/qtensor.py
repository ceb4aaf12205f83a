"""Quantized tensors and the requantization steps every integer kernel shares.

A quantized tensor is its integer codes plus its :class:`QParams` (value ``(q - zp) * scale``).
Integer kernels compute an exact integer accumulator (int32, or int64 where a sum can grow
past int32) at a known real scale and finish with :func:`requantize_acc`: the real
multiplier ``acc_scale / out_scale`` applied as the plan's rounding mode does it
(``"half_even_float"``: float32 multiply and round half to even, as onnxruntime;
``"fixed_point_half_up"``: Q31 multiplier and shift, as gemmlowp/TFLite), then the output
zero point and saturation to ``[qmin, qmax]``, counting the values clipped.

Multipliers are formed in float32 arithmetic (``float32(s_in) * float32(s_w) / float32(s_out)``)
as onnxruntime forms them, so the float rounding mode reproduces its QLinear kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.errors import ModelError
from engine.int8.plan import same_params
from engine.quant.integer import (
    INT32_MAX,
    INT32_MIN,
    ROUNDINGS,
    quantize_multiplier,
    rounding_divide_by_pot,
)
from engine.quant.qparams import DTYPES, QParams, dequantize, quantize

MIN_Q31_MULTIPLIER = 2.0**-30
"""Smallest real multiplier given to the Q31 requantization as is; smaller ones (I-BERT
LayerNorm's output scale over an int8 step is ~1e-11) pre-shift the accumulator instead."""


class NotInteger(Exception):
    """Raised by an integer kernel that cannot run a node as configured (per-channel
    parameters where it needs per-tensor ones, an attribute it does not model, a scale
    outside an I-BERT kernel's domain); the executor then takes the float-fallback path
    and records the message as the reason."""


@dataclass
class QTensor:
    """Integer ``codes`` (dtype of ``qp.dtype``) with their parameters; ``clipped`` counts the
    values saturated when these codes were produced (0 for pass-through results)."""

    codes: np.ndarray
    qp: QParams
    clipped: int = 0

    def dequantize(self) -> np.ndarray:
        """``(codes - zero_point) * scale`` as float32 (equal to :func:`engine.quant.qparams.dequantize`:
        the centred codes are exact in float32, then one float32 product)."""
        if self.qp.per_channel:
            return dequantize(self.codes, self.qp)
        y = exact_float(self)
        y *= np.float32(scale32(self.qp))
        return y


Value = QTensor | np.ndarray
"""What flows between nodes of the int8 model: a quantized tensor, a float tensor (left in
float by a ``"float"`` node, or without QParams) or a non-float tensor (int64 shapes and
indices, bool masks), which is never quantized."""


def is_float(value: object) -> bool:
    """True for a QTensor or a floating-point array (the values quantization applies to)."""
    return isinstance(value, QTensor) or (isinstance(value, np.ndarray) and value.dtype.kind == "f")


def to_float(value: Value | None) -> np.ndarray | None:
    """A QTensor dequantized to float32; anything else as is."""
    if isinstance(value, QTensor):
        return value.dequantize()
    return value


def quantize_tensor(x: np.ndarray, qp: QParams) -> QTensor:
    """Float values to codes (round half to even, saturating, NaN to the zero point and
    counted; equal to :func:`engine.quant.qparams.quantize`, in float32 passes when per tensor)."""
    x = np.asarray(x)
    if qp.per_channel or x.dtype.kind != "f":
        codes, clipped = quantize(x, qp)
        return QTensor(codes, qp, clipped)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = np.divide(x, scale32(qp), dtype=np.float32)
        return finish_float(y, qp)


def zero_point(qp: QParams) -> int:
    """The zero point of per-tensor parameters (NotInteger for per-channel ones)."""
    if qp.per_channel:
        raise NotInteger("per-channel QParams where per-tensor ones are needed")
    return int(np.asarray(qp.zero_point).reshape(-1)[0])


def scale32(qp: QParams) -> np.float32:
    """The per-tensor scale as float32 (NotInteger for per-channel parameters)."""
    if qp.per_channel:
        raise NotInteger("per-channel QParams where per-tensor ones are needed")
    return np.float32(np.asarray(qp.scale).reshape(-1)[0])


def centered(q: QTensor, dtype: type[np.integer] | None = None) -> np.ndarray:
    """``codes - zero_point`` as exact integers (int32 for 8/16-bit codes), per-channel aware."""
    work = dtype or (np.int32 if q.codes.dtype.itemsize <= 2 else np.int64)
    codes = q.codes.astype(work)
    if q.qp.per_channel:
        _, zp = q.qp.broadcast(codes.ndim)
        return codes - zp.astype(work)
    zp0 = zero_point(q.qp)
    return codes - work(zp0) if zp0 else codes


def check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise ModelError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")


def requantize_acc(
    acc: np.ndarray, multiplier: float | np.ndarray, out: QParams, rounding: str, axis: int = -1
) -> QTensor:
    """Integer accumulator at real scale ``multiplier * out_scale`` -> codes of ``out``.

    ``multiplier`` is a non-negative float or a 1-d array (per channel along ``axis`` of
    ``acc``). ``acc`` is an integer array, or a float32 array holding exact integers (see
    :func:`exact_float`). The float mode computes ``float32(acc) * float32(multiplier)``
    whatever the accumulator's width. The fixed-point mode works on int32: an accumulator
    beyond int32 (an int32 bias plus products, I-BERT's wide LayerNorm output) is first
    divided by ``2**t`` with rounding half away from zero so it fits 30 bits and the
    multiplier takes the ``2**t`` (the output stage of a wide accumulator); a multiplier
    below :data:`MIN_Q31_MULTIPLIER` pre-shifts the accumulator the same way.
    """
    if out.per_channel:
        raise NotInteger("per-channel QParams on an activation output")
    acc = np.asarray(acc)
    mult = np.asarray(multiplier, dtype=np.float64)
    if acc.dtype == np.float32:  # an exact accumulator held in float32 (|acc| < 2**24, see exact_float)
        if rounding == "half_even_float":
            return _requantize_float(acc, mult, out, axis, in_place=True)
        acc = acc.astype(np.int32)
    if acc.dtype.kind not in "iu":
        raise ModelError(f"requantization needs integer accumulators, got {acc.dtype}")
    if rounding == "half_even_float":
        return _requantize_float(acc, mult, out, axis)
    shift = 0
    if acc.size and acc.dtype.itemsize > 4:
        lo, hi = int(acc.min()), int(acc.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            shift = max(abs(lo), abs(hi)).bit_length() - 30
    positive = np.atleast_1d(mult)[np.atleast_1d(mult) > 0]
    if acc.size and positive.size and positive.min() < MIN_Q31_MULTIPLIER:
        # a Q31 multiplier below 2**-30 would lose its bits: move them into a pre-shift
        shift = max(shift, math.ceil(math.log2(MIN_Q31_MULTIPLIER / float(positive.min()))))
    if shift > 0:
        acc = rounding_divide_by_pot(acc.astype(np.int64, copy=False), shift)
        mult = mult * float(2**shift)
    codes, clipped = requantize_fixed(acc, mult, zero_point(out), out.qmin, out.qmax, axis)
    return QTensor(codes.astype(DTYPES[out.dtype]), out, clipped)


def requantize_fixed(
    acc: np.ndarray, mult: np.ndarray | float, zp: int, qmin: int, qmax: int, axis: int = -1
) -> tuple[np.ndarray, int]:
    """The ``"fixed_point_half_up"`` requantization of :func:`engine.quant.integer.requantize`
    (TFLite ``MultiplyByQuantizedMultiplier``: saturating left shift, SaturatingRounding-
    DoublingHighMul, RoundingDivideByPOT, zero point, saturation) in fewer int64 passes,
    equal to it code for code (tested): (int64 codes, number saturated). ``acc`` holds int32
    values; ``mult`` is the real multiplier (1-d: per channel along ``axis``).

    On magnitudes, with ``p = x * m`` and ``s = -1`` for negative ``p`` (else 0): the high-mul
    is ``sign(p) * ((|p| + 2**30 + s) >> 31)`` (its nudge ``1 - 2**30`` below zero sends ties
    toward +inf) and the divide by ``2**r`` adds ``2**(r-1)`` before shifting (ties away from
    zero), both on ``|.|`` with the sign put back once. The high-mul's saturation case needs
    ``m = -2**31``, never a Q31 multiplier."""
    q31, exponent = quantize_multiplier(np.asarray(mult, dtype=np.float64))
    q31 = np.asarray(q31, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    if q31.ndim:
        shape = [1] * acc.ndim
        shape[axis % acc.ndim] = q31.size
        q31, exponent = q31.reshape(shape), exponent.reshape(shape)
    p = np.array(acc, dtype=np.int64)  # int32 values (the caller's contract)
    left = np.maximum(exponent, 0)
    if np.any(left):
        p <<= left
        np.clip(p, INT32_MIN, INT32_MAX, out=p)  # TFLite: x * (1 << left_shift) in int32
    p *= q31
    sign = p >> 63  # -1 where negative, else 0
    np.abs(p, out=p)
    p += 1 << 30
    p += sign  # the high-mul's nudge is 1 - 2**30 below zero: ties go toward +inf
    p >>= 31
    right = np.maximum(-exponent, 0)
    if np.any(right):
        p += (np.left_shift(np.int64(1), right) >> 1)
        p >>= right
    p ^= sign
    p -= sign
    if zp:
        p += zp
    clipped = 0
    if p.size:
        lo, hi = int(p.min()), int(p.max())
        if lo < qmin or hi > qmax:
            clipped = int(np.count_nonzero((p < qmin) | (p > qmax)))
            np.clip(p, qmin, qmax, out=p)
    return p, clipped


def _requantize_float(acc: np.ndarray, mult: np.ndarray, out: QParams, axis: int, in_place: bool = False) -> QTensor:
    """The ``"half_even_float"`` requantization of :func:`engine.quant.integer.requantize`
    (``round_half_even(float32(acc) * float32(multiplier)) + zp``, saturated) fused into
    in-place float32 passes; equal to it code for code (tested)."""
    y = acc if in_place else acc.astype(np.float32)
    m32 = mult.astype(np.float32)
    if m32.ndim:
        shape = [1] * y.ndim
        shape[axis % y.ndim] = m32.size
        m32 = m32.reshape(shape)
    y *= m32
    return finish_float(y, out)


def finish_float(y: np.ndarray, out: QParams) -> QTensor:
    """float32 values in output-step units -> codes of ``out``: round half to even, add the
    zero point, saturate to ``[qmin, qmax]`` (counting the values clipped) and cast. ``y``
    is overwritten."""
    if not isinstance(y, np.ndarray):  # numpy returns scalars for 0-d operands
        y = np.array(y, dtype=np.float32)
    np.rint(y, out=y)
    zp = zero_point(out)
    if zp:
        y += np.float32(zp)
    clipped = 0
    if y.size:
        lo, hi = y.min(), y.max()
        if lo < out.qmin or hi > out.qmax or np.isnan(lo):
            with np.errstate(invalid="ignore"):
                clipped = int(np.count_nonzero(~((y >= out.qmin) & (y <= out.qmax))))
                np.clip(y, out.qmin, out.qmax, out=y)
            y[np.isnan(y)] = zp
    return QTensor(y.astype(DTYPES[out.dtype]), out, clipped)


EXACT_FLOAT_LIMIT = 2**24
"""Integers below this magnitude are exact in float32: accumulators known to stay below it
(centred 8/16-bit codes, their sums with a small int32 bias) are held in float32, which
the float rounding mode multiplies without a conversion pass."""


def exact_float(q: QTensor) -> np.ndarray:
    """``codes - zero_point`` as float32 (exact: codes are at most 16-bit), per-channel aware."""
    y = q.codes.astype(np.float32)
    if q.qp.per_channel:
        _, zp = q.qp.broadcast(y.ndim)
        y -= zp.astype(np.float32)
        return y
    zp0 = zero_point(q.qp)
    if zp0:
        y -= np.float32(zp0)
    return y


def centered_acc(q: QTensor, rounding: str) -> np.ndarray:
    """``codes - zero_point`` as the accumulator type the rounding mode works on fastest:
    exact float32 for ``"half_even_float"``, int32 otherwise."""
    return exact_float(q) if rounding == "half_even_float" else centered(q)


def rescale(q: QTensor, out: QParams | None, rounding: str) -> QTensor:
    """Codes of ``q`` moved to the parameters ``out`` (integer requantization by
    ``s_in / s_out``); the same codes when ``out`` is None or equal to ``q``'s. ``clipped``
    counts only what this step saturates."""
    if out is None or same_params(q.qp, out):
        return QTensor(q.codes, q.qp if out is None else out, 0)
    if q.qp.per_channel:
        raise NotInteger("per-channel QParams cannot be rescaled to other parameters")
    multiplier = float(scale32(q.qp) / scale32(out))
    return requantize_acc(centered_acc(q, rounding), multiplier, out, rounding)


def add_bias(acc: np.ndarray, bias: np.ndarray, terms: int, code_bits: int = 8) -> np.ndarray:
    """``acc + bias`` of an int32 product accumulator over ``terms`` products of centred
    ``code_bits``-bit codes and an int64 bias (already broadcastable): int32 when the bound
    ``terms * (2**code_bits - 1)**2 + max|bias|`` fits, else int64 (the wide path)."""
    span = (1 << code_bits) - 1
    bound = terms * span * span + (int(np.abs(bias).max()) if bias.size else 0)
    if bound <= INT32_MAX and acc.dtype == np.int32:
        return acc + bias.astype(np.int32)
    return acc.astype(np.int64) + bias


def real_multiplier(*scales_over: np.ndarray | float, out: QParams) -> np.ndarray:
    """``prod(scales) / out_scale`` in float32 arithmetic, returned as float64 (exact copies of
    the float32 values); scales may be per-channel arrays."""
    product = np.float32(1.0)
    for s in scales_over:
        product = product * np.asarray(s, dtype=np.float32)
    return np.asarray(product / scale32(out), dtype=np.float64)
