"""Quantized tensors and the requantization steps every integer kernel shares.

A quantized tensor is its integer codes plus its :class:`QParams` (value ``(q - zp) * scale``).
Integer kernels compute an exact integer accumulator (int32, int64 where a sum can grow
past int32, or float32 holding exact integers below ``2**24``) at a known real scale and
finish with a :class:`Requantizer` (kept per node; :func:`requantize_acc` for a one-off):
the real multiplier ``acc_scale / out_scale`` applied as the plan's rounding mode does it
(``"half_even_float"``: float32 multiply and round half to even, as onnxruntime;
``"fixed_point_half_up"``: Q31 multiplier and shift, as gemmlowp/TFLite), then the output
zero point and saturation to ``[qmin, qmax]``, counting the values clipped. Per-tensor
parameters as plain numbers (:func:`tensor_params`) and the requantizers of
:func:`rescale` are memoised per QParams object: the plan's are the same objects every run.

Multipliers are formed in float32 arithmetic (``float32(s_in) * float32(s_w) / float32(s_out)``)
as onnxruntime forms them, so the float rounding mode reproduces its QLinear kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.errors import ModelError
from engine.int8.plan import same_params
from engine.quant.integer import (
    INT32_MAX,
    INT32_MIN,
    ROUNDINGS,
    FixedPointMultiplier,
    fixed_point_multiply,
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
    values saturated when these codes were produced (0 for pass-through results).

    ``float_codes``: the same codes as float32 (exact), when the producer had them anyway (a
    float requantization rounds and saturates in float32 before the integer cast); readers
    that need the codes in float32 use them instead of converting again, and never write
    to them. None for codes made any other way."""

    codes: np.ndarray
    qp: QParams
    clipped: int = 0
    float_codes: np.ndarray | None = field(default=None, repr=False, compare=False)

    def codes_f32(self) -> np.ndarray | None:
        """``float_codes`` when present and of the codes' shape (read only), else None."""
        fc = self.float_codes
        return fc if fc is not None and fc.shape == self.codes.shape else None

    def dequantize(self) -> np.ndarray:
        """``(codes - zero_point) * scale`` as float32 (equal to :func:`engine.quant.qparams.dequantize`:
        the centred codes are exact in float32, then one float32 product)."""
        if self.qp.per_channel:
            return dequantize(self.codes, self.qp)
        params = tensor_params(self.qp)
        fc = self.codes_f32()
        if fc is not None and not params.zero_point:
            return np.multiply(fc, params.scale)  # one pass: no conversion
        y = exact_float(self)
        y *= params.scale
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
    if qp.per_channel and x.dtype.kind == "f" and x.ndim:
        return _quantize_per_channel(x, qp)
    if qp.per_channel or x.dtype.kind != "f":
        codes, clipped = quantize(x, qp)
        return QTensor(codes, qp, clipped)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = np.divide(x, scale32(qp), dtype=np.float32)
        return finish_float(y, qp)


def _quantize_per_channel(x: np.ndarray, qp: QParams) -> QTensor:
    """:func:`engine.quant.qparams.quantize` of a float tensor with per-channel ``qp``, in
    float32 passes (no float64 copy): ``rint(x / scale)`` as there, plus the zero point in
    float32, exact for every value that is not saturated anyway (beyond 2**24 a sum may
    round, but never back inside ``[qmin, qmax]``: rounding is monotonic). Weights take
    this path once per executor (it took ~20 ns per value in float64)."""
    scale, zero_point = qp.broadcast(x.ndim)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = np.divide(x, scale, dtype=np.float32)
    np.rint(y, out=y)
    if np.any(zero_point):
        y += zero_point.astype(np.float32)
    clipped = 0
    if y.size:
        lo, hi = float(y.min()), float(y.max())
        if math.isnan(lo):  # NaN -> the channel's zero point, counted
            nan = np.isnan(y)
            clipped = int(np.count_nonzero(nan | (y < qp.qmin) | (y > qp.qmax)))
            np.clip(y, qp.qmin, qp.qmax, out=y)
            np.copyto(y, np.broadcast_to(zero_point, y.shape).astype(np.float32), where=nan)
        else:
            clipped = saturate(y, lo, hi, qp.qmin, qp.qmax)
    # no float_codes: these are mostly weights, cached for the executor's life (4 bytes a value)
    return QTensor(y.astype(DTYPES[qp.dtype]), qp, clipped)


@dataclass(frozen=True)
class TensorParams:
    """Per-tensor QParams as plain numbers: ``scale`` as float32, the ``zero_point`` (also as
    float32, exact), the code range and the codes' numpy dtype."""

    scale: np.float32
    zero_point: int
    zero_point32: np.float32
    qmin: int
    qmax: int
    dtype: np.dtype


_TENSOR_PARAMS: dict[int, tuple[QParams, TensorParams]] = {}
_TENSOR_PARAMS_LIMIT = 4096


def tensor_params(qp: QParams) -> TensorParams:
    """:class:`TensorParams` of per-tensor ``qp`` (NotInteger for per-channel ones), memoised
    per QParams object (the plan's QParams are the same objects every run)."""
    entry = _TENSOR_PARAMS.get(id(qp))
    if entry is not None and entry[0] is qp:
        return entry[1]
    if qp.per_channel:
        raise NotInteger("per-channel QParams where per-tensor ones are needed")
    zp = int(np.asarray(qp.zero_point).reshape(-1)[0])
    params = TensorParams(
        np.float32(np.asarray(qp.scale).reshape(-1)[0]), zp, np.float32(zp), int(qp.qmin), int(qp.qmax), np.dtype(DTYPES[qp.dtype])
    )
    if len(_TENSOR_PARAMS) >= _TENSOR_PARAMS_LIMIT:
        _TENSOR_PARAMS.clear()
    _TENSOR_PARAMS[id(qp)] = (qp, params)  # holding qp keeps its id from being reused
    return params


def zero_point(qp: QParams) -> int:
    """The zero point of per-tensor parameters (NotInteger for per-channel ones)."""
    return tensor_params(qp).zero_point


def scale32(qp: QParams) -> np.float32:
    """The per-tensor scale as float32 (NotInteger for per-channel parameters)."""
    return tensor_params(qp).scale


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
    """Integer accumulator at real scale ``multiplier * out_scale`` -> codes of ``out``
    (:class:`Requantizer` built for this one call; kernels keep theirs)."""
    return Requantizer(multiplier, out, rounding, axis)(acc)


TILE_ELEMENTS = 8192
"""Size of the tile a per-column multiplier is repeated into (see :meth:`Requantizer._scale_float`)."""


class Requantizer:
    """The requantization of integer accumulators at real scale ``multiplier * out_scale``
    to codes of ``out``, with everything that depends only on the multiplier, ``out``,
    ``rounding`` and ``axis`` prepared once (a kernel keeps one per node and parameters).

    ``multiplier`` is a non-negative float or a 1-d array (per channel along ``axis`` of
    the accumulator). The accumulator is an integer array, or a float32 array holding
    exact integers (see :func:`exact_float`; overwritten). The float mode computes
    ``float32(acc) * float32(multiplier)`` whatever the accumulator's width. The
    fixed-point mode works on int32: an accumulator beyond int32 (an int32 bias plus
    products, I-BERT's wide LayerNorm output) is first divided by ``2**t`` with rounding
    half away from zero so it fits 30 bits and the multiplier takes the ``2**t`` (the
    output stage of a wide accumulator); a multiplier below :data:`MIN_Q31_MULTIPLIER`
    pre-shifts the accumulator the same way (a constant shift, prepared).
    """

    def __init__(self, multiplier: float | np.ndarray, out: QParams, rounding: str, axis: int = -1) -> None:
        if out.per_channel:
            raise NotInteger("per-channel QParams on an activation output")
        check_rounding(rounding)
        self.out = out
        self.rounding = rounding
        self.axis = axis
        self.params = tensor_params(out)
        self.multiplier = np.asarray(multiplier, dtype=np.float64)
        self._m32 = self.multiplier.astype(np.float32)
        self._shaped: dict[int, np.ndarray] = {}
        positive = np.atleast_1d(self.multiplier)[np.atleast_1d(self.multiplier) > 0]
        self.min_shift = 0
        if positive.size and positive.min() < MIN_Q31_MULTIPLIER:
            # a Q31 multiplier below 2**-30 would lose its bits: move them into a pre-shift
            self.min_shift = math.ceil(math.log2(MIN_Q31_MULTIPLIER / float(positive.min())))
        self._fixed: FixedPointMultiplier | None = None

    def _scale_float(self, y: np.ndarray) -> None:
        """``y *= float32(multiplier)`` in place (per channel along ``axis``). A per-channel
        multiplier along the LAST axis is applied as a tile of :data:`TILE_ELEMENTS` rows of
        it against ``y`` viewed as blocks of those rows (numpy's row-by-row broadcasting of
        a short vector costs ~2x a contiguous product); the same products either way."""
        m = self._m32
        if not m.ndim:
            y *= m
            return
        ndim = y.ndim
        if self.axis % ndim == ndim - 1 and y.size >= TILE_ELEMENTS:
            rows = max(1, TILE_ELEMENTS // m.size)
            if (y.size // m.size) % rows == 0 and y.flags.c_contiguous:
                tile = self._shaped.get(-rows)
                if tile is None:
                    tile = self._shaped[-rows] = np.ascontiguousarray(np.broadcast_to(m, (rows, m.size)))
                blocks = y.reshape(-1, rows, m.size)
                np.multiply(blocks, tile, out=blocks)
                return
        shaped = self._shaped.get(ndim)
        if shaped is None:
            shape = [1] * ndim
            shape[self.axis % ndim] = m.size
            shaped = self._shaped[ndim] = m.reshape(shape)
        y *= shaped

    def __call__(self, acc: np.ndarray) -> QTensor:
        acc = np.asarray(acc)
        if acc.dtype == np.float32:  # an exact accumulator held in float32 (|acc| <= 2**24, see exact_float)
            if self.rounding == "half_even_float":
                self._scale_float(acc)
                return finish_float(acc, self.out)
        elif acc.dtype == np.float64:  # exact integers below 2**53 (I-BERT LayerNorm's wide accumulator)
            if self.rounding != "half_even_float":
                acc = acc.astype(np.int64)
            else:
                y = acc.astype(np.float32)  # rounds as the int64 -> float32 cast of the same integers
                self._scale_float(y)
                return finish_float(y, self.out)
        elif acc.dtype.kind not in "iu":
            raise ModelError(f"requantization needs integer accumulators, got {acc.dtype}")
        if acc.dtype.kind in "iu" and self.rounding == "half_even_float":
            y = acc.astype(np.float32)
            self._scale_float(y)
            return finish_float(y, self.out)
        shift = self.min_shift if acc.size else 0
        if acc.size and acc.dtype.kind in "iu" and acc.dtype.itemsize > 4:
            lo, hi = int(acc.min()), int(acc.max())
            if lo < INT32_MIN or hi > INT32_MAX:
                shift = max(shift, max(abs(lo), abs(hi)).bit_length() - 30)
        if shift > 0:
            acc = rounding_divide_by_pot(acc.astype(np.int64, copy=False), shift)
        if shift == self.min_shift:
            if self._fixed is None:
                self._fixed = self._fixed_point(shift)
            fixed = self._fixed
        else:
            fixed = self._fixed_point(shift)
        codes, clipped = fixed(acc, self.params.qmin, self.params.qmax)
        return QTensor(codes.astype(self.params.dtype), self.out, clipped)

    def _fixed_point(self, shift: int) -> FixedPointMultiplier:
        """The fixed-point multiplier for ``multiplier * 2**shift`` (a pre-shifted accumulator)."""
        q31, exponent = quantize_multiplier(self.multiplier * float(2**shift))
        return FixedPointMultiplier(q31, exponent, self.params.zero_point, self.axis)


def requantize_fixed(
    acc: np.ndarray, mult: np.ndarray | float, zp: int, qmin: int, qmax: int, axis: int = -1
) -> tuple[np.ndarray, int]:
    """The ``"fixed_point_half_up"`` requantization of a real multiplier (1-d: per channel
    along ``axis``): :func:`engine.quant.integer.quantize_multiplier`, then
    :func:`engine.quant.integer.fixed_point_multiply` (TFLite ``MultiplyByQuantizedMultiplier``,
    zero point, saturation): (int64 codes, number saturated). ``acc`` holds int32 values."""
    q31, exponent = quantize_multiplier(np.asarray(mult, dtype=np.float64))
    return fixed_point_multiply(acc, q31, exponent, zp, qmin, qmax, axis)


def saturate(values: np.ndarray, lo: float, hi: float, qmin: int, qmax: int) -> int:
    """Clamp ``values`` (no NaN; ``lo``/``hi`` its min/max) to ``[qmin, qmax]`` in place;
    returns how many were outside. Only the violated side is counted and clamped."""
    clipped = 0
    flat = values.reshape(-1) if values.flags.c_contiguous else None
    if hi > qmax:
        if flat is not None:  # few values clip: set those, no pass writing every element
            over = np.flatnonzero(flat > qmax)
            flat[over] = qmax
            clipped += int(over.size)
        else:
            clipped += int(np.count_nonzero(values > qmax))
            np.minimum(values, qmax, out=values)
    if lo < qmin:
        if flat is not None:
            under = np.flatnonzero(flat < qmin)
            flat[under] = qmin
            clipped += int(under.size)
        else:
            clipped += int(np.count_nonzero(values < qmin))
            np.maximum(values, qmin, out=values)
    return clipped


def finish_float(y: np.ndarray, out: QParams) -> QTensor:
    """float32 values in output-step units -> codes of ``out``: round half to even, add the
    zero point, saturate to ``[qmin, qmax]`` (counting the values clipped, NaN to the zero
    point and counted) and cast. ``y`` is overwritten."""
    if not isinstance(y, np.ndarray):  # numpy returns scalars for 0-d operands
        y = np.array(y, dtype=np.float32)
    p = tensor_params(out)
    np.rint(y, out=y)
    if p.zero_point:
        y += p.zero_point32
    clipped = 0
    if y.size:
        lo, hi = float(y.min()), float(y.max())
        if math.isnan(lo):  # NaN (it propagates through min/max): counted, then the zero point
            clipped = int(np.count_nonzero(~((y >= p.qmin) & (y <= p.qmax))))  # NaN compares false, silently
            np.clip(y, p.qmin, p.qmax, out=y)
            y[np.isnan(y)] = p.zero_point
        else:
            clipped = saturate(y, lo, hi, p.qmin, p.qmax)
    return QTensor(y.astype(p.dtype), out, clipped, float_codes=y)


EXACT_FLOAT_LIMIT = 2**24
"""Integers below this magnitude are exact in float32: accumulators known to stay below it
(centred 8/16-bit codes, their sums with a small int32 bias) are held in float32, which
the float rounding mode multiplies without a conversion pass."""


def exact_float(q: QTensor) -> np.ndarray:
    """``codes - zero_point`` as float32 (exact: codes are at most 16-bit), per-channel aware;
    a fresh array."""
    fc = q.codes_f32()
    y = q.codes.astype(np.float32) if fc is None else fc.copy()
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


_RESCALERS: dict[tuple[int, int, str], tuple[QParams, QParams, Requantizer | None]] = {}


def rescale(q: QTensor, out: QParams | None, rounding: str) -> QTensor:
    """Codes of ``q`` moved to the parameters ``out`` (integer requantization by
    ``s_in / s_out``); the same codes when ``out`` is None or equal to ``q``'s. ``clipped``
    counts only what this step saturates. The requantizer is memoised per pair of QParams
    objects (the plan's, the same every run)."""
    if out is None:
        return QTensor(q.codes, q.qp, 0)
    key = (id(q.qp), id(out), rounding)
    entry = _RESCALERS.get(key)
    if entry is None or entry[0] is not q.qp or entry[1] is not out:
        requantizer = None
        if not same_params(q.qp, out):
            if q.qp.per_channel:
                raise NotInteger("per-channel QParams cannot be rescaled to other parameters")
            requantizer = Requantizer(float(scale32(q.qp) / scale32(out)), out, rounding)
        if len(_RESCALERS) >= _TENSOR_PARAMS_LIMIT:
            _RESCALERS.clear()
        entry = _RESCALERS[key] = (q.qp, out, requantizer)  # holding both keeps their ids from being reused
    if entry[2] is None:
        return QTensor(q.codes, out, 0)
    return entry[2](centered_acc(q, rounding))


def add_bias(acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``acc + bias`` of an exact product accumulator (int32, or float32 holding exact
    integers) and an int64 bias (already broadcastable, no larger than ``acc``), exactly:
    in float32 while ``max|acc| + max|bias| <= 2**24`` (``acc`` is then overwritten), else
    int32 while that sum fits int32, else int64 (the wide path). One min/max pass over ``acc``."""
    b_max = int(np.abs(bias).max()) if bias.size else 0
    a_max = max(-int(acc.min()), int(acc.max())) if acc.size else 0
    if acc.dtype == np.float32:
        if a_max + b_max <= EXACT_FLOAT_LIMIT:
            if np.broadcast_shapes(acc.shape, bias.shape) == acc.shape:
                acc += bias.astype(np.float32)
                return acc
            return acc + bias.astype(np.float32)
        acc = acc.astype(np.int32)
    if a_max + b_max <= INT32_MAX:
        return acc.astype(np.int32, copy=False) + bias.astype(np.int32)
    return acc.astype(np.int64) + bias


def real_multiplier(*scales_over: np.ndarray | float, out: QParams) -> np.ndarray:
    """``prod(scales) / out_scale`` in float32 arithmetic, returned as float64 (exact copies of
    the float32 values); scales may be per-channel arrays."""
    product = np.float32(1.0)
    for s in scales_over:
        product = product * np.asarray(s, dtype=np.float32)
    return np.asarray(product / scale32(out), dtype=np.float64)
