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
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    centered,
    finish_float,
    real_multiplier,
    requantize_acc,
    requantize_fixed,
    rescale,
    scale32,
    zero_point,
)
from engine.quant.integer import INT32_MAX, INT32_MIN
from engine.quant.qparams import QParams


def _scaled_float(q: QTensor, ratio: np.float32) -> np.ndarray:
    """``(codes - zp) * ratio`` in float32 (a fresh array)."""
    y = q.codes.astype(np.float32)
    zp = zero_point(q.qp)
    if zp:
        y -= np.float32(zp)
    y *= ratio
    return y


def add_rescaled(a: QTensor, b: QTensor, out: QParams, rounding: str, subtract: bool = False) -> QTensor:
    """``a + b`` (or ``a - b``) of two quantized tensors with different scales, into ``out``."""
    sa, sb, so = scale32(a.qp), scale32(b.qp), scale32(out)
    if rounding == "half_even_float":
        ta = _scaled_float(a, np.float32(sa / so))
        tb = _scaled_float(b, np.float32(sb / so))
        op = np.subtract if subtract else np.add
        if ta.shape == np.broadcast_shapes(ta.shape, tb.shape):
            y = op(ta, tb, out=ta)
        else:
            y = op(ta, tb)
        return finish_float(y, out)
    da, db = centered(a), centered(b)
    wide = max(a.codes.dtype.itemsize, b.codes.dtype.itemsize) > 1
    left = 15 if wide else 20
    twice_max = 2.0 * max(float(sa), float(sb))
    scaled = []
    for d, s in ((da, sa), (db, sb)):
        part, _ = requantize_fixed(d.astype(np.int64) << left, float(s) / twice_max, 0, INT32_MIN, INT32_MAX)
        scaled.append(part)
    total = scaled[0] - scaled[1] if subtract else scaled[0] + scaled[1]
    return requantize_acc(total, twice_max / (float(1 << left) * float(so)), out, rounding)


@register_int
class Add(IntKernel):
    """``a + b``, each input rescaled to the output scale (a residual Add's two branches)."""

    op_type = "Add"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        return (add_rescaled(a, b, out_param(out_params), self.rounding),)


@register_int
class Sub(IntKernel):
    """``a - b``, each input rescaled to the output scale."""

    op_type = "Sub"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        return (add_rescaled(a, b, out_param(out_params), self.rounding, subtract=True),)


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
        return (requantize_acc(acc, real_multiplier(scale32(a.qp), scale32(b.qp), out=out), out, self.rounding),)


@register_int
class Relu(IntKernel):
    """``max(x, 0)``: codes clamped at the input zero point, then moved to the output parameters."""

    op_type = "Relu"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        _, zp = x.qp.broadcast(x.codes.ndim)
        clamped = QTensor(np.maximum(x.codes, zp.astype(x.codes.dtype)), x.qp)
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
        multiplier = real_multiplier(scale32(a.qp), out=out) / abs(c)
        y = requantize_acc(acc, multiplier, out, self.rounding)
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
