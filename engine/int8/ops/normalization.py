"""Integer BatchNormalization (a per-channel requantization), and the I-BERT integer-only
LayerNormalization and Softmax (:mod:`engine.quant.ibert`), each finished by one
requantization to the output's QParams.

These are the ``"integer"`` path of their nodes; the ``"float_fallback"`` path (dequantize,
float kernel, requantize) is the executor's generic one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    EXACT_FLOAT_LIMIT,
    QTensor,
    Value,
    centered,
    exact_float,
    real_multiplier,
    requantize_acc,
    scale32,
)
from engine.quant.ibert import i_layernorm, i_softmax
from engine.quant.qparams import QParams

SOFTMAX_BITS = 16
"""Bits of the I-BERT softmax output (scale ``2**-16``) before the requantization to the
output's QParams: finer than any 8-bit output step, so that step adds only one rounding."""


@register_int
class BatchNormalization(IntKernel):
    """Inference BatchNorm ``y = f_c x + o_c`` (``f_c = gamma / sqrt(var + eps)``,
    ``o_c = beta - mean f_c``) as a per-channel requantization (channel axis 1):
    ``acc = sign(f_c) (q - zp) + round(o_c / (s_x |f_c|))`` (the offset an int32 bias at
    scale ``s_x |f_c|``), multiplier ``s_x |f_c| / s_y``."""

    op_type = "BatchNormalization"
    float_inputs = frozenset({1, 2, 3, 4})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if self.opset >= 14 and int(self.attr("training_mode", 0)):
            raise NotInteger("BatchNormalization in training mode")
        if any(o for o in self.node.outputs[1:]):
            raise NotInteger("BatchNormalization with running statistics outputs")
        if x.qp.per_channel or x.codes.ndim < 2:
            raise NotInteger("BatchNormalization input per channel or of rank < 2")
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in inputs[1:5])  # type: ignore[arg-type]
        eps = float(self.attr("epsilon", 1e-5))
        factor = gamma / np.sqrt(var + eps)
        offset = beta - mean * factor
        if not np.all(np.isfinite(factor)) or np.any(factor == 0):
            raise NotInteger("BatchNormalization with a zero or non-finite channel factor")
        shape = (1, -1) + (1,) * (x.codes.ndim - 2)
        acc_scale = (scale32(x.qp) * np.abs(factor).astype(np.float32)).astype(np.float32)
        bias = np.rint(offset / acc_scale.astype(np.float64))
        sign = np.where(factor < 0, -1, 1)
        if self.rounding == "half_even_float" and np.abs(bias).max() + 2**16 < EXACT_FLOAT_LIMIT:
            acc = exact_float(x)  # exact: |sign (q - zp) + bias| < 2**24
        else:
            acc = centered(x, np.int64)
        if np.any(factor < 0):
            acc *= sign.astype(acc.dtype).reshape(shape)
        acc += bias.astype(acc.dtype).reshape(shape)
        return (requantize_acc(acc, real_multiplier(acc_scale, out=out), out, self.rounding, axis=1),)


@register_int
class LayerNormalization(IntKernel):
    """I-BERT integer LayerNorm over the axes from ``axis`` to the last (flattened to one):
    integer mean/variance, i-sqrt, fixed-point reciprocal, quantized gamma/beta
    (:func:`engine.quant.ibert.i_layernorm`; ``epsilon`` is not modelled), then requantized."""

    op_type = "LayerNormalization"
    float_inputs = frozenset({1, 2})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if any(o for o in self.node.outputs[1:]):
            raise NotInteger("LayerNormalization with Mean/InvStdDev outputs")
        if x.qp.per_channel:
            raise NotInteger("LayerNormalization input per channel")
        codes = x.codes
        axis = int(self.attr("axis", -1))
        axis = axis + codes.ndim if axis < 0 else axis
        if not 0 <= axis < codes.ndim:
            raise ValueError(f"axis {self.attr('axis', -1)} out of range for rank {codes.ndim}")
        norm_shape = codes.shape[axis:]
        size = int(np.prod(norm_shape, dtype=np.int64))
        flat = codes.reshape(codes.shape[:axis] + (size,))

        def param(value: np.ndarray | None) -> np.ndarray | None:
            if value is None:
                return None
            return np.broadcast_to(np.asarray(value, dtype=np.float64), norm_shape).reshape(-1)

        gamma = param(inputs[1] if len(inputs) > 1 else None)  # type: ignore[arg-type]
        beta = param(inputs[2] if len(inputs) > 2 else None)  # type: ignore[arg-type]
        q, s_y = i_layernorm(flat, float(scale32(x.qp)), gamma, beta, axis=-1)
        y = requantize_acc(q, s_y / float(scale32(out)), out, self.rounding)
        return (QTensor(y.codes.reshape(codes.shape), y.qp, y.clipped),)


IBERT_INPUT_SCALE = 2.0**-10
"""Finest input scale the I-BERT kernels need: I-BERT runs them on int32 accumulators of
fine scale, where ``floor(b / S)`` of its polynomial constants is precise. 8-bit codes
(scale ~0.05) would round those constants by up to a step (a 3% error in ``exp``), so
the codes are first shifted left (exact, integer-only) to a scale of at most this."""

IBERT_MAX_SHIFT = 20
"""Largest such left shift (an input scale of 2**10 would reach 2**-10 with it)."""


def check_exp_scale(scale: float, what: str) -> None:
    """I-BERT's i-exp needs an input scale below ln 2 (NotInteger otherwise)."""
    if not scale < math.log(2.0):
        raise NotInteger(f"{what}: input scale {scale:.4g} is not below ln2 (i-exp needs finer codes)")


def fine_codes(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """``(q << k, scale / 2**k)`` with the smallest ``k`` giving a scale of at most
    :data:`IBERT_INPUT_SCALE` (the same values on a finer integer grid)."""
    if scale <= IBERT_INPUT_SCALE:
        return q.astype(np.int64), scale
    k = min(IBERT_MAX_SHIFT, math.ceil(math.log2(scale / IBERT_INPUT_SCALE)))
    return q.astype(np.int64) << k, scale / float(1 << k)


@register_int
class Softmax(IntKernel):
    """I-BERT integer Softmax (i-exp, integer sum, one fixed-point division per row) along the
    node's axis (opset < 13: the 2-D coercion, as the float kernel) on the codes shifted to
    a fine scale (:func:`fine_codes`), output at scale ``2**-16``, then requantized."""

    op_type = "Softmax"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if x.qp.per_channel or x.codes.ndim == 0:
            raise NotInteger("Softmax input per channel or scalar")
        q_in, s = fine_codes(x.codes, float(scale32(x.qp)))
        check_exp_scale(s, "Softmax")
        view, axis = self.float_kernel._blocks(q_in)  # type: ignore[union-attr]
        q, s_q = i_softmax(view, s, axis=axis, output_bits=SOFTMAX_BITS)
        y = requantize_acc(q.reshape(x.codes.shape), s_q / float(scale32(out)), out, self.rounding)
        return (y,)
