"""Integer-only non-linear ops from I-BERT (Kim et al., "I-BERT: Integer-only BERT
Quantization", ICML 2021), for NPUs without float units.

Every function takes integer codes ``q`` with their float ``scale`` (value ``x = q * scale``)
and returns ``(q_out, scale_out)``; at run time only integer adds, multiplies, shifts and
one integer division per row are used. The float work (``floor(b / scale)`` and the like)
depends on the scale only: it is folded into constants when the model is compiled.
Codes are int64 arrays (an NPU would use int32 accumulators; magnitudes are stated per
function). The numpy evaluation takes shortcuts that give the same integers: narrower
dtypes where the stated bounds allow, tables of i-exp over the possible row differences
of 8/16-bit softmax inputs, exact float64 arithmetic below ``2**53``.

- ``i_poly``: ``a (x + b)**2 + c`` as ``q_out = (q + floor(b / S))**2 + floor(c / (a S**2))``,
  ``S_out = a S**2``.
- ``i_exp`` (x <= 0): ``x = -z ln2 + p`` with ``p`` in ``(-ln2, 0]``, ``exp(p)`` by i-poly with
  ``a, b, c = 0.3585, 1.353, 0.344``, then the shift ``exp(x) = exp(p) >> z``.
- ``i_softmax``: ``x - max(x)``, i-exp, then a fixed-point division by the row sum.
- ``i_erf`` / ``i_gelu``: ``erf(x) ~ sgn(x) [a (min(|x|, -b) + b)**2 + 1]`` with
  ``a, b = -0.2888, -1.769``; ``GELU(x) = x (1 + erf(x / sqrt2)) / 2``.
- ``i_sqrt``: integer Newton iteration ``x <- (x + n // x) // 2`` from ``2**ceil(bits(n)/2)``.
- ``i_layernorm``: integer mean and variance, i-sqrt for the standard deviation, a
  fixed-point reciprocal, then the affine part with quantized gamma/beta.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from engine.errors import ModelError

EXP_COEFFS = (0.3585, 1.353, 0.344)
"""I-BERT's second-order fit of exp(p) on [-ln2, 0]: a (p + b)**2 + c."""
ERF_COEFFS = (-0.2888, -1.769, 1.0)
"""I-BERT's second-order fit of erf(x) on [0, -b], with sign and clipping: a (x + b)**2 + c."""
EXP_MAX_SHIFT = 30
"""Largest power-of-two shift in i-exp (inputs below -30 ln2 clamp there: exp < 1e-9),
as in the I-BERT reference implementation, so the shift fits a 32-bit datapath."""


def _codes(q: np.ndarray) -> np.ndarray:
    arr = np.asarray(q)
    if arr.dtype.kind not in "iu":
        raise ModelError(f"integer-only op needs integer codes, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _positive_scale(scale: float, name: str = "scale") -> float:
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ModelError(f"{name} must be a positive finite number, got {scale}")
    return s


def _bit_length(n: np.ndarray) -> np.ndarray:
    """Bits needed for non-negative int64 values (0 for 0); may overestimate by one above 2**53."""
    return np.frexp(n.astype(np.float64))[1].astype(np.int64)


def i_poly(q: np.ndarray, scale: float, a: float, b: float, c: float) -> tuple[np.ndarray, float]:
    """Integer ``a (x + b)**2 + c`` for ``x = q * scale``: ``(q + q_b)**2 + q_c`` at scale ``a * scale**2``."""
    q_b = math.floor(b / scale)
    q_c = math.floor(c / (a * scale * scale))
    shifted = _codes(q) + q_b
    return shifted * shifted + q_c, a * scale * scale


def i_exp(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Integer ``exp(x)`` for ``x = q * scale <= 0`` (I-BERT Algorithm 2).

    ``q_ln2 = floor(ln2 / S)``, ``z = floor(-q / q_ln2)``, ``p = q + z q_ln2`` (in
    ``(-q_ln2, 0]``), ``q_out = i_poly(p) >> z`` at scale ``0.3585 S**2``. Needs
    ``S < ln2``. Output codes are below ``(1.353 / S)**2 + 0.96 / S**2``.
    """
    s = _positive_scale(scale)
    q_ln2 = math.floor(math.log(2.0) / s)
    if q_ln2 < 1:
        raise ModelError(f"i-exp needs an input scale below ln2, got {s}")
    codes = _codes(q)
    if codes.size and codes.max() > 0:
        raise ModelError("i-exp takes non-positive inputs (subtract the maximum first)")
    codes = np.maximum(codes, -EXP_MAX_SHIFT * q_ln2)
    z = (-codes) // q_ln2
    p = codes + z * q_ln2
    q_l, scale_out = i_poly(p, s, *EXP_COEFFS)
    return q_l >> z, scale_out


def softmax_exp_shift(scale: float, exp_bits: int = 16) -> int:
    """The constant right shift that brings i-exp codes at input ``scale`` within ``exp_bits``
    bits: the bit length of the largest code (i-poly at ``p = 0``) minus ``exp_bits``."""
    s = _positive_scale(scale)
    q_b = math.floor(EXP_COEFFS[1] / s)
    top = q_b * q_b + math.floor(EXP_COEFFS[2] / (EXP_COEFFS[0] * s * s))
    return max(0, top.bit_length() - exp_bits)


@functools.lru_cache(maxsize=64)
def _softmax_exp_table(scale: float, code_shift: int, exp_shift: int, span: int) -> np.ndarray:
    """``i_exp(-(d << code_shift)) >> exp_shift`` for ``d = 0..span`` as float64 (exact),
    read-only; cached per scale and shifts (a model's softmax nodes reuse a few)."""
    table, _ = i_exp(-(np.arange(span + 1, dtype=np.int64) << code_shift), scale)
    values = (table >> exp_shift).astype(np.float64)
    values.flags.writeable = False
    return values


def i_softmax(
    q: np.ndarray,
    scale: float,
    axis: int = -1,
    output_bits: int = 8,
    exp_bits: int = 16,
    code_shift: int = 0,
    dtype: type[np.integer | np.floating] = np.int64,
) -> tuple[np.ndarray, float]:
    """Integer Softmax along ``axis`` (I-BERT Algorithm 3); output unsigned at scale ``2**-output_bits``.

    ``q - max(q)``, i-exp, the exp codes shifted right by a constant (from the scale) so
    they fit ``exp_bits`` bits (the reference implementation requantizes them to 16 bits),
    then ``factor = floor(2**32 / sum)`` and ``q_out = (q_exp * factor) >> (32 - output_bits)``,
    saturated to ``2**output_bits - 1`` (reached only when one element takes ~all the mass).
    Output codes in ``dtype``: int64, or float32 holding the same integers (exact: below
    ``2**16``), ready for a float requantization.

    ``code_shift``: the input values are ``q << code_shift`` at ``scale`` (codes moved to a
    finer grid, as the int8 kernel does). For 8/16-bit ``q`` the row differences
    ``max(q) - q`` take at most ``2**16`` values (computed modulo ``2**bits``, exact as they
    are below it), so i-exp (and its shift) is evaluated once per possible difference and
    gathered (a table, as an NPU's softmax does): the same codes as evaluating every
    element. That path carries the exp codes in float64, exact: the row sums are below
    ``2**53``, ``q_exp * factor <= 2**32`` (``q_exp <= sum``) and the shift is a power-of-two
    scaling followed by a floor.
    """
    s = _positive_scale(scale)
    if not 1 <= output_bits <= 16 or not 1 <= exp_bits <= 31:
        raise ModelError(f"softmax bit widths out of range: output {output_bits}, exp {exp_bits}")
    if not 0 <= code_shift <= 32:
        raise ModelError(f"softmax code shift {code_shift} out of range [0, 32]")
    arr = np.asarray(q)
    if arr.dtype.kind not in "iu":
        raise ModelError(f"integer-only op needs integer codes, got dtype {arr.dtype}")
    exp_shift = softmax_exp_shift(s, exp_bits)
    limit = (1 << output_bits) - 1
    if arr.size and arr.dtype.itemsize <= 2:
        unsigned = np.uint8 if arr.dtype.itemsize == 1 else np.uint16
        row_max = arr.max(axis=axis, keepdims=True)
        diff = np.subtract(row_max.view(unsigned), arr.view(unsigned))  # max - q modulo 2**bits: exact
        span = 255 if unsigned is np.uint8 else int(diff.max())
        # every index is within the table: "wrap" only skips the bounds checks
        q_exp = np.take(_softmax_exp_table(s, code_shift, exp_shift, span), diff, mode="wrap")
        last = axis % arr.ndim == arr.ndim - 1
        total = np.matmul(q_exp, np.ones((arr.shape[-1], 1))) if last else q_exp.sum(axis=axis, keepdims=True)
        factor = np.floor_divide(float(1 << 32), total)  # exact: integers below 2**53
        q_exp *= factor * 2.0 ** (output_bits - 32)
        np.floor(q_exp, out=q_exp)
        if q_exp.size and float(q_exp.max()) > limit:
            np.minimum(q_exp, limit, out=q_exp)
        return q_exp.astype(dtype), 2.0**-output_bits
    codes = arr.astype(np.int64) << code_shift
    q_exp, _ = i_exp(codes - codes.max(axis=axis, keepdims=True), s)
    q_exp >>= exp_shift
    total = q_exp.sum(axis=axis, keepdims=True)  # >= 1: the row maximum has the top code
    factor = (1 << 32) // total
    q_exp *= factor
    q_exp >>= 32 - output_bits
    if q_exp.size and int(q_exp.max()) > limit:
        np.minimum(q_exp, limit, out=q_exp)
    return q_exp.astype(dtype, copy=False), 2.0**-output_bits


def i_erf(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Integer ``erf(x)`` (I-BERT Algorithm 1, i-erf): ``sgn(q) * i_poly(min(|q|, -q_b))``.

    The output scale ``-0.2888 S**2`` is negative (as in the paper); :func:`i_gelu`
    folds the sign away.
    """
    s = _positive_scale(scale)
    a, b, c = ERF_COEFFS
    codes = _codes(q)
    q_b = math.floor(b / s)
    clipped = np.minimum(np.abs(codes), -q_b)
    q_l, scale_out = i_poly(clipped, s, a, b, c)
    return np.sign(codes) * q_l, scale_out


def i_gelu(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Integer GELU (I-BERT Algorithm 1): ``q (q_erf + floor(1 / S_erf))`` with ``q_erf`` = i-erf at ``S / sqrt2``.

    Returned with a positive scale ``-S * S_erf / 2`` (codes negated accordingly). Output
    codes are about ``|q| * 2 / (0.2888 (S / sqrt2)**2)``: below 2**31 for int8 inputs.
    """
    s = _positive_scale(scale)
    codes = _codes(q)
    q_erf, s_erf = i_erf(codes, s / math.sqrt(2.0))
    q_one = math.floor(1.0 / s_erf)
    q_out = codes * (q_erf + q_one)
    s_out = s * s_erf / 2.0
    if s_out < 0:
        return -q_out, -s_out
    return q_out, s_out


def i_sqrt(n: np.ndarray) -> np.ndarray:
    """``floor(sqrt(n))`` of non-negative integers by integer Newton iteration (I-BERT Algorithm 4).

    Starts at ``2**ceil(bits(n) / 2) >= sqrt(n)``; ``x <- (x + n // x) // 2`` decreases until
    it stops decreasing, the answer (``min(x, next)`` keeps it from then on). Vectorised: the
    loop runs over iterations (at most ~6 for 32-bit inputs), all elements at once. The
    iteration ends exactly at ``floor(sqrt(n))``; below ``2**52`` that integer is computed
    here as ``floor(sqrt(float64(n)))`` (exact there: ``n`` converts exactly and a correctly
    rounded square root cannot reach the next integer), the same result in one pass.
    """
    values = _codes(n)
    if values.size and values.min() < 0:
        raise ModelError("i-sqrt of a negative number")
    if not values.size or values.max() < 2**52:
        return np.floor(np.sqrt(values.astype(np.float64))).astype(np.int64)
    zero = values == 0
    values = np.maximum(values, 1)  # 0 is answered at the end
    x = np.left_shift(np.int64(1), (_bit_length(values) + 1) // 2)
    for _ in range(64):
        nxt = (x + values // x) >> 1
        if (nxt >= x).all():
            break
        np.minimum(x, nxt, out=x)
    return np.where(zero, 0, x)


@dataclass(frozen=True)
class LayerNormAffine:
    """LayerNorm's gamma/beta folded to integers for :func:`i_layernorm`: ``gamma_q`` (int64,
    symmetric ``gamma_bits``-bit codes at ``gamma_scale``) and ``beta_q`` (int64 at the
    output scale ``sqrt(C) / 2**30 * gamma_scale``), one entry per channel."""

    gamma_q: np.ndarray
    beta_q: np.ndarray
    gamma_scale: float


def layernorm_affine(
    gamma: np.ndarray | None, beta: np.ndarray | None, channels: int, gamma_bits: int = 16
) -> LayerNormAffine:
    """Quantize gamma/beta (float, length ``channels``; None: 1 and 0) for :func:`i_layernorm`:
    gamma symmetric to ``gamma_bits`` bits per tensor, beta at the output scale."""
    s_y = math.sqrt(channels) / 2.0**30
    g = np.ones(channels) if gamma is None else np.asarray(gamma, dtype=np.float64).reshape(-1)
    bt = np.zeros(channels) if beta is None else np.asarray(beta, dtype=np.float64).reshape(-1)
    if g.size != channels or bt.size != channels:
        raise ModelError(f"layer norm gamma/beta need {channels} values, got {g.size} and {bt.size}")
    g_max = float(np.abs(g).max())
    s_g = g_max / (2 ** (gamma_bits - 1) - 1) if g_max > 0 else 1.0
    g_q = np.rint(g / s_g).astype(np.int64)
    b_q = np.rint(bt / (s_y * s_g)).astype(np.int64)
    return LayerNormAffine(g_q, b_q, s_g)


_NARROW_SPAN = {np.dtype(np.int8): 255, np.dtype(np.uint8): 255, np.dtype(np.int16): 2**16 - 1, np.dtype(np.uint16): 2**16 - 1}


def i_layernorm(
    q: np.ndarray,
    scale: float,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    axis: int = -1,
    gamma_bits: int = 16,
    affine: LayerNormAffine | None = None,
    exact_float: bool = False,
) -> tuple[np.ndarray, float]:
    """Integer LayerNorm over ``axis`` (I-BERT section 3.6); ``eps`` is not modelled.

    ``y = C q - sum(q)`` (``C`` times the centred input, exact: the reference
    implementation's ``q - round(mean)`` loses up to half a code, 0.25 sigma for inputs of a
    few codes). Each row's ``y`` is shifted by a power of two ``t`` (right like the
    reference's overflow guard, or left for small values) so that ``|y_r| <= 2**k`` with
    ``k = (31 - ceil(log2 C)) // 2``: ``var = sum(y_r**2) <= 2**31``, ``std = i_sqrt(var)``
    (~k + 5 significant bits), ``factor = floor(2**31 / std)``, and
    ``y_n = (y * 2**t * factor) >> 1`` (for a right shift the product is taken on ``y``
    reduced to 31 bits and shifted after: a 32x32->64-bit multiply).
    ``|y_n| <= ~2**30`` at scale ``sqrt(C) / 2**30``. With ``gamma``/``beta``
    (float, length ``C``): gamma quantized symmetric to ``gamma_bits`` bits per tensor
    (scale ``S_g``), ``q_out = y_n * gamma_q + round(beta / (S_y S_g))`` at scale
    ``S_y S_g``, magnitudes up to ~2**45 (a wide accumulator; requantize to int8 next);
    ``affine`` gives them already folded (:func:`layernorm_affine`, built once per model).
    The input ``scale`` cancels in the normalisation and is only checked. Output codes are
    int64; with ``exact_float`` they may come as float64 holding the same integers, when
    every product stays below ``2**53`` (then computed in float64: the per-row multiply
    and shift as one product by ``factor * 2**(l - r - 1)`` and a floor, the affine terms
    as products and sums of exact integers; about half the time of the int64 passes).

    Widths: for 8/16-bit codes with ``C * 2**16 < 2**31`` the row passes run in int32
    (``|y| <= (C - 1) * span(q)``; ``|y_r| <= 2**15``, so ``y_r**2 <= 2**30``; ``var`` is
    summed in int64); ``y * (factor << t)`` and what follows are int64 (``factor <= 2**31``).
    """
    _positive_scale(scale)
    arr = np.asarray(q)
    if arr.dtype.kind not in "iu":
        raise ModelError(f"integer-only op needs integer codes, got dtype {arr.dtype}")
    codes = arr if axis in (-1, arr.ndim - 1) else np.moveaxis(arr, axis, -1)
    channels = codes.shape[-1]
    if channels == 0:
        raise ModelError("layer norm over an empty axis")
    span = _NARROW_SPAN.get(codes.dtype)
    work = np.int32 if span is not None and channels * (span + 1) <= 2**31 - 1 else np.int64
    rows = codes.reshape(-1, channels)  # 2-D: row-wise broadcasting is fastest there
    y = rows.astype(work)
    total = rows.sum(axis=-1, keepdims=True, dtype=work)
    y *= channels
    y -= total  # C * (q - mean), exact
    if y.size:
        peak = np.maximum(y.max(axis=-1, keepdims=True).astype(np.int64), -y.min(axis=-1, keepdims=True).astype(np.int64))
    else:
        peak = np.zeros((y.shape[0], 1), dtype=np.int64)
    bits = _bit_length(peak)
    target = (31 - (channels - 1).bit_length()) // 2
    left = np.maximum(target - bits, 0)
    right = np.maximum(bits - target, 0)
    # signed floor on right shifts, as the reference: the biases of the two signs cancel in
    # the squares. A row shifts one way only: sum((y << l)**2) = sum(y**2) << 2l.
    reduced = np.right_shift(y, right.astype(work)) if right.any() else y
    if channels < 2**22:  # |reduced| <= 2**15: each square <= 2**30, the row sums below 2**52: exact in float64
        r64 = reduced.astype(np.float64)
        var = np.vecdot(r64, r64)[:, None].astype(np.int64) << (2 * left)
    else:
        reduced = reduced * reduced if reduced is y else np.multiply(reduced, reduced, out=reduced)
        var = reduced.sum(axis=-1, keepdims=True, dtype=np.int64) << (2 * left)
    std = i_sqrt(var)
    factor = np.where(std > 0, (1 << 31) // np.maximum(std, 1), 0)
    s_y = math.sqrt(channels) / 2.0**30
    if affine is None and (gamma is not None or beta is not None):
        affine = layernorm_affine(gamma, beta, channels, gamma_bits)
    if affine is not None and affine.gamma_q.size != channels:
        raise ModelError(f"layer norm gamma/beta need {channels} values, got {affine.gamma_q.size}")
    out_scale = s_y if affine is None else s_y * affine.gamma_scale
    multiplier = factor << left
    if exact_float and y.size:
        # |y << left| < 2**max(bits, target): the product with factor (< 2**31 << left) is
        # exact in float64 while max(bits, target) + 31 <= 53; the normalised magnitude
        # times gamma, plus beta, must stay below 2**53 too
        peak_norm = int(peak.max()) * int(multiplier.max()) / 2.0 ** (int(right.min()) + 1)  # a bound
        g_max = float(np.abs(affine.gamma_q).max()) if affine is not None else 1.0
        b_max = float(np.abs(affine.beta_q).max()) if affine is not None else 0.0
        if max(int(bits.max()), target) + 31 <= 53 and (peak_norm + 1.0) * g_max + b_max < 2.0**53:
            y_f = y.astype(np.float64)
            y_f *= np.ldexp(multiplier.astype(np.float64), -(right + 1))  # a power-of-two scaling: exact
            np.floor(y_f, out=y_f)
            if affine is not None:
                y_f *= affine.gamma_q.astype(np.float64)
                y_f += affine.beta_q.astype(np.float64)
            y_f = y_f.reshape(codes.shape)
            return (y_f if axis in (-1, arr.ndim - 1) else np.moveaxis(y_f, -1, axis)), out_scale
    pre = np.maximum(bits - 31, 0)  # keep the multiplicand within 31 bits: product < 2**63
    # ((((y >> pre) << left) * factor) >> (right - pre)) >> 1, with the shifts merged
    y_norm = y.astype(np.int64)
    if pre.size and int(pre.max()) > 0:
        y_norm >>= pre
    y_norm *= multiplier
    y_norm >>= right - pre + 1
    y_norm = y_norm.reshape(codes.shape)
    if affine is not None:
        y_norm *= affine.gamma_q
        y_norm += affine.beta_q
    return np.moveaxis(y_norm, -1, axis), out_scale
