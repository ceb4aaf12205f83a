"""Integer-only non-linear ops from I-BERT (Kim et al., "I-BERT: Integer-only BERT
Quantization", ICML 2021), for NPUs without float units.

Every function takes integer codes ``q`` with their float ``scale`` (value ``x = q * scale``)
and returns ``(q_out, scale_out)``; at run time only integer adds, multiplies, shifts and
one integer division per row are used. The float work (``floor(b / scale)`` and the like)
depends on the scale only: it is folded into constants when the model is compiled.
Codes are int64 arrays (an NPU would use int32 accumulators; magnitudes are stated per
function).

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

import math

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


def i_softmax(
    q: np.ndarray, scale: float, axis: int = -1, output_bits: int = 8, exp_bits: int = 16
) -> tuple[np.ndarray, float]:
    """Integer Softmax along ``axis`` (I-BERT Algorithm 3); output unsigned at scale ``2**-output_bits``.

    ``q - max(q)``, i-exp, the exp codes shifted right by a constant (from the scale) so
    they fit ``exp_bits`` bits (the reference implementation requantizes them to 16 bits),
    then ``factor = floor(2**32 / sum)`` and ``q_out = (q_exp * factor) >> (32 - output_bits)``,
    saturated to ``2**output_bits - 1`` (reached only when one element takes ~all the mass).
    """
    s = _positive_scale(scale)
    if not 1 <= output_bits <= 16 or not 1 <= exp_bits <= 31:
        raise ModelError(f"softmax bit widths out of range: output {output_bits}, exp {exp_bits}")
    codes = _codes(q)
    q_exp, _ = i_exp(codes - codes.max(axis=axis, keepdims=True), s)
    q_b = math.floor(EXP_COEFFS[1] / s)
    top = q_b * q_b + math.floor(EXP_COEFFS[2] / (EXP_COEFFS[0] * s * s))  # i_poly at p = 0: the largest code
    q_exp = q_exp >> max(0, top.bit_length() - exp_bits)
    total = q_exp.sum(axis=axis, keepdims=True)  # >= 1: the row maximum has the top code
    factor = (1 << 32) // total
    q_out = (q_exp * factor) >> (32 - output_bits)
    return np.minimum(q_out, (1 << output_bits) - 1), 2.0**-output_bits


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
    it stops decreasing, the answer. Vectorised: the loop runs over iterations (at most
    ~6 for 32-bit inputs), all elements at once.
    """
    values = _codes(n)
    if values.size and values.min() < 0:
        raise ModelError("i-sqrt of a negative number")
    x = np.left_shift(np.int64(1), (_bit_length(values) + 1) // 2)
    for _ in range(64):
        nxt = (x + values // x) // 2
        done = (nxt >= x) | (values == 0)
        if done.all():
            break
        x = np.where(done, x, nxt)
    return np.where(values == 0, 0, x)


def i_layernorm(
    q: np.ndarray,
    scale: float,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    axis: int = -1,
    gamma_bits: int = 16,
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
    ``S_y S_g``, magnitudes up to ~2**45 (a wide accumulator; requantize to int8 next).
    The input ``scale`` cancels in the normalisation and is only checked.
    """
    _positive_scale(scale)
    codes = np.moveaxis(_codes(q), axis, -1)
    channels = codes.shape[-1]
    if channels == 0:
        raise ModelError("layer norm over an empty axis")
    y = channels * codes - codes.sum(axis=-1, keepdims=True)  # C * (q - mean), exact
    bits = _bit_length(np.abs(y).max(axis=-1, keepdims=True))
    target = (31 - (channels - 1).bit_length()) // 2
    left = np.maximum(target - bits, 0)
    right = np.maximum(bits - target, 0)
    # signed floor on right shifts, as the reference: the biases of the two signs cancel in the squares
    reduced = (y << left) >> right
    var = (reduced * reduced).sum(axis=-1, keepdims=True)
    std = i_sqrt(var)
    factor = np.where(std > 0, (1 << 31) // np.maximum(std, 1), 0)
    pre = np.maximum(bits - 31, 0)  # keep the multiplicand within 31 bits: product < 2**63
    y_norm = ((((y >> pre) << left) * factor) >> (right - pre)) >> 1
    s_y = math.sqrt(channels) / 2.0**30
    if gamma is None and beta is None:
        return np.moveaxis(y_norm, -1, axis), s_y
    g = np.ones(channels) if gamma is None else np.asarray(gamma, dtype=np.float64).reshape(-1)
    bt = np.zeros(channels) if beta is None else np.asarray(beta, dtype=np.float64).reshape(-1)
    if g.size != channels or bt.size != channels:
        raise ModelError(f"layer norm gamma/beta need {channels} values, got {g.size} and {bt.size}")
    g_max = float(np.abs(g).max())
    s_g = g_max / (2 ** (gamma_bits - 1) - 1) if g_max > 0 else 1.0
    g_q = np.rint(g / s_g).astype(np.int64)
    b_q = np.rint(bt / (s_y * s_g)).astype(np.int64)
    return np.moveaxis(y_norm * g_q + b_q, -1, axis), s_y * s_g
