"""Integer MatMul and Gemm: int8 x int8 products accumulated exactly in int32 (``int_matmul``),
an int32 bias at scale ``s_a * s_b``, one requantization to the output.

Weights may be per channel along the output axis (MatMul B: its last axis, one scale per
output column; MatMul A as the weight: its rows; Gemm B: axis 0 with ``transB`` else 1):
the multiplier is then per output channel. Zero points are folded by ``int_matmul`` with
row/column sums, as MatMulInteger does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    add_bias,
    real_multiplier,
    requantize_acc,
    scale32,
)
from engine.quant.integer import INT32_MAX, INT32_MIN, int_matmul
from engine.quant.qparams import QParams


def _operand(q: QTensor, channel_axis: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a matmul operand: scalars, or 1-d arrays when the operand is
    per channel along ``channel_axis`` (NotInteger for any other axis)."""
    qp = q.qp
    if not qp.per_channel:
        return np.asarray(scale32(qp)), np.asarray(qp.zero_point, dtype=np.int64).reshape(())
    ndim = q.codes.ndim
    if channel_axis is None or qp.axis is None or qp.axis % ndim != channel_axis % ndim:
        raise NotInteger(f"{what} is per channel along axis {qp.axis}, not along the output channels")
    return np.asarray(qp.scale, dtype=np.float32), np.asarray(qp.zero_point, dtype=np.int64).reshape(-1)


def matmul_accumulate(a: QTensor, b: QTensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact int32 ``(A - za) @ (B - zb)`` of two 2-D+ operands, its real scale (scalar or per
    channel) and the output axis the per-channel scale runs along (-1 columns, -2 rows)."""
    a_rows = a.qp.per_channel and a.codes.ndim == 2
    sa, za = _operand(a, 0 if a_rows else None, "input A")
    sb, zb = _operand(b, b.codes.ndim - 1, "input B")
    if sa.ndim and sb.ndim:
        raise NotInteger("both matmul operands are per channel")
    acc = int_matmul(a.codes, b.codes, za, zb)
    return acc, (sa * sb).astype(np.float32), (-2 if sa.ndim else -1)


@register_int
class MatMul(IntKernel):
    """``Y = A @ B`` (numpy broadcasting; 1-d operands promoted and squeezed as ONNX does)."""

    op_type = "MatMul"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        squeeze: list[int] = []
        if a.codes.ndim == 1:
            if a.qp.per_channel:
                raise NotInteger("1-d per-channel matmul operand")
            a = QTensor(a.codes[None, :], a.qp)
            squeeze.append(-2)
        if b.codes.ndim == 1:
            if b.qp.per_channel:
                raise NotInteger("1-d per-channel matmul operand")
            b = QTensor(b.codes[:, None], b.qp)
            squeeze.append(-1)
        acc, acc_scale, axis = matmul_accumulate(a, b)
        y = requantize_acc(acc, real_multiplier(acc_scale, out=out), out, self.rounding, axis=acc.ndim + axis)
        if squeeze:
            y = QTensor(np.squeeze(y.codes, axis=tuple(squeeze)), y.qp, y.clipped)
        return (y,)


@register_int
class Gemm(IntKernel):
    """``Y = alpha * A' @ B' + beta * C`` with ``A' = A.T`` if transA, ``B' = B.T`` if transB.

    ``beta * C`` is quantized to int32 at the accumulator scale ``|alpha| s_a s_b`` (per
    output channel with a per-channel B) and added to the exact product; a negative
    ``alpha`` negates the accumulator.
    """

    op_type = "Gemm"
    float_inputs = frozenset({2})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        if a.qp.per_channel:
            raise NotInteger("Gemm input A per channel")
        trans_b = bool(int(self.attr("transB", 0)))
        if b.qp.per_channel and b.qp.axis is not None and b.qp.axis % 2 != (0 if trans_b else 1):
            raise NotInteger(f"Gemm B per channel along axis {b.qp.axis}, not along the output channels")
        a_codes = a.codes.T if int(self.attr("transA", 0)) else a.codes
        b_codes = b.codes.T if trans_b else b.codes
        b_t = QTensor(b_codes, b.qp if not b.qp.per_channel else _moved_axis(b.qp, 1))
        acc, acc_scale, axis = matmul_accumulate(QTensor(a_codes, a.qp), b_t)
        alpha = float(self.attr("alpha", 1.0))
        beta = float(self.attr("beta", 1.0))
        if alpha == 0.0:
            raise NotInteger("Gemm alpha = 0")
        scale = (np.float32(abs(alpha)) * acc_scale).astype(np.float32)
        total: np.ndarray = acc if alpha > 0 else -acc.astype(np.int64)
        c = inputs[2] if len(inputs) > 2 else None
        if c is not None and beta != 0.0:
            bias = np.rint(np.asarray(c, dtype=np.float64) * beta / scale.astype(np.float64))
            bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
            bits = 8 * max(a.codes.dtype.itemsize, b.codes.dtype.itemsize)
            total = add_bias(total, bias, int(a_codes.shape[-1]), bits)
        return (requantize_acc(total, real_multiplier(scale, out=out), out, self.rounding, axis=total.ndim + axis),)


def _moved_axis(qp: QParams, axis: int) -> QParams:
    """The same parameters declared along another axis (after a transpose of a 2-D weight)."""
    return QParams(qp.scale, qp.zero_point, qp.dtype, axis, qp.qmin, qp.qmax)
