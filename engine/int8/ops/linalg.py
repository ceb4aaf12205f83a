"""Integer MatMul and Gemm: int8 x int8 products accumulated exactly (``exact_matmul``: one
float32 GEMM whose result IS the accumulator when ``K * max|a| * max|b| <= 2**24``, else
int32), an int32 bias at scale ``s_a * s_b``, one requantization to the output.

Weights may be per channel along the output axis (MatMul B: its last axis, one scale per
output column; MatMul A as the weight: its rows; Gemm B: axis 0 with ``transB`` else 1):
the multiplier is then per output channel. Operands are centred on their zero points
(``MatmulOperand``); a constant operand (a weight) is prepared once per kernel
(:meth:`engine.int8.ops.IntKernel.prepared`): its float32 copy and its exact bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    add_bias,
    real_multiplier,
    tensor_params,
)
from engine.quant.integer import (
    FLOAT32_EXACT,
    INT32_MAX,
    INT32_MIN,
    MatmulOperand,
    exact_matmul,
    matmul_operand,
)
from engine.quant.qparams import QParams


def _operand(q: QTensor, channel_axis: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a matmul operand: scalars, or 1-d arrays when the operand is
    per channel along ``channel_axis`` (NotInteger for any other axis)."""
    qp = q.qp
    if not qp.per_channel:
        params = tensor_params(qp)
        return np.asarray(params.scale), np.asarray(params.zero_point, dtype=np.int64)
    ndim = q.codes.ndim
    if channel_axis is None or qp.axis is None or qp.axis % ndim != channel_axis % ndim:
        raise NotInteger(f"{what} is per channel along axis {qp.axis}, not along the output channels")
    return np.asarray(qp.scale, dtype=np.float32), np.asarray(qp.zero_point, dtype=np.int64).reshape(-1)


Constant = tuple[IntKernel, int, object]
"""A constant operand's cache slot: (kernel, input index, the input value it derives from)."""


@dataclass(frozen=True)
class MatmulParams:
    """What a matmul needs from its operands' parameters: zero points (Python ints, or 1-d
    per row of A / per column of B), the accumulator's real scale (scalar or per output
    channel) and the output axis that scale runs along (-1 columns, -2 rows)."""

    za: int | np.ndarray
    zb: int | np.ndarray
    acc_scale: np.ndarray
    axis: int


def matmul_params(a: QTensor, b: QTensor) -> MatmulParams:
    """:class:`MatmulParams` of two operands (NotInteger when both are per channel, or one is
    per channel along an axis other than its output channels)."""
    a_rows = a.qp.per_channel and a.codes.ndim == 2
    sa, za = _operand(a, 0 if a_rows else None, "input A")
    sb, zb = _operand(b, b.codes.ndim - 1, "input B")
    if sa.ndim and sb.ndim:
        raise NotInteger("both matmul operands are per channel")
    return MatmulParams(
        za if za.ndim else int(za), zb if zb.ndim else int(zb), (sa * sb).astype(np.float32), -2 if sa.ndim else -1
    )


def matmul_accumulate(
    a: QTensor,
    b: QTensor,
    constants: tuple[Constant | None, Constant | None] = (None, None),
    params: MatmulParams | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact ``(A - za) @ (B - zb)`` of two 2-D+ operands (float32 holding exact integers when
    ``K * max|A - za| * max|B - zb| <= 2**24``, else int32), its real scale (scalar or per
    channel) and the output axis the per-channel scale runs along (-1 columns, -2 rows).
    An operand given a ``constants`` slot is prepared once per kernel and input value
    (:meth:`IntKernel.prepared`); ``params``: :func:`matmul_params` of the operands, when the
    caller keeps them."""
    p = params if params is not None else matmul_params(a, b)

    def operand(q: QTensor, zp: int | np.ndarray, axis: int, constant: Constant | None) -> MatmulOperand:
        if constant is None:
            fc = q.codes_f32()
            if fc is not None and type(zp) is int and zp == 0 and q.codes.dtype.itemsize == 1:
                # the codes already in float32 (matmul only reads them): the 8-bit bound
                return MatmulOperand(fc, 128 if q.codes.dtype == np.int8 else 255)
            return matmul_operand(q.codes, zp, axis)
        kernel, index, source = constant
        return kernel.prepared(index, source, lambda: matmul_operand(q.codes, zp, axis, data_bound=True))

    acc = exact_matmul(operand(a, p.za, -2, constants[0]), operand(b, p.zb, -1, constants[1]))
    return acc, p.acc_scale, p.axis


@register_int
class MatMul(IntKernel):
    """``Y = A @ B`` (numpy broadcasting; 1-d operands promoted and squeezed as ONNX does)."""

    op_type = "MatMul"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        squeeze: list[int] = []
        constants = [self.constant(i, inputs[i]) for i in (0, 1)]
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
        shapes = (a.qp, b.qp, a.codes.ndim, b.codes.ndim)
        params = self.prepared("params", shapes, lambda: matmul_params(a, b))
        acc, acc_scale, axis = matmul_accumulate(a, b, (constants[0], constants[1]), params)
        requantize = self.requantizer(shapes, lambda: real_multiplier(acc_scale, out=out), out, axis)
        y = requantize(acc)
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
        constants = (self.constant(0, inputs[0]), self.constant(1, inputs[1]))
        a_t = QTensor(a_codes, a.qp)
        params = self.prepared("params", (a.qp, b.qp), lambda: matmul_params(a_t, b_t))
        acc, acc_scale, axis = matmul_accumulate(a_t, b_t, constants, params)
        alpha = float(self.attr("alpha", 1.0))
        beta = float(self.attr("beta", 1.0))
        if alpha == 0.0:
            raise NotInteger("Gemm alpha = 0")
        scale = (np.float32(abs(alpha)) * acc_scale).astype(np.float32)
        total: np.ndarray = acc if alpha > 0 else np.negative(acc, dtype=acc.dtype if acc.dtype == np.float32 else np.int64)
        c = inputs[2] if len(inputs) > 2 else None
        if c is not None and beta != 0.0:
            bias = np.rint(np.asarray(c, dtype=np.float64) * beta / scale.astype(np.float64))
            bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
            total = add_bias(total, bias)
        requantize = self.requantizer((a.qp, b.qp), lambda: real_multiplier(scale, out=out), out, axis)
        return (requantize(total),)


class MatMulBias(IntKernel):
    """A MatMul whose output only feeds ``+ bias`` (a constant along the output columns, as a
    Linear layer exports): ``Y = A @ B + bias`` with the bias quantized to int32 at the
    accumulator scale ``s_a * s_b`` (per output column with a per-channel B) and added to the
    exact product, then ONE requantization to the Add's output, as an NPU's fully connected
    op with bias does. Inputs: ``A``, ``B`` (quantized) and the float bias; built by the
    executor for a recognised MatMul + Add pair (not an ONNX op: never in the registry)."""

    op_type = "MatMul+bias"
    float_inputs = frozenset({2})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        a, b = qinput(inputs[0], "input A"), qinput(inputs[1], "input B")
        out = out_param(out_params)
        if a.codes.ndim < 2 or b.codes.ndim != 2:
            raise NotInteger("MatMul + bias needs A of rank >= 2 and a 2-D B")
        constants = (self.constant(0, inputs[0]), self.constant(1, inputs[1]))
        shapes = (a.qp, b.qp, a.codes.ndim)
        params = self.prepared("params", shapes, lambda: matmul_params(a, b))
        if params.axis != -1:
            raise NotInteger("MatMul + bias with A per channel")
        acc_scale = params.acc_scale
        bias_value = inputs[2]

        def fold() -> tuple[np.ndarray, int]:
            bias = np.rint(np.asarray(bias_value, dtype=np.float64).reshape(-1) / acc_scale.astype(np.float64))
            bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
            return bias, int(np.abs(bias).max()) if bias.size else 0

        bias, b_max = self.prepared("bias", (bias_value, a.qp, b.qp), fold)
        requantize = self.requantizer(shapes, lambda: real_multiplier(acc_scale, out=out), out, -1)
        augmented = self._augmented(a, b, params, constants[1], bias, b_max, bias_value)
        if augmented is not None:
            return (requantize(augmented),)
        acc, _, _ = matmul_accumulate(a, b, constants, params)
        return (requantize(add_bias(acc, bias)),)

    def _augmented(
        self,
        a: QTensor,
        b: QTensor,
        params: MatmulParams,
        b_constant: Constant | None,
        bias: np.ndarray,
        b_max: int,
        bias_value: object,
    ) -> np.ndarray | None:
        """``[A - za, 1] @ [[B - zb], [bias]]``: the bias as one more row of B against a column
        of ones, so the GEMM itself adds it (no pass over the output). One float32 GEMM, exact
        when ``K * max|A - za| * max|B - zb| + max|bias| <= 2**24`` (every partial sum an
        integer below it); None otherwise (or for a non-constant B, or wide codes)."""
        if b_constant is None or a.codes.dtype.itemsize != 1 or type(params.za) is not int:
            return None
        info = np.iinfo(a.codes.dtype)
        a_bound = max(info.max - params.za, params.za - info.min)
        kernel, index, source = b_constant
        w = kernel.prepared(index, source, lambda: matmul_operand(b.codes, params.zb, -1, data_bound=True))
        k = a.codes.shape[-1]
        if w.values.dtype != np.float32 or k * a_bound * max(w.bound, 1) + b_max > FLOAT32_EXACT:
            return None
        w_aug = self.prepared("augmented", (w, bias_value, a.qp, b.qp), lambda: np.concatenate([w.values, bias.astype(np.float32)[None, :]]))
        a_aug = np.empty(a.codes.shape[:-1] + (k + 1,), dtype=np.float32)
        fc = a.codes_f32()
        np.copyto(a_aug[..., :k], fc if fc is not None else a.codes, casting="unsafe")
        if params.za:
            a_aug[..., :k] -= np.float32(params.za)
        a_aug[..., k] = 1.0
        return np.matmul(a_aug, w_aug)


def _moved_axis(qp: QParams, axis: int) -> QParams:
    """The same parameters declared along another axis (after a transpose of a 2-D weight)."""
    return QParams(qp.scale, qp.zero_point, qp.dtype, axis, qp.qmin, qp.qmax)
