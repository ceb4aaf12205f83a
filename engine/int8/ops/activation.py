"""I-BERT integer-only activations: GELU (the Gelu op, and a recognised Div-Erf-Add-Mul-Mul
subgraph run as one Gelu unit by the executor), Erf on its own, Sigmoid, and Swish/SiLU.

All of them first shift the centred codes left to a fine scale (exact; see
:func:`engine.int8.ops.normalization.fine_codes`), as I-BERT runs on fine int32 inputs.

They are element-wise: for 8-bit input and output codes each is evaluated once per
possible input code (a 256-entry table, with a saturation flag per entry) and applied by
lookup, as TFLite runs int8 non-linearities. The table holds exactly what evaluating every
element gives, except that in the fixed-point mode a wide accumulator's pre-shift (see
:func:`engine.int8.qtensor.requantize_acc`) follows from the whole code range instead of
the values present -- the compile-time choice an NPU makes.

Sigmoid has no I-BERT kernel of its own; it is built from I-BERT's pieces:
``sigmoid(-|x|) = e / (1 + e)`` with ``e = i_exp(-|x|)`` and one integer division
(``(e << 16) // (e + floor(1 / S_e))``, scale ``2**-16``), mirrored for ``x >= 0``. A SiLU
exported as ``x * Sigmoid(x)`` is this Sigmoid followed by an integer Mul.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.ops.normalization import check_exp_scale, fine_codes
from engine.int8.plan import same_params
from engine.int8.qtensor import QTensor, Value, centered, requantize_acc, scale32
from engine.quant.ibert import i_erf, i_exp, i_gelu
from engine.quant.qparams import DTYPES, QParams

MAX_COUNTED_RUNS = 4
"""Up to this many ranges of saturating input codes are counted by comparisons (a pass each);
more by one histogram of the codes."""

SIGMOID_BITS = 16
"""Fraction bits of the integer sigmoid (scale ``2**-16``) before requantization."""


def _per_tensor(x: QTensor, op: str) -> tuple[np.ndarray, float]:
    """Centred codes on the fine I-BERT grid (:func:`fine_codes`) and their scale."""
    if x.qp.per_channel:
        raise NotInteger(f"{op} input per channel")
    return fine_codes(centered(x, np.int64), float(scale32(x.qp)))


class ElementwiseKernel(IntKernel):
    """An element-wise integer kernel on per-tensor codes; ``compute`` is the arithmetic,
    ``run`` applies it through a per-code table when input and output codes are 8-bit."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._table: tuple[QParams, QParams, np.ndarray, np.ndarray, list[tuple[int, int]]] | None = None

    def compute(self, x: QTensor, out: QParams) -> QTensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self) -> None:
        """NotInteger when the node's attributes have no integer kernel."""

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        self.check()
        if x.qp.per_channel:
            raise NotInteger(f"{self.op_type} input per channel")
        if x.codes.dtype.itemsize != 1 or np.dtype(DTYPES[out.dtype]).itemsize != 1:
            return (self.compute(x, out),)
        codes, flags, runs = self._lookup_table(x.qp, x.codes.dtype, out)
        index = x.codes.view(np.uint8) ^ np.uint8(0x80) if x.codes.dtype == np.int8 else x.codes
        clipped = 0
        if len(runs) > MAX_COUNTED_RUNS:
            clipped = int(np.bincount(index.reshape(-1), minlength=256)[flags].sum())
            runs = []
        for lo, hi in runs:  # saturating input codes: a few ranges, usually at the ends
            if lo == 0:
                clipped += int(np.count_nonzero(index <= hi))
            elif hi == 255:
                clipped += int(np.count_nonzero(index >= lo))
            else:
                clipped += int(np.count_nonzero((index >= lo) & (index <= hi)))
        # every index is within the 256-entry table: "wrap" only skips the bounds checks
        return (QTensor(np.take(codes, index, mode="wrap"), out, clipped),)

    def _lookup_table(
        self, in_qp: QParams, dtype: np.dtype, out: QParams
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Output codes, saturation flags and the flagged index ranges (``[lo, hi]`` in table
        index order; none when there are more than :data:`MAX_COUNTED_RUNS`) of every input
        code (cached per parameters)."""
        cached = self._table
        if cached is not None and (cached[0] is in_qp or same_params(cached[0], in_qp)) and (
            cached[1] is out or same_params(cached[1], out)
        ):
            return cached[2], cached[3], cached[4]
        info = np.iinfo(dtype)
        every = QTensor(np.arange(info.min, info.max + 1).astype(dtype), in_qp)
        narrow = self.compute(every, out).codes
        wide_qp = QParams(out.scale, out.zero_point, "int16", None, -(2**15), 2**15 - 1)
        wide = self.compute(every, wide_qp).codes
        flags = wide.astype(np.int32) != narrow.astype(np.int32)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
        runs = [(int(lo), int(hi) - 1) for lo, hi in zip(edges[::2], edges[1::2])]
        self._table = (in_qp, out, narrow, flags, runs)
        return narrow, flags, runs


@register_int
class Gelu(ElementwiseKernel):
    """I-BERT i-GELU ``x (1 + i_erf(x / sqrt2)) / 2`` (``approximate="none"`` only), requantized."""

    op_type = "Gelu"

    def check(self) -> None:
        if self.attr("approximate", "none") != "none":
            raise NotInteger("Gelu approximate='tanh' has no I-BERT kernel")

    def compute(self, x: QTensor, out: QParams) -> QTensor:
        q, s = _per_tensor(x, "Gelu")
        q_out, s_out = i_gelu(q, s)
        return requantize_acc(q_out, s_out / float(scale32(out)), out, self.rounding)


@register_int
class Erf(ElementwiseKernel):
    """I-BERT i-erf (second-order fit with sign and clipping), requantized."""

    op_type = "Erf"

    def compute(self, x: QTensor, out: QParams) -> QTensor:
        q, s = _per_tensor(x, "Erf")
        q_out, s_out = i_erf(q, s)
        if s_out < 0:
            q_out, s_out = -q_out, -s_out
        return requantize_acc(q_out, s_out / float(scale32(out)), out, self.rounding)


def int_sigmoid(q: np.ndarray, scale: float) -> np.ndarray:
    """Integer sigmoid of ``x = q * scale`` at scale ``2**-SIGMOID_BITS`` (int64 codes)."""
    check_exp_scale(scale, "Sigmoid")
    e, s_e = i_exp(-np.abs(q), scale)
    one = math.floor(1.0 / s_e)
    low = (e << SIGMOID_BITS) // (e + one)  # sigmoid(-|x|)
    return np.where(q >= 0, (1 << SIGMOID_BITS) - low, low)


@register_int
class Sigmoid(ElementwiseKernel):
    """Integer sigmoid from i-exp and one division (see module doc), requantized."""

    op_type = "Sigmoid"

    def compute(self, x: QTensor, out: QParams) -> QTensor:
        q, s = _per_tensor(x, "Sigmoid")
        sig = int_sigmoid(q, s)
        return requantize_acc(sig, 2.0**-SIGMOID_BITS / float(scale32(out)), out, self.rounding)


@register_int
class Swish(ElementwiseKernel):
    """``x * sigmoid(alpha x)`` (SiLU for alpha 1): the integer sigmoid times the centred codes,
    requantized by ``s_x 2**-16 / s_y``."""

    op_type = "Swish"

    def check(self) -> None:
        if not float(self.attr("alpha", 1.0)) > 0:
            raise NotInteger(f"Swish alpha {self.attr('alpha')} is not positive")

    def compute(self, x: QTensor, out: QParams) -> QTensor:
        alpha = float(self.attr("alpha", 1.0))
        q, s = _per_tensor(x, "Swish")
        acc = q * int_sigmoid(q, s * alpha)
        return requantize_acc(acc, s * 2.0**-SIGMOID_BITS / float(scale32(out)), out, self.rounding)
