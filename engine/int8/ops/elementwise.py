"""Integer element-wise kernels: Add/Sub with both inputs rescaled to the output scale, Mul
(product of codes, requantized), Div by a scalar constant, Relu and Clip (clamps in the
code domain), Where (selection of requantized codes). Broadcasting follows numpy; all
parameters per tensor.

Add/Sub in the two rounding modes:

- ``"half_even_float"`` (onnxruntime QLinearAdd): ``y = round_half_even((a - za) * float32(s_a / s_y)
  +- (b - zb) * float32(s_b / s_y)) + zy`` in float32.
- ``"fixed_point_half_up"`` (TFLite int8 ADD): both centred inputs are shifted left by 20
  bits (15 for 16-bit codes), each is scaled by a Q31 multiplier ``s_i / (2 max(s_a, s_b))``
  (< 1), the two are added in int32 and the sum is requantized by ``2 max(s_a, s_b) / (2**20 s_y)``.
  With 8-bit inputs and output the result depends on the two codes only: it is computed
  once for all 65536 code pairs (a table per node and parameters, as exact as computing
  each element) and looked up.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    centered,
    finish_float,
    real_multiplier,
    rescale,
    saturate,
    scale32,
    tensor_params,
    zero_point,
)
from engine.quant.integer import FixedPointMultiplier, quantize_multiplier
from engine.quant.qparams import QParams


def _scaled_float(q: QTensor, ratio: np.float32) -> np.ndarray:
    """``(codes - zp) * ratio`` in float32 (a fresh array)."""
    zp = tensor_params(q.qp).zero_point32
    fc = q.codes_f32()
    if fc is not None and not zp:
        return np.multiply(fc, ratio)  # one pass: no conversion
    y = q.codes.astype(np.float32)
    if zp:
        y -= zp
    y *= ratio
    return y


TILE_ELEMENTS = 8192
"""Size of the tile a broadcast row is repeated into (see :func:`_row_tile`)."""


def _row_tile(row: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``row`` (shape ``(1, ..., 1, C)``, broadcast along every leading axis of the C-contiguous
    ``y``) repeated into a ``(k, C)`` tile of about :data:`TILE_ELEMENTS` that ``y`` viewed as
    blocks of ``k`` rows takes whole; None when that does not apply. numpy broadcasts a short
    row row by row at ~2x the cost of a contiguous operation; the values are the same."""
    c = row.shape[-1] if row.ndim else 0
    if c == 0 or row.size != c or y.ndim < 2 or y.shape[-1] != c or y.size < TILE_ELEMENTS or not y.flags.c_contiguous:
        return None
    k = max(1, TILE_ELEMENTS // c)
    if (y.size // c) % k:
        return None
    return np.ascontiguousarray(np.broadcast_to(row.reshape(c), (k, c)))


FIXED_ADD_SHIFT = {1: 20, 2: 15}
"""TFLite's left shift of the centred inputs of a fixed-point Add, by code width in bytes."""


def _scaled_fixed(q: QTensor, left: int, multiplier: FixedPointMultiplier, table: np.ndarray | None) -> np.ndarray:
    """One fixed-point Add input: ``(codes - zp) << left`` times its Q31 multiplier. For
    8-bit codes through ``table`` (the same computation done once for each of the 256
    codes, int32: ``|part| <= 2**27``); else computed (int64; ``|(codes - zp) << left| < 2**31``)."""
    if table is not None:
        return np.take(table, _code_index(q.codes), mode="wrap")  # every index is within the 256-entry table
    part, _ = multiplier(np.left_shift(centered(q, np.int32), left))
    return part


def _code_index(codes: np.ndarray) -> np.ndarray:
    """8-bit codes as table indices 0..255 (uint8; int8 offset by 128)."""
    return codes.view(np.uint8) ^ np.uint8(0x80) if codes.dtype == np.int8 else codes


def _fixed_table(q: QTensor, left: int, multiplier: FixedPointMultiplier) -> np.ndarray | None:
    """The fixed-point Add input stage for every 8-bit code of ``q``'s dtype (index: the code
    as unsigned, int8 offset by 128), or None for wider codes."""
    if q.codes.dtype.itemsize != 1:
        return None
    info = np.iinfo(q.codes.dtype)
    every = np.arange(info.min, info.max + 1, dtype=np.int32)
    part, _ = multiplier(np.left_shift(every - np.int32(tensor_params(q.qp).zero_point), left))
    return part.astype(np.int32)


class AddSubKernel(IntKernel):
    """``a + b`` or ``a - b`` of two quantized tensors with different scales, into the output
    parameters (see the module doc for the two roundings); what depends only on the
    parameters (ratios, Q31 multipliers, the output requantizer) and a constant input's
    scaled values are prepared once."""

    subtract: ClassVar[bool] = False

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        pa, pb, po = tensor_params(a.qp), tensor_params(b.qp), tensor_params(out)
        op = np.subtract if self.subtract else np.add
        if self.rounding == "half_even_float":
            ratios = self.prepared("ratios", (a.qp, b.qp, out), lambda: (np.float32(pa.scale / po.scale), np.float32(pb.scale / po.scale)))
            ta, tb = (self._part(i, q, lambda q=q, r=r: _scaled_float(q, r), (a.qp, b.qp, out)) for i, q, r in ((0, a, ratios[0]), (1, b, ratios[1])))
            if ta.flags.writeable and ta.base is None and ta.shape == np.broadcast_shapes(ta.shape, tb.shape) and not self._is_cached(0, ta):
                y = ta
                if self._is_cached(1, tb):  # a constant's tile is kept with it
                    tiled = self.prepared("tile", (tb, ta.shape), lambda: _row_tile(tb, ta))
                else:
                    tiled = _row_tile(tb, ta)
                if tiled is not None:  # tb repeats one row (a bias, a mask): the same sums, tiled
                    blocks = ta.reshape(-1, *tiled.shape)
                    op(blocks, tiled, out=blocks)
                else:
                    op(ta, tb, out=ta)
            else:
                y = op(ta, tb)
            return (finish_float(y, out),)
        if a.codes.dtype.itemsize == 1 and b.codes.dtype.itemsize == 1 and po.dtype.itemsize == 1:
            return (self._fixed_by_pairs(a, b, out),)
        return (self._fixed(a, b, out),)

    def _fixed(self, a: QTensor, b: QTensor, out: QParams, slot: str = "") -> QTensor:
        """The fixed-point Add/Sub computed on the codes (see the module doc)."""
        pa, pb, po = tensor_params(a.qp), tensor_params(b.qp), tensor_params(out)
        op = np.subtract if self.subtract else np.add
        wide = max(a.codes.dtype.itemsize, b.codes.dtype.itemsize) > 1
        left = FIXED_ADD_SHIFT[2 if wide else 1]
        twice_max = 2.0 * max(float(pa.scale), float(pb.scale))

        def stage(q: QTensor, scale: np.float32) -> tuple[FixedPointMultiplier, np.ndarray | None]:
            m, e = quantize_multiplier(float(scale) / twice_max)
            multiplier = FixedPointMultiplier(m, e)
            return multiplier, _fixed_table(q, left, multiplier)

        stages = self.prepared("stages" + slot, (a.qp, b.qp, left), lambda: (stage(a, pa.scale), stage(b, pb.scale)))
        if slot:  # the pair table: every code against every code, nothing constant
            sa, sb = _scaled_fixed(a, left, *stages[0]), _scaled_fixed(b, left, *stages[1])
        else:
            sa, sb = (
                self._part(i, q, lambda q=q, st=st: _scaled_fixed(q, left, *st), (a.qp, b.qp, out))
                for i, q, st in ((0, a, stages[0]), (1, b, stages[1]))
            )
        # 8-bit inputs: int32 parts (|sum| <= 2**28); else int64
        total = op(sa, sb) if sa.dtype == sb.dtype else op(sa.astype(np.int64), sb.astype(np.int64))
        requantize = self.requantizer((a.qp, b.qp, left), lambda: twice_max / (float(1 << left) * float(po.scale)), out, slot=slot)
        return requantize(total)

    def _fixed_by_pairs(self, a: QTensor, b: QTensor, out: QParams) -> QTensor:
        """The fixed-point Add/Sub of 8-bit codes into 8-bit codes through a table of all
        65536 code pairs (each entry computed by :meth:`_fixed`, so the same codes), the
        entries kept unsaturated within ``[qmin - 1, qmax + 1]`` so that the values the
        output saturates are counted as :meth:`_fixed` counts them."""
        po = tensor_params(out)
        table = self.prepared("pairs", (a.qp, b.qp, out), lambda: self._pair_table(a, b, out))
        index = np.left_shift(_code_index(a.codes).astype(np.uint16), 8)
        index = np.bitwise_or(index, _code_index(b.codes), out=index if index.shape == np.broadcast_shapes(index.shape, b.codes.shape) else None)
        y = np.take(table, index, mode="wrap")  # every index is within the 65536-entry table
        clipped = 0
        if y.size:
            clipped = saturate(y, int(y.min()), int(y.max()), po.qmin, po.qmax)
        return QTensor(y.astype(po.dtype), out, clipped)

    def _pair_table(self, a: QTensor, b: QTensor, out: QParams) -> np.ndarray:
        """int16 results of every (a code, b code) pair (index ``a << 8 | b`` over the codes
        as unsigned, int8 offset by 128), clamped to ``[qmin - 1, qmax + 1]``."""
        po = tensor_params(out)
        codes_a = (np.arange(256, dtype=np.int16) - (128 if a.codes.dtype == np.int8 else 0)).astype(a.codes.dtype)
        codes_b = (np.arange(256, dtype=np.int16) - (128 if b.codes.dtype == np.int8 else 0)).astype(b.codes.dtype)
        every_a = QTensor(np.repeat(codes_a, 256), a.qp)
        every_b = QTensor(np.tile(codes_b, 256), b.qp)
        wide = QParams(out.scale, out.zero_point, "int16", None, -(2**15), 2**15 - 1)
        values = self._fixed(every_a, every_b, wide, slot="pairs").codes.astype(np.int32)
        return np.clip(values, po.qmin - 1, po.qmax + 1).astype(np.int16)

    def _part(self, index: int, q: QTensor, build: Callable[[], np.ndarray], params: tuple[QParams, ...]) -> np.ndarray:
        """One scaled input: built once for a constant input (per the parameters it depends
        on), else per call."""
        if self.constant(index, q) is None:
            return build()
        return self.prepared(index, (q,) + params, build)

    def _is_cached(self, index: int, array: np.ndarray) -> bool:
        entry = self._prepared.get(index)
        return entry is not None and entry[1] is array


@register_int
class Add(AddSubKernel):
    """``a + b``, each input rescaled to the output scale (a residual Add's two branches)."""

    op_type = "Add"


@register_int
class Sub(AddSubKernel):
    """``a - b``, each input rescaled to the output scale."""

    op_type = "Sub"
    subtract = True


@register_int
class Mul(IntKernel):
    """``a * b``: the exact product of centred codes (int32 for 8-bit codes), requantized by
    ``s_a s_b / s_y``."""

    op_type = "Mul"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        wide = max(a.codes.dtype.itemsize, b.codes.dtype.itemsize) > 1
        acc = centered(a, np.int64 if wide else np.int32) * centered(b, np.int64 if wide else np.int32)
        requantize = self.requantizer((a.qp, b.qp), lambda: real_multiplier(scale32(a.qp), scale32(b.qp), out=out), out)
        return (requantize(acc),)


@register_int
class Relu(IntKernel):
    """``max(x, 0)``: codes clamped at the input zero point, then moved to the output parameters."""

    op_type = "Relu"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        if x.qp.per_channel:
            _, zp = x.qp.broadcast(x.codes.ndim)
            clamped = QTensor(np.maximum(x.codes, zp.astype(x.codes.dtype)), x.qp)
        else:
            zp0 = tensor_params(x.qp).zero_point
            clamped = QTensor(np.maximum(x.codes, x.codes.dtype.type(zp0)), x.qp)
        return (rescale(clamped, out_params[0], self.rounding),)


@register_int
class Clip(IntKernel):
    """Clamp to ``[min, max]``: the bounds quantized to input codes (round half to even, as
    quantizing the clipped float would), the codes clamped, then moved to the output parameters."""

    op_type = "Clip"
    float_inputs = frozenset({1, 2})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        if x.qp.per_channel:
            raise NotInteger("Clip input per channel")
        if self.opset < 11:
            lo, hi = self.attr("min", None), self.attr("max", None)
        else:
            lo = inputs[1] if len(inputs) > 1 else None
            hi = inputs[2] if len(inputs) > 2 else None
        s, zp = float(scale32(x.qp)), zero_point(x.qp)
        codes = x.codes
        lo_c = x.qp.qmin if lo is None else int(np.clip(np.rint(np.float32(np.asarray(lo)) / np.float32(s)) + zp, x.qp.qmin, x.qp.qmax))
        hi_c = x.qp.qmax if hi is None else int(np.clip(np.rint(np.float32(np.asarray(hi)) / np.float32(s)) + zp, x.qp.qmin, x.qp.qmax))
        lo_c = min(lo_c, hi_c)  # ONNX: min > max makes every element max
        clamped = QTensor(np.clip(codes, lo_c, hi_c).astype(codes.dtype), x.qp)
        return (rescale(clamped, out_params[0], self.rounding),)


@register_int
class Div(IntKernel):
    """``a / c`` by a scalar constant (attention's ``/ sqrt(d)``): a requantization of the
    centred codes by ``s_a / (|c| s_y)`` (negated for ``c < 0``). Division by a tensor has no
    integer kernel (NotInteger: float fallback)."""

    op_type = "Div"
    float_inputs = frozenset({1})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a = qinput(inputs[0], "input A")
        out = out_param(out_params)
        divisor = np.asarray(inputs[1], dtype=np.float64)
        if divisor.size != 1 or not np.isfinite(divisor).all() or divisor.reshape(-1)[0] == 0:
            raise NotInteger("Div by a non-scalar, zero or non-finite divisor")
        c = float(divisor.reshape(-1)[0])
        acc = centered(a) if c > 0 else -centered(a)
        y = self.requantizer((a.qp, c), lambda: real_multiplier(scale32(a.qp), out=out) / abs(c), out)(acc)
        shape = np.broadcast_shapes(a.codes.shape, divisor.shape)
        return (QTensor(np.broadcast_to(y.codes, shape).copy() if y.codes.shape != shape else y.codes, out, y.clipped),)


@register_int
class Where(IntKernel):
    """``condition ? x : y`` on codes: both branches requantized to the output's QParams, then
    selected (the bool condition flows as it is)."""

    op_type = "Where"

    def const_params(self, index: int, value: np.ndarray, out_params: Sequence[QParams | None]) -> QParams | None:
        return out_params[0] if index > 0 and out_params else None

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        condition = inputs[0]
        if isinstance(condition, QTensor) or condition is None:
            raise NotInteger("Where with a non-bool condition")
        out = out_param(out_params)
        x = rescale(qinput(inputs[1], "input X"), out, self.rounding)
        y = rescale(qinput(inputs[2], "input Y"), out, self.rounding)
        codes = np.where(np.asarray(condition, dtype=bool), x.codes, y.codes)
        return (QTensor(np.asarray(codes, dtype=x.codes.dtype), out, x.clipped + y.clipped),)
