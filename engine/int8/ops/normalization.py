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
    Requantizer,
    Value,
    centered,
    exact_float,
    real_multiplier,
    scale32,
)
from engine.quant.ibert import LayerNormAffine, i_layernorm, i_softmax, layernorm_affine
from engine.quant.integer import INT32_MAX
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
        fold = self.prepared("fold", (x.qp, out, x.codes.ndim) + tuple(inputs[1:5]), lambda: self._fold(x, inputs, out))
        use_float, sign, bias, requantize = fold
        acc = exact_float(x) if use_float else centered(x, bias.dtype.type)  # exact: see _fold
        if sign is not None:
            acc *= sign
        acc += bias
        return (requantize(acc),)

    def _fold(
        self, x: QTensor, inputs: Sequence[Value | None], out: QParams
    ) -> tuple[bool, np.ndarray | None, np.ndarray, Requantizer]:
        """What depends only on the parameters: (float32 accumulator?, per-channel sign or
        None, per-channel bias in the accumulator's dtype, the requantizer), shaped for the
        input's rank. The accumulator ``sign (q - zp) + bias`` is float32 when it stays
        within ``2**24`` (float rounding), else int32 when within int32, else int64."""
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in inputs[1:5])  # type: ignore[arg-type]
        eps = float(self.attr("epsilon", 1e-5))
        factor = gamma / np.sqrt(var + eps)
        offset = beta - mean * factor
        if not np.all(np.isfinite(factor)) or np.any(factor == 0):
            raise NotInteger("BatchNormalization with a zero or non-finite channel factor")
        shape = (1, -1) + (1,) * (x.codes.ndim - 2)
        acc_scale = (scale32(x.qp) * np.abs(factor).astype(np.float32)).astype(np.float32)
        bias = np.rint(offset / acc_scale.astype(np.float64))
        bias_max = float(np.abs(bias).max()) if bias.size else 0.0
        use_float = self.rounding == "half_even_float" and bias_max + 2**16 < EXACT_FLOAT_LIMIT
        # |sign (q - zp)| <= 2**16: int32 holds the sum while the bias leaves room, else int64
        dtype = np.float32 if use_float else (np.int32 if bias_max + 2**16 <= INT32_MAX else np.int64)
        sign = np.where(factor < 0, -1, 1).astype(dtype).reshape(shape) if np.any(factor < 0) else None
        requantize = Requantizer(real_multiplier(acc_scale, out=out), out, self.rounding, axis=1)
        return use_float, sign, bias.astype(dtype).reshape(shape), requantize


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

        gamma = inputs[1] if len(inputs) > 1 else None
        beta = inputs[2] if len(inputs) > 2 else None

        def param(value: Value | None) -> np.ndarray | None:
            if value is None:
                return None
            return np.broadcast_to(np.asarray(value, dtype=np.float64), norm_shape).reshape(-1)

        def fold() -> LayerNormAffine:
            return layernorm_affine(param(gamma), param(beta), size)

        if gamma is None and beta is None:
            affine = None
        elif self.constant(1, gamma) is not None and (beta is None or self.constant(2, beta) is not None):
            affine = self.prepared(1, (gamma, beta, norm_shape), fold)
        else:
            affine = fold()
        # float rounding: the wide accumulator may come as exact integers in float64 (faster)
        q, s_y = i_layernorm(flat, float(scale32(x.qp)), axis=-1, affine=affine, exact_float=self.rounding == "half_even_float")
        y = self.requantizer((s_y,), lambda: s_y / float(scale32(out)), out)(q)
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


def fine_shift(scale: float) -> int:
    """The smallest left shift ``k`` (at most :data:`IBERT_MAX_SHIFT`) giving ``scale / 2**k``
    at most :data:`IBERT_INPUT_SCALE`."""
    if scale <= IBERT_INPUT_SCALE:
        return 0
    return min(IBERT_MAX_SHIFT, math.ceil(math.log2(scale / IBERT_INPUT_SCALE)))


def fine_codes(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """``(q << k, scale / 2**k)`` with ``k = fine_shift(scale)`` (the same values on a finer
    integer grid), as int64."""
    k = fine_shift(scale)
    if k == 0:
        return q.astype(np.int64), scale
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
        s_in = float(scale32(x.qp))
        k = fine_shift(s_in)
        s = s_in / float(1 << k)
        check_exp_scale(s, "Softmax")
        view, axis = self.float_kernel._blocks(x.codes)  # type: ignore[union-attr]
        q, s_q = i_softmax(view, s, axis=axis, output_bits=SOFTMAX_BITS, code_shift=k, dtype=np.float32)
        y = self.requantizer((s_q,), lambda: s_q / float(scale32(out)), out)(q.reshape(x.codes.shape))
        return (y,)
